"""A simulated Modbus device served from a driver (pymodbus server), values encoded by our codec.

Used by the demo, the tests, the benchmarks and by driver authors: `ammp-edge simulate --driver
sma_stp25000 --port 5020 --unit 3`. Values come from a JSON file ({field: value}) or are plausible
and changing (power follows a slow wave, energy counts up). Unit ids not served get no answer, as a
gateway whose device is switched off; any id 0..255 can be served, 0 too (Huawei's EMMA answers on 0).

Registers between the driver's fields read as 0, or with `strict` answer "illegal data address", or
with `silent_gaps` get no answer at all (a read touching any register no field or status item maps
stays unanswered, as some devices do).

Modbus TCP by default; with `serial_port=` the same units are served as RTU slaves on one serial
line (pymodbus ModbusSerialServer, RTU framer), e.g. one end of a socat pty pair; units not served
stay silent on the line. A pty moves bytes instantly whatever its baud rate, so `emulate_airtime`
holds every response back by the time the request and the response would take on a real line,
(request + response bytes) x bits per character / baud, on top of `delay` (the device's latency).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import termios
import threading
import time
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator.simcore import SimCore
from pymodbus.simulator.simdata import SimData
from pymodbus.simulator.simdevice import SimDevice
from pymodbus.simulator.simutils import DataType

from .core import codec, drivers, serialline
from .core.problems import InvalidInput

log = logging.getLogger(__name__)
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


def plausible(name: str, fld: drivers.ModbusField, t: float) -> Any:
    """A value that looks like a live device: slow waves around typical levels, counters that grow."""
    unit = (fld.unit or "").strip()
    wave = math.sin(2 * math.pi * (t % 600) / 600)
    lname = name.lower()
    if codec.is_text(fld.spec.datatype):
        return f"SIM-{name}"[: fld.spec.text_bytes or 2 * fld.words]
    if fld.spec.bits is not None:
        return 0
    phases = 3 if re.search(r"_l[123]\b|l[123]$", lname) else 1
    if unit in ("W", "VA", "VAr", "var"):
        return round((9000 + 6000 * wave) / phases, 1)
    if unit in ("kW", "kVA", "kVAr"):
        return round((9 + 6 * wave) / phases, 3)
    if unit == "V":
        return round((620 + 15 * wave) if "dc" in lname else (230 + 2 * wave), 2)
    if unit == "A":
        return round((12 + 6 * wave) / phases, 3)
    if unit == "Hz":
        return round(50 + 0.05 * wave, 2)
    if unit in ("Wh", "kWh", "MWh"):
        scale = {"Wh": 1, "kWh": 1e-3, "MWh": 1e-6}[unit]
        return round((1_000_000 + (t - 1.7e9) * 2.5) * scale, 3) if t > 1.7e9 else 1_000_000 * scale
    if unit in ("C", "°C", "degC"):
        return round(38 + 6 * wave, 1)
    if unit == "%":
        return round(55 + 30 * wave, 1)
    if unit == "s":
        return int(t) % 10_000_000
    m = re.search(r"(\d+)\s*=", fld.description or "")
    if m:  # status enumerations: the first listed code (e.g. "307 = Ok")
        return int(m.group(1))
    return round(100 + 10 * wave, 2) if fld.spec.typecast == "float" else 1


class _ServedUnits(SimCore):
    """pymodbus' simulator answers a unit id it does not have with device 0, which makes 0 a catch-all
    rather than a unit. Here an id not served is missing: with ignore_missing_devices the server
    sends nothing (as an absent device behind a gateway), and unit 0 is a unit like any other."""

    def __init__(self, devices: list[SimDevice], on_missing):
        super().__init__(devices)
        self.on_missing = on_missing

    def _served(self, device_id: int) -> None:
        if device_id not in self.devices:
            self.on_missing()
            raise NoSuchIdException(f"unit {device_id} is not served")

    async def async_getValues(self, device_id, func_code, address, count=1):
        self._served(device_id)
        return await super().async_getValues(device_id, func_code, address, count)

    async def async_setValues(self, device_id, func_code, address, values):
        self._served(device_id)
        return await super().async_setValues(device_id, func_code, address, values)


SEEN_MAX = 100_000  # requests kept in Simulator.seen (the oldest half goes when full)


class Simulator:
    """A Modbus TCP server (or, with serial_port, an RTU slave line) in a background thread, serving
    one driver per unit id.

    `requests` counts the requests that reached a unit (refused ones are not counted; unanswered ones
    are); `seen` lists every request decoded from the wire as (unit, fncode, address, count), refused
    ones included (the last SEEN_MAX or more).
    """

    def __init__(
        self,
        units: dict[int, dict],
        port: int | None = None,
        host: str = "127.0.0.1",
        values: dict[int, dict] | None = None,
        delay: float = 0.0,
        strict: bool = False,
        *,
        serial_port: str | None = None,
        baudrate: int = 9600,
        bytesize: int = 8,
        parity: str = "none",
        stopbits: int = 1,
        emulate_airtime: bool = False,
        registers: dict[int, dict[int, dict[int, int]]] | None = None,
        silent_gaps: bool = False,
    ):
        if port is None and serial_port is None:
            raise ValueError("Simulator needs a TCP port or a serial_port")
        bad = [u for u in units if isinstance(u, bool) or not isinstance(u, int) or not 0 <= u <= 255]
        if bad or not units:
            raise ValueError(f"unit ids must be 0..255, got {bad or 'none'}")
        self.host, self.port, self.delay, self.strict = host, port, delay, strict
        self.silent_gaps = silent_gaps
        self.serial_port = serial_port
        self.serial_settings: dict[str, Any] = dict(
            baudrate=int(baudrate), bytesize=int(bytesize), stopbits=stopbits, parity=serialline.parity_letter(parity)
        )
        self.emulate_airtime = emulate_airtime
        self.seen: list[tuple[int, int, int, int]] = []
        self._request_bytes = 8
        self.values: dict[int, dict] = {u: dict((values or {}).get(u, {})) for u in units}
        self.fields: dict[int, dict[str, drivers.ModbusField]] = {}
        self.status: dict[int, dict[str, drivers.StatusItem]] = {}
        self.requests = 0
        self.silent_units: set[int] = set()
        # raw register values laid over the driver's: {unit: {fncode: {address: value}}}
        self.raw_registers = {
            u: {fc: dict(regs) for fc, regs in by_fc.items()} for u, by_fc in (registers or {}).items()
        }
        self.refuse_larger_than: int | None = None
        self.expect: dict[int, dict] = {}
        for unit, driver in units.items():
            self.fields[unit] = {}
            expect = driver.get("expect")
            self.expect[unit] = expect if isinstance(expect, dict) else {}
            for name in driver.get("fields", {}):
                try:
                    f = drivers.compile_field(driver, name, name, [])
                except InvalidInput:
                    continue
                if isinstance(f, drivers.ModbusField):
                    self.fields[unit][name] = f
            self.status[unit] = {}
            for key in driver.get("status_info", {}) or {}:
                try:
                    self.status[unit][key] = drivers.compile_status_item(driver, key, key)
                except InvalidInput:
                    continue
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    # -- register image -----------------------------------------------------------------------
    def registers(self, unit: int, now: float | None = None) -> dict[int, dict[int, int]]:
        """{fncode: {address: value}} for the unit at time now."""
        now = time.time() if now is None else now
        image: dict[int, dict[int, int]] = {3: {}, 4: {}}
        fields = self.fields[unit]
        # a scale factor field (another field's `scale_factor`) is 0 unless given: 10**0 leaves values as they are
        scale_factors = {sf.name for f in fields.values() for sf in f.scale_chain()}
        for name, f in fields.items():
            if name in self.values[unit]:
                value = self.values[unit][name]
            elif name in self.expect.get(unit, {}):
                value = self.expect[unit][name]  # the driver's `expect`: what the device must read
            else:
                value = 0 if name in scale_factors else plausible(name, f, now)
            regs = image[f.fncode]
            current = [regs.get(f.register, 0)]
            power = None
            if f.scale_factor is not None:
                sf = self.values[unit].get(f.scale_factor.name, 0)
                power = sf if isinstance(sf, int) and not isinstance(sf, bool) and -10 <= sf <= 10 else None
            try:
                words = codec.encode_registers(value, f.spec, f.words, current, power)
            except (ValueError, OverflowError, TypeError):
                words = [0] * f.words
            for i, w in enumerate(words):
                regs[f.register + i] = w
        for key, s in self.status[unit].items():
            value = int(self.values[unit].get(f"_s/{key}", 0))
            regs = image[s.fncode]
            word = regs.get(s.register, 0)
            regs[s.register] = s.spec.bits.insert(word, value) if s.spec.bits else value & 0xFFFF
        for fncode, regs in self.raw_registers.get(unit, {}).items():
            image.setdefault(fncode, {}).update(regs)
        return image

    def _blocks(self, regs: dict[int, int]) -> list[SimData]:
        if not regs:
            return [SimData(0, values=[0], datatype=DataType.REGISTERS)]
        addrs = sorted(regs)
        blocks, start, prev = [], addrs[0], addrs[0]
        for a in addrs[1:] + [None]:
            if a is not None and (a == prev + 1 or not self.strict):
                prev = a
                continue
            blocks.append(
                SimData(start, values=[regs.get(i, 0) for i in range(start, prev + 1)], datatype=DataType.REGISTERS)
            )
            if a is not None:
                start = prev = a
        return blocks

    def _device(self, unit: int) -> SimDevice:
        image = self.registers(unit)
        bits = [SimData(0, values=False, datatype=DataType.BITS)]
        if self.silent_gaps:  # every address reaches the action, which stays silent on unmapped ones
            every = [SimData(0, count=65535, values=0, datatype=DataType.REGISTERS)]
            holding, inputs = every, list(every)
        else:
            holding, inputs = self._blocks(image[3]), self._blocks(image[4])
        return SimDevice(
            unit,
            simdata=(bits, list(bits), holding, inputs),
            action=self._make_action(unit),
        )

    def _missing(self) -> None:
        self.requests += 1  # counted as before: a request that reached the simulator

    def _make_action(self, unit: int):
        async def action(fncode, start, address, count, current, set_values):
            self.requests += 1
            if self.delay and self.serial_port is None:  # on a serial line: held back in _trace_packet
                await asyncio.sleep(self.delay)
            if unit in self.silent_units:
                await asyncio.sleep(3600)
            if self.refuse_larger_than is not None and count > self.refuse_larger_than:
                return ExcCodes.ILLEGAL_ADDRESS
            if set_values is None and fncode in (3, 4):
                regs = self.registers(unit)[fncode]
                if self.silent_gaps and any(i not in regs for i in range(address, address + count)):
                    await asyncio.sleep(3600)
                for i in range(address, address + count):
                    if i in regs:
                        current[i - start] = regs[i]
            return None

        return action

    # -- serial line --------------------------------------------------------------------------
    def line_settings(self) -> dict:
        """The settings given to the serial port. A pty keeps neither parity nor a data size other
        than 8 bits (Linux clears them, and pymodbus's next reconfiguration of the port then fails
        with EINVAL), so on a pty those two stay 8/none; they still count in the airtime."""
        settings = dict(self.serial_settings)
        if os.path.realpath(self.serial_port or "").startswith("/dev/pts/"):
            settings.update(parity="N", bytesize=8)
        return settings

    def airtime(self, nbytes: int) -> float:
        """Seconds nbytes take on the line: a start bit, data bits, a parity bit and stop bits each."""
        s = self.serial_settings
        return nbytes * serialline.character_time(s["baudrate"], s["bytesize"], s["parity"], s["stopbits"])

    def _trace_pdu(self, sending: bool, pdu):
        if not sending:
            if len(self.seen) >= SEEN_MAX:
                del self.seen[: SEEN_MAX // 2]
            self.seen.append((pdu.dev_id, pdu.function_code, getattr(pdu, "address", 0), getattr(pdu, "count", 0)))
            try:
                self._request_bytes = len(pdu.encode()) + 4  # + unit id, function code, CRC
            except Exception:  # noqa: BLE001 - only for the airtime estimate
                self._request_bytes = 8
        return pdu

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if sending and data and self.serial_port is not None:
            hold = self.delay + (self.airtime(self._request_bytes + len(data)) if self.emulate_airtime else 0.0)
            if hold > 0:
                time.sleep(hold)  # the line is busy: nothing else happens on it meanwhile
        return data

    # -- server -------------------------------------------------------------------------------
    @property
    def where(self) -> str:
        return self.serial_port if self.serial_port is not None else f"{self.host}:{self.port}"

    def start(self) -> Simulator:
        self._thread = threading.Thread(target=self._run, name=f"sim:{self.where}", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"simulator on {self.where} did not start")
        if self._error:
            raise self._error
        return self

    _error: Exception | None = None

    def _run(self) -> None:
        async def main():
            self._loop = asyncio.get_running_loop()
            devices = [self._device(u) for u in self.fields]
            if self.serial_port is None:
                self._server = ModbusTcpServer(
                    devices, address=(self.host, self.port), ignore_missing_devices=True, trace_pdu=self._trace_pdu
                )
            else:
                self._server = ModbusSerialServer(
                    devices,
                    framer=FramerType.RTU,
                    port=self.serial_port,
                    ignore_missing_devices=True,
                    trace_pdu=self._trace_pdu,
                    trace_packet=self._trace_packet,
                    **self.line_settings(),
                )
            self._server.context = _ServedUnits(devices, self._missing)
            try:
                listening = await self._server.listen()
            except (OSError, termios.error) as exc:  # OSError includes serial.SerialException
                listening, self._error = None, exc
            if not listening:
                self._error = self._error or OSError(f"cannot listen on {self.where}")
                self._ready.set()
                return
            self._ready.set()
            try:
                await self._server.serving
            except asyncio.CancelledError:
                pass

        try:
            asyncio.run(main())
        except (RuntimeError, asyncio.CancelledError):
            pass

    def stop(self) -> None:
        if self._loop and self._server:

            async def shutdown():
                await self._server.shutdown()
                for task in asyncio.all_tasks():
                    if task is not asyncio.current_task():
                        task.cancel()

            try:
                asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
            except (RuntimeError, TimeoutError, asyncio.CancelledError, ConnectionError):
                pass
        if self._thread:
            self._thread.join(5)
