#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Ferrite contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: ferrite_host
short_description: Manage the hosts allowed to connect to a ferrited subsystem
version_added: 0.1.0
description:
  - Adds and removes host NQNs on a subsystem's allowed-hosts list
    (C(nvmf_subsystem_add_host), C(nvmf_subsystem_remove_host)), after reading
    C(nvmf_get_subsystems).
  - A removed host's controllers are failed and their connections closed, unless the
    subsystem allows any host.
author: Ferrite contributors (!UNKNOWN)
extends_documentation_fragment:
  - ferrite.storage.rpc
  - ferrite.storage.rpc.variable
  - ferrite.storage.rpc.subsystem_part
options:
  hosts:
    description: Host NQNs (as in C(/etc/nvme/hostnqn) of each host).
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: Exactly these two hosts may connect
  ferrite.storage.ferrite_host:
    nqn: nqn.2026-01.io.ferrite:db
    hosts:
      - nqn.2014-08.org.nvmexpress:uuid:6a1c2f1e-8c1e-4a53-9b1f-0d2b6c1c9f10
      - nqn.2026-01.com.example:web1
    exclusive: true
"""

RETURN = r"""
actions:
  description: The RPC calls made (or that would be made in check mode).
  returned: always
  type: list
  elements: str
object:
  description: The allowed host NQNs after the change.
  returned: when the subsystem exists (not in check mode)
  type: list
  elements: str
"""

from ansible_collections.ferrite.storage.plugins.module_utils.ferrite_rpc import (
    Plan,
    call_or_none,
    connect,
    fail_param,
    subsystem_part,
    nqn_error,
)
from ansible_collections.ferrite.storage.plugins.module_utils.ferrite_subsystem_part import (
    plan_members,
    subsystem_part_module,
)


def allowed(module, rpc, nqn):
    found = call_or_none(module, rpc, "nvmf_get_subsystems", {"nqn": nqn})
    if not found:
        return None
    return sorted(h.get("nqn") for h in found[0].get("hosts", []))


def main():
    module = subsystem_part_module("hosts", "str")
    p = module.params
    nqn = p["nqn"]
    for i, host in enumerate(p["hosts"]):
        err = nqn_error(host)
        if err:
            fail_param(module, "hosts[%d]" % i, err)

    rpc = connect(module)
    current = allowed(module, rpc, nqn)
    current = subsystem_part(module, current)
    plan = Plan()

    def change(method):
        return lambda host: plan.add(method, {"nqn": nqn, "host": host}, "%s %s %s" % (method, nqn, host))

    after = plan_members(module, current, sorted(set(p["hosts"])),
                         change("nvmf_subsystem_remove_host"), change("nvmf_subsystem_add_host"))
    plan.finish(module, rpc, {"hosts": current}, {"hosts": after},
                refresh=lambda r: allowed(module, r, nqn), object=current)


if __name__ == "__main__":
    main()
