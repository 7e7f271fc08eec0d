#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Ferrite contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: ferrite_journal
short_description: Manage the replication journal of a consistency group on the primary ferrited
version_added: 0.2.0
description:
  - A consistency group's journal is a thick volume C(journal-g<group>) in a pool; every write of
    the group's journaled bdevs (C(<bdev>@journal)) is appended to it and shipped by
    C(ferrite-replicator).
  - Reads C(journal_list), then creates the journal (C(journal_create)), attaches the declared
    bdevs (C(journal_attach)) and, with I(exclusive), detaches the others (C(journal_detach)).
    With I(state=absent) it detaches every bdev and deletes the journal (C(journal_delete)).
  - The pool, size and slot size of an existing journal cannot change; declaring others fails
    naming the parameter. A journaled bdev still exported by a subsystem cannot be detached;
    remove the namespace first.
author: Ferrite contributors (!UNKNOWN)
extends_documentation_fragment:
  - ferrite.storage.rpc
  - ferrite.storage.rpc.variable
options:
  group:
    description: The consistency group, 1 or more.
    type: int
    required: true
  state:
    description: C(present) makes the journal and its attachments as declared; C(absent) removes them.
    type: str
    choices: [present, absent]
    default: present
  pool:
    description: Pool holding the journal volume. Required to create.
    type: str
  size:
    description:
      - Journal size (bytes or C(1GiB)-style text); at least 8 slots. Required to create.
      - Used at creation only; the size of an existing journal is not changed or compared.
    type: str
  slot_size:
    description: Data bytes per record, C(128KiB) to C(4MiB). Default (ferrited's) 128KiB.
    type: str
  namespaces:
    description: The bdevs journaled in the group, each with its namespace number in the group.
    type: list
    elements: dict
    default: []
    suboptions:
      bdev:
        description: A registered bdev, usually a volume C(<pool>/<name>); it is then exported as C(<bdev>@journal).
        type: str
        required: true
      nsid:
        description: Namespace number in the group (the secondary maps it to one of its own).
        type: int
        required: true
      target_nsid:
        description: Not used here; the secondary's namespace, which the replication role's variable also holds.
        type: int
  exclusive:
    description: Detach journaled bdevs of the group that are not listed.
    type: bool
    default: true
  journal_keys:
    description:
      - Name I(pool), I(size) and I(slot_size) C(journal.pool) and so on in error messages, as
        the C(replication) role's C(replication_groups[N].journal) holds them.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Journal tank/db and tank/log in group 1
  ferrite.storage.ferrite_journal:
    group: 1
    pool: tank
    size: 1GiB
    namespaces:
      - {bdev: tank/db, nsid: 1}
      - {bdev: tank/log, nsid: 2}
"""

RETURN = r"""
actions:
  description: The RPC calls made (or that would be made in check mode).
  returned: always
  type: list
  elements: str
object:
  description: The journal as C(journal_list) shows it.
  returned: when the journal exists at the end (not in check mode)
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
    object_spec,
    parse_size,
    volume_ref_error,
)

JOURNAL_SUFFIX = "@journal"
MIN_SLOT = 128 << 10
MAX_SLOT = 4 << 20


def find_journal(module, rpc, group):
    for j in call_or_fail(module, rpc, "journal_list") or []:
        if j.get("group") == group:
            return j
    return None


def summary(j):
    if not j:
        return {}
    return {
        "group": j.get("group"),
        "volume": j.get("volume"),
        "slot_size": j.get("slot_size"),
        "namespaces": sorted(
            ({"bdev": n.get("bdev"), "nsid": n.get("nsid")} for n in j.get("namespaces", [])),
            key=lambda n: n["nsid"],
        ),
    }


def fail_journal_param(module, name, error):
    if module.params["journal_keys"] and name in ("pool", "size", "slot_size"):
        name = "journal." + name
    fail_param(module, name, error)


def check_params(module):
    p = module.params
    if p["group"] < 1 or p["group"] > 0xFFFFFFFF:
        fail_param(module, "group", "%d is not a group number (1 or more)" % p["group"])
    sizes = {}
    for key in ("size", "slot_size"):
        if p[key] is not None:
            n, err = parse_size(p[key])
            if err:
                fail_journal_param(module, key, err)
            sizes[key] = n
    slot = sizes.get("slot_size")
    if slot is not None and not MIN_SLOT <= slot <= MAX_SLOT:
        fail_journal_param(module, "slot_size", "%s is not from 128KiB to 4MiB" % p["slot_size"])
    if "size" in sizes and sizes["size"] < 8 * (slot or MIN_SLOT):
        fail_journal_param(module, "size", "%s holds fewer than 8 slots of %d bytes" % (p["size"], slot or MIN_SLOT))
    if p["pool"] is not None:
        err = name_error(p["pool"])
        if err:
            fail_journal_param(module, "pool", err)
    seen_bdev, seen_nsid = set(), set()
    for i, ns in enumerate(p["namespaces"]):
        err = volume_ref_error(ns["bdev"]) if "/" in ns["bdev"] else bdev_name_error(ns["bdev"])
        if err:
            fail_param(module, "namespaces[%d].bdev" % i, err)
        if ns["bdev"].endswith(JOURNAL_SUFFIX):
            fail_param(module, "namespaces[%d].bdev" % i,
                       "name the journaled bdev itself, not %s" % ns["bdev"])
        if not 1 <= ns["nsid"] <= 0xFFFFFFFE:
            fail_param(module, "namespaces[%d].nsid" % i, "%d is not a namespace number" % ns["nsid"])
        if ns["bdev"] in seen_bdev:
            fail_param(module, "namespaces[%d].bdev" % i, "%s is listed twice" % ns["bdev"])
        if ns["nsid"] in seen_nsid:
            fail_param(module, "namespaces[%d].nsid" % i, "nsid %d is listed twice" % ns["nsid"])
        seen_bdev.add(ns["bdev"])
        seen_nsid.add(ns["nsid"])
    return sizes


def main():
    spec = object_spec(
        group=dict(type="int", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        pool=dict(type="str"),
        size=dict(type="str"),
        slot_size=dict(type="str"),
        namespaces=dict(
            type="list",
            elements="dict",
            default=[],
            options=dict(
                bdev=dict(type="str", required=True),
                nsid=dict(type="int", required=True),
                target_nsid=dict(type="int"),
            ),
        ),
        exclusive=dict(type="bool", default=True),
        journal_keys=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    sizes = check_params(module)
    group = p["group"]

    rpc = connect(module)
    current = find_journal(module, rpc, group)
    before = summary(current)
    plan = Plan()
    attached = dict((n.get("bdev"), n) for n in (current or {}).get("namespaces", []))

    if p["state"] == "absent":
        for bdev in sorted(attached):
            name = attached[bdev].get("journaled_bdev") or bdev + JOURNAL_SUFFIX
            plan.add("journal_detach", {"bdev": name}, "journal_detach %s" % name)
        if current:
            plan.add("journal_delete", {"group": group}, "journal_delete %d" % group)
        plan.finish(module, rpc, before, {})

    if current is None:
        for key in ("pool", "size"):
            if p[key] is None:
                fail_journal_param(module, key, "required to create the journal of group %d" % group)
        live_pools = set(x.get("name") for x in call_or_fail(module, rpc, "pool_list") or [])
        if p["pool"] not in live_pools and not module.check_mode:
            fail_journal_param(module, "pool", "unknown pool %s" % p["pool"])
        params = {"group": group, "pool": p["pool"], "size": sizes["size"]}
        if "slot_size" in sizes:
            params["slot_size"] = sizes["slot_size"]
        plan.add("journal_create", params, "journal_create %d in pool %s" % (group, p["pool"]))
    else:
        volume = current.get("volume") or ""
        if p["pool"] is not None and volume.split("/")[0] != p["pool"]:
            fail_journal_param(module, "pool", "the journal of group %d exists in %s; its pool cannot change"
                               % (group, volume.split("/")[0]))
        if "slot_size" in sizes and sizes["slot_size"] != current.get("slot_size"):
            fail_journal_param(module, "slot_size", "the journal of group %d has %s byte slots; chosen at creation only"
                               % (group, current.get("slot_size")))
        # The slot count depends on the record header's size, so the size of an existing
        # journal is not compared: it is chosen at creation only (documented).

    declared = dict((n["bdev"], n["nsid"]) for n in p["namespaces"])
    if p["exclusive"]:
        for bdev in sorted(attached):
            if bdev not in declared:
                name = attached[bdev].get("journaled_bdev") or bdev + JOURNAL_SUFFIX
                plan.add("journal_detach", {"bdev": name}, "journal_detach %s" % name)
    for bdev, nsid in sorted(declared.items(), key=lambda kv: kv[1]):
        have = attached.get(bdev)
        if have is not None and have.get("nsid") == nsid:
            continue
        if have is not None:
            name = have.get("journaled_bdev") or bdev + JOURNAL_SUFFIX
            plan.add("journal_detach", {"bdev": name}, "journal_detach %s (nsid %s -> %d)" % (name, have.get("nsid"), nsid))
        plan.add("journal_attach", {"group": group, "bdev": bdev, "nsid": nsid},
                 "journal_attach %s as nsid %d of group %d" % (bdev, nsid, group))

    kept = [] if p["exclusive"] else [
        {"bdev": b, "nsid": a.get("nsid")} for b, a in attached.items() if b not in declared]
    after = {
        "group": group,
        "volume": (current or {}).get("volume") or "%s/journal-g%d" % (p["pool"], group),
        "slot_size": (current or {}).get("slot_size") or sizes.get("slot_size", MIN_SLOT),
        "namespaces": sorted(
            [{"bdev": b, "nsid": n} for b, n in declared.items()] + kept,
            key=lambda n: n["nsid"],
        ),
    }

    def refresh(r):
        return summary(find_journal(module, r, group))

    plan.finish(module, rpc, before, after, refresh=refresh)


if __name__ == "__main__":
    main()
