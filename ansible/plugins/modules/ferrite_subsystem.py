#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Ferrite contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: ferrite_subsystem
short_description: Manage NVMe-oF subsystems of ferrited
version_added: 0.1.0
description:
  - Creates a subsystem (C(nvmf_create_subsystem)), switches allow-any-host
    (C(nvmf_subsystem_allow_any_host)) or deletes it (C(nvmf_delete_subsystem)), after reading
    C(nvmf_get_subsystems).
  - Its namespaces, allowed hosts and listeners are managed by M(ferrite.storage.ferrite_namespace),
    M(ferrite.storage.ferrite_host) and M(ferrite.storage.ferrite_listener).
  - Serial number, model number and maximum namespaces are set at creation; declaring other
    values for an existing subsystem fails the task naming the parameter.
author: Ferrite contributors (!UNKNOWN)
extends_documentation_fragment:
  - ferrite.storage.rpc
  - ferrite.storage.rpc.variable
options:
  nqn:
    description: The subsystem NQN (C(nqn.yyyy-mm.reverse.domain:name)), not the discovery NQN.
    type: str
    required: true
  state:
    description: C(present) creates it when missing, C(absent) deletes it (connected hosts lose their queues).
    type: str
    choices: [present, absent]
    default: present
  serial_number:
    description: 1-20 printable ASCII characters; default a random C(FE...).
    type: str
  model_number:
    description: 1-40 printable ASCII characters; default C(Ferrite).
    type: str
  allow_any_host:
    description: Let any host connect (C(true)) or only the allowed hosts (C(false)).
    type: bool
    default: false
  max_namespaces:
    description: Highest NSID, 1-1024 (default 1024).
    type: int
"""

EXAMPLES = r"""
- name: A subsystem only listed hosts may use
  ferrite.storage.ferrite_subsystem:
    nqn: nqn.2026-01.io.ferrite:db
    serial_number: DB0001
    allow_any_host: false
"""

RETURN = r"""
actions:
  description: The RPC calls made (or that would be made in check mode).
  returned: always
  type: list
  elements: str
object:
  description: The subsystem as C(nvmf_get_subsystems) shows it.
  returned: when the subsystem exists at the end (not in check mode)
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ferrite.storage.plugins.module_utils.ferrite_rpc import (
    Plan,
    call_first,
    connect,
    fail_param,
    subsystem_nqn_error,
    object_spec,
    pick,
)


def printable_error(text, longest):
    if not 1 <= len(text) <= longest or any(ord(c) < 0x20 or ord(c) > 0x7e for c in text):
        return "%r must be 1-%d printable ASCII characters" % (text, longest)
    return None


def find(module, rpc, nqn):
    return call_first(module, rpc, "nvmf_get_subsystems", {"nqn": nqn})


def summary(sub):
    return pick(sub, ("nqn", "serial_number", "model_number", "allow_any_host", "max_namespaces"))


def main():
    spec = object_spec(
        nqn=dict(type="str", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        serial_number=dict(type="str"),
        model_number=dict(type="str"),
        allow_any_host=dict(type="bool", default=False),
        max_namespaces=dict(type="int"),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params

    err = subsystem_nqn_error(p["nqn"])
    if err:
        fail_param(module, "nqn", err)
    for key, longest in (("serial_number", 20), ("model_number", 40)):
        if p[key] is not None:
            err = printable_error(p[key], longest)
            if err:
                fail_param(module, key, err)
    if p["max_namespaces"] is not None and not 1 <= p["max_namespaces"] <= 1024:
        fail_param(module, "max_namespaces", "%d is not from 1 to 1024" % p["max_namespaces"])

    rpc = connect(module)
    current = find(module, rpc, p["nqn"])
    before = summary(current)
    plan = Plan()
    nqn = p["nqn"]
    if p["state"] == "absent":
        if current:
            plan.add("nvmf_delete_subsystem", {"nqn": nqn}, "nvmf_delete_subsystem %s" % nqn)
        plan.finish(module, rpc, before, {})

    def refresh(r):
        return summary(find(module, r, nqn))

    if current:
        for key in ("serial_number", "model_number", "max_namespaces"):
            if p[key] is not None and p[key] != current.get(key):
                fail_param(module, key, "subsystem %s exists with %s %r; it is set at creation only"
                           % (nqn, key, current.get(key)))
        after = dict(before)
        if bool(current.get("allow_any_host")) != p["allow_any_host"]:
            plan.add("nvmf_subsystem_allow_any_host", {"nqn": nqn, "allow_any_host": p["allow_any_host"]},
                     "nvmf_subsystem_allow_any_host %s %s" % (nqn, p["allow_any_host"]))
            after["allow_any_host"] = p["allow_any_host"]
        plan.finish(module, rpc, before, after, refresh=refresh, object=before)

    params = {"nqn": nqn, "allow_any_host": p["allow_any_host"]}
    for key in ("serial_number", "model_number", "max_namespaces"):
        if p[key] is not None:
            params[key] = p[key]
    plan.add("nvmf_create_subsystem", params, "nvmf_create_subsystem %s" % nqn)
    after = {"nqn": nqn, "serial_number": p["serial_number"], "model_number": p["model_number"] or "Ferrite",
             "allow_any_host": p["allow_any_host"], "max_namespaces": p["max_namespaces"] or 1024}
    plan.finish(module, rpc, before, after, refresh=refresh)


if __name__ == "__main__":
    main()
