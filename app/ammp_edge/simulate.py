"""A simulated Modbus TCP device served from a driver (pymodbus server), values encoded by our codec.

Used by the demo, the tests, the benchmarks and by driver authors: `ammp-edge simulate --driver
sma_stp25000 --port 5020 --unit 3`. Values come from a JSON file ({field: value}) or are plausible
and changing (power follows a slow wave, energy counts up). Unit ids not served get no answer, as a
gateway whose device is switched off.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
import time
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator.simdata import SimData
from pymodbus.simulator.simdevice import SimDevice
from pymodbus.simulator.simutils import DataType

from . import codec, drivers
from .problems import InvalidInput

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


class Simulator:
    """A Modbus TCP server in a background thread, serving one driver per unit id."""

    def __init__(self, units: dict[int, dict], port: int, host: str = "127.0.0.1",
                 values: dict[int, dict] | None = None, delay: float = 0.0, strict: bool = False):
        self.host, self.port, self.delay, self.strict = host, port, delay, strict
        self.values: dict[int, dict] = {u: dict((values or {}).get(u, {})) for u in units}
        self.fields: dict[int, dict[str, drivers.ModbusField]] = {}
        self.status: dict[int, dict[str, drivers.StatusItem]] = {}
        self.requests = 0
        self.silent_units: set[int] = set()
        self.refuse_larger_than: int | None = None
        for unit, driver in units.items():
            self.fields[unit] = {}
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
        self._server: ModbusTcpServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    # -- register image -----------------------------------------------------------------------
    def registers(self, unit: int, now: float | None = None) -> dict[int, dict[int, int]]:
        """{fncode: {address: value}} for the unit at time now."""
        now = time.time() if now is None else now
        image: dict[int, dict[int, int]] = {3: {}, 4: {}}
        for name, f in self.fields[unit].items():
            value = self.values[unit].get(name, None) if name in self.values[unit] else plausible(name, f, now)
            regs = image[f.fncode]
            current = [regs.get(f.register, 0)]
            try:
                words = codec.encode_registers(value, f.spec, f.words, current)
            except (ValueError, OverflowError, TypeError):
                words = [0] * f.words
            for i, w in enumerate(words):
                regs[f.register + i] = w
        for key, s in self.status[unit].items():
            value = int(self.values[unit].get(f"_s/{key}", 0))
            regs = image[s.fncode]
            word = regs.get(s.register, 0)
            regs[s.register] = s.spec.bits.insert(word, value) if s.spec.bits else value & 0xFFFF
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
            blocks.append(SimData(start, values=[regs.get(i, 0) for i in range(start, prev + 1)],
                                  datatype=DataType.REGISTERS))
            if a is not None:
                start = prev = a
        return blocks

    def _device(self, unit: int) -> SimDevice:
        image = self.registers(unit)
        bits = [SimData(0, values=False, datatype=DataType.BITS)]
        return SimDevice(unit, simdata=(bits, list(bits), self._blocks(image[3]), self._blocks(image[4])),
                         action=self._make_action(unit))

    async def _silent(self, *args):
        self.requests += 1
        await asyncio.sleep(3600)

    def _make_action(self, unit: int):
        async def action(fncode, start, address, count, current, set_values):
            self.requests += 1
            if self.delay:
                await asyncio.sleep(self.delay)
            if unit in self.silent_units:
                await asyncio.sleep(3600)
            if self.refuse_larger_than is not None and count > self.refuse_larger_than:
                return ExcCodes.ILLEGAL_ADDRESS
            if set_values is None and fncode in (3, 4):
                regs = self.registers(unit)[fncode]
                for i in range(address, address + count):
                    if i in regs:
                        current[i - start] = regs[i]
            return None

        return action

    # -- server -------------------------------------------------------------------------------
    def start(self) -> "Simulator":
        self._thread = threading.Thread(target=self._run, name=f"sim:{self.port}", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"simulator on port {self.port} did not start")
        if self._error:
            raise self._error
        return self

    _error: Exception | None = None

    def _run(self) -> None:
        async def main():
            self._loop = asyncio.get_running_loop()
            devices = [self._device(u) for u in self.fields]
            # id 0 answers for every other unit id: it never answers, like an absent device behind a gateway
            devices.append(SimDevice(0, simdata=[SimData(0, count=65535, values=0, datatype=DataType.REGISTERS)],
                                     action=self._silent))
            self._server = ModbusTcpServer(devices, address=(self.host, self.port), ignore_missing_devices=True)
            try:
                listening = await self._server.listen()
            except OSError as exc:
                listening, self._error = None, exc
            if not listening:
                self._error = self._error or OSError(f"cannot listen on {self.host}:{self.port}")
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
