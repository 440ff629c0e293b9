"""The daily HyCon CSV backfill (`ammp-edge hycon`, the supervisord program `backfill-hycon`).

Upstream ran `ae read-sma-hycon-csv` from a timer once a day at a random time in 00:30-04:00 and
retried the download for up to 30 minutes. Here one program per appliance (node starts it while the
config has a HyCon device) waits for that window in each HyCon's own time zone (its day ends at its
midnight; upstream used the logger's clock), starts a few minutes into it (spread by device), and
puts one record per CSV row into the outbox, so the publisher sends one `u/data` per row (its own
`t`, `m.data_provider = "sma-hycon-csv"`) at the backlog's bounded rate, and a power cut loses none.

Exactly once: rows go in chunks, each chunk committed together with the device's progress mark
(day, file, rows done, clock offset) in one outbox transaction (Outbox.put_batch). A restart in the
middle of a day resumes after the last committed chunk with the same clock offset (the same `t`s);
a day that is done is not sent again.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Callable
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from .. import __version__
from ..core import config as cfg
from ..core.configsource import ConfigSource
from ..readers import hycon_csv
from .outbox import Outbox

log = logging.getLogger(__name__)

WINDOW_START_S, WINDOW_END_S = 30 * 60, 4 * 3600  # 00:30 .. 04:00 local
SPREAD_S = 15 * 60  # devices start at 00:30 plus up to 15 minutes
RETRY_FOR_S = 30 * 60
BACKOFF_S = (10.0, 300.0)
CHUNK = 500


def mark_name(device_key: str) -> str:
    return f"hycon/{device_key}"


def start_offset(device_key: str) -> int:
    """Seconds after the window opens at which this device starts (fixed per device)."""
    return WINDOW_START_S + zlib.crc32(device_key.encode()) % SPREAD_S


def due_day(device: cfg.Device, now: float, mark: object) -> date | None:
    """The day to fetch now (yesterday in the device's time zone), or None: outside its window
    (from its start offset to 04:00), or that day already done."""
    local = datetime.fromtimestamp(now, ZoneInfo(device.address["timezone"]))
    seconds = local.hour * 3600 + local.minute * 60 + local.second
    if not start_offset(device.key) <= seconds < WINDOW_END_S:
        return None
    day = local.date() - timedelta(days=1)
    if isinstance(mark, dict) and mark.get("day") == day.isoformat() and mark.get("finished"):
        return None
    return day


def records_for(device: cfg.Device, rows: list[dict]) -> list[dict]:
    """Outbox records in the shape of a bus readout, one per row (the publisher sends each alone)."""
    out = []
    for row in rows:
        values = {k: v for k, v in row.items() if k != "t"}
        out.append(
            {
                "t": row["t"],
                "bus": device.bus_id,
                "devices": [{"_d": device.key, "_vid": device.vendor_id, **values}],
                "data_provider": hycon_csv.DATA_PROVIDER,
                "duration": 0,
                "requests": 0,
                "errors": {},
                "version": __version__,
            }
        )
    return out


class HyconBackfill:
    def __init__(
        self,
        outbox: Outbox,
        stop: threading.Event,
        clock: Callable[[], float] = time.time,
        retry_for: float = RETRY_FOR_S,
        backoff: tuple[float, float] = BACKOFF_S,
    ):
        self.outbox, self.stop, self.clock = outbox, stop, clock
        self.retry_for, self.backoff = retry_for, backoff
        self.tried: dict[str, str] = {}  # device -> the day last fetched or given up on (once a night)

    def backfill(self, device: cfg.Device, expected: date | None = None) -> int:
        """Fetch the newest complete day and put its rows not yet put; retried with growing delays for
        `retry_for` seconds. Returns the rows put (0 when the day was already done). `expected`: the day
        the schedule is after (yesterday); an older day already sent means its file is not there yet."""
        prefix = f"[hycon {device.key}]"
        delay, deadline = self.backoff[0], time.monotonic() + self.retry_for
        while True:
            try:
                return self._attempt(device, prefix, expected)
            except hycon_csv.HyconError as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.error("%s giving up for today after %.0f min: %s", prefix, self.retry_for / 60, exc)
                    raise
                log.warning("%s %s; trying again in %.0f s", prefix, exc, min(delay, left))
                if self.stop.wait(min(delay, left)):
                    raise
                delay = min(delay * 2, self.backoff[1])

    def _attempt(self, device: cfg.Device, prefix: str, expected: date | None = None) -> int:
        name = mark_name(device.key)
        mark = self.outbox.mark(name)
        mark = mark if isinstance(mark, dict) else {}
        known = (date.fromisoformat(mark["day"]), float(mark["offset"])) if mark.get("day") else None
        day_file = hycon_csv.read_day(device, known, self.clock())
        day, parsed = day_file.day.isoformat(), day_file.parsed
        if not parsed.rows:
            raise hycon_csv.HyconError(f"{day_file.name}: no data rows ({'; '.join(parsed.errors[:3]) or 'empty'})")
        # resumed by day (a file may be zipped between two attempts: the same rows under another name)
        done = int(mark.get("rows", 0)) if mark.get("day") == day else 0
        if mark.get("day") == day and mark.get("finished"):
            if expected is not None and day_file.day < expected:
                raise hycon_csv.HyconError(f"no file of {expected} yet (the newest complete day, {day}, was sent)")
            log.info("%s %s (%s) was sent before; nothing to do", prefix, day, day_file.name)
            return 0
        total = len(parsed.rows)
        log.info(
            "%s %s: %d rows of %s (clock offset %+.3f s)%s%s",
            prefix,
            day_file.name,
            total,
            day,
            day_file.offset,
            f", resuming after row {done}" if done else "",
            f"; {parsed.bad_rows} bad rows skipped" if parsed.bad_rows else "",
        )
        for err in parsed.errors[:10]:
            log.warning("%s %s: %s", prefix, day_file.name, err)
        put = 0
        while done < total:
            if self.stop.is_set():
                log.info("%s stopping after row %d of %d; the rest follows at the next start", prefix, done, total)
                return put
            chunk = parsed.rows[done : done + CHUNK]
            done += len(chunk)
            progress = {
                "day": day,
                "file": day_file.name,
                "rows": done,
                "total": total,
                "offset": day_file.offset,
                "finished": done == total,
            }
            self.outbox.put_batch(records_for(device, chunk), name, progress)
            put += len(chunk)
        log.info("%s %s done: %d rows in the outbox", prefix, day, put)
        return put

    def step(self, config: cfg.Config | None, force: bool = False) -> int:
        """One look at every HyCon device: fetch those due (all of them with force). Rows put."""
        if config is None:
            return 0
        put = 0
        now = self.clock()
        for device in config.backfill_devices():
            day = None if force else due_day(device, now, self.outbox.mark(mark_name(device.key)))
            if not force and (day is None or self.tried.get(device.key) == day.isoformat()):
                continue
            try:
                put += self.backfill(device, day)
            except hycon_csv.HyconError:
                pass  # logged; the next night tries again
            if day is not None:
                self.tried[device.key] = day.isoformat()  # once a night (with its 30 minutes of retries)
        return put

    def run(self, source: ConfigSource, round_s: float = 30.0) -> None:
        while not self.stop.is_set():
            self.step(source.current())
            self.stop.wait(round_s)
