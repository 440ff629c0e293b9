"""A bus's last cycle for the web UI: the KV cache key `bus_status/<bus id>` (protocol in core.keys)."""

from __future__ import annotations

from ..core import keys
from ..core.kvs import KVStore


def write(cache: KVStore, bus_id: str, readout: dict) -> None:
    cache.set(keys.bus_status_key(bus_id), {k: readout.get(k) for k in keys.BUS_STATUS_FIELDS})


def read_all(cache: KVStore) -> dict[str, dict]:
    """bus id -> the last cycle each bus reported (only well-formed entries)."""
    out = {}
    for key in cache.keys(keys.BUS_STATUS_PREFIX):
        value = cache.get(key)
        if isinstance(value, dict) and isinstance(value.get("t"), int):
            out[key[len(keys.BUS_STATUS_PREFIX) :]] = value
    return out
