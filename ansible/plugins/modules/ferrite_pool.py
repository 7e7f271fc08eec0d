#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Ferrite contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: ferrite_pool
short_description: Manage ferrited storage pools
version_added: 0.1.0
description:
  - Creates a pool over blank bdevs (C(pool_create)), sets its space warning
    (C(pool_set_space_warning)) or destroys it (C(pool_delete)), after reading C(pool_list).
  - The members and cluster size of an existing pool cannot change; declaring others fails the
    task naming the parameter.
author: Ferrite contributors (!UNKNOWN)
extends_documentation_fragment:
  - ferrite.storage.rpc
  - ferrite.storage.rpc.variable
options:
  name:
    description: Pool name, 1-63 characters of A-Z a-z 0-9 . _ -, not starting with . or -.
    type: str
    required: true
  state:
    description: C(present) creates the pool when missing, C(absent) destroys it.
    type: str
    choices: [present, absent]
    default: present
  bdevs:
    description: Member bdevs (registered, blank, in no pool, exported by no namespace). Required to create.
    type: list
    elements: str
  cluster_size:
    description: Cluster size (power of two, 64KiB to 64MiB); only used at creation. Default 1MiB.
    type: str
  space_warning:
    description: Percent of allocated clusters above which the pool raises a space warning (1-100).
    type: int
  force:
    description: With I(state=absent), destroy the pool even while it holds volumes and snapshots.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: A pool over two file backends
  ferrite.storage.ferrite_pool:
    name: tank
    bdevs: [disk0, disk1]
    cluster_size: 1MiB
    space_warning: 85
"""

RETURN = r"""
actions:
  description: The RPC calls made (or that would be made in check mode).
  returned: always
  type: list
  elements: str
object:
  description: The pool as C(pool_list) shows it.
  returned: when the pool exists at the end (not in check mode)
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ferrite.storage.plugins.module_utils.ferrite_rpc import (
    Plan,
    bdev_name_error,
    call_or_fail,
    connect,
    fail_param,
    name_error,
    parse_size,
    object_spec,
)


def find_pool(module, rpc, name):
    for pool in call_or_fail(module, rpc, "pool_list"):
        if pool.get("name") == name:
            return pool
    return None


def summary(pool):
    if not pool:
        return {}
    return {
        "name": pool.get("name"),
        "bdevs": [m.get("device") for m in pool.get("members", [])],
        "cluster_size": pool.get("cluster_size"),
        "space_warning": pool.get("warning_percent"),
    }


def main():
    spec = object_spec(
        name=dict(type="str", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        bdevs=dict(type="list", elements="str"),
        cluster_size=dict(type="str"),
        space_warning=dict(type="int"),
        force=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params

    err = name_error(p["name"])
    if err:
        fail_param(module, "name", err)
    cluster = None
    if p["cluster_size"] is not None:
        cluster, err = parse_size(p["cluster_size"])
        if err:
            fail_param(module, "cluster_size", err)
        if cluster < 65536 or cluster > 64 << 20 or cluster & (cluster - 1):
            fail_param(module, "cluster_size", "%s must be a power of two from 64KiB to 64MiB" % p["cluster_size"])
    if p["space_warning"] is not None and not 1 <= p["space_warning"] <= 100:
        fail_param(module, "space_warning", "%d is not a percent from 1 to 100" % p["space_warning"])
    for i, bdev in enumerate(p["bdevs"] or []):
        err = bdev_name_error(bdev)
        if err:
            fail_param(module, "bdevs[%d]" % i, err)
    if p["bdevs"] is not None and len(set(p["bdevs"])) != len(p["bdevs"]):
        fail_param(module, "bdevs", "a bdev is listed twice")

    rpc = connect(module)
    current = find_pool(module, rpc, p["name"])
    before = summary(current)
    plan = Plan()
    if p["state"] == "absent":
        if current:
            plan.add("pool_delete", {"name": p["name"], "force": p["force"]}, "pool_delete %s" % p["name"])
        plan.finish(module, rpc, before, {})

    def refresh(r):
        return summary(find_pool(module, r, p["name"]))

    if current:
        members = before["bdevs"]
        if p["bdevs"] is not None and sorted(members) != sorted(p["bdevs"]):
            fail_param(module, "bdevs", "pool %s exists over %s; its members cannot change"
                       % (p["name"], ", ".join(members)))
        if cluster is not None and cluster != current.get("cluster_size"):
            fail_param(module, "cluster_size", "pool %s exists with cluster size %s; it is chosen at creation only"
                       % (p["name"], current.get("cluster_size")))
        after = dict(before)
        if p["space_warning"] is not None and p["space_warning"] != current.get("warning_percent"):
            plan.add("pool_set_space_warning", {"name": p["name"], "percent": p["space_warning"]},
                     "pool_set_space_warning %s %d" % (p["name"], p["space_warning"]))
            after["space_warning"] = p["space_warning"]
        plan.finish(module, rpc, before, after, refresh=refresh, object=before)

    if not p["bdevs"]:
        fail_param(module, "bdevs", "required to create pool %s" % p["name"])
    known = set(b.get("name") for b in call_or_fail(module, rpc, "bdev_list"))
    for i, bdev in enumerate(p["bdevs"]):
        # In check mode the bdev may come from an earlier task of the same play.
        if bdev not in known and not module.check_mode:
            fail_param(module, "bdevs[%d]" % i, "no bdev %s" % bdev)
    params = {"name": p["name"], "bdevs": p["bdevs"]}
    if cluster is not None:
        params["cluster_size"] = cluster
    plan.add("pool_create", params, "pool_create %s" % p["name"])
    after = {"name": p["name"], "bdevs": p["bdevs"], "cluster_size": cluster or (1 << 20),
             "space_warning": p["space_warning"] or 80}
    if p["space_warning"] is not None:
        plan.add("pool_set_space_warning", {"name": p["name"], "percent": p["space_warning"]},
                 "pool_set_space_warning %s %d" % (p["name"], p["space_warning"]))
    plan.finish(module, rpc, before, after, refresh=refresh)


if __name__ == "__main__":
    main()
