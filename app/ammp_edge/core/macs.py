"""MAC -> IPv4 from what this machine already knows (reference section 3.5), for devices addressed by
MAC only: the kernel's ARP table, then the KV cache `env/net/mac/<mac>` that network scans write.

Nothing here scans: finding a MAC that neither knows is a network sweep (node.scan.macs), which the
bus program adds on top (the `resolve_mac` it hands to the readers).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from . import keys, paths
from .kvs import KVStore

MacResolver = Callable[[str], "str | None"]  # MAC -> IPv4, None while unknown

ARP_PATH = Path("/proc/net/arp")
ZERO_MAC = "00:00:00:00:00:00"
_lock = threading.Lock()
_caches: dict[Path, KVStore] = {}


def process_cache() -> KVStore:
    """One KV cache connection per process (a MAC is resolved at every connect of a bus)."""
    path = paths.kvcache_path()
    with _lock:
        if path not in _caches:
            _caches[path] = KVStore(path)
        return _caches[path]


def arp_table(path: Path | str = ARP_PATH) -> dict[str, str]:
    """{mac lowercase: ipv4} from an ARP table in /proc/net/arp's format (incomplete entries, i.e.
    all-zero MACs, ignored)."""
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


def lookup(mac: str, *, arp_path: Path | str = ARP_PATH, cache: KVStore | None = None) -> str | None:
    """The IPv4 address of `mac` from the ARP table, else from the scan cache; None when neither knows."""
    mac = mac.strip().lower()
    ip = arp_table(arp_path).get(mac)
    if ip:
        return ip
    entry = (cache or process_cache()).get(keys.mac_key(mac))
    if isinstance(entry, dict) and isinstance(entry.get("ipv4"), str) and entry["ipv4"]:
        return str(entry["ipv4"])
    return None
