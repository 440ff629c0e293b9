"""Driver fields and device addresses of the network readers that are not Modbus: SMA Speedwire and SNMP.

Compiled here, used by readers/speedwire.py and readers/snmp/; drivers.compile_field and
config._check_address hand these reading types over.

Speedwire field: `obis_channel` (0..65535, upstream's 16-bit channel), `obis_type` (4 actual, 8 counter,
0 the version record), `datatype` (default uint32 for type 4, uint64 for type 8; it must fit the record).
SNMP field: `oid` (dotted, a leading dot allowed); `datatype` and `words` are ignored (an SNMP value
carries its own type), scaling and typecast apply as everywhere.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from . import codec, drivers
from .problems import InvalidInput, Problem, join_path

SPEEDWIRE_GROUP, SPEEDWIRE_PORT = "239.12.255.254", 9522
OBIS_SIZES = {4: 4, 8: 8, 0: 4}
SNMP_VERSIONS = {"1": 1, "v1": 1, "2": 2, "2c": 2, "v2c": 2, "v2": 2, "3": 3, "v3": 3}
AUTH_PROTOCOLS = ("MD5", "SHA", "SHA-224", "SHA-256", "SHA-384", "SHA-512")
PRIV_PROTOCOLS = ("AES",)  # AES-128 CFB (RFC 3826)
SECURITY_LEVELS = ("noAuthNoPriv", "authNoPriv", "authPriv")
MAX_OIDS = 60
DEFAULT_MAX_OIDS = 24
_OID_RE = re.compile(r"^\.?(?:[0-2])(?:\.(?:0|[1-9][0-9]{0,9}))+$")


@dataclass(frozen=True, slots=True)
class SpeedwireField:
    name: str
    channel: int
    obis_type: int
    spec: codec.ValueSpec
    unit: str | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class SnmpField:
    name: str
    oid: tuple[int, ...]
    spec: codec.ValueSpec
    unit: str | None = None
    description: str | None = None


def compile_speedwire_field(name: str, opts: dict, path: str) -> SpeedwireField:
    channel = drivers._int_or(opts, "obis_channel", path, 0, 0xFFFF, 0)
    kind = drivers._int(opts, "obis_type", path, 0, 255)
    if kind not in OBIS_SIZES:
        raise InvalidInput(join_path(path, "obis_type"), f"{kind!r} is not 4 (actual), 8 (counter) or 0 (version)")
    datatype, _ = drivers._datatype(opts, path, None)
    if datatype is None:
        datatype = "uint64" if kind == 8 else "uint32"
    if codec.is_text(datatype) or codec.NUMERIC_TYPES[datatype][1] != OBIS_SIZES[kind]:
        raise InvalidInput(
            join_path(path, "datatype"), f"{datatype} does not fit an OBIS type {kind} value ({OBIS_SIZES[kind]} bytes)"
        )
    spec = drivers._value_spec(opts, path, datatype)
    return SpeedwireField(name, channel, kind, spec, opts.get("unit"), opts.get("description"))


def parse_oid(value: object, path: str) -> tuple[int, ...]:
    if not isinstance(value, str) or not _OID_RE.match(value.strip()):
        raise InvalidInput(path, f"{value!r} is not a numeric OID like 1.3.6.1.2.1.1.3.0")
    parts = tuple(int(p) for p in value.strip().lstrip(".").split("."))
    if parts[0] < 2 and parts[1] > 39 or any(p > 0xFFFFFFFF for p in parts) or len(parts) > 128:
        raise InvalidInput(path, f"{value!r} is not a valid OID")
    return parts


def compile_snmp_field(name: str, opts: dict, path: str) -> SnmpField:
    oid = parse_oid(opts.get("oid"), join_path(path, "oid"))
    return SnmpField(name, oid, drivers._value_spec(opts, path, None), opts.get("unit"), opts.get("description"))


# -- addresses ---------------------------------------------------------------------------------------


def _int_in(address: dict, key: str, path: str, lo: int, hi: int, default: int) -> int:
    value = address.get(key, default)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)  # upstream UIs store numbers as strings
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(join_path(path, key), f"{value!r} is not an integer")
    if not lo <= value <= hi:
        raise InvalidInput(join_path(path, key), f"{value} is outside {lo}..{hi}")
    address[key] = value
    return value


def check_speedwire_address(address: dict, path: str) -> None:
    if "serial" not in address:
        raise InvalidInput(
            join_path(path, "serial"), "needs the meter's serial number (the scan lists the serials heard)"
        )
    _int_in(address, "serial", path, 0, 0xFFFFFFFF, 0)
    group = address.get("group", SPEEDWIRE_GROUP)
    try:
        multicast = isinstance(group, str) and ipaddress.IPv4Address(group).is_multicast
    except ValueError:
        multicast = False
    if not multicast:
        raise InvalidInput(join_path(path, "group"), f"{group!r} is not an IPv4 multicast group (224.0.0.0/4)")
    address["group"] = group
    _int_in(address, "port", path, 1, 65535, SPEEDWIRE_PORT)
    for key, default in (("recv_buffer_size", 10240), ("max_responses", 5)):  # upstream's; not needed here
        if key in address:
            _int_in(address, key, path, 1, 1 << 20, default)


def check_snmp_address(address: dict, path: str, problems: list[Problem] | None) -> None:
    host = address.get("host")
    if not isinstance(host, str) or not host.strip():
        raise InvalidInput(join_path(path, "host"), "needs the agent's host name or IP address")
    _int_in(address, "port", path, 1, 65535, 161)
    version = address.get("version", 2)
    key = str(version).strip().lower() if isinstance(version, (int, str)) and not isinstance(version, bool) else ""
    if key not in SNMP_VERSIONS:
        raise InvalidInput(join_path(path, "version"), f"{version!r} is not 1, 2 (2c) or 3")
    address["version"] = SNMP_VERSIONS[key]
    _int_in(address, "max_oids", path, 1, MAX_OIDS, DEFAULT_MAX_OIDS)
    if address["version"] < 3:
        community = address.get("community", "public")
        if not isinstance(community, str):
            raise InvalidInput(join_path(path, "community"), "must be a string")
        return
    user = address.get("user")
    if not isinstance(user, str) or not user:
        raise InvalidInput(join_path(path, "user"), "SNMPv3 needs a user name")
    auth, priv = address.get("auth_protocol"), address.get("priv_protocol")
    if auth is not None:
        if not isinstance(auth, str) or auth.upper() not in AUTH_PROTOCOLS:
            raise InvalidInput(join_path(path, "auth_protocol"), f"{auth!r} is not one of {', '.join(AUTH_PROTOCOLS)}")
        address["auth_protocol"] = auth.upper()
        _secret(address, "auth_password", path)
    if priv is not None:
        if not isinstance(priv, str) or priv.upper() not in PRIV_PROTOCOLS:
            raise InvalidInput(join_path(path, "priv_protocol"), f"{priv!r} is not AES (AES-128)")
        if auth is None:
            raise InvalidInput(join_path(path, "priv_protocol"), "privacy needs authentication (auth_protocol)")
        address["priv_protocol"] = priv.upper()
        _secret(address, "priv_password", path)
    context = address.get("context", "")
    if not isinstance(context, str):
        raise InvalidInput(join_path(path, "context"), "must be a string")


def _secret(address: dict, key: str, path: str) -> None:
    value = address.get(key)
    if not isinstance(value, str) or len(value) < 8:
        raise InvalidInput(join_path(path, key), "needs a pass phrase of at least 8 characters (RFC 3414)")
