#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Ferrite contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: ferrite_daemon
short_description: Run a Ferrite gateway process on a host without systemd
version_added: 0.2.0
description:
  - The documented fallback of the C(replication) and C(tape) roles where systemd does not run
    (containers, test machines); it starts the command in its own session with its output appended
    to a log file and its pid in a pid file, stops it with SIGTERM (SIGKILL after I(timeout)).
  - A process counts as running when the pid file names a live process whose command line
    contains I(match), so a recycled pid is not mistaken for the daemon.
  - C(started) changes nothing when it runs; C(stopped) nothing when it does not; C(restarted)
    always restarts (for handlers).
author: Ferrite contributors (!UNKNOWN)
options:
  name:
    description: A name for messages.
    type: str
    required: true
  command:
    description: The program and its arguments.
    type: list
    elements: str
  pidfile:
    description: Where the pid is kept.
    type: path
    required: true
  logfile:
    description: Where the process's standard output and error are appended.
    type: path
  match:
    description: Text the running process's command line must contain; default the program's file name.
    type: str
  environment:
    description: Extra environment variables.
    type: dict
    default: {}
  wait_for:
    description: A path (for example a control socket) that must exist before the start counts as done.
    type: path
  timeout:
    description: Seconds to wait for I(wait_for) at start and for the process to exit at stop.
    type: int
    default: 30
  state:
    description: C(started), C(stopped) or C(restarted).
    type: str
    choices: [started, stopped, restarted]
    default: started
attributes:
  check_mode:
    support: full
    description: Reports whether it would start or stop the process.
  diff_mode:
    support: full
    description: Shows the running state before and after.
"""

EXAMPLES = r"""
- name: Run the tape gateway
  ferrite.storage.ferrite_daemon:
    name: ferrite-tape
    command: [/usr/local/bin/ferrite-tape, daemon, --config, /etc/ferrite/tape.toml]
    pidfile: /var/lib/ferrite-tape/ferrite-tape.pid
    logfile: /var/log/ferrite/ferrite-tape.log
    wait_for: /run/ferrite/tape.sock
"""

RETURN = r"""
pid:
  description: The running process's pid (none when stopped).
  returned: always
  type: int
"""

import os
import signal
import time

from ansible.module_utils.basic import AnsibleModule


def running_pid(pidfile, match):
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
    except (IOError, OSError, ValueError):
        return None
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        with open("/proc/%d/stat" % pid) as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return None
    except (IOError, OSError, IndexError):
        return None
    return pid if match in cmdline else None


def stop(module, pid):
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        return
    deadline = time.time() + module.params["timeout"]
    while time.time() < deadline:
        if running_pid(module.params["pidfile"], module.params["match"]) is None:
            return
        time.sleep(0.1)
    module.warn("%s (pid %d) did not stop within %d s: killed" % (module.params["name"], pid, module.params["timeout"]))
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def tail(path, lines=20):
    try:
        with open(path, "rb") as f:
            return b"\n".join(f.read().splitlines()[-lines:]).decode("utf-8", "replace")
    except (IOError, OSError):
        return ""


def spawn(command, env, logfile):
    """Forks the daemon into its own session, stdin from /dev/null, output appended to
    `logfile`, no other descriptor inherited (Ansible waits for its pipes to close)."""
    pid = os.fork()
    if pid:
        return pid
    try:
        os.setsid()
        fd_in = os.open(os.devnull, os.O_RDONLY)
        fd_out = os.open(logfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        os.dup2(fd_in, 0)
        os.dup2(fd_out, 1)
        os.dup2(fd_out, 2)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        os.execvpe(command[0], command, env)
    except BaseException:  # the child never returns into the module
        os._exit(127)


def start(module):
    p = module.params
    env = dict(os.environ)
    env.update(dict((k, str(v)) for k, v in p["environment"].items()))
    logfile = p["logfile"] or os.devnull
    if p["wait_for"] and os.path.exists(p["wait_for"]) and not os.path.isdir(p["wait_for"]):
        os.unlink(p["wait_for"])  # a stale socket of a killed process
    if not os.access(p["command"][0], os.X_OK):
        module.fail_json(msg="%s: cannot run %s: not an executable file" % (p["name"], p["command"][0]))
    pid = spawn(p["command"], env, logfile)
    with open(p["pidfile"], "w") as f:
        f.write("%d\n" % pid)
    deadline = time.time() + p["timeout"]
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            os.unlink(p["pidfile"])
            module.fail_json(msg="%s exited at start with status %d; last lines of %s:\n%s"
                             % (p["name"], os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status),
                                logfile, tail(logfile)))
        if not p["wait_for"] or os.path.exists(p["wait_for"]):
            return pid
        if time.time() > deadline:
            stop(module, pid)
            module.fail_json(msg="%s did not create %s within %d s; last lines of %s:\n%s"
                             % (p["name"], p["wait_for"], p["timeout"], logfile, tail(logfile)))
        time.sleep(0.1)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            command=dict(type="list", elements="str"),
            pidfile=dict(type="path", required=True),
            logfile=dict(type="path"),
            match=dict(type="str"),
            environment=dict(type="dict", default={}),
            wait_for=dict(type="path"),
            timeout=dict(type="int", default=30),
            state=dict(type="str", choices=["started", "stopped", "restarted"], default="started"),
        ),
        required_if=[("state", "started", ["command"]), ("state", "restarted", ["command"])],
        supports_check_mode=True,
    )
    p = module.params
    if p["match"] is None:
        if not p["command"]:
            module.fail_json(msg="match: required when no command is given")
        p["match"] = os.path.basename(p["command"][0])
    pid = running_pid(p["pidfile"], p["match"])
    before = {"running": pid is not None}
    want_running = p["state"] != "stopped"
    changed = p["state"] == "restarted" or (pid is not None) != want_running
    out = dict(changed=changed, pid=pid)
    if changed and module._diff:
        out["diff"] = dict(before=before, after={"running": want_running})
    if not changed or module.check_mode:
        module.exit_json(**out)
    if pid is not None:
        stop(module, pid)
    if not want_running:
        if os.path.exists(p["pidfile"]):
            os.unlink(p["pidfile"])
        out["pid"] = None
        module.exit_json(**out)
    out["pid"] = start(module)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
