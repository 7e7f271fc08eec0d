#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Ferrite contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: ferrite_tape_job
short_description: Make sure a named backup of a namespace is on tape
version_added: 0.2.0
description:
  - Talks to the C(ferrite-tape) gateway's JSON-RPC socket. A job is identified by its I(name)
    (the name recorded in the catalog). When the catalog holds a backup of that name that is
    C(done) or C(running), nothing happens; otherwise a backup of the namespace starts
    (C(tape_job_start)). A failed, cancelled, interrupted or expired backup of that name is
    started again.
  - With I(wait), the task waits for the job to end and fails when it does not end C(done);
    with I(verify) a finished backup is read back once (C(tape_job_verify)) the first time it
    is made.
  - Jobs are never deleted, there is no I(state=absent) (cartridges are recycled instead).
author: Ferrite contributors (!UNKNOWN)
extends_documentation_fragment:
  - ferrite.storage.rpc
  - ferrite.storage.rpc.variable
options:
  rpc_socket:
    description: Path of the gateway's JSON-RPC socket.
    type: path
    default: /run/ferrite/tape.sock
  name:
    description: The backup's name in the catalog (a snapshot or volume name).
    type: str
    required: true
  address:
    description: C(host:port) of the appliance's NVMe/TCP listener.
    type: str
    required: true
  subnqn:
    description: The subsystem exporting the namespace.
    type: str
    required: true
  nsid:
    description: The namespace to back up.
    type: int
    required: true
  connections:
    description: NVMe/TCP connections of the job (1-64); default the gateway's.
    type: int
  wait:
    description: Wait for the job to end; fail unless it ends C(done).
    type: bool
    default: true
  verify:
    description: With I(wait), read a new backup back and check every block.
    type: bool
    default: false
  timeout:
    description: Seconds to wait with I(wait).
    type: int
    default: 3600
"""

EXAMPLES = r"""
- name: The nightly snapshot of tank/db on tape
  ferrite.storage.ferrite_tape_job:
    name: tank/db-nightly
    address: 192.0.2.10:4420
    subnqn: nqn.2026-01.com.example:backup
    nsid: 1
"""

RETURN = r"""
actions:
  description: The RPC calls made (or that would be made in check mode).
  returned: always
  type: list
  elements: str
job:
  description: The job as C(tape_job_status) shows it.
  returned: when a job of that name exists at the end
  type: dict
"""

import ipaddress
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ferrite.storage.plugins.module_utils.ferrite_rpc import (
    RpcError,
    call_or_fail,
    connect,
    fail_param,
    nqn_error,
    object_spec,
)

KEEP = ("done", "running")


def address_error(text):
    host, sep, port = str(text).rpartition(":")
    if not sep:
        return "%r is not host:port" % text
    try:
        ipaddress.ip_address(host.strip("[]"))
        port = int(port)
    except ValueError:
        return "%r is not IP:port (IPv4 or [IPv6])" % text
    if not 1 <= port <= 65535:
        return "%r: the port is not 1-65535" % text
    return None


def named_jobs(module, rpc, name):
    jobs = call_or_fail(module, rpc, "tape_job_status") or []
    return [j for j in jobs if j.get("kind") == "backup" and isinstance(j.get("source"), dict)
            and j["source"].get("name") == name]


def wait_for(module, rpc, job, what):
    deadline = time.time() + module.params["timeout"]
    while True:
        st = call_or_fail(module, rpc, "tape_job_status", {"job": job})
        if st.get("state") != "running":
            if st.get("state") != "done":
                rpc.close()
                module.fail_json(msg="%s job %d of %s ended %s: %s"
                                 % (what, job, module.params["name"], st.get("state"), st.get("error")),
                                 job=st, changed=True)
            return st
        if time.time() > deadline:
            rpc.close()
            module.fail_json(msg="%s job %d of %s still runs after %d s"
                             % (what, job, module.params["name"], module.params["timeout"]),
                             job=st, changed=True)
        time.sleep(0.2)


def main():
    spec = object_spec(
        name=dict(type="str", required=True),
        address=dict(type="str", required=True),
        subnqn=dict(type="str", required=True),
        nsid=dict(type="int", required=True),
        connections=dict(type="int"),
        wait=dict(type="bool", default=True),
        verify=dict(type="bool", default=False),
        timeout=dict(type="int", default=3600),
    )
    spec["rpc_socket"] = dict(type="path", default="/run/ferrite/tape.sock")
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    if not p["name"]:
        fail_param(module, "name", "a name is required")
    err = address_error(p["address"])
    if err:
        fail_param(module, "address", err)
    err = nqn_error(p["subnqn"])
    if err:
        fail_param(module, "subnqn", err)
    if not 1 <= p["nsid"] <= 0xFFFFFFFE:
        fail_param(module, "nsid", "%d is not a namespace number" % p["nsid"])
    if p["connections"] is not None and not 1 <= p["connections"] <= 64:
        fail_param(module, "connections", "%d is not 1-64" % p["connections"])

    rpc = connect(module)
    jobs = named_jobs(module, rpc, p["name"])
    kept = [j for j in jobs if j.get("state") in KEEP]
    if kept:
        job = kept[-1]
        if p["wait"] and job.get("state") == "running" and not module.check_mode:
            job = wait_for(module, rpc, job["job"], "backup")
        rpc.close()
        module.exit_json(changed=False, actions=[], job=job)

    params = {"kind": "backup", "address": p["address"], "subnqn": p["subnqn"], "nsid": p["nsid"],
              "name": p["name"]}
    if p["connections"] is not None:
        params["connections"] = p["connections"]
    actions = ["tape_job_start %s (nsid %d of %s at %s)" % (p["name"], p["nsid"], p["subnqn"], p["address"])]
    if p["wait"] and p["verify"]:
        actions.append("tape_job_verify of the new backup")
    before = {"name": p["name"], "state": jobs[-1].get("state") if jobs else None}
    out = dict(changed=True, actions=actions)
    if module._diff:
        out["diff"] = dict(before=before, after={"name": p["name"], "state": "done" if p["wait"] else "running"})
    if module.check_mode:
        rpc.close()
        module.exit_json(**out)
    try:
        started = rpc.call("tape_job_start", params)
    except RpcError as e:
        rpc.close()
        module.fail_json(msg="tape_job_start %s: %s" % (p["name"], e), rpc_code=e.code)
    job = {"job": started["job"], "state": "running"}
    if p["wait"]:
        job = wait_for(module, rpc, started["job"], "backup")
        if p["verify"]:
            v = call_or_fail(module, rpc, "tape_job_verify", {"job": started["job"]})
            out["verify"] = wait_for(module, rpc, v["job"], "verify")
    rpc.close()
    out["job"] = job
    module.exit_json(**out)


if __name__ == "__main__":
    main()
