"""Probe the RS-485 port for the sensors AMMP sites use (reference section 5.7).

Each signature is one read (slave id, register, words, function code, datatype) on the port at
9600 baud with a 1 s timeout, through the same RTU transport the buses use. The result is upstream's
list of `[test description, result text]` pairs. A Holykell value above 10000 is no real level and
counts as no answer.

Carlo Gavazzi: the EM24 frequency is register 55 (0x0037), the EM330's register 51 (0x0033), as in
upstream's signature table and the meters' manuals; both are probed on their two usual slave ids.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ...core import codec, keys
from ...core.kvs import KVStore
from ...readers.modbus import DeviceSilent, LinkError, ModbusException
from ...readers.modbus_rtu import RtuTransport

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
) -> list[list[str]]:
    port = port or default_port()
    if not os.path.exists(port):
        return [[f"Serial port {port}", "not present on this machine; serial scan skipped"]]
    transport = RtuTransport(port, baudrate=baudrate, late_window=min(0.2, timeout))
    results: list[list[str]] = []
    try:
        for i, sig in enumerate(signatures):
            if cancel is not None and cancel.is_set():
                break
            if progress:
                progress(i / len(signatures), f"{port}: {sig.name}, slave {sig.slave_id}")
            results.append(probe(transport, sig, baudrate, timeout))
            if transport.line is None and results[-1][1].startswith("Error: cannot open"):
                results[-1][0] = f"Opening {port} at baud rate {baudrate}"
                break  # the port itself failed (busy with a bus, no permission): one answer is enough
    finally:
        transport.close()
    if progress:
        progress(1.0, f"{port}: done")
    return results
