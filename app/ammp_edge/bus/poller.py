"""One cycle over the devices of one physical bus, and the backoff of devices that keep failing.

One transaction in flight (devices are read one after another); each device has its own deadline;
a device that keeps failing is skipped for growing numbers of cycles (logged once when it fails and
once when it is back). The loop around it is program.py.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from .. import __version__
from ..core import config as cfg, keys
from ..core.macs import MacResolver
from ..readers.modbus import DeviceResult, GracefulStop, PlanStore
from ..readers.transports import make_reader, make_transport

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 300


@dataclass
class Health:
    failures: int = 0
    skip_cycles: int = 0
    down_since: float | None = None
    last_ok_t: int | None = None
    last_errors: tuple[str, ...] = ()


class BusPoller:
    """Polls the devices of one bus. Used by the bus process and by `ammp-edge read`."""

    def __init__(
        self,
        bus_id: str,
        devices: list[cfg.Device],
        read_interval: int = 60,
        resolve_mac: MacResolver | None = None,
        stop: threading.Event | None = None,
        plans: PlanStore | None = None,
    ):
        """`stop` (the bus program's stop event) cuts a cycle short once it has been set for STOP_GRACE
        seconds, also in the middle of a request; `plans` keeps each Modbus device's working plan
        across restarts."""
        self.bus_id = bus_id
        self.read_interval = read_interval
        self.interrupt = GracefulStop(stop) if stop is not None else None
        self.transport = make_transport(devices[0], resolve_mac)
        if self.transport is not None:
            self.transport.interrupt = self.interrupt
        self.readers: dict = {}
        self.health: dict[str, Health] = {}
        self.setup_errors: dict[str, str] = {}
        for dev in devices:
            try:
                self.readers[dev.key] = make_reader(dev, self.transport, plans, keys.modbus_plan_key(bus_id, dev.key))
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
            if self.interrupt is not None and self.interrupt.is_set():
                errors[key] = ["the bus is stopping: not read in this cycle"]
                continue  # left out of the readout: not found down, just not read
            h = self.health[key]
            if dev.min_read_interval and h.last_ok_t is not None and t - h.last_ok_t < dev.min_read_interval:
                continue  # not due (as upstream: left out of this cycle)
            record: dict[str, Any] = {"_d": key, "_vid": dev.vendor_id}
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
            if res.interrupted and not res.values and not res.status:
                records.pop()  # cut short before anything was read: not found down, just not read
            record.update(res.values)
            if res.status:
                record["_s"] = res.status
            if res.errors:
                errors[key] = res.errors
            if not res.interrupted:
                self._update_health(dev, h, res, t)
        readout = {
            "t": t,
            "bus": self.bus_id,
            "devices": records,
            "duration": round(time.monotonic() - started, 4),
            "requests": requests,
            "errors": errors,
            "version": __version__,
        }
        if self.interrupt is not None and self.interrupt.is_set():
            readout["stopped"] = True  # the cycle was cut short: devices not read are left out
        return readout

    def _read_device(self, dev: cfg.Device, started: float) -> DeviceResult:
        deadline = time.monotonic() + dev.deadline
        try:
            return self.readers[dev.key].read(deadline)
        except Exception as exc:
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
            log.warning(
                "%s answering again after %d failed cycles (%.0f s)",
                prefix,
                h.failures,
                time.time() - (h.down_since or time.time()),
            )
        elif res.errors and tuple(res.errors) != h.last_errors:
            log.warning("%s %s", prefix, "; ".join(res.errors))
        h.failures, h.skip_cycles, h.down_since = 0, 0, None
        h.last_errors = tuple(res.errors)
        h.last_ok_t = t

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
