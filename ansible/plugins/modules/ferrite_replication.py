#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Ferrite contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: ferrite_replication
short_description: Manage the replication pair of a consistency group on the primary ferrited
version_added: 0.3.0
description:
  - A consistency group whose journal exists (M(ferrite.storage.ferrite_journal)) becomes a
    replication pair; the pair decides how the group's host writes complete. C(async) completes
    them once the local journal holds them (the status says whether the lag is within I(rpo_s));
    C(sync) completes them only once the secondary holds them, and a write whose acknowledgement
    is overdue (I(sync_timeout_ms)) follows I(lost_link).
  - Reads C(replication_status), then creates the pair (C(replication_create)), changes its
    settings (C(replication_set_mode)), pauses or resumes shipping (C(replication_pause),
    C(replication_resume)) or, with I(state=absent), ends the pair (C(replication_delete); the
    journal stays).
  - The replicator status socket is chosen at creation; an existing pair is re-created only when
    one is declared and the pair has none, or the other way round (ferrited does not report the
    path, so two different paths are not compared).
author: Ferrite contributors (!UNKNOWN)
extends_documentation_fragment:
  - ferrite.storage.rpc
  - ferrite.storage.rpc.variable
options:
  group:
    description: The consistency group, 1 or more; it must have a journal.
    type: int
    required: true
  state:
    description: C(present) makes the pair as declared; C(absent) ends it.
    type: str
    choices: [present, absent]
    default: present
  mode:
    description: C(async) or C(sync).
    type: str
    choices: [async, sync]
    default: async
  lost_link:
    description:
      - Sync mode, a write whose acknowledgement is overdue. C(fail) completes it with Write
        Fault (nothing a host saw complete is missing on the secondary); C(degrade) completes it,
        raises an alert and runs asynchronously until the secondary has caught up.
    type: str
    choices: [fail, degrade]
    default: fail
  sync_timeout_ms:
    description: Sync mode, how long a write waits for the secondary (10 to 600000 ms).
    type: int
    default: 5000
  rpo_s:
    description: Async mode, the recovery point objective in seconds (1 to 604800).
    type: int
    default: 60
  paused:
    description: Stop shipping (writes are still journaled; in sync mode they follow I(lost_link)).
    type: bool
    default: false
  replicator_status_socket:
    description: The primary C(ferrite-replicator)'s status socket, read into the pair's status.
    type: path
"""

EXAMPLES = r"""
- name: Group 1 replicates synchronously, degrading when the link is lost
  ferrite.storage.ferrite_replication:
    group: 1
    mode: sync
    lost_link: degrade
    sync_timeout_ms: 2000
    replicator_status_socket: /run/ferrite/repl-g1.sock
"""

RETURN = r"""
actions:
  description: The C(replication_*) calls made on the pair, or in check mode those it would make, each with the group and settings.
  returned: always
  type: list
  elements: str
object:
  description: The pair's settings as C(replication_status) shows them (C(replicator) says whether a status socket is set).
  returned: when the pair exists at the end (not in check mode)
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ferrite.storage.plugins.module_utils.ferrite_rpc import (
    Plan,
    call_first,
    connect,
    fail_param,
    object_spec,
    pick,
)

# Ranges ferrited checks (docs/rpc.md, replication_create).
RANGES = {"sync_timeout_ms": (10, 600000), "rpo_s": (1, 604800)}
SETTINGS = ("mode", "lost_link", "sync_timeout_ms", "rpo_s")


def read(module, rpc, group):
    """The pair's status entry, or None when the group is not a pair (or has no journal)."""
    return call_first(module, rpc, "replication_status", {"group": group})


def summary(s):
    out = pick(s, ("group", "mode", "link_policy", "sync_timeout_ms", "rpo_s", "paused", "replicator"),
               rename={"link_policy": "lost_link"})
    if out:
        out["replicator"] = out["replicator"] is not None
    return out


def check_params(module):
    p = module.params
    if not 1 <= p["group"] <= 0xFFFFFFFF:
        fail_param(module, "group", "%d is not a group number (1 or more)" % p["group"])
    for key, (lo, hi) in RANGES.items():
        if not lo <= p[key] <= hi:
            fail_param(module, key, "%d is not from %d to %d" % (p[key], lo, hi))


def main():
    spec = object_spec(
        group=dict(type="int", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        mode=dict(type="str", choices=["async", "sync"], default="async"),
        lost_link=dict(type="str", choices=["fail", "degrade"], default="fail"),
        sync_timeout_ms=dict(type="int", default=5000),
        rpo_s=dict(type="int", default=60),
        paused=dict(type="bool", default=False),
        replicator_status_socket=dict(type="path"),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    check_params(module)
    group = p["group"]

    rpc = connect(module)
    current = read(module, rpc, group)
    before = summary(current)
    plan = Plan()
    if p["state"] == "absent":
        if current:
            plan.add("replication_delete", {"group": group}, "replication_delete %d" % group)
        plan.finish(module, rpc, before, {})

    settings = {
        "group": group,
        "mode": p["mode"],
        "link_policy": p["lost_link"],
        "sync_timeout_ms": p["sync_timeout_ms"],
        "rpo_s": p["rpo_s"],
    }
    after = {
        "group": group,
        "mode": p["mode"],
        "lost_link": p["lost_link"],
        "sync_timeout_ms": p["sync_timeout_ms"],
        "rpo_s": p["rpo_s"],
        "paused": p["paused"],
        "replicator": p["replicator_status_socket"] is not None,
    }
    text = "%s mode, lost link %s" % (p["mode"], p["lost_link"])
    recreate = current is not None and before["replicator"] != after["replicator"]
    if recreate:
        plan.add("replication_delete", {"group": group},
                 "replication_delete %d (to change its replicator status socket)" % group)
    if current is None or recreate:
        create = dict(settings)
        if p["replicator_status_socket"] is not None:
            create["replicator_status_socket"] = p["replicator_status_socket"]
        plan.add("replication_create", create, "replication_create %d (%s)" % (group, text))
        was_paused = False
    else:
        if any(before[k] != after[k] for k in SETTINGS):
            plan.add("replication_set_mode", settings, "replication_set_mode %d (%s)" % (group, text))
        was_paused = bool(before["paused"])
    if p["paused"] != was_paused:
        method = "replication_pause" if p["paused"] else "replication_resume"
        plan.add(method, {"group": group}, "%s %d" % (method, group))

    def refresh(r):
        return summary(read(module, r, group))

    plan.finish(module, rpc, before, after, refresh=refresh)


if __name__ == "__main__":
    main()
