"""Identify Modbus TCP devices found by the network scan (reference section 5.7, plus SunSpec).

For a host with the Modbus port open, by nmap's MAC vendor:
  "SMA"                   unit 3: u32 30051 device class, 30053 device type, 30057 serial
  "Deep Sea Electronics"  unit 1: u16 769 model, u16 772 control mode, u32 770 serial
and for every such host SunSpec discovery: the marker "SunS" (0x5375 0x6E53) at register 40000, 0
or 50000 on unit ids 1 and 126, then the whole model chain (core.sunspec.walk: every header checked
against the model definitions): the common model's manufacturer, model, version and serial number,
and `sunspec_models` [[id, address, length], ...], from which node.configgen makes the drivers (a
chain that cannot be trusted: `sunspec_problem`). Results go to `host["modbustcp"]`, a list of
`{"unit_id": .., field: value, ...}` as upstream. Every request has a 1 s timeout; a unit that does
not answer at all is not asked again.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from ...core import codec, sunspec
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
# scan result key -> point of the common model (1), read from the model definitions (core.sunspec)
SUNSPEC_COMMON = {
    "sunspec_manufacturer": "Mn",
    "sunspec_model": "Md",
    "sunspec_version": "Vr",
    "sunspec_serial": "SN",
}


def _read_fields(transport: TcpTransport, unit: int, fields, timeout: float) -> dict:
    """{field: value} for the fields that could be read; raises DeviceSilent when the unit is silent."""
    out = {}
    for name, register, words, spec in fields:
        try:
            out[name] = codec.decode_registers(transport.read(unit, 3, register, words, timeout), spec)
        except (ModbusException, LinkError, codec.DecodeError) as exc:
            log.debug("unit %d register %d: %s", unit, register, exc)
    return out


def _reader(transport: TcpTransport, unit: int, timeout: float) -> sunspec.Reader:
    """`read(address, count)` for core.sunspec: the transport's errors as sunspec.ReadFailed (an
    exception answer is `refused`); DeviceSilent passes (nobody at this unit id)."""

    def read(address: int, count: int) -> list[int]:
        try:
            return transport.read(unit, 3, address, count, timeout)
        except ModbusException as exc:
            raise sunspec.ReadFailed(f"register {address}: {exc}", refused=True) from None
        except LinkError as exc:
            raise sunspec.ReadFailed(f"register {address}: {exc}") from None

    return read


def _sunspec_at(transport: TcpTransport, unit: int, base: int, timeout: float) -> dict | None:
    """The SunSpec device at `base` on `unit`: its common model (manufacturer, model, version,
    serial) and the model chain (`sunspec_models`: [[id, address, length], ...]); a chain that cannot
    be trusted is reported in `sunspec_problem` (and no driver is made from it)."""
    read = _reader(transport, unit, timeout)
    try:
        if sunspec.find_base(read, (base,)) is None:
            return None
    except sunspec.ReadFailed:
        return None
    found: dict = {"unit_id": unit, "sunspec_base": base}
    try:
        chain = sunspec.walk(read, base)
    except (sunspec.SunSpecError, sunspec.ReadFailed) as exc:
        log.info("SunSpec marker at %d on unit %d but the model chain is not usable: %s", base, unit, exc)
        found["sunspec_problem"] = str(exc)
        return found
    found.update(chain_summary(chain))
    return found


def chain_summary(chain: sunspec.Chain) -> dict:
    """What a scan result says of a walked chain (enough for configgen to make its drivers again)."""
    out: dict = {"sunspec_models": chain.layout()}
    common = next((m for m in chain.models if m.id == sunspec.COMMON), None)
    if common is not None:
        for name, point in SUNSPEC_COMMON.items():
            value = sunspec.text(common, point)
            if value is not None:
                out[name] = value
    out["sunspec_identity"] = chain.identity()  # Mn, Md, Vr, SN of each common model (an inverter, its meter)
    if chain.notes:
        out["sunspec_notes"] = chain.notes
    return out


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
    if port != MODBUS_PORT:
        host["modbus_port"] = port
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
