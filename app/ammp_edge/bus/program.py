"""The bus program's loop: cycles on a fixed grid, the config reloaded between cycles.

Cycles run on a grid (aligned to multiples of read_interval with read_roundtime, else from the first
cycle); a cycle that overruns skips the missed slots and counts them instead of bursting or drifting.
Each readout goes to `sink` (the bus program commits it to the outbox).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from ..core import clock, watchdog
from ..core.config import Config
from ..core.configsource import ConfigSource
from ..core.macs import MacResolver
from ..readers.modbus import PlanStore
from .poller import BusPoller

log = logging.getLogger(__name__)


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


def run_bus(
    bus_id: str,
    source: ConfigSource,
    sink: Callable[[dict], None],
    stop: threading.Event,
    once: bool = False,
    resolve_mac: MacResolver | None = None,
    plans: PlanStore | None = None,
) -> int:
    """The bus loop. Returns an exit code (0 when stopped or when the bus left the config). `stop` also
    cuts a cycle in progress short (what was read is still handed to the sink); `plans` keeps the
    devices' working plans across restarts."""
    if not clock.wait_for_trust(stop, bus_id):  # under supervisord only: node says when the clock is right
        return 0
    poller: BusPoller | None = None
    poller_config: Config | None = None
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
            poller = BusPoller(bus_id, devices, config.read_interval, resolve_mac, stop, plans)
            poller_config = config
            log.info(
                "[%s] polling %d device(s) every %d s: %s",
                bus_id,
                len(devices),
                config.read_interval,
                ", ".join(d.key for d in devices),
            )
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
        assert poller is not None  # made above for this config
        readout = poller.poll(int(t))
        readout["overruns"] = overruns
        readout["config_id"] = config.config_id
        readout["start_delay"] = 0.0 if once else round(begun - t, 4)
        if readout["devices"] or not readout.get("stopped"):  # a cycle stopped before any device was read: nothing
            sink(readout)
        last_t = int(t)
        if once:
            break
    if poller:
        poller.close()
    return 0
