"""Site config: lenient, loud loading of upstream config JSON.

A config is usable when it is a JSON object with `devices` and `readings` objects and a sane
`read_interval`. Everything below that is checked per device: a bad device, driver, reading or
status reading is reported with its JSON path and skipped; the rest runs.

Buses: each enabled device with readings belongs to exactly one physical bus, which one process
owns (`ammp-edge bus BUS_ID`). Bus ids are derived from the address:
  sys                               -> "sys"
  modbustcp, rawtcp                 -> "tcp_<host or mac>_<port>"   (a gateway's unit ids share it)
  modbusrtu, serial, rawserial      -> "serial_<port name>"         (e.g. serial_ttyUSB0)
  sma_speedwire                     -> "speedwire" (default group and port, else "speedwire_<group>_<port>")
  mqtt                              -> "mqtt_<host>_<port>"
  snmp                              -> "snmp"
  sma_hycon_csv                     -> "sma_hycon_csv_<device key>" (no bus program: a daily backfill)
Characters outside [A-Za-z0-9_.-] become "_".
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any

from . import drivers as drv, jsontext, netfields, serialline
from .problems import ConfigUnusable, InvalidInput, Problem, join_path, nonfinite, nonfinite_problem, refuse_nonfinite

log = logging.getLogger(__name__)

try:  # CPython's own SHA-1: hashlib would map OpenSSL (~5 MB of RSS) into every bus process for one digest
    from _sha1 import sha1 as _sha1
except ImportError:  # pragma: no cover - other Pythons
    from hashlib import sha1 as _sha1

READING_TYPES = (
    "sys",
    "modbusrtu",
    "modbustcp",
    "mqtt",
    "rawserial",
    "rawtcp",
    "sma_hycon_csv",
    "sma_speedwire",
    "snmp",
)
READING_TYPE_ALIASES = {"serial": "modbusrtu"}
IMPLEMENTED = (
    "sys",
    "modbustcp",
    "modbusrtu",
    "rawserial",
    "rawtcp",
    "sma_speedwire",
    "snmp",
    "mqtt",
    "sma_hycon_csv",
)
BACKFILL_TYPES = ("sma_hycon_csv",)  # read once a day by their own program (`ammp-edge hycon`), not by a bus
# the field kind (drivers.field_kind) each reading type reads; a reading type not listed reads its own kind
FIELD_KINDS = {"modbustcp": "modbus", "modbusrtu": "modbus", "sma_hycon_csv": "csv"}
MODBUS_TYPES = ("modbustcp", "modbusrtu")
NET_FIELDS = {"sma_speedwire": netfields.SpeedwireField, "snmp": netfields.SnmpField}  # reading type -> its field
DEFAULT_TIMEOUT = 5.0
DEFAULT_READ_INTERVAL = 60
# bounds of a device's seconds (a larger value is used as the bound, with a warning): one silent device
# must not hold its bus for hours, and SIGTERM stops a bus within a second whatever they are
MIN_TIMEOUT, MAX_TIMEOUT = 0.05, 60.0
MAX_DEADLINE = 600.0
MAX_FRAME_GAP = 1.0


@dataclass
class Device:
    key: str
    reading_type: str
    vendor_id: str
    driver_name: str
    address: dict
    timeout: float
    deadline: float
    min_read_interval: float = 0
    name: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # var -> compiled driver field
    status: list[drv.StatusItem] = field(default_factory=list)
    bus_id: str = ""

    @property
    def unit_id(self) -> int:
        if self.reading_type == "modbusrtu":
            return int(self.address.get("slaveaddr", self.address.get("unit_id", 1)))
        return int(self.address.get("unit_id", 1))

    @property
    def register_offset(self) -> int:
        return int(self.address.get("register_offset", 0))


@dataclass
class Config:
    raw: dict
    devices: dict[str, Device]
    problems: list[Problem]
    read_interval: int
    read_roundtime: bool
    outputs: list
    calc_vendor_id: str
    config_id: str

    def buses(self) -> dict[str, list[Device]]:
        out: dict[str, list[Device]] = {}
        for dev in self.devices.values():
            if dev.reading_type not in BACKFILL_TYPES:
                out.setdefault(dev.bus_id, []).append(dev)
        return out

    def backfill_devices(self, reading_type: str = "sma_hycon_csv") -> list[Device]:
        return [d for d in self.devices.values() if d.reading_type == reading_type]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


def digest(raw: dict) -> str:
    """Upstream config_id digest: sha1 of the sort-keys JSON (default separators) without config_id."""
    body = {k: v for k, v in raw.items() if k != "config_id"}
    return _sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()[:7]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def bus_id_for(key: str, reading_type: str, address: dict) -> str:
    if reading_type == "sys":
        return "sys"
    if reading_type in ("modbustcp", "rawtcp"):
        host = address.get("host") or re.sub(r"[^0-9a-f]", "", str(address.get("mac", "")).lower())
        return _safe(f"tcp_{str(host).lower()}_{address.get('port', 502)}")
    if reading_type in ("modbusrtu", "rawserial"):
        port = str(address.get("device", ""))
        return _safe("serial_" + (port[5:] if port.startswith("/dev/") else port).strip("/"))
    if reading_type == "sma_speedwire":  # one bus (one socket) per multicast group and port
        group, port = address.get("group", "239.12.255.254"), address.get("port", 9522)
        return "speedwire" if (group, port) == ("239.12.255.254", 9522) else _safe(f"speedwire_{group}_{port}")
    if reading_type == "mqtt":
        return _safe(f"mqtt_{address.get('host', 'localhost')}_{address.get('port', 1883)}")
    if reading_type == "snmp":
        return "snmp"
    return _safe(f"{reading_type}_{key}")


def _check_address(key: str, reading_type: str, address: Any, path: str, problems: list[Problem] | None = None) -> dict:
    if address is None:
        address = {}
    if not isinstance(address, dict):
        raise InvalidInput(path, "must be an object")
    address = dict(address)
    if reading_type == "modbustcp":
        host, mac = address.get("host"), address.get("mac")
        if not host and not mac:
            raise InvalidInput(path, "needs 'host' (or 'mac')")
        if host is not None and not isinstance(host, str):
            raise InvalidInput(join_path(path, "host"), f"{host!r} is not a host name or IP address")
        if not host:
            if (
                not isinstance(mac, str)
                or len(re.sub(r"[^0-9a-fA-F]", "", mac)) != 12
                or not re.fullmatch(r"[0-9A-Fa-f]{2}([:-]?[0-9A-Fa-f]{2}){5}", mac.strip())
            ):
                raise InvalidInput(join_path(path, "mac"), f"{mac!r} is not a MAC address like 00:40:AD:A9:E8:85")
        _int_in(address, "port", path, 1, 65535, 502)
        _int_in(address, "unit_id", path, 0, 255, 1)
        _int_in(address, "register_offset", path, -65535, 65535, 0)
    elif reading_type in ("modbusrtu", "rawserial"):
        dev = address.get("device")
        if not isinstance(dev, str) or not dev:
            raise InvalidInput(join_path(path, "device"), "needs the serial port path, e.g. /dev/ttyUSB0")
        if reading_type == "modbusrtu" and "slaveaddr" not in address and "unit_id" in address:
            address["slaveaddr"] = address["unit_id"]
        if reading_type == "modbusrtu":
            _int_in(address, "slaveaddr", path, 0, 247, 1)
        baud = _int_in(
            address, "baudrate", path, serialline.MIN_BAUDRATE, serialline.MAX_BAUDRATE, serialline.DEFAULT_BAUDRATE
        )
        if baud not in serialline.STANDARD_BAUDRATES and problems is not None:  # reported by every door alike
            problems.append(Problem(join_path(path, "baudrate"), f"{baud} is not a standard baud rate", "warning"))
        bytesize = _int_in(address, "bytesize", path, 5, 8, 8)
        address["bytesize"] = bytesize
        stopbits = address.get("stopbits", 1)
        if stopbits not in (1, 1.5, 2):
            raise InvalidInput(join_path(path, "stopbits"), f"{stopbits!r} is not 1, 1.5 or 2")
        parity = str(address.get("parity", "none")).lower()
        if parity not in serialline.PARITIES:
            raise InvalidInput(join_path(path, "parity"), f"{address.get('parity')!r} is not none, even or odd")
        if reading_type == "modbusrtu":
            _int_in(address, "register_offset", path, -65535, 65535, 0)
        if "frame_gap" in address:
            address["frame_gap"] = _seconds(address, "frame_gap", path, 0.0, 0.0, MAX_FRAME_GAP, problems)
    elif reading_type == "rawtcp":
        host = address.get("host")
        if not isinstance(host, str) or not host:
            raise InvalidInput(join_path(path, "host"), "needs the host name or IP address of the device")
        _int_in(address, "port", path, 1, 65535, 502)
        _int_in(address, "recv_buffer_size", path, 16, 65536, 1024)
    elif reading_type == "sma_speedwire":
        netfields.check_speedwire_address(address, path)
    elif reading_type == "snmp":
        netfields.check_snmp_address(address, path, problems)
    elif reading_type == "mqtt":
        _check_mqtt_address(address, path, problems)
    elif reading_type == "sma_hycon_csv":
        _check_hycon_address(address, path)
    if reading_type in MODBUS_TYPES:
        _int_in(address, "max_registers", path, 1, 125, 125)
        _int_in(address, "max_gap", path, 0, 124, 0)
    return address


MQTT_DEFAULT_MAX_AGE = 300.0  # seconds: an older last message on a topic is published as null


def _check_mqtt_address(address: dict, path: str, problems: list[Problem] | None) -> None:
    host = address.setdefault("host", "localhost")
    if not isinstance(host, str) or not host:
        raise InvalidInput(join_path(path, "host"), f"{host!r} is not a host name or IP address")
    _int_in(address, "port", path, 1, 65535, 1883)
    _int_in(address, "keepalive", path, 5, 3600, 60)
    _int_in(address, "qos", path, 0, 1, 1)
    for key in ("username", "password", "ca_certs", "client_id"):
        if key in address and address[key] is not None and not isinstance(address[key], str):
            raise InvalidInput(join_path(path, key), "must be a string")  # the value is not shown: a secret
    cid = address.get("client_id")
    if isinstance(cid, str) and not 1 <= len(cid.encode()) <= 128:
        raise InvalidInput(join_path(path, "client_id"), "must be 1..128 bytes")
    for key in ("tls", "tls_insecure", "clean_session"):
        if key in address and not isinstance(address[key], bool):
            raise InvalidInput(join_path(path, key), "must be true or false")
    if address.get("transport", "tcp") != "tcp":
        raise InvalidInput(join_path(path, "transport"), f"{address['transport']!r} is not supported (tcp only)")
    max_age = address.get("max_age", MQTT_DEFAULT_MAX_AGE)
    if isinstance(max_age, bool) or not isinstance(max_age, (int, float)) or not 0 <= max_age < math.inf:
        raise InvalidInput(join_path(path, "max_age"), f"{max_age!r} is not a finite, non-negative number of seconds")
    address["max_age"] = float(max_age)


def _check_hycon_address(address: dict, path: str) -> None:
    from urllib.parse import urlsplit  # small; only a config with a HyCon device gets here
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    url = address.get("base_url")
    if not isinstance(url, str) or not url:
        raise InvalidInput(join_path(path, "base_url"), "missing: ftp://user:password@host[:port]/path/ or ftps://...")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise InvalidInput(join_path(path, "base_url"), f"is not a URL: {exc}") from None
    if parts.scheme not in ("ftp", "ftps") or not parts.hostname:
        raise InvalidInput(join_path(path, "base_url"), "must be ftp://host/path/ or ftps://host/path/ with a host")
    tz = address.get("timezone")
    if not isinstance(tz, str) or not tz:
        raise InvalidInput(join_path(path, "timezone"), "missing: the HyCon's time zone, e.g. Europe/Amsterdam")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(join_path(path, "timezone"), f"{tz!r} is not an IANA time zone name") from None
    _int_in(address, "ntp_port", path, 0, 65535, 123)  # 0: no SNTP query, no clock offset


def _int_in(address: dict, key: str, path: str, lo: int, hi: int, default: int) -> int:
    value = address.get(key, default)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)  # upstream UIs sometimes store numbers as strings
        address[key] = value
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(join_path(path, key), f"{value!r} is not an integer")
    if not lo <= value <= hi:
        raise InvalidInput(join_path(path, key), f"{value} is outside {lo}..{hi}")
    return value


def _seconds(
    obj: dict, key: str, path: str, default: float, lo: float, hi: float | None, problems: list[Problem] | None
) -> float:
    """A non-negative, finite number of seconds (absent, null or 0: default); a value outside lo..hi
    is used as the nearer bound, with a warning."""
    value = obj.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InvalidInput(join_path(path, key), f"{value!r} is not a finite, non-negative number of seconds")
    if value == 0:
        return default
    bounded = min(max(float(value), lo), hi if hi is not None else math.inf)
    if bounded != value and problems is not None:
        problems.append(
            Problem(join_path(path, key), f"{value} s is outside {lo:g}..{hi:g} s; using {bounded:g} s", "warning")
        )
    return bounded


def _compile_device(key: str, dev: Any, drivers: dict[str, dict], problems: list[Problem]) -> Device | None:
    path = join_path("devices", key)
    if not isinstance(dev, dict):
        raise InvalidInput(path, "a device must be an object")
    rt = dev.get("reading_type")
    rt = READING_TYPE_ALIASES.get(rt, rt) if isinstance(rt, str) else rt
    if rt not in READING_TYPES:
        raise InvalidInput(
            join_path(path, "reading_type"), f"{dev.get('reading_type')!r} is not one of {', '.join(READING_TYPES)}"
        )
    enabled = dev.get("enabled", True)
    if not isinstance(enabled, bool):
        raise InvalidInput(join_path(path, "enabled"), "must be true or false")
    if not enabled:
        return None
    vid = dev.get("vendor_id")
    if isinstance(vid, (int, float)) and not isinstance(vid, bool):
        vid = str(vid)
        problems.append(Problem(join_path(path, "vendor_id"), "a number; used as the string " + repr(vid), "warning"))
    if not isinstance(vid, str):
        raise InvalidInput(join_path(path, "vendor_id"), "missing: every device needs a vendor_id (its _vid)")
    driver_name = dev.get("driver")
    if not isinstance(driver_name, str) or not driver_name:
        raise InvalidInput(join_path(path, "driver"), "missing")
    if rt not in IMPLEMENTED:  # still published as {_d, _vid}, with this problem, so the cloud sees it
        problems.append(
            Problem(
                join_path(path, "reading_type"),
                f"{rt!r} is not supported by this version yet (supported: {', '.join(IMPLEMENTED)}); "
                "the device is published without values",
            )
        )
    if driver_name not in drivers and rt in IMPLEMENTED:  # (sma_hycon_csv's driver was built into upstream)
        raise InvalidInput(
            join_path(path, "driver"), f"no driver named {driver_name!r} (built in or in config.drivers)"
        )
    refuse_nonfinite(dev, path)
    address = _check_address(key, rt, dev.get("address"), join_path(path, "address"), problems)
    timeout = _seconds(dev, "timeout", path, DEFAULT_TIMEOUT, MIN_TIMEOUT, MAX_TIMEOUT, problems)
    deadline = _seconds(dev, "deadline", path, 2 * timeout, timeout, MAX_DEADLINE, problems)
    return Device(
        key=key,
        reading_type=rt,
        vendor_id=vid,
        driver_name=driver_name,
        address=address,
        timeout=timeout,
        deadline=deadline,
        min_read_interval=_seconds(dev, "min_read_interval", path, 0, 0, None, problems),
        name=dev.get("name") if isinstance(dev.get("name"), str) else None,
        bus_id=bus_id_for(key, rt, address),
    )


def _check_top(raw: Any) -> tuple[int, bool]:
    if not isinstance(raw, dict):
        raise ConfigUnusable([Problem("$", "a config must be a JSON object")])
    problems = []
    for key in ("devices", "readings"):
        if not isinstance(raw.get(key), dict):
            problems.append(Problem(key, "missing or not an object"))
    interval = raw.get("read_interval", DEFAULT_READ_INTERVAL)
    if isinstance(interval, float) and interval.is_integer():
        interval = int(interval)
    if isinstance(interval, bool) or not isinstance(interval, int) or not 1 <= interval <= 86400:
        problems.append(Problem("read_interval", f"{interval!r} is not a whole number of seconds in 1..86400"))
    roundtime = raw.get("read_roundtime", False)
    if not isinstance(roundtime, bool):
        problems.append(Problem("read_roundtime", "must be true or false"))
    for key in ("drivers",):
        if key in raw and not isinstance(raw[key], dict):
            problems.append(Problem(key, "must be an object of driver name -> driver"))
    for key in ("output", "status_readings"):
        if key in raw and not isinstance(raw[key], list):
            problems.append(Problem(key, "must be a list"))
    if problems:
        raise ConfigUnusable(problems)
    return interval, roundtime


def parse_json(text: str | bytes, what: str = "config") -> Any:
    """The one parser with its size and depth limits (core.jsontext); ConfigUnusable naming the problem."""
    return jsontext.parse(text, what)


def load(raw: Any, builtin_drivers: dict[str, dict]) -> Config:
    """Compile a config. Raises ConfigUnusable when nothing of it can be used."""
    interval, roundtime = _check_top(raw)
    problems: list[Problem] = []
    config_drivers = raw.get("drivers") or {}
    drivers = {**drv.CODE_DRIVERS, **builtin_drivers, **config_drivers}
    for name, d in config_drivers.items():
        if not isinstance(d, dict) or not isinstance(d.get("fields"), dict):
            problems.append(Problem(join_path("drivers", name), "a driver must be an object with 'fields'"))
            drivers.pop(name, None)

    devices: dict[str, Device] = {}
    for key, dev in raw["devices"].items():
        try:
            compiled = _compile_device(key, dev, drivers, problems)
        except InvalidInput as exc:
            problems.append(exc.problem)
            continue
        if compiled is not None:
            devices[key] = compiled

    _attach_readings(raw, drivers, devices, problems)
    _attach_status(raw, drivers, devices, problems)
    _attach_backfill_columns(raw, drivers, devices, problems)
    _check_shared_connections(devices, problems)
    # a device is read only when something asks for it (as upstream)
    # and a device of a reading type not supported yet, to be published as {_d, _vid} (never dropped silently)
    used = {k: d for k, d in devices.items() if d.fields or d.status or d.reading_type not in IMPLEMENTED}
    outputs = [o for i, o in enumerate(raw.get("output") or []) if not nonfinite(o, join_path("output", i))]
    for where, number in nonfinite(raw):  # everywhere, also where no item was skipped for it
        problem = nonfinite_problem(where, number)
        if problem not in problems:
            problems.append(problem)
    calc_vid = raw.get("calc_vendor_id") or ""
    if nonfinite(calc_vid):
        calc_vid = ""  # reported below
    return Config(raw, used, problems, interval, roundtime, outputs, str(calc_vid), digest(raw))


def _driver_path(driver_name: str, raw: dict) -> str:
    in_config = isinstance(raw.get("drivers"), dict) and driver_name in raw["drivers"]
    return join_path("drivers", driver_name) if in_config else f"driver {driver_name}"


def _attach_readings(raw: dict, drivers: dict, devices: dict[str, Device], problems: list[Problem]) -> None:
    failed_fields: set[tuple[str, str]] = set()
    for rname, reading in raw["readings"].items():
        path = join_path("readings", rname)
        if not isinstance(reading, dict):
            problems.append(Problem(path, "a reading must be an object with device and var"))
            continue
        if reading.get("enabled", True) is False:
            continue
        bad = nonfinite(reading, path)
        if bad:
            problems.append(nonfinite_problem(*bad[0]))
            continue
        dkey, var = reading.get("device"), reading.get("var")
        if not isinstance(var, str) or not var:
            problems.append(Problem(join_path(path, "var"), "missing"))
            continue
        if dkey not in raw["devices"]:
            problems.append(Problem(join_path(path, "device"), f"no device {dkey!r} in devices"))
            continue
        dev = devices.get(dkey) if isinstance(dkey, str) else None
        if dev is None or var in dev.fields or dev.driver_name not in drivers:
            continue  # device disabled or invalid (already reported), var already read, or not supported yet
        driver = drivers[dev.driver_name]
        if var not in (driver.get("fields") or {}):
            problems.append(Problem(join_path(path, "var"), f"driver {dev.driver_name!r} has no field {var!r}"))
            continue
        if (dev.driver_name, var) in failed_fields:
            continue
        warnings: list[Problem] = []
        fpath = join_path(_driver_path(dev.driver_name, raw), "fields", var)
        try:
            fld = drv.compile_field(driver, var, fpath, warnings)
        except InvalidInput as exc:
            problems.append(exc.problem)
            failed_fields.add((dev.driver_name, var))
            continue
        problems.extend(w for w in warnings if w not in problems)
        if drv.merge_field(driver, var).get("deprecated"):
            problems.append(
                Problem(
                    join_path(path, "var"),
                    f"field {var!r} is marked deprecated by driver {dev.driver_name!r}",
                    "warning",
                )
            )
        wanted = {"mqtt": drv.MqttField, "sma_hycon_csv": drv.CsvField, **NET_FIELDS}.get(dev.reading_type)
        if drv.field_kind(drv.merge_field(driver, var)) != FIELD_KINDS.get(dev.reading_type, dev.reading_type) or (
            wanted is not None and not isinstance(fld, wanted)
        ):
            problems.append(Problem(fpath, f"is not a field a {dev.reading_type} device can read"))
            failed_fields.add((dev.driver_name, var))
            continue
        dev.fields[var] = fld


MQTT_CONNECTION_KEYS = ("username", "password", "tls", "ca_certs", "tls_insecure", "keepalive", "qos", "clean_session")


def _check_shared_connections(devices: dict[str, Device], problems: list[Problem]) -> None:
    """MQTT devices on one broker share one connection, made with the first one's settings: say so
    where another differs (values not shown: one may be a password)."""
    first: dict[str, Device] = {}
    for dev in devices.values():
        if dev.reading_type != "mqtt":
            continue
        lead = first.setdefault(dev.bus_id, dev)
        differ = [k for k in MQTT_CONNECTION_KEYS if dev.address.get(k) != lead.address.get(k)]
        if differ:
            problems.append(
                Problem(
                    join_path("devices", dev.key, "address"),
                    f"shares the connection of bus {dev.bus_id} with {lead.key!r}, which is made with "
                    f"{lead.key!r}'s {', '.join(differ)}",
                    "warning",
                )
            )


def _attach_backfill_columns(raw: dict, drivers: dict, devices: dict[str, Device], problems: list[Problem]) -> None:
    """A HyCon device that no reading names publishes every column of its driver (as upstream, which
    ignored readings for it)."""
    for dev in devices.values():
        if dev.reading_type not in BACKFILL_TYPES or dev.fields:
            continue
        driver = drivers[dev.driver_name]
        for var in driver.get("fields") or {}:
            fpath = join_path(_driver_path(dev.driver_name, raw), "fields", var)
            try:
                fld = drv.compile_field(driver, var, fpath, [])
            except InvalidInput as exc:
                if exc.problem not in problems:
                    problems.append(exc.problem)
                continue
            if isinstance(fld, drv.CsvField):
                dev.fields[var] = fld
            else:
                problems.append(Problem(fpath, f"is not a field a {dev.reading_type} device can read"))


def _attach_status(raw: dict, drivers: dict, devices: dict[str, Device], problems: list[Problem]) -> None:
    for i, item in enumerate(raw.get("status_readings") or []):
        path = join_path("status_readings", i)
        if not isinstance(item, dict):
            problems.append(Problem(path, "must be an object {d: device, r: status item}"))
            continue
        bad = nonfinite(item, path)
        if bad:
            problems.append(nonfinite_problem(*bad[0]))
            continue
        dkey, rkey = item.get("d"), item.get("r")
        if dkey not in raw["devices"]:
            problems.append(Problem(join_path(path, "d"), f"no device {dkey!r} in devices"))
            continue
        dev = devices.get(dkey) if isinstance(dkey, str) else None
        if dev is None:
            continue
        if dev.reading_type not in MODBUS_TYPES:
            problems.append(Problem(path, f"status info is read from Modbus devices only, not {dev.reading_type}"))
            continue
        driver = drivers[dev.driver_name]
        if not isinstance(rkey, str) or rkey not in (driver.get("status_info") or {}):
            problems.append(Problem(join_path(path, "r"), f"driver {dev.driver_name!r} has no status_info {rkey!r}"))
            continue
        if any(s.key == rkey for s in dev.status):
            continue
        try:
            warnings: list[Problem] = []
            dev.status.append(
                drv.compile_status_item(
                    driver, rkey, join_path(_driver_path(dev.driver_name, raw), "status_info", rkey), warnings
                )
            )
            problems.extend(w for w in warnings if w not in problems)
        except InvalidInput as exc:
            problems.append(exc.problem)
