"""MAC -> IPv4 for devices addressed by MAC only (reference section 3.5).

1. The kernel's ARP table, /proc/net/arp, then 2. the KV cache `env/net/mac/<mac>` written by network
   scans (both core.macs.lookup).
3. Not found: a ping sweep in the background (it fills ARP and the cache for the next attempt),
   at most one per 15 minutes across all processes: the KV cache key `env/net/scan_lock` holds the
   time until which no other sweep starts. Setting it is a read then a write, not atomic; two
   processes missing at the same instant can both sweep once, which is harmless.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ...core import keys
from ...core.kvs import KVStore
from ...core.macs import ARP_PATH, lookup, process_cache
from . import network

log = logging.getLogger(__name__)

LOCK_KEY = keys.SCAN_LOCK
SCAN_HOLDOFF_S = 15 * 60
_local = threading.Lock()


def claim_scan(cache: KVStore, now: float | None = None, holdoff: float = SCAN_HOLDOFF_S) -> bool:
    """True when no sweep ran in the last `holdoff` seconds; then marks one as started."""
    now = time.time() if now is None else now
    with _local:
        until = cache.get(LOCK_KEY)
        if isinstance(until, (int, float)) and until > now:
            return False
        cache.set(LOCK_KEY, now + holdoff)
        return True


def background_sweep(cache: KVStore) -> None:
    """A ping sweep of the default network in a daemon thread (refreshes ARP and the MAC cache)."""

    def run() -> None:
        try:
            hosts = network.ping_sweep(cache=cache)
            log.info("MAC refresh: %d host(s) up", len(hosts))
        except (network.ScanError, OSError) as exc:
            log.warning("MAC refresh scan failed: %s", exc)

    threading.Thread(target=run, name="mac-refresh", daemon=True).start()


def sweep_if_due(
    mac: str, cache: KVStore | None = None, trigger: Callable[[KVStore], None] | None = background_sweep
) -> None:
    """`mac` is unknown: start a background sweep unless one ran within the hold-off."""
    cache = cache or process_cache()
    if trigger is not None and claim_scan(cache):
        log.info("MAC %s not in ARP or the scan cache; starting a network sweep", mac.strip().lower())
        trigger(cache)


def resolve_mac(
    mac: str,
    *,
    arp_path: Path | str = ARP_PATH,
    cache: KVStore | None = None,
    trigger: Callable[[KVStore], None] | None = background_sweep,
) -> str | None:
    """The IPv4 address of `mac`, or None (then a background sweep is started, rate-limited)."""
    cache = cache or process_cache()
    ip = lookup(mac, arp_path=arp_path, cache=cache)
    if ip is None:
        sweep_if_due(mac, cache, trigger)
    return ip
