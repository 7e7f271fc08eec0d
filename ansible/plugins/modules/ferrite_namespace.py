#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Ferrite contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: ferrite_namespace
short_description: Manage the namespaces of a ferrited subsystem
version_added: 0.1.0
description:
  - Adds and removes a subsystem's namespaces (C(nvmf_subsystem_add_ns),
    C(nvmf_subsystem_remove_ns)), after reading C(nvmf_get_subsystems) and C(bdev_list).
  - Connected hosts get a Namespace Attribute Changed event and see the change without
    reconnecting.
  - A namespace is matched by I(nsid) when given, else by its bdev. One whose bdev, UUID or
    NGUID differs from the declaration is removed and added again.
author: Ferrite contributors (!UNKNOWN)
extends_documentation_fragment:
  - ferrite.storage.rpc
  - ferrite.storage.rpc.variable
  - ferrite.storage.rpc.subsystem_part
options:
  namespaces:
    description: Namespaces.
    type: list
    elements: dict
    required: true
    suboptions:
      bdev:
        description: The bdev to export, a backend or a volume, clone or snapshot C(<pool>/<name>).
        type: str
        required: true
      nsid:
        description: Namespace ID (1 to the subsystem's maximum); absent picks the lowest free one.
        type: int
      uuid:
        description: Namespace UUID (32 hex digits, dashes allowed); default the bdev's UUID.
        type: str
      nguid:
        description: Namespace NGUID (32 hex digits); default the UUID.
        type: str
  state:
    description: C(present) adds the listed namespaces, C(absent) removes them.
    type: str
    choices: [present, absent]
    default: present
"""

EXAMPLES = r"""
- name: Export tank/db as NSID 1 and tank/logs anywhere
  ferrite.storage.ferrite_namespace:
    nqn: nqn.2026-01.io.ferrite:db
    namespaces:
      - bdev: tank/db
        nsid: 1
      - bdev: tank/logs
    exclusive: true
"""

RETURN = r"""
actions:
  description: The RPC calls made (or that would be made in check mode).
  returned: always
  type: list
  elements: str
object:
  description: The subsystem's namespaces after the change, C({nsid, bdev_name, uuid, nguid}).
  returned: when the subsystem exists (not in check mode)
  type: list
  elements: dict
"""

from ansible_collections.ferrite.storage.plugins.module_utils.ferrite_rpc import (
    Plan,
    call_or_fail,
    call_or_none,
    connect,
    fail_param,
    hex16_error,
    normalize_hex16,
    subsystem_part,
)
from ansible_collections.ferrite.storage.plugins.module_utils.ferrite_subsystem_part import subsystem_part_module


def read(module, rpc, nqn):
    found = call_or_none(module, rpc, "nvmf_get_subsystems", {"nqn": nqn})
    if not found:
        return None, None
    sub = found[0]
    spaces = [dict((k, ns.get(k)) for k in ("nsid", "bdev_name", "uuid", "nguid"))
              for ns in sub.get("namespaces", [])]
    return sorted(spaces, key=lambda ns: ns["nsid"]), sub.get("max_namespaces")


def matches(ns, want):
    if ns["bdev_name"] != want["bdev"]:
        return False
    if want.get("uuid") and normalize_hex16(ns.get("uuid") or "") != normalize_hex16(want["uuid"]):
        return False
    if want.get("nguid") and normalize_hex16(ns.get("nguid") or "") != normalize_hex16(want["nguid"]):
        return False
    return True


def main():
    ns_spec = dict(
        bdev=dict(type="str", required=True),
        nsid=dict(type="int"),
        uuid=dict(type="str"),
        nguid=dict(type="str"),
    )
    module = subsystem_part_module("namespaces", "dict", ns_spec)
    p = module.params
    nqn = p["nqn"]
    rpc = connect(module)
    current, max_ns = read(module, rpc, nqn)
    current = subsystem_part(module, current)
    bdevs = set(b.get("name") for b in call_or_fail(module, rpc, "bdev_list"))

    wanted = p["namespaces"]
    seen_nsids = {}
    seen_bdevs = {}
    for i, want in enumerate(wanted):
        where = "namespaces[%d]" % i
        for key in ("uuid", "nguid"):
            err = hex16_error(want.get(key))
            if err:
                fail_param(module, "%s.%s" % (where, key), err)
        nsid = want.get("nsid")
        if nsid is not None:
            if not 1 <= nsid <= (max_ns or 1024):
                fail_param(module, where + ".nsid", "%d is not from 1 to %d" % (nsid, max_ns or 1024))
            if nsid in seen_nsids:
                fail_param(module, where + ".nsid", "NSID %d is also namespaces[%d]" % (nsid, seen_nsids[nsid]))
            seen_nsids[nsid] = i
        if want["bdev"] in seen_bdevs:
            fail_param(module, where + ".bdev", "%s is also namespaces[%d]" % (want["bdev"], seen_bdevs[want["bdev"]]))
        seen_bdevs[want["bdev"]] = i
        # In check mode the bdev may come from an earlier task of the same play.
        if p["state"] == "present" and want["bdev"] not in bdevs and not module.check_mode:
            fail_param(module, where + ".bdev", "no bdev %s" % want["bdev"])

    plan = Plan()
    remove = []
    add = []
    if p["state"] == "absent":
        for want in wanted:
            for ns in current:
                if (want.get("nsid") in (None, ns["nsid"])) and ns["bdev_name"] == want["bdev"]:
                    remove.append(ns)
    else:
        kept = []
        pending = []
        # Declarations with an NSID first, so NSIDs picked automatically never take theirs.
        for want in sorted(wanted, key=lambda w: w.get("nsid") is None):
            nsid = want.get("nsid")
            if nsid is not None:
                ns = [n for n in current if n["nsid"] == nsid]
                if ns and matches(ns[0], want):
                    kept.append(ns[0])
                    continue
            else:
                ns = [n for n in current if n not in kept and n["nsid"] not in seen_nsids and matches(n, want)]
                if ns:
                    kept.append(ns[0])
                    continue
            pending.append(want)
        for ns in current:
            if ns in kept:
                continue
            clash = any(w.get("nsid") == ns["nsid"] for w in pending)
            exported_again = any(w["bdev"] == ns["bdev_name"] for w in pending)
            if p["exclusive"] or clash or exported_again:
                remove.append(ns)
        add = pending
    for ns in remove:
        plan.add("nvmf_subsystem_remove_ns", {"nqn": nqn, "nsid": ns["nsid"]},
                 "nvmf_subsystem_remove_ns %s %d (%s)" % (nqn, ns["nsid"], ns["bdev_name"]))
    after = [ns for ns in current if ns not in remove]
    for want in add:
        desc = {"bdev_name": want["bdev"]}
        params = {"bdev_name": want["bdev"]}
        for key in ("nsid", "uuid", "nguid"):
            if want.get(key) is not None:
                params[key] = want[key]
                desc[key] = want[key]
        desc.setdefault("nsid", "auto")
        plan.add("nvmf_subsystem_add_ns", {"nqn": nqn, "namespace": params},
                 "nvmf_subsystem_add_ns %s %s (nsid %s)" % (nqn, want["bdev"], desc["nsid"]))
        after.append(desc)
    plan.finish(module, rpc, {"namespaces": current}, {"namespaces": after},
                refresh=lambda r: read(module, r, nqn)[0], object=current)


if __name__ == "__main__":
    main()
