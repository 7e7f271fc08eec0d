# -*- coding: utf-8 -*-
# Copyright: Ferrite contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""JSON-RPC 2.0 client for ferrited's Unix socket and the validators every module shares.

Every module of ferrite.storage talks to the daemon through `FerriteRpc`; the parameter
checks here mirror the daemon's own (appliance/rpc, appliance/nvme) so a play fails on a bad
variable before anything is sent.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import json
import re
import socket

DEFAULT_SOCKET = "/run/ferrite/ferrited.sock"
DISCOVERY_NQN = "nqn.2014-08.org.nvmexpress.discovery"
NQN_MAX_LEN = 223
UUID_NQN_PREFIX = "nqn.2014-08.org.nvmexpress:uuid:"

# JSON-RPC error codes ferrited returns (docs/rpc.md).
EEXIST = -17
ENODEV = -19
EBUSY = -16
ENOSPC = -28

MAX_RESPONSE = 16 * 1024 * 1024


class RpcError(Exception):
    """An error answer (code, message) or a failure to reach the daemon (code None)."""

    def __init__(self, method, code, message):
        super(RpcError, self).__init__(message)
        self.method = method
        self.code = code
        self.message = message

    def __str__(self):
        if self.code is None:
            return "%s: %s" % (self.method, self.message)
        return "%s failed (%d): %s" % (self.method, self.code, self.message)


class FerriteRpc(object):
    """One connection to ferrited, requests sent one at a time."""

    def __init__(self, path, timeout=60.0):
        self.path = path
        self.timeout = timeout
        self._sock = None
        self._buf = b""
        self._next_id = 1

    def _connect(self):
        if self._sock is not None:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except (OSError, socket.error) as e:
            sock.close()
            raise RpcError(
                "connect",
                None,
                "cannot reach ferrited at rpc_socket %s: %s" % (self.path, e),
            )
        self._sock = sock

    def close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def call(self, method, params=None):
        """Sends one request and returns its `result`; raises RpcError on an error answer."""
        self._connect()
        req = {"jsonrpc": "2.0", "id": self._next_id, "method": method}
        self._next_id += 1
        if params is not None:
            req["params"] = params
        data = json.dumps(req).encode("utf-8") + b"\n"
        try:
            self._sock.sendall(data)
            line = self._read_line(method)
        except (OSError, socket.error) as e:
            self.close()
            raise RpcError(method, None, "connection to %s failed: %s" % (self.path, e))
        try:
            answer = json.loads(line.decode("utf-8"))
        except ValueError as e:
            self.close()
            raise RpcError(method, None, "ferrited sent invalid JSON: %s" % e)
        if not isinstance(answer, dict):
            raise RpcError(method, None, "ferrited sent a non-object answer")
        if "error" in answer and answer["error"] is not None:
            err = answer["error"]
            raise RpcError(method, err.get("code"), err.get("message", "error"))
        return answer.get("result")

    def _read_line(self, method):
        while b"\n" not in self._buf:
            chunk = self._sock.recv(65536)
            if not chunk:
                self.close()
                raise RpcError(method, None, "ferrited closed the connection")
            self._buf += chunk
            if len(self._buf) > MAX_RESPONSE:
                self.close()
                raise RpcError(method, None, "answer larger than %d bytes" % MAX_RESPONSE)
        line, self._buf = self._buf.split(b"\n", 1)
        return line


def rpc_argument_spec():
    """The connection options every module takes."""
    return dict(
        rpc_socket=dict(type="path", default=DEFAULT_SOCKET),
        rpc_timeout=dict(type="float", default=60.0),
    )


def connect(module):
    return FerriteRpc(module.params["rpc_socket"], module.params["rpc_timeout"])


# ---------------------------------------------------------------- validators
#
# Each returns None when the value is valid and an error text otherwise; callers put the
# variable's name in front, so a message reads "volumes_volumes[1].size: ...".

_SIZE_RE = re.compile(r"^\s*([0-9]+)\s*([A-Za-z]*)\s*$")
_SHIFTS = {
    "": 0, "b": 0,
    "k": 10, "kib": 10, "kb": 10,
    "m": 20, "mib": 20, "mb": 20,
    "g": 30, "gib": 30, "gb": 30,
    "t": 40, "tib": 40, "tb": 40,
}
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,62}$")
_DATE_RE = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DOMAIN_RE = re.compile(r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$")


def parse_size(value):
    """Bytes from an integer or "10GiB"-style text (binary units, as ferrited parses them).

    Returns (bytes, None) or (None, error text)."""
    if isinstance(value, bool):
        return None, "%r is not a size" % (value,)
    if isinstance(value, int):
        if value < 0:
            return None, "%d is negative" % value
        return value, None
    text = str(value)
    m = _SIZE_RE.match(text)
    if not m:
        return None, "%r is not a size: use bytes or a number with K, M, G, T (KiB, MiB, GiB, TiB)" % text
    unit = m.group(2).lower()
    if unit not in _SHIFTS:
        return None, "%r is not a size: unknown unit %r (K, M, G, T, KiB, MiB, GiB, TiB)" % (text, m.group(2))
    n = int(m.group(1)) << _SHIFTS[unit]
    if n >= 1 << 64:
        return None, "%r is too large" % text
    return n, None


def nqn_error(nqn):
    """Mirrors appliance/nvme's validate_nqn."""
    if not isinstance(nqn, str) or not nqn:
        return "an NQN is required"
    if len(nqn.encode("utf-8")) > NQN_MAX_LEN:
        return "%r is longer than %d bytes" % (nqn, NQN_MAX_LEN)
    if "\0" in nqn:
        return "%r contains NUL" % nqn
    if nqn.startswith(UUID_NQN_PREFIX):
        if _UUID_RE.match(nqn[len(UUID_NQN_PREFIX):]):
            return None
        return "%r is not a valid NQN: malformed UUID" % nqn
    if not nqn.startswith("nqn."):
        return "%r is not a valid NQN: missing nqn. prefix (nqn.yyyy-mm.reverse.domain:name)" % nqn
    rest = nqn[4:]
    if not _DATE_RE.match(rest[:7]):
        return "%r is not a valid NQN: malformed yyyy-mm date" % nqn
    after = rest[7:]
    if not after.startswith("."):
        return "%r is not a valid NQN: missing . after the date" % nqn
    domain = after[1:].split(":", 1)[0]
    if not _DOMAIN_RE.match(domain):
        return "%r is not a valid NQN: malformed reverse domain name" % nqn
    return None


def subsystem_nqn_error(nqn):
    err = nqn_error(nqn)
    if err is None and nqn == DISCOVERY_NQN:
        return "%r is the discovery subsystem, which cannot be managed" % nqn
    return err


def name_error(name):
    """Pool, volume and snapshot names: 1-63 of A-Z a-z 0-9 . _ -, not starting with . or -."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        return ("%r is not a valid name: 1-63 characters of A-Z a-z 0-9 . _ -, "
                "not starting with . or -" % (name,))
    return None


def bdev_name_error(name):
    """Backend bdev names: 1-255 printable characters without '/'."""
    if not isinstance(name, str) or not name or len(name) > 255 or "/" in name:
        return "%r is not a valid bdev name: 1-255 printable characters without /" % (name,)
    if any(ord(c) < 0x20 or ord(c) > 0x7e for c in name):
        return "%r is not a valid bdev name: 1-255 printable characters without /" % (name,)
    return None


def volume_ref_error(ref):
    """A "<pool>/<volume>" reference."""
    if not isinstance(ref, str) or ref.count("/") != 1:
        return "%r is not \"<pool>/<volume>\"" % (ref,)
    pool, vol = ref.split("/")
    return name_error(pool) or name_error(vol)


def hex16_error(text):
    if text is None:
        return None
    digits = str(text).replace("-", "")
    if len(digits) != 32 or not re.match(r"^[0-9a-fA-F]{32}$", digits):
        return "%r is not 32 hex digits" % (text,)
    return None


def normalize_hex16(text):
    return str(text).replace("-", "").lower()


def listener_key(listener):
    """(trtype, traddr, port) of a listen address as declared or as nvmf_get_subsystems gives it."""
    ip = ipaddress.ip_address(str(listener["traddr"]))
    return ("tcp", str(ip), int(listener["trsvcid"]))


def listener_error(listener):
    """Checks a declared listener {trtype, adrfam, traddr, trsvcid}."""
    if not isinstance(listener, dict):
        return "%r is not a mapping with traddr and trsvcid" % (listener,)
    unknown = sorted(set(listener) - set(["trtype", "adrfam", "traddr", "trsvcid"]))
    if unknown:
        return "unknown key(s) %s (trtype, adrfam, traddr, trsvcid)" % ", ".join(unknown)
    trtype = str(listener.get("trtype", "tcp"))
    if trtype.lower() != "tcp":
        return "trtype %r is not supported: only tcp" % trtype
    if "traddr" not in listener:
        return "traddr is required"
    try:
        ip = ipaddress.ip_address(str(listener["traddr"]))
    except ValueError:
        return "traddr %r is not an IPv4 or IPv6 address" % (listener["traddr"],)
    fam = listener.get("adrfam")
    if fam is not None:
        fam = str(fam).lower()
        if fam not in ("ipv4", "ipv6"):
            return "adrfam %r must be ipv4 or ipv6" % (listener["adrfam"],)
        if (fam == "ipv4") != (ip.version == 4):
            return "adrfam %s does not match traddr %s" % (fam, ip)
    try:
        port = int(str(listener.get("trsvcid")))
    except ValueError:
        return "trsvcid %r is not a port number" % (listener.get("trsvcid"),)
    if not 1 <= port <= 65535:
        return "trsvcid %r is not a port number (1-65535)" % (listener.get("trsvcid"),)
    return None


def listener_params(nqn, listener):
    ip = ipaddress.ip_address(str(listener["traddr"]))
    return {
        "nqn": nqn,
        "listen_address": {
            "trtype": "tcp",
            "adrfam": "ipv4" if ip.version == 4 else "ipv6",
            "traddr": str(ip),
            "trsvcid": str(int(str(listener["trsvcid"]))),
        },
    }


def port_in_use_error(listener):
    """Binds the address briefly: an error text when another process holds it."""
    ip = ipaddress.ip_address(str(listener["traddr"]))
    port = int(str(listener["trsvcid"]))
    fam = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    sock = socket.socket(fam, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((str(ip), port))
    except (OSError, socket.error) as e:
        return "%s port %d cannot be bound (in use by another process?): %s" % (ip, port, e)
    finally:
        sock.close()
    return None


def ferrited_listen_keys(subsystems):
    """Every address ferrited is bound to, from an nvmf_get_subsystems answer."""
    keys = set()
    for sub in subsystems:
        for addr in sub.get("listen_addresses", []):
            keys.add(listener_key(addr))
    return keys


# ---------------------------------------------------------------- plans
#
# A module first reads the daemon's state and validates every parameter, then builds a Plan
# (the RPC calls that make the declared state true), and only then applies it. A failure while
# applying names the call that failed and the calls already made.


class Plan(object):
    def __init__(self):
        self.steps = []

    def add(self, method, params, text):
        self.steps.append((method, params, text))

    def __len__(self):
        return len(self.steps)

    def finish(self, module, rpc, before, after, refresh=None, **extra):
        """Applies the plan (unless in check mode) and exits the module.

        `refresh(rpc)`, when given, reads the object back after the change; its answer replaces
        `after` in the diff and is returned as the `object` key."""
        applied = []
        results = []
        if not module.check_mode:
            for method, params, text in self.steps:
                try:
                    results.append(rpc.call(method, params))
                except RpcError as e:
                    rpc.close()
                    module.fail_json(
                        msg="%s: %s" % (text, e),
                        applied=applied,
                        failed_step=text,
                        rpc_code=e.code,
                    )
                applied.append(text)
            if refresh is not None:
                after = refresh(rpc)
                extra["object"] = after
        rpc.close()
        out = dict(changed=bool(self.steps), actions=[s[2] for s in self.steps])
        out.update(extra)
        if self.steps and module._diff:
            out["diff"] = dict(before=before, after=after)
        module.exit_json(**out)


def call_or_fail(module, rpc, method, params=None):
    """A read-only call; fails the module with the daemon's message."""
    try:
        return rpc.call(method, params)
    except RpcError as e:
        rpc.close()
        module.fail_json(msg=str(e), rpc_code=e.code)


def fail_param(module, name, error):
    """Fails naming the parameter (and the role variable it came from, when given)."""
    var = module.params.get("variable_name")
    where = "%s.%s" % (var, name) if var else name
    module.fail_json(msg="%s: %s" % (where, error), parameter=name)


def variable_name_spec():
    """`variable_name`: the role variable an object came from, used in error messages."""
    return dict(variable_name=dict(type="str"))


def object_spec(**options):
    """The argument spec of a module managing one kind of object: its own `options`, the
    connection options and `variable_name`."""
    spec = dict(options)
    spec.update(rpc_argument_spec())
    spec.update(variable_name_spec())
    return spec


def subsystem_part(module, current):
    """A subsystem's hosts, listeners or namespaces as read (None: no such subsystem).

    Nothing is removed from a subsystem that does not exist; in check mode a missing one may
    come from an earlier task of the same play, so it counts as empty. Otherwise the module
    fails naming `nqn`."""
    if current is not None:
        return current
    if module.params["state"] == "present" and not module.check_mode:
        fail_param(module, "nqn", "no subsystem %s" % module.params["nqn"])
    return []


def call_or_none(module, rpc, method, params=None):
    """A read-only call whose not-found answer (-19) is None; other errors fail the module."""
    try:
        return rpc.call(method, params)
    except RpcError as e:
        if e.code == ENODEV:
            return None
        rpc.close()
        module.fail_json(msg=str(e), rpc_code=e.code)


def call_first(module, rpc, method, params=None):
    """The first item of a list answer; None when the list is empty or the object is not
    found (-19)."""
    found = call_or_none(module, rpc, method, params)
    return found[0] if found else None


def pick(obj, keys, rename=None):
    """The `keys` of an object read from the daemon ({} when there is none), each under its
    name in `rename` when it has one there (the module's own parameter names)."""
    if not obj:
        return {}
    rename = rename or {}
    return dict((rename.get(k, k), obj.get(k)) for k in keys)
