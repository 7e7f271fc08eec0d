#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Ferrite contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: ferrite_snapshot
short_description: Manage snapshots of ferrited volumes
version_added: 0.1.0
description:
  - Takes a read-only snapshot of a live volume (C(snapshot_create)) or deletes one
    (C(snapshot_delete)), after reading C(volume_info).
  - A snapshot is the bdev C(<pool>/<name>); it can be exported write-protected or cloned.
author: Ferrite contributors (!UNKNOWN)
extends_documentation_fragment:
  - ferrite.storage.rpc
  - ferrite.storage.rpc.variable
options:
  volume:
    description: The volume to snapshot, C(<pool>/<volume>).
    type: str
    required: true
  name:
    description: Snapshot name (in the volume's pool).
    type: str
    required: true
  state:
    description: C(present) takes the snapshot when missing, C(absent) deletes it.
    type: str
    choices: [present, absent]
    default: present
"""

EXAMPLES = r"""
- name: Snapshot tank/db as tank/nightly
  ferrite.storage.ferrite_snapshot:
    volume: tank/db
    name: nightly
"""

RETURN = r"""
actions:
  description: The RPC calls made (or that would be made in check mode).
  returned: always
  type: list
  elements: str
object:
  description: The snapshot as C(volume_info) shows it.
  returned: when the snapshot exists at the end (not in check mode)
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ferrite.storage.plugins.module_utils.ferrite_rpc import (
    Plan,
    call_or_none,
    connect,
    fail_param,
    name_error,
    object_spec,
    volume_ref_error,
)


def info(module, rpc, ref):
    return call_or_none(module, rpc, "volume_info", {"name": ref})


def summary(snap):
    if not snap:
        return {}
    return {"name": snap.get("bdev_name"), "origin": snap.get("origin"), "size_bytes": snap.get("size_bytes")}


def main():
    spec = object_spec(
        volume=dict(type="str", required=True),
        name=dict(type="str", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params

    err = volume_ref_error(p["volume"])
    if err:
        fail_param(module, "volume", err)
    err = name_error(p["name"])
    if err:
        fail_param(module, "name", err)
    pool = p["volume"].split("/")[0]
    ref = "%s/%s" % (pool, p["name"])

    rpc = connect(module)
    current = info(module, rpc, ref)
    if current and current.get("kind") != "snapshot":
        fail_param(module, "name", "%s is a %s, not a snapshot" % (ref, current.get("kind")))
    before = summary(current)
    plan = Plan()
    if p["state"] == "absent":
        if current:
            plan.add("snapshot_delete", {"name": ref}, "snapshot_delete %s" % ref)
        plan.finish(module, rpc, before, {})

    def refresh(r):
        return summary(info(module, r, ref))

    if current:
        origin = current.get("origin")
        if origin and "/" not in origin:
            origin = "%s/%s" % (pool, origin)
        if origin and origin != p["volume"]:
            fail_param(module, "volume", "snapshot %s exists of %s, not of %s" % (ref, origin, p["volume"]))
        plan.finish(module, rpc, before, before, refresh=refresh, object=before)

    source = info(module, rpc, p["volume"])
    if source is None and module.check_mode:
        # The volume may come from an earlier task of the same play, which made no change.
        source = {"kind": "volume"}
    if not source or source.get("kind") == "snapshot":
        fail_param(module, "volume", "no volume %s" % p["volume"])
    plan.add("snapshot_create", {"volume": p["volume"], "name": p["name"]},
             "snapshot_create %s of %s" % (ref, p["volume"]))
    after = {"name": ref, "origin": p["volume"], "size_bytes": source.get("size_bytes")}
    plan.finish(module, rpc, before, after, refresh=refresh)


if __name__ == "__main__":
    main()
