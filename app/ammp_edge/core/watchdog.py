"""Exit on a hang and let supervisord restart the program.

A Watchdog is a daemon thread watching a loop: the owner calls `tick()` every round. When no tick came
for `max_silence_s`, it writes why to stderr, dumps the stacks of all threads there (faulthandler, so
the log shows where the loop hung) and ends the process at once with exit code 70 (EX_SOFTWARE), with
no clean-up that could hang too. supervisord (autorestart) starts the program again; everything a bus
committed to the outbox is already on disk.

`heartbeat()` is the process-wide form for program loops: the first call starts a watchdog, later
calls tick it. It arms only when something will restart the process, i.e. under supervisord (which
sets SUPERVISOR_ENABLED in its programs' environment); elsewhere (`ammp-edge bus` by hand, loops run
inside tests) it does nothing.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, TextIO

from . import paths

if TYPE_CHECKING:
    from .config import Config

EXIT_CODE = 70  # EX_SOFTWARE
MIN_SILENCE_S = 60.0


class Watchdog:
    def __init__(self, name: str, max_silence_s: float, exit_code: int = EXIT_CODE, out: TextIO | None = None):
        self.name = name
        self.max_silence_s = float(max_silence_s)
        self.exit_code = exit_code
        self.out = out
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"watchdog {name}", daemon=True)

    def start(self) -> Watchdog:
        self._last = time.monotonic()
        self._thread.start()
        return self

    def tick(self, max_silence_s: float | None = None) -> None:
        """The loop is alive; optionally with a new limit for the stretch until the next tick."""
        if max_silence_s is not None:
            self.max_silence_s = float(max_silence_s)
        self._last = time.monotonic()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(min(1.0, self.max_silence_s / 4)):
            silent = time.monotonic() - self._last
            if silent > self.max_silence_s:
                self._bite(silent)

    def _bite(self, silent: float) -> None:
        out = self.out or sys.stderr
        try:
            out.write(
                f"watchdog: {self.name}: no progress for {silent:.0f} s (limit {self.max_silence_s:.0f} s); "
                f"stacks of all threads follow, then exit {self.exit_code} for a restart\n"
            )
            out.flush()
            faulthandler.dump_traceback(file=out, all_threads=True)
            out.flush()
        finally:
            os._exit(self.exit_code)


_process_watchdog: Watchdog | None = None


def heartbeat(name: str, max_silence_s: float) -> None:
    """Tick this process's watchdog (started on the first call, under supervisord only)."""
    global _process_watchdog
    if _process_watchdog is not None:
        _process_watchdog.tick(max_silence_s)
    elif paths.under_supervisord():
        _process_watchdog = Watchdog(name, max_silence_s).start()


def bus_max_silence(config: Config | None, bus_id: str, polling: bool = False) -> float:
    """How long a bus loop may go without a heartbeat.

    The bus beats at the top of each round (before it sleeps to the next slot) and again just before
    the poll. From the top, the stretch to the next beat is the sleep (at most one read_interval plus
    a grace period), the poll and the outbox commit; from just before the poll, only the poll and the
    commit. A poll is bounded by the devices' deadlines, but a request already in flight at a
    deadline may take one more timeout (deadline >= timeout), hence twice the sum. The factor 3 on the
    interval absorbs clock steps and slow disks; nothing is ever shorter than a minute, so a slow SD
    card or a busy CPU never kills a healthy bus:

        top of the round:  max(60, 3 x read_interval + 2 x sum of the bus's device deadlines)
        before the poll:   max(60, 2 x sum of the bus's device deadlines)
    """
    if config is None:  # waiting for a config: the loop wakes every few seconds
        return MIN_SILENCE_S
    deadlines = sum(d.deadline for d in config.buses().get(bus_id, []))
    sleep = 0 if polling else 3 * config.read_interval
    return max(MIN_SILENCE_S, sleep + 2 * deadlines)
