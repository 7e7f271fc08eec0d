#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Ferrite contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: ferrite_validate
short_description: Check a whole ferrite.storage volumes declaration before anything is applied
version_added: 0.1.0
description:
  - Checks every object the C(ferrite.storage.volumes) role declares, and the references between
    them and the daemon's current state, and fails naming the variable at fault (for example
    C(volumes_volumes[2].size), C(volumes_subsystems[0].hosts[1])) before any change is made.
  - Checked are names, NQNs, sizes, block and cluster sizes, NSIDs, UUIDs, listen addresses and
    whether their ports are free (or already ferrited's), references to pools, volumes,
    snapshots and bdevs (declared present, or existing and not declared absent), and objects
    declared absent that a present one still uses.
  - Never changes anything.
author: Ferrite contributors (!UNKNOWN)
extends_documentation_fragment:
  - ferrite.storage.rpc
options:
  bdevs:
    description: The C(volumes_bdevs) variable.
    type: list
    elements: dict
    default: []
  pools:
    description: The C(volumes_pools) variable.
    type: list
    elements: dict
    default: []
  volumes:
    description: The C(volumes_volumes) variable.
    type: list
    elements: dict
    default: []
  snapshots:
    description: The C(volumes_snapshots) variable.
    type: list
    elements: dict
    default: []
  subsystems:
    description: The C(volumes_subsystems) variable.
    type: list
    elements: dict
    default: []
  journaled:
    description:
      - Bdevs the C(replication) role journals on this appliance before the namespaces are
        exported; a namespace may then name C(<bdev>@journal) before that bdev exists.
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Check the declaration
  ferrite.storage.ferrite_validate:
    bdevs: "{{ volumes_bdevs }}"
    pools: "{{ volumes_pools }}"
    volumes: "{{ volumes_volumes }}"
    snapshots: "{{ volumes_snapshots }}"
    subsystems: "{{ volumes_subsystems }}"
"""

RETURN = r"""
checked:
  description: How many objects of each kind were checked.
  returned: success
  type: dict
  sample: {"bdevs": 2, "pools": 1, "volumes": 3, "snapshots": 1, "subsystems": 1}
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ferrite.storage.plugins.module_utils.ferrite_rpc import (
    bdev_name_error,
    call_or_fail,
    connect,
    ferrited_listen_keys,
    hex16_error,
    listener_error,
    listener_key,
    name_error,
    nqn_error,
    parse_size,
    port_in_use_error,
    rpc_argument_spec,
    subsystem_nqn_error,
    volume_ref_error,
)

KEYS = {
    "volumes_bdevs": ("name", "kind", "path", "size", "block_size", "state"),
    "volumes_pools": ("name", "bdevs", "cluster_size", "space_warning", "force", "state"),
    "volumes_volumes": ("pool", "name", "size", "thin", "clone_of", "allow_shrink", "state"),
    "volumes_snapshots": ("volume", "name", "state"),
    "volumes_subsystems": ("nqn", "serial_number", "model_number", "allow_any_host", "max_namespaces",
                           "hosts", "listeners", "namespaces", "state"),
}


class Invalid(Exception):
    pass


def bad(where, text):
    raise Invalid("%s: %s" % (where, text))


def check_keys(var, i, obj, required):
    where = "%s[%d]" % (var, i)
    if not isinstance(obj, dict):
        bad(where, "%r is not a mapping" % (obj,))
    unknown = sorted(set(obj) - set(KEYS[var]))
    if unknown:
        bad(where, "unknown key(s) %s (known: %s)" % (", ".join(unknown), ", ".join(KEYS[var])))
    for key in required:
        if obj.get(key) in (None, ""):
            bad("%s.%s" % (where, key), "required")
    state = obj.get("state", "present")
    if state not in ("present", "absent"):
        bad(where + ".state", "%r must be present or absent" % (state,))
    return where, state


def check_size(where, value, required=False):
    if value is None:
        if required:
            bad(where, "required")
        return None
    size, err = parse_size(value)
    if err:
        bad(where, err)
    if size == 0:
        bad(where, "must not be 0")
    return size


def check_bool(where, value):
    if value is not None and not isinstance(value, bool):
        bad(where, "%r is not a boolean" % (value,))


def validate(p, live):
    """Raises Invalid naming the first bad variable; returns counts."""
    bdev_state = {}
    for i, b in enumerate(p["bdevs"]):
        where, state = check_keys("volumes_bdevs", i, b, ("name",))
        err = bdev_name_error(b["name"])
        if err:
            bad(where + ".name", err)
        if b["name"] in bdev_state:
            bad(where + ".name", "%s is declared twice" % b["name"])
        bdev_state[b["name"]] = state
        kind = b.get("kind", "file")
        if kind not in ("malloc", "file"):
            bad(where + ".kind", "%r must be malloc or file" % (kind,))
        size = check_size(where + ".size", b.get("size"))
        bs = b.get("block_size")
        if bs is not None and (not isinstance(bs, int) or isinstance(bs, bool) or bs not in (512, 1024, 2048, 4096)):
            bad(where + ".block_size", "%r must be 512, 1024, 2048 or 4096" % (bs,))
        if state == "present" and b["name"] not in live["bdevs"]:
            if kind == "malloc":
                if size is None:
                    bad(where + ".size", "required for a malloc bdev")
                if size % (bs or 4096):
                    bad(where + ".size", "%d is not a multiple of the block size %d" % (size, bs or 4096))
            else:
                path = b.get("path")
                if not path or not os.path.isabs(str(path)):
                    bad(where + ".path", "an absolute path is required for a file bdev")
                if size is None and not os.path.exists(str(path)):
                    bad(where + ".size", "required: %s does not exist yet" % path)

    def bdev_present(name):
        state = bdev_state.get(name)
        return state == "present" or (state is None and name in live["bdevs"])

    pool_state = {}
    for i, pool in enumerate(p["pools"]):
        where, state = check_keys("volumes_pools", i, pool, ("name",))
        err = name_error(pool["name"])
        if err:
            bad(where + ".name", err)
        if pool["name"] in pool_state:
            bad(where + ".name", "%s is declared twice" % pool["name"])
        pool_state[pool["name"]] = state
        cluster = check_size(where + ".cluster_size", pool.get("cluster_size"))
        if cluster is not None and (cluster < 65536 or cluster > 64 << 20 or cluster & (cluster - 1)):
            bad(where + ".cluster_size", "%s must be a power of two from 64KiB to 64MiB" % pool.get("cluster_size"))
        warn = pool.get("space_warning")
        if warn is not None and (not isinstance(warn, int) or isinstance(warn, bool) or not 1 <= warn <= 100):
            bad(where + ".space_warning", "%r is not a percent from 1 to 100" % (warn,))
        check_bool(where + ".force", pool.get("force"))
        if state == "present":
            members = pool.get("bdevs")
            if pool["name"] not in live["pools"]:
                if not isinstance(members, list) or not members:
                    bad(where + ".bdevs", "a list of bdevs is required to create pool %s" % pool["name"])
            for j, member in enumerate(members or []):
                if not bdev_present(member):
                    bad("%s.bdevs[%d]" % (where, j), "unknown bdev %s (not in volumes_bdevs, not in ferrited)" % member)

    def pool_present(name):
        state = pool_state.get(name)
        return state == "present" or (state is None and name in live["pools"])

    vol_state = {}
    snap_state = {}
    for i, snap in enumerate(p["snapshots"]):
        where, state = check_keys("volumes_snapshots", i, snap, ("volume", "name"))
        err = volume_ref_error(snap["volume"])
        if err:
            bad(where + ".volume", err)
        err = name_error(snap["name"])
        if err:
            bad(where + ".name", err)
        ref = "%s/%s" % (snap["volume"].split("/")[0], snap["name"])
        snap_state[ref] = (state, snap["volume"], where)

    for i, vol in enumerate(p["volumes"]):
        where, state = check_keys("volumes_volumes", i, vol, ("pool", "name"))
        for key in ("pool", "name"):
            err = name_error(vol[key])
            if err:
                bad("%s.%s" % (where, key), err)
        ref = "%s/%s" % (vol["pool"], vol["name"])
        if ref in vol_state:
            bad(where + ".name", "%s is declared twice" % ref)
        if ref in snap_state:
            bad(where + ".name", "%s is also declared as a snapshot (%s)" % (ref, snap_state[ref][2]))
        vol_state[ref] = state
        size = check_size(where + ".size", vol.get("size"))
        check_bool(where + ".thin", vol.get("thin"))
        check_bool(where + ".allow_shrink", vol.get("allow_shrink"))
        if state != "present":
            continue
        if not pool_present(vol["pool"]):
            bad(where + ".pool", "unknown pool %s (not in volumes_pools, not in ferrited)" % vol["pool"])
        block = live["pools"].get(vol["pool"], {}).get("block_size")
        if size is not None and block and size % block:
            bad(where + ".size", "%d is not a multiple of pool %s's block size %d" % (size, vol["pool"], block))
        if vol.get("clone_of") is not None:
            snap = str(vol["clone_of"])
            snap = snap if "/" in snap else "%s/%s" % (vol["pool"], snap)
            err = volume_ref_error(snap)
            if err:
                bad(where + ".clone_of", err)
            declared = snap_state.get(snap)
            if not (declared and declared[0] == "present") and not (declared is None and snap in live["snapshots"]):
                bad(where + ".clone_of", "unknown snapshot %s (not in volumes_snapshots, not in ferrited)" % snap)
        elif size is None and ref not in live["volumes"]:
            bad(where + ".size", "required to create volume %s" % ref)

    def volume_present(ref):
        state = vol_state.get(ref)
        return state == "present" or (state is None and ref in live["volumes"])

    for ref, (state, volume, where) in snap_state.items():
        if state == "present" and ref not in live["snapshots"] and not volume_present(volume):
            bad(where + ".volume", "unknown volume %s (not in volumes_volumes, not in ferrited)" % volume)

    def exportable(name):
        base = name[:-len("@journal")] if name.endswith("@journal") else None
        if base is not None and name not in live["bdevs"]:
            return base in p["journaled"] and exportable(base)
        if name in vol_state or name in snap_state:
            state = vol_state.get(name) or snap_state[name][0]
            return state == "present"
        if bdev_state.get(name) is not None:
            return bdev_state[name] == "present"
        return name in live["bdevs"]

    nqns = {}
    claimed = {}
    bound = live["bound"]
    for i, sub in enumerate(p["subsystems"]):
        where, state = check_keys("volumes_subsystems", i, sub, ("nqn",))
        err = subsystem_nqn_error(sub["nqn"])
        if err:
            bad(where + ".nqn", err)
        if sub["nqn"] in nqns:
            bad(where + ".nqn", "%s is also %s" % (sub["nqn"], nqns[sub["nqn"]]))
        nqns[sub["nqn"]] = where
        for key, longest in (("serial_number", 20), ("model_number", 40)):
            text = sub.get(key)
            if text is not None and (not isinstance(text, str) or not 1 <= len(text) <= longest
                                     or any(ord(c) < 0x20 or ord(c) > 0x7e for c in text)):
                bad("%s.%s" % (where, key), "%r must be 1-%d printable ASCII characters" % (text, longest))
        check_bool(where + ".allow_any_host", sub.get("allow_any_host"))
        max_ns = sub.get("max_namespaces", 1024)
        if not isinstance(max_ns, int) or isinstance(max_ns, bool) or not 1 <= max_ns <= 1024:
            bad(where + ".max_namespaces", "%r is not from 1 to 1024" % (max_ns,))
        for key in ("hosts", "listeners", "namespaces"):
            if not isinstance(sub.get(key, []), list):
                bad("%s.%s" % (where, key), "must be a list")
        for j, host in enumerate(sub.get("hosts", [])):
            err = nqn_error(host)
            if err:
                bad("%s.hosts[%d]" % (where, j), err)
        own = live["listeners"].get(sub["nqn"], set())
        for j, listener in enumerate(sub.get("listeners", [])):
            lw = "%s.listeners[%d]" % (where, j)
            err = listener_error(listener)
            if err:
                bad(lw, err)
            if state == "present" and listener_key(listener) not in bound | own:
                err = port_in_use_error(listener)
                if err:
                    bad(lw, err)
        nsids = set()
        for j, ns in enumerate(sub.get("namespaces", [])):
            nw = "%s.namespaces[%d]" % (where, j)
            if not isinstance(ns, dict) or not ns.get("bdev"):
                bad(nw + ".bdev", "required")
            unknown = sorted(set(ns) - set(["bdev", "nsid", "uuid", "nguid"]))
            if unknown:
                bad(nw, "unknown key(s) %s (bdev, nsid, uuid, nguid)" % ", ".join(unknown))
            nsid = ns.get("nsid")
            if nsid is not None:
                if not isinstance(nsid, int) or isinstance(nsid, bool) or not 1 <= nsid <= max_ns:
                    bad(nw + ".nsid", "%r is not from 1 to %d" % (nsid, max_ns))
                if nsid in nsids:
                    bad(nw + ".nsid", "NSID %d is listed twice" % nsid)
                nsids.add(nsid)
            for key in ("uuid", "nguid"):
                err = hex16_error(ns.get(key))
                if err:
                    bad("%s.%s" % (nw, key), err)
            if state == "present":
                if not exportable(ns["bdev"]):
                    bad(nw + ".bdev", "unknown bdev %s (not declared present, not in ferrited)" % ns["bdev"])
                claimed.setdefault(ns["bdev"], nw)

    # Objects declared absent that a present declaration still uses.
    for ref, state in vol_state.items():
        if state == "absent" and ref in claimed:
            bad(claimed[ref] + ".bdev", "%s is declared absent in volumes_volumes" % ref)
    for ref, (state, dummy, where) in snap_state.items():
        if state == "absent" and ref in claimed:
            bad(claimed[ref] + ".bdev", "%s is declared absent in volumes_snapshots" % ref)
    for name, state in pool_state.items():
        if state == "absent":
            for ref, vstate in vol_state.items():
                if vstate == "present" and ref.split("/")[0] == name:
                    bad("volumes_volumes", "%s is declared present but its pool %s is declared absent" % (ref, name))
    return dict((k, len(p[k])) for k in ("bdevs", "pools", "volumes", "snapshots", "subsystems"))


def main():
    spec = dict(
        bdevs=dict(type="list", elements="dict", default=[]),
        pools=dict(type="list", elements="dict", default=[]),
        volumes=dict(type="list", elements="dict", default=[]),
        snapshots=dict(type="list", elements="dict", default=[]),
        subsystems=dict(type="list", elements="dict", default=[]),
        journaled=dict(type="list", elements="str", default=[]),
    )
    spec.update(rpc_argument_spec())
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    rpc = connect(module)
    bdevs = call_or_fail(module, rpc, "bdev_list")
    subsystems = call_or_fail(module, rpc, "nvmf_get_subsystems")
    live = {
        "bdevs": set(b.get("name") for b in bdevs),
        "pools": dict((x.get("name"), x) for x in call_or_fail(module, rpc, "pool_list")),
        "volumes": set(b.get("name") for b in bdevs if b.get("kind") in ("volume", "clone")),
        "snapshots": set(b.get("name") for b in bdevs if b.get("kind") == "snapshot"),
        "bound": ferrited_listen_keys(subsystems),
        "listeners": dict((s.get("nqn"), set(listener_key(a) for a in s.get("listen_addresses", [])))
                          for s in subsystems),
    }
    rpc.close()
    try:
        checked = validate(module.params, live)
    except Invalid as e:
        module.fail_json(msg=str(e))
    module.exit_json(changed=False, checked=checked)


if __name__ == "__main__":
    main()
