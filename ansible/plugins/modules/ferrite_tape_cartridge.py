#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Ferrite contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: ferrite_tape_cartridge
short_description: Manage the cartridges of a ferrite-tape library
version_added: 0.2.0
description:
  - Talks to the C(ferrite-tape) gateway's JSON-RPC socket. Reads C(tape_cartridge_list), then
    puts a missing cartridge into a virtual library (C(tape_cartridge_import)), labels a blank
    one (C(tape_cartridge_label)), or with I(state=absent) moves it out of the library
    (C(tape_cartridge_eject); a virtual library exports its file).
  - A labelled cartridge is never relabelled, and a cartridge holding another format is never
    erased; that stays a deliberate C(ferrite-tape cartridge label --force).
  - A real (SCSI) library cannot import; a missing cartridge there fails naming I(barcode).
author: Ferrite contributors (!UNKNOWN)
extends_documentation_fragment:
  - ferrite.storage.rpc
  - ferrite.storage.rpc.variable
options:
  rpc_socket:
    description: Path of the gateway's JSON-RPC socket (C(socket) in its configuration).
    type: path
    default: /run/ferrite/tape.sock
  barcode:
    description: The cartridge's barcode, 1 to 32 of C(A-Z a-z 0-9 - _ .).
    type: str
    required: true
  state:
    description: C(present) puts the cartridge in the library; C(absent) takes it out.
    type: str
    choices: [present, absent]
    default: present
  label:
    description: With I(state=present), write a label on a blank cartridge.
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Two labelled cartridges in the virtual library
  ferrite.storage.ferrite_tape_cartridge:
    rpc_socket: /run/ferrite/tape.sock
    barcode: "{{ item }}"
  loop: [LTO001, LTO002]
"""

RETURN = r"""
actions:
  description: The RPC calls made (or that would be made in check mode).
  returned: always
  type: list
  elements: str
object:
  description: The cartridge as C(tape_cartridge_list) shows it.
  returned: when the cartridge is known at the end (not in check mode)
  type: dict
"""

import re

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ferrite.storage.plugins.module_utils.ferrite_rpc import (
    Plan,
    call_or_fail,
    connect,
    fail_param,
    object_spec,
)

BARCODE_RE = re.compile(r"^[A-Za-z0-9._-]{1,32}$")
DEFAULT_TAPE_SOCKET = "/run/ferrite/tape.sock"


def find(module, rpc, barcode):
    for c in call_or_fail(module, rpc, "tape_cartridge_list") or []:
        if c.get("barcode") == barcode:
            return c
    return None


def summary(c):
    if not c or c.get("element") is None:
        return {}
    return {"barcode": c.get("barcode"), "in_library": True, "labelled": c.get("labelled_at") is not None}


def main():
    spec = object_spec(
        barcode=dict(type="str", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        label=dict(type="bool", default=True),
    )
    spec["rpc_socket"] = dict(type="path", default=DEFAULT_TAPE_SOCKET)
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    barcode = p["barcode"]
    if not BARCODE_RE.match(barcode):
        fail_param(module, "barcode", "%r is not a barcode: 1 to 32 of A-Z a-z 0-9 - _ ." % barcode)

    rpc = connect(module)
    current = find(module, rpc, barcode)
    before = summary(current)
    plan = Plan()
    in_library = bool(before)

    if p["state"] == "absent":
        if in_library:
            plan.add("tape_cartridge_eject", {"barcode": barcode}, "tape_cartridge_eject %s" % barcode)
        plan.finish(module, rpc, before, {})

    if not in_library:
        status = call_or_fail(module, rpc, "tape_library_status")
        if status.get("busy"):
            rpc.close()
            module.fail_json(msg="the tape library is busy with job %s; run again when it ends" % status.get("running_job"))
        if not str(status.get("changer", "")).startswith("vtl:"):
            fail_param(module, "barcode", "cartridge %s is not in the library %s; a real library's cartridges are loaded by hand"
                       % (barcode, status.get("changer")))
        plan.add("tape_cartridge_import", {"barcode": barcode}, "tape_cartridge_import %s" % barcode)
    labelled = before.get("labelled", current is not None and current.get("labelled_at") is not None)
    if p["label"] and not labelled:
        plan.add("tape_cartridge_label", {"barcode": barcode, "force": False}, "tape_cartridge_label %s" % barcode)
    after = {"barcode": barcode, "in_library": True, "labelled": bool(labelled or p["label"])}

    def refresh(r):
        return summary(find(module, r, barcode))

    plan.finish(module, rpc, before, after, refresh=refresh)


if __name__ == "__main__":
    main()
