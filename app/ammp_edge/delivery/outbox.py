"""The outbox: every bus readout is committed here (diskcache on AE_DATA_DIR) before anything else
happens to it, and leaves only when the publisher acknowledges it.

Bounded by count and bytes (default: a year of one-minute messages and 2 GiB); when full, the oldest
records are dropped first, each drop logged and counted. SQLite underneath runs in WAL mode with
synchronous=FULL, so a committed readout survives kill -9 and power cuts. Readable by its owner only.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import diskcache
import diskcache.core

from ..core import paths
from ..core.fileio import PRIVATE_DIR, make_private, private_sqlite

log = logging.getLogger(__name__)


_DROPPED = "meta:dropped"
_MARKS = "meta:marks"  # progress of writers that put many records (the HyCon backfill), see put_batch


class Outbox:
    def __init__(self, directory: Path | str | None = None, max_count: int | None = None, max_bytes: int | None = None):
        self.directory = Path(directory) if directory else paths.outbox_dir()
        self.directory.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
        make_private(self.directory)
        self.max_count = max_count or paths.outbox_max_count()
        self.max_bytes = max_bytes or paths.outbox_max_bytes()
        self.cache = diskcache.Cache(
            str(self.directory),
            size_limit=2**62,  # we bound it ourselves, oldest first
            eviction_policy="none",
            cull_limit=0,
            statistics=False,
            sqlite_synchronous=2,  # FULL
            disk_min_file_size=2**20,  # readouts stay inside SQLite
        )
        private_sqlite(self.directory / diskcache.core.DBNAME)

    def put(self, record: dict) -> int:
        data = json.dumps(record, separators=(",", ":"), allow_nan=False).encode()
        key = self.cache.push(data, retry=True)
        self._enforce_bounds()
        return key

    def put_batch(self, records: list[dict], mark: str, value: object) -> list[int]:
        """Commit records and a progress mark (`mark(name)` reads it back) in one transaction: after a
        power cut either both are there or neither, so a writer that resumes from its mark puts each
        record exactly once."""
        with self.cache.transact(retry=True):  # diskcache's transactions nest: put's own writes join this one
            keys = [self.put(r) for r in records]
            marks = dict(self.cache.get(_MARKS, {}, retry=True))
            marks[mark] = value
            self.cache.set(_MARKS, marks, retry=True)
        return keys

    def mark(self, name: str) -> object:
        """The progress mark last committed under `name` by put_batch (None if none)."""
        return dict(self.cache.get(_MARKS, {}, retry=True)).get(name)

    def _enforce_bounds(self) -> None:
        while self.count() > self.max_count or (self.count() > 1 and self.cache.volume() > self.max_bytes):
            key, data = self.cache.pull(retry=True)
            if key is None:
                break
            dropped = self.cache.incr(_DROPPED, retry=True)
            rec = json.loads(data)
            log.warning(
                "outbox full (%d records, %d bytes): dropped the oldest readout t=%s bus=%s (%d dropped so far)",
                self.count(),
                self.cache.volume(),
                rec.get("t"),
                rec.get("bus"),
                dropped,
            )

    def count(self) -> int:
        return len(self.cache) - (1 if _DROPPED in self.cache else 0) - (1 if _MARKS in self.cache else 0)

    def dropped(self) -> int:
        return int(self.cache.get(_DROPPED, 0, retry=True))

    def bounds(self) -> tuple[int | None, int | None]:
        """(first key, last key) of the records in the outbox, or (None, None) when empty."""
        first, _ = self.cache.peek(side="front", default=(None, None), retry=True)
        last, _ = self.cache.peek(side="back", default=(None, None), retry=True)
        return first, last

    def read_from(self, key: int | None, limit: int = 1000) -> list[tuple[int, dict]]:
        """Records with keys >= key (all when None), oldest first. Keys are consecutive integers given
        out by one SQLite transaction each, so reading forward is a run of primary-key lookups."""
        first, last = self.bounds()
        if first is None or last is None:
            return []
        key = first if key is None or key < first else key
        out: list[tuple[int, dict]] = []
        while key <= last and len(out) < limit:
            data = self.cache.get(key, retry=True)
            if data is not None:
                out.append((key, json.loads(data)))
            key += 1
        return out

    def read_range(self, start: int, end: int, limit: int = 1000) -> tuple[list[tuple[int, dict]], int]:
        """Records with start <= key < end, up to limit; returns them and the key to continue from."""
        out: list[tuple[int, dict]] = []
        key = start
        while key < end and len(out) < limit:
            data = self.cache.get(key, retry=True)
            if data is not None:
                out.append((key, json.loads(data)))
            key += 1
        return out, key

    def pending(self, limit: int = 100) -> list[tuple[int, dict]]:
        """The oldest records, oldest first, without removing them."""
        return self.read_from(None, limit)

    def oldest(self) -> dict | None:
        _, data = self.cache.peek(side="front", default=(None, None), retry=True)
        return None if data is None else json.loads(data)

    def ack(self, keys: list[int]) -> None:
        with self.cache.transact(retry=True):
            for key in keys:
                self.cache.delete(key, retry=True)

    def close(self) -> None:
        self.cache.close()
