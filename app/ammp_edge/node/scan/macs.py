"""MAC -> IPv4 for devices addressed by MAC only (reference section 3.5).

1. The kernel's ARP table, /proc/net/arp (all-zero MACs, i.e. incomplete entries, ignored; MACs
   compared in lowercase).
2. The KV cache `env/net/mac/<mac>` written by network scans: its `ipv4`.
3. Not found: a ping sweep in the background (it fills ARP and the cache for the next attempt),
   at most one per 15 minutes across all processes: the KV cache key `env/net/scan_lock` holds the
   time until which no other sweep starts. Setting it is a read then a write, not atomic; two
   processes missing at the same instant can both sweep once, which is harmless.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable

from ...core import paths
from ...core.kvs import KVStore
from . import network

log = logging.getLogger(__name__)

ARP_PATH = Path("/proc/net/arp")
LOCK_KEY = "env/net/scan_lock"
SCAN_HOLDOFF_S = 15 * 60
ZERO_MAC = "00:00:00:00:00:00"
_local = threading.Lock()
_caches: dict[Path, KVStore] = {}


def _cache() -> KVStore:
    """One KV cache connection per process (resolve_mac runs every cycle in a bus)."""
    path = paths.kvcache_path()
    with _local:
        if path not in _caches:
            _caches[path] = KVStore(path)
        return _caches[path]


def arp_table(path: Path | str = ARP_PATH) -> dict[str, str]:
    """{mac lowercase: ipv4} from an ARP table in /proc/net/arp's format."""
    table: dict[str, str] = {}
    try:
        lines = Path(path).read_text().splitlines()[1:]
    except OSError:
        return table
    for line in lines:
        cols = line.split()
        if len(cols) >= 4 and cols[3].lower() != ZERO_MAC:
            table[cols[3].lower()] = cols[0]
    return table


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
    def run():
        try:
            hosts = network.ping_sweep(cache=cache)
            log.info("MAC refresh: %d host(s) up", len(hosts))
        except (network.ScanError, OSError) as exc:
            log.warning("MAC refresh scan failed: %s", exc)

    threading.Thread(target=run, name="mac-refresh", daemon=True).start()


def resolve_mac(mac: str, *, arp_path: Path | str = ARP_PATH, cache: KVStore | None = None,
                trigger: Callable[[KVStore], None] | None = background_sweep) -> str | None:
    """The IPv4 address of `mac`, or None (then a background sweep is started, rate-limited)."""
    mac = mac.strip().lower()
    ip = arp_table(arp_path).get(mac)
    if ip:
        return ip
    cache = cache or _cache()
    entry = cache.get(network.mac_key(mac))
    if isinstance(entry, dict) and entry.get("ipv4"):
        return entry["ipv4"]
    if trigger is not None and claim_scan(cache):
        log.info("MAC %s not in ARP or the scan cache; starting a network sweep", mac)
        trigger(cache)
    return None
