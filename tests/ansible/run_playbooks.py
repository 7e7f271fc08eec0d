#!/usr/bin/env python3
"""Runs the ferrite.storage playbooks against this machine (connection: local) and a real ferrited.

The appliance role installs ferrited from --bin-dir into a temporary tree and starts it with its
no-systemd control script; the volumes role provisions it through the JSON-RPC socket; the
nvmeof_host role writes the host's nvme-cli configuration (this machine has no nvme-tcp kernel
module, so connecting is left to the Linux host of the QEMU harness). Checked:

  1. site.yml converges; the daemon holds exactly what the inventory declares.
  2. A second run reports changed=0, and so does --check --diff.
  3. A changed inventory (a new namespace, a removed host, a resized volume) shows its diff in
     --check without changing anything, then is applied and touches nothing else.
  4. Wrong variables (unknown pool, malformed NQN, port in use, a size that does not parse) fail
     the play with a message naming the variable, and nothing changes.
  5. teardown.yml removes everything (daemon, files, objects), and a second teardown changes nothing.

Usage: run_playbooks.py --bin-dir target/debug [--keep]
Exit status 0 when every check passed; the last line is "N passed, N failed".
"""

from __future__ import print_function

import argparse
import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
COLLECTION = os.path.join(ROOT, "ansible")
sys.path.insert(0, os.path.join(COLLECTION, "plugins", "module_utils"))
from ferrite_rpc import FerriteRpc  # noqa: E402  (a plain module: no Ansible imports)

DB = "nqn.2026-01.io.ferrite:ansible-db"
SCRATCH = "nqn.2026-01.io.ferrite:ansible-scratch"
HOST1 = "nqn.2014-08.org.nvmexpress:uuid:0f3c1d2e-4b5a-4c6d-8e7f-901a2b3c4d5e"
HOST2 = "nqn.2026-01.io.example:host2"
MIB = 1 << 20


class Failed(Exception):
    pass


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Harness(object):
    def __init__(self, bin_dir, tmp):
        self.bin_dir = os.path.abspath(bin_dir)
        self.tmp = tmp
        self.port = free_port()
        self.socket = os.path.join(tmp, "run", "ferrited.sock")
        self.passed = 0
        self.failed = 0
        coll = os.path.join(tmp, "collections", "ansible_collections", "ferrite")
        os.makedirs(coll)
        os.symlink(COLLECTION, os.path.join(coll, "storage"))
        self.env = dict(os.environ)
        self.env.update({
            "ANSIBLE_COLLECTIONS_PATH": os.path.join(tmp, "collections"),
            "ANSIBLE_LOCAL_TEMP": os.path.join(tmp, "ansible-tmp"),
            "ANSIBLE_REMOTE_TEMP": os.path.join(tmp, "ansible-tmp"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_PIPELINING": "1",
            "ANSIBLE_HOST_KEY_CHECKING": "0",
            "ANSIBLE_STDOUT_CALLBACK": "default",
            "ANSIBLE_CONFIG": os.path.join(tmp, "no-ansible.cfg"),
        })
        self.playbook = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
        self.base = self.base_vars()

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    def base_vars(self):
        listener = {"traddr": "127.0.0.1", "trsvcid": str(self.port)}
        return {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "ansible_become": False,
            "appliance_rpc_socket": self.socket,
            "volumes_rpc_socket": self.socket,
            "appliance_binary_dir": self.bin_dir,
            "appliance_install_dir": self.path("bin"),
            "appliance_config_dir": self.path("etc"),
            "appliance_state_dir": self.path("state"),
            "appliance_log_dir": self.path("log"),
            "appliance_run_dir": self.path("run"),
            "appliance_listen": ["127.0.0.1:%d" % self.port],
            "appliance_cores": "0",
            "appliance_pin_reactors": False,
            "appliance_service_manager": "script",
            "appliance_firewall": "none",
            "appliance_hugepages": 0,
            "volumes_bdevs": [
                {"name": "disk0", "kind": "file", "path": self.path("data", "disk0.img"), "size": "256MiB"},
                {"name": "ram0", "kind": "malloc", "size": "64MiB"},
            ],
            "volumes_pools": [{"name": "tank", "bdevs": ["disk0"], "cluster_size": "1MiB", "space_warning": 85}],
            "volumes_volumes": [
                {"pool": "tank", "name": "db", "size": "64MiB"},
                {"pool": "tank", "name": "logs", "size": "32MiB", "thin": False},
                {"pool": "tank", "name": "db-test", "clone_of": "nightly"},
            ],
            "volumes_snapshots": [{"volume": "tank/db", "name": "nightly"}],
            "volumes_subsystems": [
                {"nqn": DB, "serial_number": "FEANSIBLE01", "hosts": [HOST1, HOST2],
                 "listeners": [listener],
                 "namespaces": [{"bdev": "tank/db", "nsid": 1}, {"bdev": "tank/logs", "nsid": 2}]},
                {"nqn": SCRATCH, "allow_any_host": True, "listeners": [listener],
                 "namespaces": [{"bdev": "ram0"}]},
            ],
            "nvmeof_host_install_packages": False,
            "nvmeof_host_load_module": False,
            "nvmeof_host_config_dir": self.path("nvme"),
            "nvmeof_host_nqn": HOST1,
            "nvmeof_host_discovery": [{"traddr": "127.0.0.1", "trsvcid": self.port}],
            "nvmeof_host_connections": [{"nqn": DB, "traddr": "127.0.0.1", "trsvcid": self.port}],
            "nvmeof_host_connect": False,
        }

    def inventory(self, variables, name):
        inv = {"all": {"children": {
            "ferrite_primary": {"hosts": {"localhost": None}},
            "ferrite_hosts": {"hosts": {"localhost": None}},
        }, "vars": variables}}
        return self.write_inventory(inv, name)

    def write_inventory(self, inv, name):
        path = self.path("inventory-%s.json" % name)
        with open(path, "w") as f:
            json.dump(inv, f, indent=1)
        return path

    def run(self, playbook, variables, name, check=False, extra=()):
        """ansible-playbook; returns (exit status, changed summed over the hosts, output)."""
        cmd = [self.playbook, "-i", self.inventory(variables, name),
               os.path.join(COLLECTION, "playbooks", playbook)]
        if check:
            cmd += ["--check", "--diff"]
        cmd += list(extra)
        started = time.time()
        proc = subprocess.run(cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, cwd=self.tmp, timeout=900)
        out = proc.stdout
        with open(self.path("%s.log" % name), "w") as f:
            f.write(out)
        recaps = re.findall(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", out, re.M)
        changed = sum(int(r[2]) for r in recaps) if recaps else None
        print("   ansible-playbook %s%s (%s): rc=%d changed=%s (%s), %.1f s"
              % (playbook, " --check --diff" if check else "", name, proc.returncode, changed,
                 " ".join("%s=%s" % (r[0], r[2]) for r in recaps), time.time() - started))
        return proc.returncode, changed, out

    def rpc(self, method, params=None):
        client = FerriteRpc(self.socket, 30.0)
        try:
            return client.call(method, params)
        finally:
            client.close()

    def state(self):
        """The daemon's objects, in a form that compares equal when nothing changed."""
        subs = {}
        for s in self.rpc("nvmf_get_subsystems"):
            if s.get("subtype") == "Discovery":
                continue
            subs[s["nqn"]] = {
                "serial_number": s.get("serial_number"),
                "allow_any_host": s.get("allow_any_host"),
                "hosts": sorted(h["nqn"] for h in s.get("hosts", [])),
                "listeners": sorted("%s:%s" % (a["traddr"], a["trsvcid"]) for a in s.get("listen_addresses", [])),
                "namespaces": sorted((n["nsid"], n["bdev_name"], n.get("uuid")) for n in s.get("namespaces", [])),
            }
        vols = {}
        for v in self.rpc("volume_list") + self.rpc("snapshot_list"):
            vols[v["bdev_name"]] = (v["kind"], v["size_bytes"], v.get("uuid"), v.get("provisioning"))
        pools = dict((p["name"], (sorted(m["device"] for m in p["members"]), p["cluster_size"],
                                  p["warning_percent"], p["uuid"])) for p in self.rpc("pool_list"))
        bdevs = sorted((b["name"], b["kind"], b.get("uuid")) for b in self.rpc("bdev_list"))
        return {"subsystems": subs, "volumes": vols, "pools": pools, "bdevs": bdevs}

    def check(self, what, ok, detail=""):
        if ok:
            self.passed += 1
            print("ok   %s" % what)
        else:
            self.failed += 1
            print("FAIL %s %s" % (what, detail))
            raise Failed(what)

    def banner(self):
        return "ansible test tree: %s, NVMe/TCP port %d" % (self.tmp, self.port)

    def daemon_pid(self):
        try:
            with open(self.path("state", "ferrited.pid")) as f:
                return int(f.read().strip())
        except (IOError, OSError, ValueError):
            return None

    def kill_daemon(self):
        pid = self.daemon_pid()
        if pid is None:
            return
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                if b"ferrited" not in f.read():
                    return
            os.kill(pid, signal.SIGKILL)
        except (IOError, OSError):
            pass


def alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split()[2] != "Z"
    except (IOError, OSError):
        return False


def scenario(h):
    base = h.base
    print("== 1. converge")
    rc, changed, out = h.run("site.yml", base, "apply")
    h.check("site.yml converges", rc == 0 and changed and changed > 0, out[-3000:])
    st = h.state()
    h.check("subsystems as declared",
            sorted(st["subsystems"]) == sorted([DB, SCRATCH])
            and st["subsystems"][DB]["hosts"] == sorted([HOST1, HOST2])
            and [n[:2] for n in st["subsystems"][DB]["namespaces"]] == [(1, "tank/db"), (2, "tank/logs")]
            and [n[1] for n in st["subsystems"][SCRATCH]["namespaces"]] == ["ram0"]
            and st["subsystems"][SCRATCH]["allow_any_host"] is True
            and st["subsystems"][DB]["serial_number"] == "FEANSIBLE01"
            and st["subsystems"][DB]["listeners"] == ["127.0.0.1:%d" % h.port], json.dumps(st["subsystems"]))
    h.check("pool, volumes, snapshot, clone as declared",
            st["pools"]["tank"][:3] == (["disk0"], MIB, 85)
            and st["volumes"]["tank/db"][:2] == ("volume", 64 * MIB)
            and st["volumes"]["tank/logs"][:2] == ("volume", 32 * MIB)
            and st["volumes"]["tank/logs"][3] == "thick"
            and st["volumes"]["tank/nightly"][:2] == ("snapshot", 64 * MIB)
            and st["volumes"]["tank/db-test"][:2] == ("clone", 64 * MIB), json.dumps(st["volumes"]))
    pid = h.daemon_pid()
    h.check("ferrited runs from the installed binary",
            pid is not None and alive(pid)
            and os.path.realpath("/proc/%d/exe" % pid) == h.path("bin", "ferrited"))
    with open(h.path("nvme", "discovery.conf")) as f:
        disc = f.read()
    h.check("nvmeof_host wrote hostnqn, hostid and discovery.conf",
            open(h.path("nvme", "hostnqn")).read().strip() == HOST1
            and open(h.path("nvme", "hostid")).read().strip() == HOST1.split(":uuid:")[1]
            and ("--transport=tcp --traddr=127.0.0.1 --trsvcid=%d --hostnqn=%s" % (h.port, HOST1)) in disc, disc)

    print("== 2. idempotence")
    rc, changed, out = h.run("site.yml", base, "reapply")
    h.check("second run reports changed=0", rc == 0 and changed == 0, out[-3000:])
    rc, changed, out = h.run("site.yml", base, "check", check=True)
    h.check("--check --diff after convergence reports changed=0", rc == 0 and changed == 0, out[-3000:])
    h.check("ferrited was not restarted", h.daemon_pid() == pid and alive(pid))

    print("== 3. a changed inventory")
    new = copy.deepcopy(base)
    db = new["volumes_subsystems"][0]
    db["namespaces"].append({"bdev": "tank/db-test", "nsid": 3})
    db["hosts"] = [HOST1]
    new["volumes_volumes"][0]["size"] = "96MiB"
    rc, changed, out = h.run("site.yml", new, "change-check", check=True)
    h.check("--check --diff reports the three changes", rc == 0 and changed == 3, out[-3000:])
    h.check("--check shows the diff",
            "tank/db-test" in out and HOST2 in out and "100663296" in out, out[-3000:])
    h.check("--check changed nothing", h.state() == st)
    rc, changed, out = h.run("site.yml", new, "change")
    h.check("the changed inventory applies", rc == 0 and changed == 3, out[-3000:])
    want = copy.deepcopy(st)
    got = h.state()
    ns3 = [n for n in got["subsystems"][DB]["namespaces"] if n[0] == 3]
    want["subsystems"][DB]["namespaces"] = sorted(want["subsystems"][DB]["namespaces"] + ns3)
    want["subsystems"][DB]["hosts"] = [HOST1]
    want["volumes"]["tank/db"] = ("volume", 96 * MIB) + want["volumes"]["tank/db"][2:]
    h.check("exactly the three changes were made",
            got == want and [n[1] for n in ns3] == ["tank/db-test"],
            "\n got: %s\nwant: %s" % (json.dumps(got), json.dumps(want)))
    rc, changed, out = h.run("site.yml", new, "change-again")
    h.check("re-applying the changed inventory reports changed=0", rc == 0 and changed == 0, out[-3000:])

    print("== 4. wrong variables fail naming the variable, nothing changes")
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    busy = holder.getsockname()[1]
    try:
        cases = []
        bad = copy.deepcopy(new)
        bad["volumes_volumes"].append({"pool": "nopool", "name": "v", "size": "1GiB"})
        bad["volumes_subsystems"][1]["namespaces"].append({"bdev": "tank/db"})
        cases.append(("unknown pool", bad, "volumes_volumes[3].pool: unknown pool nopool"))
        bad = copy.deepcopy(new)
        bad["volumes_subsystems"][0]["hosts"] = [HOST1, "nqn.bad"]
        cases.append(("malformed NQN", bad, "volumes_subsystems[0].hosts[1]: 'nqn.bad' is not a valid NQN"))
        bad = copy.deepcopy(new)
        bad["volumes_subsystems"][0]["listeners"].append({"traddr": "127.0.0.1", "trsvcid": str(busy)})
        cases.append(("port in use", bad, "volumes_subsystems[0].listeners[1]: 127.0.0.1 port %d cannot be bound" % busy))
        bad = copy.deepcopy(new)
        bad["volumes_volumes"][0]["size"] = "12 parsecs"
        cases.append(("size that does not parse", bad, "volumes_volumes[0].size: '12 parsecs' is not a size"))
        bad = copy.deepcopy(new)
        bad["appliance_listen"] = ["127.0.0.1"]
        cases.append(("listen address without a port", bad, "appliance_listen[0]: 127.0.0.1 is not ADDR:PORT"))
        for i, (what, variables, message) in enumerate(cases):
            before = h.state()
            # The volumes role alone: its first task checks the whole declaration.
            tags = [] if message.startswith("appliance_") else ["--tags", "volumes"]
            rc, changed, out = h.run("site.yml", variables, "wrong-%d" % i, extra=tags)
            h.check("%s fails naming the variable" % what, rc != 0 and message in out, out[-3000:])
            h.check("%s changed nothing" % what, h.state() == before)
    finally:
        holder.close()

    print("== 5. teardown")
    rc, changed, out = h.run("teardown.yml", new, "teardown-unconfirmed")
    h.check("teardown refuses to run unconfirmed",
            rc != 0 and "set ferrite_teardown_confirm=true" in out and alive(pid), out[-3000:])
    confirm = ["-e", "ferrite_teardown_confirm=true", "-e", "ferrite_teardown_remove_files=true"]
    rc, changed, out = h.run("teardown.yml", new, "teardown", extra=confirm)
    h.check("teardown runs", rc == 0 and changed and changed > 0, out[-3000:])
    deadline = time.time() + 30
    while alive(pid) and time.time() < deadline:
        time.sleep(0.1)
    h.check("ferrited stopped", not alive(pid))
    left = sorted(os.listdir(h.tmp))
    expected = sorted(x for x in left if x.endswith(".log") or x.startswith("inventory-")
                      or x in ("collections", "ansible-tmp", "bin", "run", "data", "nvme"))
    h.check("nothing left but the test's own files", left == expected, "%s" % left)
    h.check("binaries, control script, socket and disk image removed",
            os.listdir(h.path("bin")) == [] and not os.path.exists(h.socket)
            and os.listdir(h.path("data")) == [], "%s %s" % (os.listdir(h.path("bin")), os.listdir(h.path("data"))))
    h.check("discovery.conf removed, hostnqn kept",
            not os.path.exists(h.path("nvme", "discovery.conf")) and os.path.exists(h.path("nvme", "hostnqn")))
    rc, changed, out = h.run("teardown.yml", new, "teardown-again", extra=confirm)
    h.check("a second teardown reports changed=0", rc == 0 and changed == 0, out[-3000:])


def connection_module(h):
    """ferrite_nvme_connection on this machine's (fake) sysfs tree, in check mode."""
    print("== 6. ferrite_nvme_connection (check mode, sysfs tree made by the test)")
    sysfs = h.path("sysfs")
    ctrl = os.path.join(sysfs, "nvme0")
    os.makedirs(ctrl)
    for name, text in (("transport", "tcp"), ("subsysnqn", DB), ("hostnqn", HOST1), ("state", "live"),
                       ("address", "traddr=127.0.0.1,trsvcid=%d,src_addr=127.0.0.1" % h.port)):
        with open(os.path.join(ctrl, name), "w") as f:
            f.write(text + "\n")
    adhoc = os.path.join(os.path.dirname(sys.executable), "ansible")

    def run(args):
        cmd = [adhoc, "localhost", "-c", "local", "-e", "ansible_python_interpreter=%s" % sys.executable,
               "--check", "--diff", "-m", "ferrite.storage.ferrite_nvme_connection", "-a", args]
        proc = subprocess.run(cmd, env=h.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, cwd=h.tmp, timeout=300)
        return proc.returncode, proc.stdout

    rc, out = run("nqn=%s traddr=127.0.0.1 trsvcid=%d sysfs_dir=%s" % (DB, h.port, sysfs))
    h.check("a connected subsystem is left alone", rc == 0 and '"changed": false' in out, out)
    rc, out = run("nqn=%s traddr=127.0.0.1 trsvcid=%d sysfs_dir=%s" % (SCRATCH, h.port, sysfs))
    h.check("a missing connection would run nvme connect",
            rc == 0 and '"changed": true' in out
            and "nvme connect -t tcp -a 127.0.0.1 -s %d -n %s" % (h.port, SCRATCH) in out, out)
    rc, out = run("nqn=%s traddr=127.0.0.1 trsvcid=%d sysfs_dir=%s state=absent" % (DB, h.port, sysfs))
    h.check("state=absent would disconnect the controller",
            rc == 0 and "nvme disconnect -d nvme0" in out, out)
    rc, out = run("nqn=%s traddr=127.0.0.1 hostnqn=host1 variable_name=nvmeof_host_connections[0]" % DB)
    h.check("a malformed host NQN fails naming the variable",
            rc != 0 and "nvmeof_host_connections[0].hostnqn" in out, out)


def drive(doc, harness_class, steps, binaries, prefix):
    """The command line of a driver: checks the binaries, makes the test tree, runs `steps`
    (functions of the harness) and kills what the harness started, whatever happens."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--bin-dir", required=True, help="directory holding %s" % ", ".join(binaries))
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    for name in binaries:
        if not os.access(os.path.join(args.bin_dir, name), os.X_OK):
            print("no %s in %s (cargo build --workspace --bins)" % (name, args.bin_dir))
            return 2
    tmp = tempfile.mkdtemp(prefix=prefix)
    for sub in ("data", "ansible-tmp"):
        os.makedirs(os.path.join(tmp, sub))
    h = harness_class(args.bin_dir, tmp)

    def stop(signum, _frame):
        raise SystemExit("stopped by signal %d" % signum)  # runs the finally below: no process left

    signal.signal(signal.SIGTERM, stop)
    print(h.banner())
    try:
        for step in steps:
            step(h)
    except Failed:
        pass
    except Exception as e:  # an unexpected error is a failed check, with the processes cleaned up
        h.failed += 1
        print("FAIL unexpected %s: %s" % (type(e).__name__, e))
    finally:
        h.kill_daemon()
        if h.failed:
            print("logs of every ansible-playbook run kept in %s" % tmp)
        elif not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print("%d passed, %d failed" % (h.passed, h.failed))
    return 1 if h.failed else 0


def main():
    return drive(__doc__, Harness, [scenario, connection_module], ("ferrited", "ferritectl"), "ferrite-ansible-")


if __name__ == "__main__":
    sys.exit(main())
