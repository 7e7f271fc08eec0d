#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Ferrite contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: ferrite_bdev
short_description: Manage ferrited backends (malloc and file bdevs)
version_added: 0.1.0
description:
  - Creates or deletes a backend bdev of ferrited through C(bdev_malloc_create),
    C(bdev_file_create) and C(bdev_delete), after reading C(bdev_list).
  - An existing bdev is never recreated; a declared kind, file or size it does not have fails
    the task naming the parameter.
author: Ferrite contributors (!UNKNOWN)
extends_documentation_fragment:
  - ferrite.storage.rpc
  - ferrite.storage.rpc.variable
options:
  name:
    description: Bdev name, 1-255 printable characters without C(/).
    type: str
    required: true
  state:
    description: C(present) creates it when missing, C(absent) deletes it.
    type: str
    choices: [present, absent]
    default: present
  kind:
    description: C(malloc) (RAM, lost at restart) or C(file) (a regular file or block device).
    type: str
    choices: [malloc, file]
    default: file
  path:
    description: Absolute path of the file or block device (I(kind=file)).
    type: path
  size:
    description:
      - Size in bytes or with a binary unit (C(10GiB), C(512M)).
      - Required for C(malloc); for C(file), used only when the file does not exist yet (it is
        created sparse).
    type: str
  block_size:
    description: Logical block size, 512 to 4096 (default 4096 for malloc, the device's for file).
    type: int
"""

EXAMPLES = r"""
- name: A 10 GiB file backend
  ferrite.storage.ferrite_bdev:
    name: disk0
    kind: file
    path: /var/lib/ferrite/disk0.img
    size: 10GiB

- name: Remove a RAM backend
  ferrite.storage.ferrite_bdev:
    name: ram0
    state: absent
"""

RETURN = r"""
actions:
  description: The RPC calls made (or that would be made in check mode).
  returned: always
  type: list
  elements: str
  sample: ["bdev_file_create disk0"]
object:
  description: The bdev as C(bdev_list) shows it after a change, or as it was when nothing changed.
  returned: when the bdev exists and was created or already there (not in check mode)
  type: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ferrite.storage.plugins.module_utils.ferrite_rpc import (
    Plan,
    bdev_name_error,
    call_or_none,
    connect,
    fail_param,
    parse_size,
    object_spec,
)


def find_bdev(module, rpc, name):
    found = call_or_none(module, rpc, "bdev_list", {"name": name})
    return found[0] if found else None


def main():
    spec = object_spec(
        name=dict(type="str", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        kind=dict(type="str", choices=["malloc", "file"], default="file"),
        path=dict(type="path"),
        size=dict(type="str"),
        block_size=dict(type="int"),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params

    err = bdev_name_error(p["name"])
    if err:
        fail_param(module, "name", err)
    size = None
    if p["size"] is not None:
        size, err = parse_size(p["size"])
        if err:
            fail_param(module, "size", err)
        if size == 0:
            fail_param(module, "size", "must not be 0")
    bs = p["block_size"]
    if bs is not None and (bs < 512 or bs > 4096 or bs & (bs - 1)):
        fail_param(module, "block_size", "%d must be a power of two from 512 to 4096" % bs)
    if p["state"] == "present":
        if p["kind"] == "malloc":
            if size is None:
                fail_param(module, "size", "required for a malloc bdev")
            if size % (bs or 4096):
                fail_param(module, "size", "%d is not a multiple of the block size %d" % (size, bs or 4096))
        else:
            if not p["path"] or not os.path.isabs(p["path"]):
                fail_param(module, "path", "an absolute path is required for a file bdev")

    rpc = connect(module)
    current = find_bdev(module, rpc, p["name"])
    plan = Plan()
    before = dict(current) if current else {}
    after = dict(before)
    if p["state"] == "absent":
        if current:
            plan.add("bdev_delete", {"name": p["name"]}, "bdev_delete %s" % p["name"])
            after = {}
        plan.finish(module, rpc, before, after)

    if current:
        if current.get("kind") != p["kind"]:
            fail_param(module, "kind", "bdev %s exists as a %s bdev, not %s (delete it first)"
                       % (p["name"], current.get("kind"), p["kind"]))
        if p["kind"] == "file" and os.path.realpath(current.get("filename") or "") != os.path.realpath(p["path"]):
            fail_param(module, "path", "bdev %s exists over %s, not %s"
                       % (p["name"], current.get("filename"), p["path"]))
        if bs is not None and current.get("block_size") != bs:
            fail_param(module, "block_size", "bdev %s exists with block size %s (a bdev is not reformatted)"
                       % (p["name"], current.get("block_size")))
        if p["kind"] == "malloc":
            have = current.get("num_blocks", 0) * current.get("block_size", 0)
            if have != size:
                fail_param(module, "size", "bdev %s exists with %d bytes; a malloc bdev cannot be resized"
                           % (p["name"], have))
        plan.finish(module, rpc, before, after, object=current)

    if p["kind"] == "malloc":
        block = bs or 4096
        params = {"name": p["name"], "num_blocks": size // block, "block_size": block}
        plan.add("bdev_malloc_create", params, "bdev_malloc_create %s" % p["name"])
        after = {"name": p["name"], "kind": "malloc", "num_blocks": size // block, "block_size": block}
    else:
        if size is None and not os.path.exists(p["path"]):
            fail_param(module, "size", "required: %s does not exist yet" % p["path"])
        params = {"name": p["name"], "filename": p["path"]}
        if bs is not None:
            params["block_size"] = bs
        if size is not None:
            params["size"] = size
        plan.add("bdev_file_create", params, "bdev_file_create %s" % p["name"])
        after = {"name": p["name"], "kind": "file", "filename": p["path"]}
    plan.finish(module, rpc, before, after,
                refresh=lambda r: find_bdev(module, r, p["name"]) or {})


if __name__ == "__main__":
    main()
