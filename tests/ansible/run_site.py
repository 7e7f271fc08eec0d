#!/usr/bin/env python3
"""The whole ferrite.storage site on this machine: a primary and a secondary appliance with
replication, and a tape gateway, all real processes (connection: local, three inventory hosts).

  1. site.yml converges: two ferrited (appliance role), the primary's journal and its journaled
     export (volumes + replication roles), a replicator on each side, ferrite-tape with a virtual
     library, two labelled cartridges, a backup of the secondary's replica, verified, and a
     schedule (tape role).
  2. Writes to the primary's journaled namespace (ferrite-perf over NVMe/TCP) are shipped,
     applied on the secondary and acknowledged: the journal is trimmed to its committed point.
  3. A second run reports changed=0, and so does --check --diff; no process was restarted.
  4. A changed inventory (a new backup, a changed schedule, group 1 switched to sync mode with
     lost_link: degrade) shows in --check without changing anything, then is applied (3 changes:
     the pair's mode through replication_set_mode, no replicator restarted); writes then wait
     for the secondary (the pair counts sync waits) and the new backup holds the replica's size.
  5. Wrong variables (a lost-link policy, a sync timeout out of range, a bad barcode, a journal
     in an unknown pool) fail naming the variable, and nothing changes.
  6. teardown.yml stops every process and removes what the roles installed; a second teardown
     changes nothing.

Usage: run_site.py --bin-dir target/debug [--keep]
Exit status 0 when every check passed; the last line is "N passed, N failed".
"""

from __future__ import print_function

import copy
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from run_playbooks import COLLECTION, Harness, alive, drive, free_port  # noqa: E402
from ferrite_rpc import FerriteRpc  # noqa: E402  (run_playbooks put module_utils on the path)

DB = "nqn.2026-01.io.ferrite:site-db"
DR = "nqn.2026-01.io.ferrite:site-dr"
MIB = 1 << 20
BINARIES = ("ferrited", "ferritectl", "ferrite-replicator", "ferrite-tape", "ferrite-perf")


class Site(Harness):
    """Three inventory hosts on this machine, each with its own tree under the test directory."""

    def __init__(self, bin_dir, tmp):
        Harness.__init__(self, bin_dir, tmp)
        self.p_port = self.port
        self.s_port = free_port()
        self.r_port = free_port()
        os.makedirs(self.path("t", "cron.d"))
        self.hosts = self.host_vars()
        self.common = self.common_vars()

    def sock(self, side):
        return self.path(side, "run", "ferrited.sock")

    def appliance(self, side, port):
        return {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "ansible_become": False,
            "appliance_rpc_socket": self.sock(side),
            "volumes_rpc_socket": self.sock(side),
            "appliance_binary_dir": self.bin_dir,
            "appliance_install_dir": self.path(side, "bin"),
            "appliance_config_dir": self.path(side, "etc"),
            "appliance_state_dir": self.path(side, "state"),
            "appliance_log_dir": self.path(side, "log"),
            "appliance_run_dir": self.path(side, "run"),
            "appliance_listen": ["127.0.0.1:%d" % port],
            "appliance_cores": "0",
            "appliance_pin_reactors": False,
            "appliance_service_manager": "script",
            "appliance_firewall": "none",
            "replication_binary_dir": self.bin_dir,
            "replication_install_dir": self.path(side, "bin"),
            "replication_config_dir": self.path(side, "etc"),
            "replication_state_dir": self.path(side, "state"),
            "replication_run_dir": self.path(side, "run"),
            "replication_log_dir": self.path(side, "log"),
            "replication_rpc_socket": self.sock(side),
            "replication_service_manager": "script",
        }

    def host_vars(self):
        primary = self.appliance("p", self.p_port)
        primary.update({
            "volumes_bdevs": [{"name": "disk0", "kind": "file", "path": self.path("data", "p0.img"), "size": "128MiB"}],
            "volumes_pools": [{"name": "tank", "bdevs": ["disk0"], "cluster_size": "1MiB"}],
            "volumes_volumes": [{"pool": "tank", "name": "db", "size": "16MiB"}],
            "volumes_subsystems": [{
                "nqn": DB, "allow_any_host": True,
                "listeners": [{"traddr": "127.0.0.1", "trsvcid": self.p_port}],
                "namespaces": [{"bdev": "tank/db@journal", "nsid": 1}],
            }],
        })
        secondary = self.appliance("s", self.s_port)
        secondary.update({
            "volumes_bdevs": [{"name": "disk0", "kind": "file", "path": self.path("data", "s0.img"), "size": "64MiB"}],
            "volumes_pools": [{"name": "dr", "bdevs": ["disk0"], "cluster_size": "1MiB"}],
            "volumes_volumes": [{"pool": "dr", "name": "db", "size": "16MiB"}],
            "volumes_subsystems": [{
                "nqn": DR, "allow_any_host": True,
                "listeners": [{"traddr": "127.0.0.1", "trsvcid": self.s_port}],
                "namespaces": [{"bdev": "dr/db", "nsid": 1}],
            }],
        })
        tape = {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "ansible_become": False,
            "tape_binary_dir": self.bin_dir,
            "tape_install_dir": self.path("t", "bin"),
            "tape_config_dir": self.path("t", "etc"),
            "tape_state_dir": self.path("t", "state"),
            "tape_run_dir": self.path("t", "run"),
            "tape_log_dir": self.path("t", "log"),
            "tape_service_manager": "script",
            "tape_cron_file": self.path("t", "cron.d", "ferrite-tape"),
            "tape_chunk_bytes": 262144,
            "tape_connections": 2,
            "tape_library": {"kind": "virtual", "dir": self.path("t", "vtl"), "slots": 4, "drives": 1,
                             "import_export": 1, "cartridge_capacity": 256 * MIB},
            "tape_cartridges": [{"barcode": "LTO001"}, {"barcode": "LTO002"}],
            "tape_jobs": [{"name": "dr-db-initial", "address": "127.0.0.1:%d" % self.s_port, "subnqn": DR,
                           "nsid": 1, "verify": True}],
            "tape_schedules": [{"name": "dr-db-nightly", "cron": "30 2 * * *",
                                "address": "127.0.0.1:%d" % self.s_port, "subnqn": DR, "nsid": 1}],
        }
        return {"primary": primary, "secondary": secondary, "tapegw": tape}

    def common_vars(self):
        return {
            "replication_groups": [{
                "group": 1,
                "mode": "async",
                "rpo_s": 30,
                "journal": {"pool": "tank", "size": "8MiB"},
                "namespaces": [{"bdev": "tank/db", "nsid": 1, "target_nsid": 1}],
                "pair": {"secondary": "127.0.0.1:%d" % self.r_port, "target": "127.0.0.1:%d" % self.s_port,
                         "nqn": DR, "connections": 2, "window": 64, "rto_ms": 300},
            }],
        }

    def inventory(self, variables, name):
        hosts, common = variables
        inv = {"all": {"vars": common, "children": {
            "ferrite_primary": {"hosts": {"primary": hosts["primary"]}},
            "ferrite_secondary": {"hosts": {"secondary": hosts["secondary"]}},
            "ferrite_tape": {"hosts": {"tapegw": hosts["tapegw"]}},
        }}}
        return self.write_inventory(inv, name)

    def call(self, socket_path, method, params=None):
        client = FerriteRpc(socket_path, 60.0)
        try:
            return client.call(method, params)
        finally:
            client.close()

    def pidfile(self, *parts):
        try:
            with open(self.path(*parts)) as f:
                return int(f.read().strip())
        except (IOError, OSError, ValueError):
            return None

    def pids(self):
        return {
            "ferrited primary": self.pidfile("p", "state", "ferrited.pid"),
            "ferrited secondary": self.pidfile("s", "state", "ferrited.pid"),
            "replicator primary": self.pidfile("p", "state", "ferrite-replicator-g1.pid"),
            "replicator secondary": self.pidfile("s", "state", "ferrite-replicator-g1.pid"),
            "ferrite-tape": self.pidfile("t", "state", "ferrite-tape.pid"),
        }

    def status(self, side):
        """A replicator's status document (its socket answers each connection with one)."""
        import socket as socketlib
        s = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
        s.settimeout(10)
        try:
            s.connect(self.path(side, "run", "repl-g1.sock"))
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            return json.loads(data.decode("utf-8"))
        finally:
            s.close()

    def state(self):
        """Everything the roles manage, to compare before and after a run."""
        out = {}
        for side in ("p", "s"):
            subs = {}
            for s in self.call(self.sock(side), "nvmf_get_subsystems"):
                if s.get("subtype") != "Discovery":
                    subs[s["nqn"]] = sorted((n["nsid"], n["bdev_name"]) for n in s.get("namespaces", []))
            out[side] = {
                "subsystems": subs,
                "bdevs": sorted(b["name"] for b in self.call(self.sock(side), "bdev_list")),
                "journals": sorted((j["group"], j["volume"], json.dumps(j["namespaces"], sort_keys=True))
                                   for j in self.call(self.sock(side), "journal_list") or []),
            }
        out["pairs"] = sorted((x["group"], x["mode"], x["link_policy"], x["sync_timeout_ms"], x["rpo_s"], x["paused"])
                              for x in self.call(self.sock("p"), "replication_status"))
        tape_sock = self.path("t", "run", "tape.sock")
        out["cartridges"] = sorted((c["barcode"], c["labelled_at"] is not None, c["element"] is not None)
                                   for c in self.call(tape_sock, "tape_cartridge_list"))
        out["jobs"] = sorted((j["job"], j["kind"], j["state"]) for j in self.call(tape_sock, "tape_job_status"))
        out["pids"] = self.pids()
        for name in ("repl-g1.toml",):
            for side in ("p", "s"):
                with open(self.path(side, "etc", name)) as f:
                    out["%s/%s" % (side, name)] = f.read()
        with open(self.path("t", "cron.d", "ferrite-tape")) as f:
            out["cron"] = f.read()
        return out

    def banner(self):
        return ("site test tree: %s, NVMe/TCP ports %d (primary) %d (secondary), replicator %d"
                % (self.tmp, self.p_port, self.s_port, self.r_port))

    def kill_daemon(self):
        for name, pid in self.pids().items():
            if pid is None or not alive(pid):
                continue
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    if b"ferrite" not in f.read():
                        continue
                os.kill(pid, 9)
            except (IOError, OSError):
                pass


def tape_jobs(h):
    return h.call(h.path("t", "run", "tape.sock"), "tape_job_status")


def scenario(h):
    base = (h.hosts, h.common)
    print("== 1. converge: primary, secondary with replication, tape gateway")
    rc, changed, out = h.run("site.yml", base, "apply")
    h.check("site.yml converges", rc == 0 and changed and changed > 0, out[-4000:])
    pids = h.pids()
    h.check("ferrited x2, a replicator per side and ferrite-tape run",
            all(pid is not None and alive(pid) for pid in pids.values()), json.dumps(pids))
    journals = h.call(h.sock("p"), "journal_list")
    h.check("the primary journals tank/db in group 1",
            len(journals) == 1 and journals[0]["group"] == 1 and journals[0]["volume"] == "tank/journal-g1"
            and [(n["bdev"], n["nsid"]) for n in journals[0]["namespaces"]] == [("tank/db", 1)], json.dumps(journals))
    st = h.state()
    h.check("the primary exports the journaled bdev, the secondary its replica",
            st["p"]["subsystems"] == {DB: [(1, "tank/db@journal")]} and st["s"]["subsystems"] == {DR: [(1, "dr/db")]},
            json.dumps(st))
    with open(h.path("s", "etc", "repl-g1.toml")) as f:
        sec = f.read()
    pair = h.call(h.sock("p"), "replication_status")
    h.check("group 1 is an async replication pair in ferrited, with its RPO and the replicator's status",
            [(x["group"], x["mode"], x["rpo_s"], x["paused"]) for x in pair] == [(1, "async", 30, False)]
            and (pair[0]["replicator"] or {}).get("role") == "primary", json.dumps(pair))
    h.check("the secondary's configuration maps group nsid 1 to its nsid 1",
            'role = "secondary"' in sec and "namespaces = [[1, 1]]" in sec
            and 'listen = "127.0.0.1:%d"' % h.r_port in sec, sec)
    h.check("two labelled cartridges in the virtual library",
            st["cartridges"] == [("LTO001", True, True), ("LTO002", True, True)], json.dumps(st["cartridges"]))
    jobs = tape_jobs(h)
    backup = [j for j in jobs if j["kind"] == "backup"]
    h.check("the declared backup is on tape, and was verified",
            len(backup) == 1 and backup[0]["state"] == "done" and backup[0]["source"]["name"] == "dr-db-initial"
            and backup[0]["done_bytes"] == 16 * MIB
            and [j["state"] for j in jobs if j["kind"] == "verify"] == ["done"], json.dumps(jobs))
    h.check("the schedule is a cron entry running ferrite-tape job start",
            re.search(r"^30 2 \* \* \* root .*/t/bin/ferrite-tape --socket .* job start --address 127.0.0.1:%d "
                      r"--subnqn %s --nsid 1 --name dr-db-nightly-" % (h.s_port, re.escape(DR)), st["cron"], re.M)
            is not None, st["cron"])

    print("== 2. replication: writes on the primary reach the secondary")
    perf = [os.path.join(h.bin_dir, "ferrite-perf"), "-r",
            "trtype:tcp traddr:127.0.0.1 trsvcid:%d subnqn:%s ns:1" % (h.p_port, DB),
            "-w", "randwrite", "-o", "4k", "-q", "4", "-t", "2", "--rate", "300", "--no-progress"]
    proc = subprocess.run(perf, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=120)
    h.check("ferrite-perf wrote to the journaled namespace", proc.returncode == 0, proc.stdout[-2000:])
    deadline = time.time() + 90
    j = None
    while time.time() < deadline:
        j = h.call(h.sock("p"), "journal_list")[0]
        if j["committed_seq"] > 0 and j["trimmed_seq"] == j["committed_seq"]:
            break
        time.sleep(0.2)
    writes = sum(n["write_ops"] for n in h.call(h.sock("p"), "stats_get")["namespaces"] if n["nqn"] == DB)
    h.check("every write (%d) was journaled, applied on the secondary and acknowledged (journal trimmed)" % writes,
            j is not None and writes > 0 and j["committed_seq"] >= writes and j["trimmed_seq"] == j["committed_seq"],
            "%d writes, journal %s" % (writes, json.dumps(j)))
    status = h.status("s")
    h.check("the secondary replicator reports the applied records",
            status.get("role") == "secondary" and status.get("applied", 0) > 0, json.dumps(status))
    st = h.state()

    print("== 3. idempotence")
    rc, changed, out = h.run("site.yml", base, "reapply")
    h.check("second run reports changed=0", rc == 0 and changed == 0, out[-4000:])
    rc, changed, out = h.run("site.yml", base, "check", check=True)
    h.check("--check --diff after convergence reports changed=0", rc == 0 and changed == 0, out[-4000:])
    h.check("no process restarted, nothing changed", h.state() == st)

    print("== 4. a changed inventory: a new backup, a changed schedule, group 1 in sync mode")
    hosts = copy.deepcopy(h.hosts)
    tape = hosts["tapegw"]
    tape["tape_jobs"].append({"name": "dr-db-replicated", "address": "127.0.0.1:%d" % h.s_port, "subnqn": DR,
                              "nsid": 1})
    tape["tape_schedules"][0]["cron"] = "15 3 * * 0"
    common = copy.deepcopy(h.common)
    common["replication_groups"][0].update({"mode": "sync", "lost_link": "degrade", "sync_timeout_ms": 20000})
    new = (hosts, common)
    rc, changed, out = h.run("site.yml", new, "change-check", check=True)
    h.check("--check --diff reports the three changes", rc == 0 and changed == 3, out[-4000:])
    h.check("--check shows the diff", "dr-db-replicated" in out and "15 3 * * 0" in out
            and '+    "mode": "sync"' in out and '+    "lost_link": "degrade"' in out, out[-4000:])
    h.check("--check changed nothing", h.state() == st)
    rc, changed, out = h.run("site.yml", new, "change")
    h.check("the changed inventory applies", rc == 0 and changed == 3, out[-4000:])
    pair = h.call(h.sock("p"), "replication_status", {"group": 1})[0]
    h.check("group 1 is now synchronous, degrading on a lost link",
            (pair["mode"], pair["link_policy"], pair["sync_timeout_ms"], pair["sync_state"]) == ("sync", "degrade", 20000, "sync"),
            json.dumps(pair))
    proc = subprocess.run(perf[:-5] + ["-t", "1", "--rate", "100", "--no-progress"], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)
    pair = h.call(h.sock("p"), "replication_status", {"group": 1})[0]
    h.check("sync writes complete once the secondary holds them (the pair counts waits, no timeout)",
            proc.returncode == 0 and pair["sync"]["waits"] > 0 and pair["sync"]["timeouts"] == 0
            and pair["sync_state"] == "sync", proc.stdout[-2000:] + json.dumps(pair))
    jobs = [x for x in tape_jobs(h) if x["kind"] == "backup"]
    h.check("the new backup is done and holds the whole replica",
            [(x["source"]["name"], x["state"], x["done_bytes"]) for x in jobs]
            == [("dr-db-initial", "done", 16 * MIB), ("dr-db-replicated", "done", 16 * MIB)], json.dumps(jobs))
    got = h.state()
    h.check("nothing else changed (processes, journals, exports, cartridges)",
            all(got[k] == st[k] for k in ("s", "cartridges", "pids", "p/repl-g1.toml", "s/repl-g1.toml"))
            and got["p"]["subsystems"] == st["p"]["subsystems"] and got["p"]["journals"] == st["p"]["journals"],
            json.dumps(got))
    # Only the two roles whose variables changed, on their hosts (the whole site ran above).
    rc, changed, out = h.run("site.yml", new, "change-again",
                             extra=["--tags", "replication,tape", "--limit", "primary,tapegw"])
    h.check("re-applying the changed inventory reports changed=0", rc == 0 and changed == 0, out[-4000:])

    print("== 5. wrong variables fail naming the variable, nothing changes")
    cases = []
    common = copy.deepcopy(new[1])
    common["replication_groups"][0]["lost_link"] = "sometimes"
    common["replication_groups"][0]["sync_timeout_ms"] = 5
    cases.append(("a lost-link policy and a sync timeout", (hosts, common), "primary",
                  "replication_groups[0].lost_link: sometimes must be fail or degrade; "
                  "replication_groups[0].sync_timeout_ms: 5 is not a number from 10 to 600000"))
    bad = copy.deepcopy(hosts)
    bad["tapegw"]["tape_cartridges"].append({"barcode": "LTO 3!"})
    cases.append(("bad barcode", (bad, new[1]), "tapegw", "tape_cartridges[2].barcode: LTO 3! is not a barcode"))
    common = copy.deepcopy(new[1])
    common["replication_groups"].append({"group": 2, "journal": {"pool": "nopool", "size": "8MiB"},
                                         "namespaces": [], "pair": dict(common["replication_groups"][0]["pair"])})
    cases.append(("journal in an unknown pool", (hosts, common), "primary",
                  "replication_groups[1].journal.pool: unknown pool nopool"))
    before = h.state()
    # Each on the host whose variable is wrong: the checks run before any change of its role.
    for i, (what, variables, host, message) in enumerate(cases):
        rc, changed, out = h.run("site.yml", variables, "wrong-%d" % i,
                                 extra=["--tags", "replication,tape", "--limit", host])
        h.check("%s fails naming the variable" % what, rc != 0 and message in out, out[-4000:])
        h.check("%s changed nothing" % what, h.state() == before)

    print("== 6. teardown")
    pids = h.pids()
    confirm = ["-e", "ferrite_teardown_confirm=true", "-e", "ferrite_teardown_remove_files=true"]
    rc, changed, out = h.run("teardown.yml", new, "teardown", extra=confirm)
    h.check("teardown runs", rc == 0 and changed and changed > 0, out[-4000:])
    deadline = time.time() + 30
    while any(alive(p) for p in pids.values()) and time.time() < deadline:
        time.sleep(0.1)
    h.check("every process stopped", not any(alive(p) for p in pids.values()), json.dumps(pids))
    left = []
    for side in ("p", "s", "t"):
        for root, _dirs, files in os.walk(h.path(side)):
            left += [os.path.relpath(os.path.join(root, f), h.tmp) for f in files]
    left += [os.path.join("data", f) for f in os.listdir(h.path("data"))]
    h.check("no file left behind (binaries, configuration, state, catalog, cartridges, schedules, images)",
            left == [], "%s" % left)
    rc, changed, out = h.run("teardown.yml", new, "teardown-again", extra=confirm)
    h.check("a second teardown reports changed=0", rc == 0 and changed == 0, out[-4000:])


def main():
    return drive(__doc__, Site, [scenario], BINARIES, "ferrite-site-")


if __name__ == "__main__":
    sys.exit(main())
