"""A trustworthy clock before the first reading (upstream section 5.8).

node decides: the clock is trusted when `timedatectl show` says NTPSynchronized=yes or the RTC
advances (RTCTimeUSec differs 1 s later). In a container (/.dockerenv or /run/.containerenv) the host
keeps the clock and it is trusted at once; without timedatectl, or when it cannot answer (no systemd),
that is logged (and published) and the clock is trusted, so readings can start. While it waits, node
checks every 5 s and says so on `u/log/msg` at growing intervals (at once, after 1, 2, 4 ... minutes,
at most hourly).

Buses wait for the verdict: node writes the KV cache key `clock_trusted` (true; the cache lives in
AE_TEMP_DIR and `up` deletes the key at each start), and a bus under supervisord (SUPERVISOR_ENABLED)
polls it once a second before its first cycle (`wait_for_trust`). A bus started by hand, or a test
calling bus.run_bus, does not wait.
"""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from . import keys, paths
from .host import in_container
from .kvs import cache as kv_cache

log = logging.getLogger(__name__)


def now_rfc3339() -> str:
    """The time now as RFC 3339 in UTC to the second (`2026-11-27T10:00:00Z`), as the KV store keeps it."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


CHECK_EVERY_S = 5.0
FIRST_MESSAGE_GAP_S = 60.0
MAX_MESSAGE_GAP_S = 3600.0


class ClockUnknown(Exception):
    """timedatectl could not answer (no systemd, a timeout): nothing to wait for."""


def timedatectl_show(exe: str = paths.TIMEDATECTL) -> dict[str, str]:
    """`timedatectl show` as a dict. FileNotFoundError without timedatectl; ClockUnknown when it fails."""
    try:
        r = subprocess.run([exe, "show"], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        raise ClockUnknown("timedatectl show did not answer within 10 s") from None
    if r.returncode != 0:
        raise ClockUnknown(f"timedatectl show failed ({r.returncode}): {' '.join(r.stderr.split())[:200]}")
    return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)


def status(
    show: Callable[[], dict[str, str]] = timedatectl_show, sleep: Callable[[float], None] = time.sleep
) -> tuple[bool, str]:
    """(trusted, why) from timedatectl: NTP synchronised, or the RTC advancing over one second."""
    first = show()
    if first.get("NTPSynchronized") == "yes":
        return True, "NTP synchronised"
    rtc = first.get("RTCTimeUSec")
    sleep(1.0)
    later = show().get("RTCTimeUSec")
    if rtc and later and rtc not in ("n/a", "0") and later != rtc:
        return True, "the RTC is running"
    return False, "NTP is not synchronised and no running RTC"


def wait_until_trusted(
    stop: threading.Event,
    publish: Callable[[str, str], None],
    check: Callable[[], tuple[bool, str]] = status,
    container: bool | None = None,
    check_every: float = CHECK_EVERY_S,
    first_gap: float = FIRST_MESSAGE_GAP_S,
) -> bool:
    """Block until the clock can be trusted (True), or stop is set (False)."""
    if container if container is not None else in_container():
        log.info("running in a container: the host's clock is trusted")
        return True
    next_message, gap, since = 0.0, first_gap, time.monotonic()
    while not stop.is_set():
        try:
            trusted, why = check()
        except FileNotFoundError:
            log.warning("timedatectl not found: cannot check NTP or the RTC; trusting the clock")
            return True
        except ClockUnknown as exc:
            text = f"cannot tell whether the clock is right ({exc}); trusting it so readings can start"
            log.error("%s", text)
            publish(keys.LOG_TOPIC, text)
            return True
        if trusted:
            log.info("clock trusted: %s%s", why, f" after {time.monotonic() - since:.0f} s" if next_message else "")
            return True
        now = time.monotonic()
        if now >= next_message:
            text = (
                f"waiting for a trustworthy clock before reading: {why} "
                f"(for {now - since:.0f} s; clock says {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())})"
            )
            log.warning("%s", text)
            publish(keys.LOG_TOPIC, text)
            next_message = now + gap
            gap = min(gap * 2, MAX_MESSAGE_GAP_S)
        stop.wait(check_every)
    return False


def mark_trusted(cache: Any) -> None:
    cache.set(keys.CLOCK_TRUSTED, True)


def wait_for_trust(stop: threading.Event, who: str, poll: float = 1.0) -> bool:
    """In a bus under supervisord: wait until node has trusted the clock. False when stopped first."""
    if not paths.under_supervisord():
        return True
    store = kv_cache()
    try:
        waited = False
        while not stop.is_set():
            if store.get(keys.CLOCK_TRUSTED) is True:
                if waited:
                    log.info("[%s] clock trusted: starting", who)
                return True
            if not waited:
                log.info(
                    "[%s] waiting for a trustworthy clock (node checks NTP and the RTC) before the first cycle", who
                )
                waited = True
            stop.wait(poll)
        return False
    finally:
        store.close()
