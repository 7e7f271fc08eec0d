#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Ferrite contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: ferrite_nvme_connection
short_description: Connect a Linux NVMe-oF host to a subsystem (nvme-cli)
version_added: 0.1.0
description:
  - Reads the host's NVMe controllers from sysfs (C(/sys/class/nvme/*/subsysnqn), C(address),
    C(transport)), and runs C(nvme connect) only when no controller of the subsystem is connected
    through the address, or C(nvme disconnect -d) for each one that is, with I(state=absent).
  - The kernel's C(nvme-tcp) module must be loaded to connect (the C(nvmeof_host) role loads it).
author: Ferrite contributors (!UNKNOWN)
extends_documentation_fragment:
  - ferrite.storage.rpc.variable
options:
  nqn:
    description: The subsystem NQN.
    type: str
    required: true
  traddr:
    description: The target's IP address.
    type: str
    required: true
  trsvcid:
    description: The target's port.
    type: int
    default: 4420
  transport:
    description: The transport; only C(tcp).
    type: str
    choices: [tcp]
    default: tcp
  hostnqn:
    description: The host NQN to connect as; default the one in C(/etc/nvme/hostnqn).
    type: str
  hostid:
    description: The host ID (a UUID); default the one in C(/etc/nvme/hostid).
    type: str
  hdr_digest:
    description: Enable the NVMe/TCP header digest.
    type: bool
    default: false
  data_digest:
    description: Enable the NVMe/TCP data digest.
    type: bool
    default: false
  ctrl_loss_tmo:
    description: Seconds the kernel keeps reconnecting after the target is lost (-1 forever).
    type: int
  nr_io_queues:
    description: Number of I/O queues; default one per host CPU.
    type: int
  state:
    description: C(present) connects when not connected, C(absent) disconnects.
    type: str
    choices: [present, absent]
    default: present
  sysfs_dir:
    description: Where the kernel lists NVMe controllers.
    type: path
    default: /sys/class/nvme
  nvme_command:
    description: The nvme-cli program.
    type: path
    default: nvme
attributes:
  check_mode:
    support: full
    description: Reads sysfs and reports the command it would run, running none.
  diff_mode:
    support: full
    description: Reports the controllers before and after.
"""

EXAMPLES = r"""
- name: Attach the database subsystem
  ferrite.storage.ferrite_nvme_connection:
    nqn: nqn.2026-01.io.ferrite:db
    traddr: 192.0.2.10
    trsvcid: 4420
    ctrl_loss_tmo: -1
"""

RETURN = r"""
actions:
  description: The commands run (or that would be run in check mode).
  returned: always
  type: list
  elements: str
controllers:
  description: The matching controllers before the change, C({device, state}).
  returned: always
  type: list
  elements: dict
"""

import ipaddress
import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ferrite.storage.plugins.module_utils.ferrite_rpc import (
    fail_param,
    nqn_error,
    subsystem_nqn_error,
    variable_name_spec,
)


def read_attr(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except (IOError, OSError):
        return None


def parse_address(text):
    """'traddr=192.0.2.1,trsvcid=4420,src_addr=...' -> dict."""
    out = {}
    for part in (text or "").split(","):
        if "=" in part:
            key, value = part.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def controllers(sysfs_dir):
    """Every fabrics controller the kernel has: {device, transport, nqn, traddr, trsvcid, hostnqn, state}."""
    found = []
    if not os.path.isdir(sysfs_dir):
        return found
    for dev in sorted(os.listdir(sysfs_dir)):
        base = os.path.join(sysfs_dir, dev)
        addr = parse_address(read_attr(os.path.join(base, "address")))
        found.append({
            "device": dev,
            "transport": read_attr(os.path.join(base, "transport")),
            "nqn": read_attr(os.path.join(base, "subsysnqn")),
            "traddr": addr.get("traddr"),
            "trsvcid": addr.get("trsvcid"),
            "hostnqn": read_attr(os.path.join(base, "hostnqn")),
            "state": read_attr(os.path.join(base, "state")),
        })
    return found


def same_ip(a, b):
    try:
        return ipaddress.ip_address(str(a)) == ipaddress.ip_address(str(b))
    except ValueError:
        return False


def main():
    spec = dict(
        nqn=dict(type="str", required=True),
        traddr=dict(type="str", required=True),
        trsvcid=dict(type="int", default=4420),
        transport=dict(type="str", choices=["tcp"], default="tcp"),
        hostnqn=dict(type="str"),
        hostid=dict(type="str"),
        hdr_digest=dict(type="bool", default=False),
        data_digest=dict(type="bool", default=False),
        ctrl_loss_tmo=dict(type="int"),
        nr_io_queues=dict(type="int"),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        sysfs_dir=dict(type="path", default="/sys/class/nvme"),
        nvme_command=dict(type="path", default="nvme"),
    )
    spec.update(variable_name_spec())
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params

    err = subsystem_nqn_error(p["nqn"])
    if err:
        fail_param(module, "nqn", err)
    if p["hostnqn"] is not None:
        err = nqn_error(p["hostnqn"])
        if err:
            fail_param(module, "hostnqn", err)
    try:
        ipaddress.ip_address(p["traddr"])
    except ValueError:
        fail_param(module, "traddr", "%r is not an IPv4 or IPv6 address" % p["traddr"])
    if not 1 <= p["trsvcid"] <= 65535:
        fail_param(module, "trsvcid", "%d is not a port number (1-65535)" % p["trsvcid"])
    if p["nr_io_queues"] is not None and p["nr_io_queues"] < 1:
        fail_param(module, "nr_io_queues", "%d must be at least 1" % p["nr_io_queues"])

    def wanted(c):
        return (c["transport"] == p["transport"] and c["nqn"] == p["nqn"]
                and same_ip(c["traddr"], p["traddr"]) and str(c["trsvcid"]) == str(p["trsvcid"])
                and (p["hostnqn"] is None or c["hostnqn"] == p["hostnqn"]))

    current = [c for c in controllers(p["sysfs_dir"]) if wanted(c)]
    shown = [{"device": c["device"], "state": c["state"]} for c in current]
    commands = []
    if p["state"] == "present" and not current:
        cmd = [p["nvme_command"], "connect", "-t", p["transport"], "-a", p["traddr"],
               "-s", str(p["trsvcid"]), "-n", p["nqn"]]
        for key, flag in (("hostnqn", "--hostnqn"), ("hostid", "--hostid"),
                          ("ctrl_loss_tmo", "--ctrl-loss-tmo"), ("nr_io_queues", "--nr-io-queues")):
            if p[key] is not None:
                cmd += [flag, str(p[key])]
        if p["hdr_digest"]:
            cmd.append("--hdr-digest")
        if p["data_digest"]:
            cmd.append("--data-digest")
        commands.append(cmd)
        after = [{"device": "new", "state": "live"}]
    elif p["state"] == "absent":
        for c in current:
            commands.append([p["nvme_command"], "disconnect", "-d", c["device"]])
        after = []
    else:
        after = shown

    if not module.check_mode:
        if p["state"] == "present" and commands and not os.path.exists("/dev/nvme-fabrics"):
            module.fail_json(msg="cannot connect %s: /dev/nvme-fabrics is missing (load the nvme-tcp "
                             "kernel module)" % p["nqn"], actions=[" ".join(c) for c in commands])
        for cmd in commands:
            rc, out, errout = module.run_command(cmd)
            if rc != 0:
                module.fail_json(msg="%s failed (%d): %s" % (" ".join(cmd), rc, (errout or out).strip()),
                                 rc=rc, stdout=out, stderr=errout)
    result = dict(changed=bool(commands), actions=[" ".join(c) for c in commands], controllers=shown)
    if commands and module._diff:
        result["diff"] = dict(before={"controllers": shown}, after={"controllers": after})
    module.exit_json(**result)


if __name__ == "__main__":
    main()
