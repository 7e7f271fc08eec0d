#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Ferrite contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: ferrite_info
short_description: Read the state of a ferrited appliance
version_added: 0.1.0
description:
  - Returns ferrited's bdevs, pools, volumes, snapshots and subsystems
    (C(bdev_list), C(pool_list), C(volume_list), C(snapshot_list), C(nvmf_get_subsystems)) and,
    optionally, its running configuration (C(save_config)).
author: Ferrite contributors (!UNKNOWN)
extends_documentation_fragment:
  - ferrite.storage.rpc
options:
  config:
    description: Also return the running configuration as C(ferrited --config) text.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Read the appliance
  ferrite.storage.ferrite_info:
  register: appliance

- name: Show the subsystems
  ansible.builtin.debug:
    var: appliance.subsystems
"""

RETURN = r"""
bdevs:
  description: C(bdev_list) (backends and the bdevs of volumes, snapshots and clones).
  returned: always
  type: list
  elements: dict
pools:
  description: C(pool_list).
  returned: always
  type: list
  elements: dict
volumes:
  description: C(volume_list) (volumes and clones).
  returned: always
  type: list
  elements: dict
snapshots:
  description: C(snapshot_list).
  returned: always
  type: list
  elements: dict
subsystems:
  description: C(nvmf_get_subsystems) without the discovery subsystem.
  returned: always
  type: list
  elements: dict
listen_addresses:
  description: Every address ferrited is bound to (the discovery subsystem's).
  returned: always
  type: list
  elements: dict
running_config:
  description: C(save_config).
  returned: when I(config=true)
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ferrite.storage.plugins.module_utils.ferrite_rpc import (
    call_or_fail,
    connect,
    rpc_argument_spec,
)


def main():
    spec = dict(config=dict(type="bool", default=False))
    spec.update(rpc_argument_spec())
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    rpc = connect(module)
    subsystems = call_or_fail(module, rpc, "nvmf_get_subsystems")
    out = dict(
        changed=False,
        bdevs=call_or_fail(module, rpc, "bdev_list"),
        pools=call_or_fail(module, rpc, "pool_list"),
        volumes=call_or_fail(module, rpc, "volume_list"),
        snapshots=call_or_fail(module, rpc, "snapshot_list"),
        subsystems=[s for s in subsystems if s.get("subtype") != "Discovery"],
        listen_addresses=[a for s in subsystems if s.get("subtype") == "Discovery"
                          for a in s.get("listen_addresses", [])],
    )
    if module.params["config"]:
        out["running_config"] = call_or_fail(module, rpc, "save_config")
    rpc.close()
    module.exit_json(**out)


if __name__ == "__main__":
    main()
