"""The KV store and KV cache: SQLite `kvstore(key TEXT PRIMARY KEY, value BLOB)` with JSON values.

Same file, schema and key names as upstream (reference section 4.4), so an upstream node's data
directory works unchanged. WAL journal, synchronous FULL; one short transaction per call (or several
calls in one `transaction()`), safe across processes. The file, its WAL and its directory are
readable by their owner only: the store holds the node's access key and the web UI's session secret.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import paths
from .fileio import PRIVATE_DIR, private_sqlite

_MISSING = object()


class KVStore:
    def __init__(self, path: Path | str | None = None):
        self.path = Path(path) if path else paths.kvstore_path()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)  # an existing one: `up` fixes it
        self._lock = threading.RLock()  # re-entered by the calls inside a transaction()
        self._db = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False, isolation_level=None)
        private_sqlite(self.path)  # before the WAL exists: SQLite gives it the main file's mode
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS kvstore (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL)")
        private_sqlite(self.path)  # a WAL an older version left readable

    def get(self, key: str, default: Any = None) -> Any:
        raw = self.get_raw(key)
        if raw is None:
            return default
        return json.loads(raw)

    def get_raw(self, key: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM kvstore WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return row[0].encode() if isinstance(row[0], str) else bytes(row[0])

    def set(self, key: str, value: Any) -> None:
        self.set_raw(key, json.dumps(value, separators=(",", ":")).encode())

    def set_raw(self, key: str, raw_json: bytes) -> None:
        """Store already-serialised JSON as it is (configs are stored raw, never re-serialised)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO kvstore (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, raw_json),
            )

    @contextmanager
    def transaction(self) -> Iterator[KVStore]:
        """Reads and writes that no other thread or process interleaves with (BEGIN IMMEDIATE: the
        write lock is taken at the start), committed together or not at all."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def delete(self, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM kvstore WHERE key = ?", (key,))

    def keys(self, prefix: str = "") -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT key FROM kvstore WHERE key LIKE ? ESCAPE '\\' ORDER BY key",
                (prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%",),
            ).fetchall()
        return [r[0] for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def cache() -> KVStore:
    """The volatile KV cache in AE_TEMP_DIR."""
    return KVStore(paths.kvcache_path())
