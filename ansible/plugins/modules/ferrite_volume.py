#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Ferrite contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: ferrite_volume
short_description: Manage volumes and clones of a ferrited pool
version_added: 0.1.0
description:
  - Creates a thin or thick volume (C(volume_create)) or a clone of a snapshot
    (C(clone_create)), resizes it online (C(volume_resize)) or deletes it (C(volume_delete)),
    after reading C(volume_list).
  - Every volume is the bdev C(<pool>/<name>), which M(ferrite.storage.ferrite_namespace) exports.
author: Ferrite contributors (!UNKNOWN)
extends_documentation_fragment:
  - ferrite.storage.rpc
  - ferrite.storage.rpc.variable
options:
  pool:
    description: The pool holding the volume.
    type: str
    required: true
  name:
    description: Volume name within the pool.
    type: str
    required: true
  state:
    description: C(present) creates or resizes, C(absent) deletes.
    type: str
    choices: [present, absent]
    default: present
  size:
    description:
      - Size in bytes or with a binary unit (C(10GiB)), a multiple of the pool's block size.
      - Required to create a volume; for a clone, optional (default the snapshot's size).
      - A different size on an existing volume resizes it online.
    type: str
  thin:
    description: Thin (clusters allocated on first write) or thick (all allocated at creation).
    type: bool
    default: true
  clone_of:
    description:
      - Create the volume as a writable clone of this snapshot (C(<pool>/<snapshot>) or a snapshot
        name in I(pool)). Only used at creation.
    type: str
  allow_shrink:
    description:
      - Allow a smaller I(size) to drop clusters that hold data (C(volume_resize) with C(force)).
      - Without it, shrinking below written data fails and nothing changes.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: A 20 GiB thin volume
  ferrite.storage.ferrite_volume:
    pool: tank
    name: db
    size: 20GiB

- name: A clone of the nightly snapshot
  ferrite.storage.ferrite_volume:
    pool: tank
    name: db-test
    clone_of: tank/nightly
"""

RETURN = r"""
actions:
  description: The RPC calls made (or that would be made in check mode).
  returned: always
  type: list
  elements: str
object:
  description: The volume as C(volume_info) shows it.
  returned: when the volume exists at the end (not in check mode)
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ferrite.storage.plugins.module_utils.ferrite_rpc import (
    Plan,
    call_or_fail,
    call_or_none,
    connect,
    fail_param,
    name_error,
    parse_size,
    object_spec,
)


def info(module, rpc, ref):
    return call_or_none(module, rpc, "volume_info", {"name": ref})


def summary(vol):
    if not vol:
        return {}
    return {
        "name": vol.get("bdev_name"),
        "kind": vol.get("kind"),
        "size_bytes": vol.get("size_bytes"),
        "provisioning": vol.get("provisioning"),
        "parent": vol.get("parent"),
    }


def main():
    spec = object_spec(
        pool=dict(type="str", required=True),
        name=dict(type="str", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        size=dict(type="str"),
        thin=dict(type="bool", default=True),
        clone_of=dict(type="str"),
        allow_shrink=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params

    for key in ("pool", "name"):
        err = name_error(p[key])
        if err:
            fail_param(module, key, err)
    size = None
    if p["size"] is not None:
        size, err = parse_size(p["size"])
        if err:
            fail_param(module, "size", err)
        if size == 0:
            fail_param(module, "size", "must not be 0")
    snapshot = None
    if p["clone_of"] is not None:
        snapshot = p["clone_of"] if "/" in p["clone_of"] else "%s/%s" % (p["pool"], p["clone_of"])
        spool, sname = snapshot.split("/", 1)
        err = name_error(spool) or name_error(sname)
        if err:
            fail_param(module, "clone_of", err)
        if spool != p["pool"]:
            fail_param(module, "clone_of", "snapshot %s is not in pool %s" % (snapshot, p["pool"]))
    ref = "%s/%s" % (p["pool"], p["name"])

    rpc = connect(module)
    current = info(module, rpc, ref)
    before = summary(current)
    plan = Plan()
    if p["state"] == "absent":
        if current:
            if current.get("kind") == "snapshot":
                fail_param(module, "name", "%s is a snapshot (use ferrite_snapshot)" % ref)
            plan.add("volume_delete", {"name": ref}, "volume_delete %s" % ref)
        plan.finish(module, rpc, before, {})

    def refresh(r):
        return summary(info(module, r, ref))

    if current:
        if current.get("kind") == "snapshot":
            fail_param(module, "name", "%s is a snapshot, not a volume" % ref)
        want_prov = "thin" if p["thin"] else "thick"
        if current.get("provisioning") not in (None, want_prov):
            fail_param(module, "thin", "%s exists %s-provisioned; provisioning cannot change"
                       % (ref, current.get("provisioning")))
        after = dict(before)
        if size is not None and size != current.get("size_bytes"):
            plan.add("volume_resize", {"name": ref, "size": size, "force": p["allow_shrink"]},
                     "volume_resize %s %d -> %d" % (ref, current.get("size_bytes"), size))
            after["size_bytes"] = size
        plan.finish(module, rpc, before, after, refresh=refresh, object=before)

    pools = dict((x.get("name"), x) for x in call_or_fail(module, rpc, "pool_list"))
    # In check mode the pool (and the snapshot of a clone) may come from an earlier task of the
    # same play, which made no change: the volume would be created over it.
    pending = module.check_mode
    if p["pool"] not in pools and not pending:
        fail_param(module, "pool", "no pool %s" % p["pool"])
    block = pools.get(p["pool"], {}).get("block_size") or 1
    if size is not None and size % block:
        fail_param(module, "size", "%d is not a multiple of pool %s's block size %d" % (size, p["pool"], block))
    if snapshot is not None:
        snap = info(module, rpc, snapshot)
        if snap is None and pending:
            snap = {"kind": "snapshot", "size_bytes": size}
        if not snap or snap.get("kind") != "snapshot":
            fail_param(module, "clone_of", "no snapshot %s" % snapshot)
        plan.add("clone_create", {"snapshot": snapshot, "name": p["name"]},
                 "clone_create %s from %s" % (ref, snapshot))
        after = {"name": ref, "kind": "clone", "size_bytes": snap.get("size_bytes"), "parent": snapshot}
        if size is not None and snap.get("size_bytes") is not None and size != snap.get("size_bytes"):
            plan.add("volume_resize", {"name": ref, "size": size, "force": p["allow_shrink"]},
                     "volume_resize %s %d -> %d" % (ref, snap.get("size_bytes"), size))
            after["size_bytes"] = size
    else:
        if size is None:
            fail_param(module, "size", "required to create volume %s" % ref)
        plan.add("volume_create", {"pool": p["pool"], "name": p["name"], "size": size, "thin": p["thin"]},
                 "volume_create %s %d" % (ref, size))
        after = {"name": ref, "kind": "volume", "size_bytes": size,
                 "provisioning": "thin" if p["thin"] else "thick", "parent": None}
    plan.finish(module, rpc, before, after, refresh=refresh)


if __name__ == "__main__":
    main()
