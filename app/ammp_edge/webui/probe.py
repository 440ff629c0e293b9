"""Test a device: read it once, show the raw registers beside the decoded values, and
for one register its value in every word/byte order at the address and one either side (the usual
off-by-one and word-order mistakes, side by side).

The read is the bus's own: readers' ModbusDevice with the device's planning and splitting (and the one
codec); the test only keeps the registers of each field to show them.

A serial port belongs to its bus program (exclusive lock), so the bus is paused through supervisord for
the few seconds of the test and started again after it. One test runs at a time.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import xmlrpc.client
from contextlib import contextmanager
from typing import Any, cast

from ..core import codec, config as cfg, supervisor as supervisord
from ..core.problems import ConfigUnusable
from ..readers.modbus import DeviceSilent, LinkError, ModbusException, Transport
from ..readers.system import SystemDevice
from ..readers.transports import SERIAL_TYPES, make_reader, make_transport

log = logging.getLogger(__name__)

_LOCK = threading.Lock()
MAX_TEST_S = 30.0
INSPECT_TYPES = (("uint16", 1), ("int16", 1), ("uint32", 2), ("int32", 2), ("float", 2))
TESTABLE_TYPES = ("modbustcp", "modbusrtu", "rawserial", "rawtcp")  # the form's types (a configured sys too)
RAW_TYPES = ("rawserial", "rawtcp")


class ProbeError(ValueError):
    pass


def build_device(dev_doc: dict, drivers_in_config: dict, builtin: dict) -> cfg.Device:
    """A compiled device with every field of its driver (through the config loader: same checks)."""
    rt = dev_doc.get("reading_type")
    if rt in cfg.READING_TYPES and rt not in cfg.IMPLEMENTED:
        raise ProbeError(f"reading type {rt!r} is not supported by this version yet")
    all_drivers = {**builtin, **drivers_in_config}
    driver = all_drivers.get(dev_doc.get("driver"))
    if driver is None:
        raise ProbeError(f"driver: no driver named {dev_doc.get('driver')!r}")
    doc = {
        "devices": {"probe": {**dev_doc, "enabled": True}},
        "drivers": drivers_in_config,
        "readings": {f: {"device": "probe", "var": f} for f in (driver.get("fields") or {})},
    }
    try:
        config = cfg.load(doc, builtin)
    except ConfigUnusable as exc:
        raise ProbeError("; ".join(str(p) for p in exc.problems)) from None
    dev = config.devices.get("probe")
    if dev is None:
        raise ProbeError(
            "; ".join(str(p).replace("devices.probe", "device") for p in config.errors) or "nothing to read"
        )
    return dev


def _port_free(device: cfg.Device):
    return serial_port_free(device.address["device"] if device.reading_type in SERIAL_TYPES else None)


@contextmanager
def serial_port_free(port: str | None):
    """Pause the bus program that owns this serial port, if one runs; start it again afterwards."""
    paused = None
    if port:
        name = supervisord.bus_program_name(cfg.bus_id_for("", "modbusrtu", {"device": port}))
        try:
            server = supervisord.connect(timeout=15)
            if server.supervisor.getProcessInfo(name)["statename"] == supervisord.RUNNING:
                server.supervisor.stopProcess(name, True)
                paused = name
        except (OSError, xmlrpc.client.Error):
            pass  # no appliance or no such bus: the port is ours
    try:
        yield paused
    finally:
        if paused:
            try:
                supervisord.connect(timeout=15).supervisor.startProcess(paused, False)
            except (OSError, xmlrpc.client.Error) as exc:
                log.error("could not start %s again after a device test: %s", paused, exc)


def _hex(regs) -> list[str]:
    return [f"{r:04x}" for r in regs]


def _json_value(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def read_device(device: cfg.Device) -> dict:
    if not _LOCK.acquire(timeout=MAX_TEST_S):
        raise ProbeError("another device test is running")
    try:
        with _port_free(device) as paused:
            started = time.monotonic()
            answers = None
            if device.reading_type == "sys":
                rows = _read_sys(device)
            elif device.reading_type == "mqtt":
                rows = _read_mqtt(device)
            elif device.reading_type in RAW_TYPES:
                rows, answers = _read_raw(device)
            elif device.reading_type in NET_TYPES:
                rows = _read_net(device)
            elif device.reading_type in cfg.MODBUS_TYPES:
                rows = _read_modbus(device)
            elif device.reading_type in cfg.BACKFILL_TYPES:
                raise ProbeError(
                    f"a {device.reading_type} device is read once a day (`ammp-edge hycon --once` fetches it now)"
                )
            else:
                raise ProbeError(f"reading type {device.reading_type!r} is not supported by this version yet")
            out = {
                "device": device.key,
                "bus": device.bus_id,
                "paused": paused,
                "fields": rows,
                "duration": round(time.monotonic() - started, 3),
            }
            if answers is not None:
                out["answers"] = answers
            if device.reading_type in NET_NOTES:
                out["note"] = NET_NOTES[device.reading_type]
            return out
    finally:
        _LOCK.release()


def _read_sys(device: cfg.Device) -> list[dict]:
    res = SystemDevice(device).read(time.monotonic() + device.deadline)
    return [
        {
            "name": n,
            "value": res.values.get(n),
            "unit": f.unit or "",
            "raw": [],
            "register": None,
            "error": next((e for e in res.errors if e.startswith(n + ":")), None),
        }
        for n, f in device.fields.items()
    ]


NET_TYPES = ("sma_speedwire", "snmp")
NET_NOTES = {
    "sma_speedwire": "Speedwire meters multicast to 239.12.255.254:9522: in Docker the container needs host "
    "networking (--network host) to hear them; the bus keeps listening while the test listens beside it",
}


def _read_net(device: cfg.Device) -> list[dict]:
    """Speedwire and SNMP: the bus's own reader on a transport of the test's own (UDP: nothing to pause)."""
    transport = make_transport(device)
    try:
        res = make_reader(device, transport).read(time.monotonic() + max(device.deadline, 10.0))
    finally:
        if transport is not None:
            transport.close()
    rows = []
    for name, f in device.fields.items():
        error = None
        if res.values.get(name) is None:
            error = res.item_errors.get(name) or (f"not read: {res.errors[0]}" if res.errors else "not read")
        where = getattr(f, "oid", None)
        rows.append(
            {
                "name": name,
                "register": ".".join(map(str, where)) if where else f"OBIS {f.channel}.{f.obis_type}",
                "unit": f.unit or "",
                "raw": [],
                "value": _json_value(res.values.get(name)),
                "error": error,
            }
        )
    return rows


def _read_mqtt(device: cfg.Device) -> list[dict]:
    """The last message of each topic, from a connection of the test's own (a client id with a random
    suffix: the bus's session is not disturbed); retained messages arrive within the timeout."""
    from ..readers.mqtt import MqttDevice, MqttTransport

    transport = MqttTransport(device)
    try:
        reader = MqttDevice(device, transport)
        res = reader.read(time.monotonic() + max(device.timeout, 5.0))
        rows = []
        for name, f in device.fields.items():
            msg = transport.subscriber.last(f.topic)
            payload = msg.payload if msg is not None and msg.payload is not None else b""
            rows.append(
                {
                    "name": name,
                    "topic": f.topic,
                    "register": None,
                    "unit": f.unit or "",
                    "raw": [payload[:64].hex()] if payload else [],
                    "age_s": round(time.monotonic() - msg.received, 1) if msg is not None else None,
                    "value": _json_value(res.values.get(name)),
                    "error": res.item_errors.get(name),
                }
            )
        return rows
    finally:
        transport.close()


def _transport(device: cfg.Device) -> Transport:
    if device.reading_type in cfg.BACKFILL_TYPES:
        raise ProbeError(f"a {device.reading_type} device is read once a day (`ammp-edge hycon --once` fetches it now)")
    transport = make_transport(device) if device.reading_type in (*cfg.MODBUS_TYPES, *RAW_TYPES) else None
    if transport is None:
        raise ProbeError(f"a {device.reading_type} device has no registers")
    return cast(Transport, transport)


def _read_once(device: cfg.Device) -> tuple[Any, Any]:
    """One read of a Modbus or byte-stream device by the bus's own reader, on a transport of its own,
    keeping the raw bytes of every field: (the reader, its result)."""
    transport = _transport(device)
    try:
        try:
            reader = make_reader(device, transport)
        except ValueError as exc:
            raise ProbeError(str(exc)) from None
        return reader, reader.read(time.monotonic() + max(device.deadline, 10.0), keep_raw=True)
    finally:
        transport.close()


def _read_modbus(device: cfg.Device) -> list[dict]:
    _, res = _read_once(device)
    raw = res.raw or {}
    rows = []
    for name, f in device.fields.items():
        row = {
            "name": name,
            "register": f.register + device.register_offset,
            "fncode": f.fncode,
            "words": f.words,
            "datatype": f.spec.datatype or "",
            "order": f.spec.order,
            "unit": f.unit or "",
            "raw": _hex(raw.get(name, [])),
            "value": _json_value(res.values.get(name)),
            "error": None,
        }
        if name not in res.values:
            row["error"] = res.item_errors.get(name) or (f"not read: {res.errors[0]}" if res.errors else "not read")
        rows.append(row)
    return rows


def _read_raw(device: cfg.Device) -> tuple[list[dict], list[dict]]:
    """A rawserial or rawtcp device read once by the bus's own reader: each field's bytes and value,
    and each request with its whole answer (or why there is none)."""
    reader, res = _read_once(device)
    raw = res.raw or {}
    rows = []
    for name, f in device.fields.items():
        where = (
            f"byte {f.pos}+{f.length}" if device.reading_type == "rawserial" else f"byte {f.pos}+{f.length} (1-based)"
        )
        rows.append(
            {
                "name": name,
                "register": None,
                "where": where,
                "fncode": "",
                "datatype": " ".join(x for x in (f.parse_as, f.spec.datatype) if x),
                "order": "",
                "unit": f.unit or "",
                "raw": [f"{b:02x}" for b in raw.get(name, [])],
                "value": _json_value(res.values.get(name)),
                "error": None
                if name in res.values
                else res.item_errors.get(name) or (f"not read: {res.errors[0]}" if res.errors else "not read"),
            }
        )
    answers = [
        {
            "request": request.hex(" "),
            "answer": a.hex(" ") if isinstance(a, bytes) else None,
            "text": repr(a)[2:-1] if isinstance(a, bytes) else None,  # as Python writes bytes: ASCII stays legible
            "error": None if isinstance(a, bytes) else a,
        }
        for request, a in reader.last_answers.items()
    ]
    return rows, answers


def decode_orders(regs: list[int]) -> list[dict]:
    """The value of registers starting at regs[0] as each type in each order."""
    out = []
    for order in codec.ORDERS:
        row: dict[str, Any] = {"order": order}
        for dtype, words in INSPECT_TYPES:
            if len(regs) < words:
                row[dtype] = None
                continue
            data = codec.registers_to_bytes(regs[:words], order)
            row[dtype] = _json_value(codec.unpack(data, dtype))
        out.append(row)
    return out


def inspect_register(device: cfg.Device, register: int, fncode: int) -> dict:
    """Registers register-1 .. register+2 read once and decoded from each of the three starts. When the
    device refuses the whole window, each start's two registers are read on their own."""
    if fncode not in (3, 4) or not 0 <= register <= 65534:
        raise ProbeError("register must be 0..65534 and the function code 3 or 4")
    first = max(0, register - 1)
    count = min(register + 3, 65536) - first
    if not _LOCK.acquire(timeout=MAX_TEST_S):
        raise ProbeError("another device test is running")
    try:
        with _port_free(device) as paused:
            transport = _transport(device)
            try:
                windows = _windows(transport, device, fncode, register, first, count)
            finally:
                transport.close()
    finally:
        _LOCK.release()
    starts = []
    for s, regs in windows:
        if isinstance(regs, str):
            starts.append({"register": s, "raw": [], "error": regs, "orders": []})
        else:
            starts.append({"register": s, "raw": _hex(regs), "error": None, "orders": decode_orders(regs)})
    if all(x["error"] for x in starts):
        raise ProbeError(f"register {register}: {next(x['error'] for x in starts if x['register'] == register)}")
    return {"register": register, "fncode": fncode, "first": first, "starts": starts, "paused": paused}


def _windows(transport: Transport, device: cfg.Device, fncode: int, register: int, first: int, count: int) -> list:
    starts = [s for s in (register - 1, register, register + 1) if s >= first and s + 2 <= 65536]
    try:
        regs = transport.read(device.unit_id, fncode, first, count, device.timeout)
        return [(s, regs[s - first : s - first + 2]) for s in starts]
    except ModbusException:
        pass  # some registers of the window do not exist: each start on its own
    except (DeviceSilent, LinkError) as exc:
        raise ProbeError(f"registers {first}..{first + count - 1}: {exc}") from None
    out: list[tuple[int, list[int] | str]] = []
    for s in starts:
        try:
            out.append((s, transport.read(device.unit_id, fncode, s, 2, device.timeout)))
        except (ModbusException, DeviceSilent, LinkError) as exc:
            out.append((s, str(exc)))
    return out
