#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Ferrite contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: ferrite_listener
short_description: Manage the addresses a ferrited subsystem listens on
version_added: 0.1.0
description:
  - Adds and removes a subsystem's listeners (C(nvmf_subsystem_add_listener),
    C(nvmf_subsystem_remove_listener)), after reading C(nvmf_get_subsystems).
  - A subsystem is reachable, and listed in the discovery log, only on its own listeners. The
    port is bound when the first subsystem adds it and closed when the last one removes it.
  - Before any change, every new address is checked; one another process already holds fails
    the task naming it, and nothing is changed.
author: Ferrite contributors (!UNKNOWN)
extends_documentation_fragment:
  - ferrite.storage.rpc
  - ferrite.storage.rpc.variable
  - ferrite.storage.rpc.subsystem_part
options:
  listeners:
    description: Listen addresses.
    type: list
    elements: dict
    required: true
    suboptions:
      trtype:
        description: Transport; only C(tcp).
        type: str
        default: tcp
      adrfam:
        description: C(ipv4) or C(ipv6); must match I(traddr). Derived from it when absent.
        type: str
      traddr:
        description: IP address.
        type: str
        required: true
      trsvcid:
        description: TCP port, 1-65535.
        type: str
        required: true
"""

EXAMPLES = r"""
- name: Reachable on 192.0.2.10:4420 only
  ferrite.storage.ferrite_listener:
    nqn: nqn.2026-01.io.ferrite:db
    listeners:
      - traddr: 192.0.2.10
        trsvcid: "4420"
    exclusive: true
"""

RETURN = r"""
actions:
  description: The RPC calls made (or that would be made in check mode).
  returned: always
  type: list
  elements: str
object:
  description: The subsystem's listen addresses after the change, C(ADDR:PORT).
  returned: when the subsystem exists (not in check mode)
  type: list
  elements: str
"""

from ansible_collections.ferrite.storage.plugins.module_utils.ferrite_rpc import (
    Plan,
    call_or_fail,
    connect,
    fail_param,
    subsystem_part,
    ferrited_listen_keys,
    listener_error,
    listener_key,
    listener_params,
    port_in_use_error,
)
from ansible_collections.ferrite.storage.plugins.module_utils.ferrite_subsystem_part import (
    plan_members,
    subsystem_part_module,
)


def show(key):
    host = key[1] if ":" not in key[1] else "[%s]" % key[1]
    return "%s:%d" % (host, key[2])


def state(module, rpc, nqn):
    """(this subsystem's listener keys or None, every address ferrited holds)."""
    subs = call_or_fail(module, rpc, "nvmf_get_subsystems")
    own = None
    for sub in subs:
        if sub.get("nqn") == nqn:
            own = sorted(listener_key(a) for a in sub.get("listen_addresses", []))
    return own, ferrited_listen_keys(subs)


def main():
    listener_spec = dict(
        trtype=dict(type="str", default="tcp"),
        adrfam=dict(type="str"),
        traddr=dict(type="str", required=True),
        trsvcid=dict(type="str", required=True),
    )
    module = subsystem_part_module("listeners", "dict", listener_spec)
    p = module.params
    nqn = p["nqn"]
    wanted = []
    for i, listener in enumerate(p["listeners"]):
        given = dict((k, v) for k, v in listener.items() if v is not None)
        err = listener_error(given)
        if err:
            fail_param(module, "listeners[%d]" % i, err)
        key = listener_key(given)
        if key in [w[0] for w in wanted]:
            fail_param(module, "listeners[%d]" % i, "%s is listed twice" % show(key))
        wanted.append((key, given, i))

    rpc = connect(module)
    current, bound = state(module, rpc, nqn)
    current = subsystem_part(module, current)
    plan = Plan()
    keys = [w[0] for w in wanted]
    if p["state"] == "present":
        # Every new address is checked before anything changes.
        for key, given, i in wanted:
            if key not in current and key not in bound:
                err = port_in_use_error(given)
                if err:
                    fail_param(module, "listeners[%d]" % i, err)

    def change(method):
        return lambda key: plan.add(method, listener_params(nqn, {"traddr": key[1], "trsvcid": key[2]}),
                                    "%s %s %s" % (method, nqn, show(key)))

    after = plan_members(module, current, keys,
                         change("nvmf_subsystem_remove_listener"), change("nvmf_subsystem_add_listener"))

    def refresh(r):
        own = state(module, r, nqn)[0]
        return [show(k) for k in own or []]

    plan.finish(module, rpc, {"listeners": [show(k) for k in current]},
                {"listeners": [show(k) for k in after]}, refresh=refresh,
                object=[show(k) for k in current])


if __name__ == "__main__":
    main()
