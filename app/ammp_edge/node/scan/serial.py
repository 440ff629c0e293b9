"""Probe the RS-485 port for the sensors AMMP sites use (reference section 5.7).

Each signature is one read (slave id, register, words, function code, datatype) on the port at
9600 baud with a 1 s timeout, through the same RTU transport the buses use. The result is upstream's
list of `[test description, result text]` pairs. A Holykell value above 10000 is no real level and
counts as no answer.

Then the rawserial devices of RAW_SIGNATURES (Pylontech, Holykell UE3003; not in upstream's table),
each one query of its built-in driver through the rawserial reader on the same line.

Carlo Gavazzi: the EM24 frequency is register 55 (0x0037), the EM330's register 51 (0x0033), as in
upstream's signature table and the meters' manuals; both are probed on their two usual slave ids.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ...core import codec, config as cfg, drivers, keys, paths
from ...core.kvs import KVStore
from ...core.problems import InvalidInput
from ...readers.modbus import DeviceSilent, LinkError, ModbusException
from ...readers.modbus_rtu import RtuTransport
from ...readers.rawserial import RawSerialDevice

log = logging.getLogger(__name__)

DEFAULT_PORT = keys.DEFAULT_SENSOR_PORT
PORT_KEY = keys.SERIAL_SENSOR_PORT  # KV store: the sensors' serial port when it is not the Pi's UART
BAUDRATE = 9600
TIMEOUT_S = 1.0
HOLYKELL_MAX = 10000


@dataclass(frozen=True)
class Signature:
    name: str
    slave_id: int
    reading: str
    register: int
    words: int
    datatype: str
    fncode: int
    max_value: float | None = None


def _sig(name, slaves, reading, register, datatype, fncode, max_value=None) -> list[Signature]:
    words = 2 if datatype in ("float", "uint32", "int32") else 1
    return [Signature(name, s, reading, register, words, datatype, fncode, max_value) for s in slaves]


SIGNATURES: list[Signature] = [
    *_sig("Gamicos ultrasonic sensor", (1,), "fuel level (distance from sensor (m))", 1, "float", 3),
    *_sig("IMT irradiation sensor", (2,), "irradiance (W/m2)", 0, "uint16", 4),
    *_sig("APM303 genset controller", (5, 6), "oil pressure (bar)", 28, "int16", 4),
    *_sig("Cummins PS0600", (4, 3), "genset state", 10, "uint16", 3),
    *_sig("Holykell HPT604", (7, 8), "fuel level (distance from sensor (mm))", 2, "uint16", 3, HOLYKELL_MAX),
    *_sig("Holykell HPT604-LT", (7, 8), "fuel level (distance from sensor (mm))", 2, "float", 3, HOLYKELL_MAX),
    *_sig("Carlo Gavazzi meter EM24", (9, 11), "Frequency (Hz*10)", 55, "int16", 3),
    *_sig("Carlo Gavazzi meter EM330", (10, 12), "Frequency (Hz*10)", 51, "int16", 3),
]


@dataclass(frozen=True)
class RawSignature:
    """A rawserial device probed with one field of its built-in driver, through the rawserial reader."""

    name: str
    driver: str
    field: str
    reading: str


# not in upstream's table: read with the same reader the buses use (Steca's Voltronic protocol runs at
# 2400 baud, not the scan's 9600, and is left out)
RAW_SIGNATURES: list[RawSignature] = [
    RawSignature("Pylontech battery (module 1)", "pylontech_rs485", "M1_V", "total voltage (V)"),
    RawSignature("Holykell UE3003 ultrasonic sensor", "holykell_ue3003", "dist_1", "distance to liquid (address 1)"),
]


def probe_raw(transport: RtuTransport, sig: RawSignature, baudrate: int, timeout: float = TIMEOUT_S) -> list[str]:
    test = f"Testing {sig.name} ({sig.driver} {sig.field}) at baud rate {baudrate}"
    hint = f". {sig.name} doesn't show up, make sure the configuration is correct: baud rate = {baudrate}"
    try:
        driver = drivers.load_driver_file(paths.drivers_dir() / f"{sig.driver}.json")
        fld = drivers.compile_field(driver, sig.field, f"driver {sig.driver}", [])
    except (OSError, ValueError, InvalidInput) as exc:
        return [test, f"Error: driver {sig.driver}: {exc}"]
    # the deadline leaves room for the line to settle after the probe before (a late answer's watch)
    budget = timeout + transport.late_window + transport.quiet
    device = cfg.Device(sig.driver, "rawserial", "", sig.driver, {}, timeout, budget, fields={sig.field: fld})
    res = RawSerialDevice(device, transport).read(time.monotonic() + budget)
    if sig.field not in res.values:
        return [test, f"Error: {res.item_errors.get(sig.field) or '; '.join(res.errors)}{hint}"]
    return [
        test,
        f"Got test response for {sig.reading} = {res.values[sig.field]} ==> SUCCESS: Device {sig.name} present "
        f"at baud rate = {baudrate}",
    ]


def default_port(kvstore: KVStore | None = None) -> str:
    """The KV store key `serial_sensor_port`, else /dev/ttyAMA0 (the Pi's UART with the RS-485 HAT)."""
    try:
        value = (kvstore or KVStore()).get(PORT_KEY)
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s from the KV store: %s", PORT_KEY, exc)
        value = None
    return value if isinstance(value, str) and value else DEFAULT_PORT


def probe(transport: RtuTransport, sig: Signature, baudrate: int, timeout: float = TIMEOUT_S) -> list[str]:
    test = f"Testing slave ID {sig.slave_id} for {sig.name} at baud rate {baudrate}"
    hint = (
        f". {sig.name} doesn't show up, make sure the configuration is correct: "
        f"slave id = {sig.slave_id}, baud rate = {baudrate}"
    )
    try:
        regs = transport.read(sig.slave_id, sig.fncode, sig.register, sig.words, timeout)
        value = codec.decode_registers(regs, codec.ValueSpec(sig.datatype))
    except (DeviceSilent, LinkError, ModbusException, codec.DecodeError) as exc:
        return [test, f"Error: {exc}{hint}"]
    if value is None or (sig.max_value is not None and value > sig.max_value):
        return [test, f"Error: implausible value {value} (treated as no answer){hint}"]
    if isinstance(value, float):
        value = round(value, 3)
    return [
        test,
        f"Got test response for {sig.reading} = {value} ==> SUCCESS: Device {sig.name} present "
        f"as ID {sig.slave_id} at baud rate = {baudrate}",
    ]


def serial_scan(
    port: str | None = None,
    baudrate: int = BAUDRATE,
    progress: Callable[[float, str], None] | None = None,
    cancel: threading.Event | None = None,
    signatures: list[Signature] = SIGNATURES,
    timeout: float = TIMEOUT_S,
    raw_signatures: list[RawSignature] | None = None,
) -> list[list[str]]:
    """Upstream's Modbus signatures, then the rawserial ones (RAW_SIGNATURES by default with the
    default Modbus signatures, none with a list of one's own)."""
    raws = (RAW_SIGNATURES if signatures is SIGNATURES else []) if raw_signatures is None else raw_signatures
    port = port or default_port()
    if not os.path.exists(port):
        return [[f"Serial port {port}", "not present on this machine; serial scan skipped"]]
    transport = RtuTransport(port, baudrate=baudrate, late_window=min(0.2, timeout))
    results: list[list[str]] = []
    try:
        total = len(signatures) + len(raws)
        probes: list[Signature | RawSignature] = [*signatures, *raws]
        for i, sig in enumerate(probes):
            if cancel is not None and cancel.is_set():
                break
            if isinstance(sig, Signature):
                if progress:
                    progress(i / total, f"{port}: {sig.name}, slave {sig.slave_id}")
                results.append(probe(transport, sig, baudrate, timeout))
            else:
                if progress:
                    progress(i / total, f"{port}: {sig.name}")
                results.append(probe_raw(transport, sig, baudrate, timeout))
            if transport.line is None and "cannot open" in results[-1][1]:
                results[-1][0] = f"Opening {port} at baud rate {baudrate}"
                break  # the port itself failed (busy with a bus, no permission): one answer is enough
    finally:
        transport.close()
    if progress:
        progress(1.0, f"{port}: done")
    return results
