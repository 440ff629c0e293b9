"""The bus process: owns one physical bus, polls its devices every cycle, commits each readout.

One transaction in flight (devices are read one after another); each device has its own deadline;
a device that keeps failing is skipped for growing numbers of cycles (logged once when it fails and
once when it is back); cycles run on a fixed grid (aligned to multiples of read_interval with
read_roundtime) and overruns are counted, never drifted; the config is reloaded between cycles.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import __version__
from ..core import clock, config as cfg, drivers, paths, watchdog
from ..core.kvs import KVStore
from ..core.problems import ConfigUnusable
from ..readers.modbus import DeviceResult, ModbusDevice

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 300


@dataclass
class Health:
    failures: int = 0
    skip_cycles: int = 0
    down_since: float | None = None
    last_ok_t: int | None = None
    last_errors: tuple = ()


def make_transport(device: cfg.Device):
    if device.reading_type == "modbustcp":
        from ..readers.modbus_tcp import TcpTransport

        return TcpTransport(device.address.get("host"), int(device.address.get("port", 502)),
                            mac=device.address.get("mac"))
    if device.reading_type == "modbusrtu":
        from ..readers.modbus_rtu import RtuTransport

        a = device.address
        return RtuTransport(a["device"], int(a.get("baudrate", 9600)), int(a.get("bytesize", 8)),
                            str(a.get("parity", "none")), a.get("stopbits", 1), float(a.get("frame_gap", 0)))
    return None


class BusPoller:
    """Polls the devices of one bus. Used by the bus process and by `ammp-edge read`."""

    def __init__(self, bus_id: str, devices: list[cfg.Device], read_interval: int = 60):
        self.bus_id = bus_id
        self.read_interval = read_interval
        self.transport = make_transport(devices[0])
        self.readers = {}
        self.health: dict[str, Health] = {}
        self.setup_errors: dict[str, str] = {}
        for dev in devices:
            try:
                if dev.reading_type == "sys":
                    from ..readers.system import SystemDevice

                    self.readers[dev.key] = SystemDevice(dev)
                else:
                    self.readers[dev.key] = ModbusDevice(dev, self.transport)
            except ValueError as exc:
                self.setup_errors[dev.key] = str(exc)
                log.error("[%s %s] cannot be read: %s", bus_id, dev.key, exc)
            self.health[dev.key] = Health()
        self.devices = {d.key: d for d in devices}

    def poll(self, t: int) -> dict:
        """One cycle over all devices of the bus; returns the bus readout."""
        started = time.monotonic()
        records, errors, requests = [], {}, 0
        for key, dev in self.devices.items():
            h = self.health[key]
            if dev.min_read_interval and h.last_ok_t is not None and t - h.last_ok_t < dev.min_read_interval:
                continue  # not due (as upstream: left out of this cycle)
            record = {"_d": key, "_vid": dev.vendor_id}
            records.append(record)
            if key in self.setup_errors:
                errors[key] = [self.setup_errors[key]]
                continue
            if h.skip_cycles > 0:
                h.skip_cycles -= 1
                errors[key] = [f"backed off after {h.failures} failed cycles"]
                continue
            res = self._read_device(dev, started)
            requests += res.requests
            record.update(res.values)
            if res.status:
                record["_s"] = res.status
            if res.errors:
                errors[key] = res.errors
            self._update_health(dev, h, res, t)
        return {
            "t": t,
            "bus": self.bus_id,
            "devices": records,
            "duration": round(time.monotonic() - started, 4),
            "requests": requests,
            "errors": errors,
            "version": __version__,
        }

    def _read_device(self, dev: cfg.Device, started: float) -> DeviceResult:
        deadline = time.monotonic() + dev.deadline
        try:
            return self.readers[dev.key].read(deadline)
        except Exception as exc:  # noqa: BLE001 - one device's reader bug must not stop the others on the bus
            log.exception("[%s %s] read failed", self.bus_id, dev.key)
            return DeviceResult(errors=[f"{type(exc).__name__}: {exc}"], failed=True)

    def _update_health(self, dev: cfg.Device, h: Health, res: DeviceResult, t: int) -> None:
        prefix = f"[{self.bus_id} {dev.key}]"
        if res.failed:
            h.failures += 1
            if h.failures == 1:
                h.down_since = time.time()
                log.warning("%s not answering: %s", prefix, "; ".join(res.errors))
            max_skip = max(1, MAX_BACKOFF_SECONDS // max(1, self.read_interval))
            h.skip_cycles = min(2 ** (h.failures - 1) - 1, max_skip)
            return
        if h.failures:
            log.warning("%s answering again after %d failed cycles (%.0f s)", prefix, h.failures,
                        time.time() - (h.down_since or time.time()))
        elif res.errors and tuple(res.errors) != h.last_errors:
            log.warning("%s %s", prefix, "; ".join(res.errors))
        h.failures, h.skip_cycles, h.down_since = 0, 0, None
        h.last_errors = tuple(res.errors)
        h.last_ok_t = t

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


# ---------------------------------------------------------------------------------------------
# Config source and the scheduling loop


class ConfigSource:
    """The current config, from a file or the KV store key `config`; the previous one is kept when a
    new one cannot be used."""

    LAST_GOOD_KEY = "last_good_config"  # the last usable config, for a process that starts after a bad one

    def __init__(self, file: Path | None = None, kvstore: KVStore | None = None, remember_good: bool = False):
        self.file = file
        self.kvstore = kvstore
        self.remember_good = remember_good  # the node keeps LAST_GOOD_KEY up to date
        self.builtin = drivers.load_builtin_drivers(paths.drivers_dir())
        self._raw: bytes | None = None
        self._checked = 0.0
        self.config: cfg.Config | None = None

    def _read_raw(self) -> bytes | None:
        if self.file is not None:
            return self.file.read_bytes()
        store = self.kvstore or KVStore()
        self.kvstore = store
        return store.get_raw("config")

    def current(self, max_age: float = 0.0) -> cfg.Config | None:
        """The config; with max_age, the store is read at most that often (for callers in a fast loop)."""
        now = time.monotonic()
        if max_age and self.config is not None and now - self._checked < max_age:
            return self.config
        self._checked = now
        try:
            raw = self._read_raw()
        except OSError as exc:
            log.error("cannot read the config: %s", exc)
            return self.config
        if raw is None or raw == self._raw:
            return self.config
        self._raw = raw
        try:
            new = cfg.load(cfg.parse_json(raw), self.builtin)
        except ConfigUnusable as exc:
            log.error("config cannot be used, keeping the previous one: %s", exc)
            if self.config is None and self.file is None:
                self._fall_back()
            return self.config
        if self.remember_good and self.file is None and self.kvstore.get_raw(self.LAST_GOOD_KEY) != raw:
            self.kvstore.set_raw(self.LAST_GOOD_KEY, raw)
        for p in new.problems:
            log.log(logging.ERROR if p.severity == "error" else logging.WARNING, "config: %s", p)
        self.config = new
        return new

    def _fall_back(self) -> None:
        raw = self.kvstore.get_raw(self.LAST_GOOD_KEY)
        if raw is None:
            return
        try:
            self.config = cfg.load(cfg.parse_json(raw), self.builtin)
        except ConfigUnusable:
            return
        log.warning("using the last usable config (%s) until a usable one arrives", self.config.config_id)


def next_cycle(now: float, interval: int, roundtime: bool, last_t: int | None) -> tuple[int, int]:
    """(next cycle start t, number of missed cycles).

    The grid is the multiples of the interval with roundtime, else last_t + k x interval. The next slot
    may start up to a grace period late (min(2 s, interval / 4)); a slot later than that is skipped and
    counted as missed instead of bursting or drifting."""
    if last_t is None:
        return (math.ceil(now / interval) * interval if roundtime else math.ceil(now)), 0
    slot = last_t + interval
    if roundtime and slot % interval:  # the interval changed: back onto its grid
        slot = math.ceil(slot / interval) * interval
    grace = min(2.0, interval / 4)
    if now - slot <= grace:
        return slot, 0
    missed = math.ceil((now - slot - grace) / interval)
    return slot + missed * interval, missed


def sleep_until(t: float, stop: threading.Event) -> bool:
    """Sleep until wall-clock time t; False if stopped."""
    while not stop.is_set():
        left = t - time.time()
        if left <= 0:
            return True
        stop.wait(min(left, 1.0))
    return False


def run_bus(bus_id: str, source: ConfigSource, sink: Callable[[dict], None], stop: threading.Event,
            once: bool = False) -> int:
    """The bus loop. Returns an exit code (0 when stopped or when the bus left the config)."""
    if not clock.wait_for_trust(stop, bus_id):  # under supervisord only: node says when the clock is right
        return 0
    poller: BusPoller | None = None
    poller_config = None
    last_t = None
    overruns = 0
    while not stop.is_set():
        config = source.current()
        watchdog.heartbeat(f"bus {bus_id}", watchdog.bus_max_silence(config, bus_id))  # exits on a hang
        if config is None:
            log.info("[%s] waiting for a config", bus_id)
            stop.wait(5)
            continue
        devices = config.buses().get(bus_id)
        if not devices:
            log.warning("[%s] the config has no devices on this bus; exiting", bus_id)
            if poller:
                poller.close()
            return 0
        if config is not poller_config:
            if poller:
                poller.close()
            poller = BusPoller(bus_id, devices, config.read_interval)
            poller_config = config
            log.info("[%s] polling %d device(s) every %d s: %s", bus_id, len(devices), config.read_interval,
                     ", ".join(d.key for d in devices))
        now = time.time()
        if last_t is not None and now < last_t - config.read_interval:
            log.warning("[%s] the clock went back %.0f s; starting a new cycle grid", bus_id, last_t - now)
            last_t = None
        t, missed = next_cycle(now, config.read_interval, config.read_roundtime, last_t)
        if missed:
            overruns += missed
            log.warning("[%s] cycle overran: skipped %d cycle(s) (%d in total)", bus_id, missed, overruns)
        if not once and not sleep_until(t, stop):
            break
        begun = time.time()
        watchdog.heartbeat(f"bus {bus_id}", watchdog.bus_max_silence(config, bus_id, polling=True))
        readout = poller.poll(int(t))
        readout["overruns"] = overruns
        readout["config_id"] = config.config_id
        readout["start_delay"] = 0.0 if once else round(begun - t, 4)
        sink(readout)
        last_t = int(t)
        if once:
            break
    if poller:
        poller.close()
    return 0


def install_signal_handlers(stop: threading.Event) -> None:
    def handler(signum, frame):
        log.info("signal %d: finishing the current cycle and stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
