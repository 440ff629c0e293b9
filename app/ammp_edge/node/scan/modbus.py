"""Identify Modbus TCP devices found by the network scan (reference section 5.7, plus SunSpec).

For a host with the Modbus port open, by nmap's MAC vendor:
  "SMA"                   unit 3: u32 30051 device class, 30053 device type, 30057 serial
  "Deep Sea Electronics"  unit 1: u16 769 model, u16 772 control mode, u32 770 serial
and for every such host SunSpec discovery: the marker "SunS" (0x5375 0x6E53) at register 40000, 0
or 50000 on unit ids 1 and 126, then the common model (id 1) that follows it: manufacturer, model,
serial number (text). Results go to `host["modbustcp"]`, a list of
`{"unit_id": .., field: value, ...}` as upstream. Every request has a 1 s timeout; a unit that does
not answer at all is not asked again.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from ...core import codec
from ...readers.modbus import DeviceSilent, LinkError, ModbusException

if TYPE_CHECKING:
    from ...readers.modbus_tcp import TcpTransport

log = logging.getLogger(__name__)

TIMEOUT_S = 1.0
MODBUS_PORT = 502
U16, U32 = codec.ValueSpec("uint16"), codec.ValueSpec("uint32")

# (vendor substring, unit id, [(field, register, words, spec)])
VENDOR_PROBES = [
    (
        "SMA",
        3,
        [
            ("sma_device_class", 30051, 2, U32),
            ("sma_device_type", 30053, 2, U32),
            ("sma_inverter_serial", 30057, 2, U32),
        ],
    ),
    (
        "Deep Sea Electronics",
        1,
        [("dse_model_number", 769, 1, U16), ("dse_control_mode", 772, 1, U16), ("dse_serial", 770, 2, U32)],
    ),
]
SUNSPEC_MARKER = [0x5375, 0x6E53]  # "SunS"
SUNSPEC_BASES = (40000, 0, 50000)
SUNSPEC_UNITS = (1, 126)
# common model (1) after the marker: id, length, Mn[16], Md[16], Opt[8], Vr[8], SN[16]
SUNSPEC_COMMON = {
    "sunspec_manufacturer": (2, 16),
    "sunspec_model": (18, 16),
    "sunspec_version": (42, 8),
    "sunspec_serial": (50, 16),
}
SUNSPEC_COMMON_WORDS = 66


def _read_fields(transport: TcpTransport, unit: int, fields, timeout: float) -> dict:
    """{field: value} for the fields that could be read; raises DeviceSilent when the unit is silent."""
    out = {}
    for name, register, words, spec in fields:
        try:
            out[name] = codec.decode_registers(transport.read(unit, 3, register, words, timeout), spec)
        except (ModbusException, LinkError, codec.DecodeError) as exc:
            log.debug("unit %d register %d: %s", unit, register, exc)
    return out


def _sunspec_at(transport: TcpTransport, unit: int, base: int, timeout: float) -> dict | None:
    try:
        if transport.read(unit, 3, base, 2, timeout) != SUNSPEC_MARKER:
            return None
    except (ModbusException, LinkError):
        return None
    found: dict = {"unit_id": unit, "sunspec_base": base}
    try:
        regs = transport.read(unit, 3, base + 2, SUNSPEC_COMMON_WORDS, timeout)
    except (ModbusException, LinkError) as exc:
        log.info("SunSpec marker at %d on unit %d but no common model: %s", base, unit, exc)
        return found
    if len(regs) >= 2 and regs[0] == 1:
        for name, (offset, words) in SUNSPEC_COMMON.items():
            part = regs[offset : offset + words]
            if len(part) == words:
                found[name] = codec.decode_text(codec.registers_to_bytes(part))
    return found


def sunspec_discover(
    transport: TcpTransport,
    units=SUNSPEC_UNITS,
    bases=SUNSPEC_BASES,
    timeout: float = TIMEOUT_S,
    cancel: threading.Event | None = None,
) -> list[dict]:
    """SunSpec devices behind one connection: one entry per unit id where a marker was found."""
    found: list[dict] = []
    for unit in units:
        for base in bases:
            if cancel is not None and cancel.is_set():
                return found
            try:
                hit = _sunspec_at(transport, unit, base, timeout)
            except DeviceSilent:
                break  # nobody at this unit id
            if hit is not None:
                found.append(hit)
                break
    return found


def probe_host(
    host: dict, port: int = MODBUS_PORT, timeout: float = TIMEOUT_S, cancel: threading.Event | None = None
) -> list[dict]:
    """What answers on host["ipv4"]:port; also stored as host["modbustcp"]."""
    from ...readers.modbus_tcp import TcpTransport

    transport = TcpTransport(host["ipv4"], port)
    results: list[dict] = []
    try:
        vendor = host.get("vendor") or ""
        for needle, unit, fields in VENDOR_PROBES:
            if needle in vendor:
                entry = {"unit_id": unit}
                try:
                    entry.update(_read_fields(transport, unit, fields, timeout))
                except DeviceSilent as exc:
                    log.info("%s unit %d: %s", host["ipv4"], unit, exc)
                results.append(entry)
        for hit in sunspec_discover(transport, timeout=timeout, cancel=cancel):
            same = next((r for r in results if r["unit_id"] == hit["unit_id"]), None)
            if same is not None:
                same.update(hit)
            else:
                results.append(hit)
    finally:
        transport.close()
    host["modbustcp"] = results
    return results


def probe_hosts(
    hosts: list[dict], modbus_ports=(MODBUS_PORT,), timeout: float = TIMEOUT_S, cancel: threading.Event | None = None
) -> None:
    """probe_host for every host with one of modbus_ports open (the first one found)."""
    wanted = [str(p) for p in modbus_ports]
    for host in hosts:
        if cancel is not None and cancel.is_set():
            return
        port = next((p for p in wanted if p in host.get("ports", [])), None)
        if port is not None and host.get("ipv4"):
            probe_host(host, int(port), timeout, cancel)
