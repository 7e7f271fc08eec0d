# -*- coding: utf-8 -*-
# Copyright: Ferrite contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """The connection options of every ferrite.storage module."""

    DOCUMENTATION = r"""
options:
  rpc_socket:
    description:
      - Path of ferrited's JSON-RPC Unix socket (C(ferrited --rpc-socket)).
    type: path
    default: /run/ferrite/ferrited.sock
  rpc_timeout:
    description:
      - Seconds to wait for one answer of the daemon.
    type: float
    default: 60.0
attributes:
  check_mode:
    support: full
    description: Reads the daemon's state and reports the calls it would make, making none.
  diff_mode:
    support: full
    description: Reports the object before and after the change.
"""

    VARIABLE = r"""
options:
  variable_name:
    description:
      - Name of the role variable this object came from, for example C(volumes_volumes[2]).
      - Error messages about a parameter then name C(volumes_volumes[2].size) instead of C(size).
    type: str
"""

    SUBSYSTEM_PART = r"""
options:
  nqn:
    description: The subsystem NQN.
    type: str
    required: true
  state:
    description: C(present) adds the listed items to the subsystem, C(absent) removes them.
    type: str
    choices: [present, absent]
    default: present
  exclusive:
    description: With I(state=present), also remove every item of the subsystem not listed.
    type: bool
    default: false
"""
