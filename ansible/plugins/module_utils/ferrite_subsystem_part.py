# -*- coding: utf-8 -*-
# Copyright: Ferrite contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""What the modules managing one list of a subsystem share (ferrite_host, ferrite_listener,
ferrite_namespace): their options, the subsystem NQN check and the add/remove plan of a set."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ferrite.storage.plugins.module_utils.ferrite_rpc import (
    fail_param,
    object_spec,
    subsystem_nqn_error,
)


def subsystem_part_module(list_name, elements, options=None):
    """The module of one subsystem list: options `nqn`, `list_name` (a list of `elements`,
    each with `options` when dicts), `state`, `exclusive`; `nqn` is checked."""
    members = dict(type="list", elements=elements, required=True)
    if options is not None:
        members["options"] = options
    spec = object_spec(
        nqn=dict(type="str", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        exclusive=dict(type="bool", default=False),
    )
    spec[list_name] = members
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    err = subsystem_nqn_error(module.params["nqn"])
    if err:
        fail_param(module, "nqn", err)
    return module


def plan_members(module, current, wanted, remove, add):
    """Calls `remove(key)` and `add(key)` for what makes the subsystem's `current` keys
    match the declared `wanted` ones (state, exclusive); returns the keys after the change."""
    p = module.params
    if p["state"] == "absent":
        for key in wanted:
            if key in current:
                remove(key)
        return [k for k in current if k not in wanted]
    if p["exclusive"]:
        for key in current:
            if key not in wanted:
                remove(key)
    for key in wanted:
        if key not in current:
            add(key)
    return sorted(set(wanted) | (set() if p["exclusive"] else set(current)))
