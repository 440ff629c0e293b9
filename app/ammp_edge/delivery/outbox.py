"""The outbox: every bus readout is committed here (SQLite on AE_DATA_DIR) before anything else
happens to it, and leaves only when the publisher acknowledges it.

Identities: each record gets the next number of an SQLite AUTOINCREMENT sequence, given out in the
transaction that commits the record. SQLite never gives a number twice for the life of the table: not
after the outbox ran empty, a restart, kill -9, a power cut, nor after the newest records were removed
(the highest number ever given is kept in `sqlite_sequence`, committed with the record). Numbers
become visible in order: writers take SQLite's write lock one at a time, so once a reader has seen
number n, no record with a lower number can appear any more. `ack(ids)` removes exactly those records.

Bounded by count and bytes (default: a year of one-minute messages and 2 GiB); when full, the oldest
records are dropped first, in the transaction of the put that overflowed, each drop logged and counted.
WAL mode with synchronous=FULL, so a committed readout survives kill -9 and power cuts. Readable by its
owner only.

Format: `outbox/cache.db` (the name diskcache gave it, so a data directory keeps its files), tables
`outbox` (id, data: the readout as JSON) and `outbox_meta` (count, bytes, dropped). An outbox written by
diskcache (version 0.x of this package: table `Cache`, keys from Deque.push) is taken over on first
open, in one transaction, in key order, with its drop counter; diskcache's tables are then dropped.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from ..core import paths
from ..core.fileio import PRIVATE_DIR, make_private, private_sqlite

log = logging.getLogger(__name__)

DBNAME = "cache.db"
_DISKCACHE_DROPPED = "meta:dropped"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, data BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS outbox_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO outbox_meta VALUES ('count', 0), ('bytes', 0), ('dropped', 0)",
    # progress of writers that put many records (the HyCon backfill), see put_batch: name -> JSON value
    "CREATE TABLE IF NOT EXISTS outbox_marks (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
_DISKCACHE_MARKS = "meta:marks"


class Outbox:
    def __init__(self, directory: Path | str | None = None, max_count: int | None = None, max_bytes: int | None = None):
        self.directory = Path(directory) if directory else paths.outbox_dir()
        self.directory.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
        make_private(self.directory)
        self.max_count = max_count or paths.outbox_max_count()
        self.max_bytes = max_bytes or paths.outbox_max_bytes()
        self.path = self.directory / DBNAME
        self._lock = threading.RLock()  # one connection, shared by the threads of a program
        # autocommit: every write below is one explicit BEGIN IMMEDIATE ... COMMIT
        self.db = sqlite3.connect(str(self.path), timeout=60, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        private_sqlite(self.path)
        with self._write():
            for stmt in _SCHEMA:
                self.db.execute(stmt)
            moved_files = self._take_over_diskcache()
        for f in moved_files:  # their bytes are committed in `outbox` now
            try:
                os.unlink(f)
            except OSError:
                pass

    # -- transactions ----------------------------------------------------------------------------
    class _Tx:
        def __init__(self, box: Outbox):
            self.box = box

        def __enter__(self) -> None:
            self.box._lock.acquire()
            try:
                self.box.db.execute("BEGIN IMMEDIATE")
            except BaseException:
                self.box._lock.release()
                raise

        def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
            try:
                self.box.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
            finally:
                self.box._lock.release()

    def _write(self) -> Outbox._Tx:
        return Outbox._Tx(self)

    def _rows(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self.db.execute(sql, args).fetchall()

    def _meta(self, name: str) -> int:
        return int(self._rows("SELECT value FROM outbox_meta WHERE name = ?", (name,))[0][0])

    def _bump(self, count: int, nbytes: int) -> None:
        self.db.execute("UPDATE outbox_meta SET value = value + ? WHERE name = 'count'", (count,))
        self.db.execute("UPDATE outbox_meta SET value = value + ? WHERE name = 'bytes'", (nbytes,))

    # -- writing ---------------------------------------------------------------------------------
    def put(self, record: dict) -> int:
        """Commit one record; returns its id (never given before in this data directory)."""
        with self._write():
            return self._insert(record)

    def _insert(self, record: dict) -> int:
        """Inside a write transaction: one record in, the bounds kept."""
        data = json.dumps(record, separators=(",", ":"), allow_nan=False).encode()
        cur = self.db.execute("INSERT INTO outbox (data) VALUES (?)", (data,))
        rid = cur.lastrowid
        assert rid is not None
        self._bump(1, len(data))
        self._enforce_bounds()
        return rid

    def put_batch(self, records: list[dict], mark: str, value: object) -> list[int]:
        """Commit records and a progress mark (`mark(name)` reads it back) in one transaction: after a
        power cut either both are there or neither, so a writer that resumes from its mark puts each
        record exactly once."""
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
        with self._write():
            ids = [self._insert(r) for r in records]
            self.db.execute("INSERT OR REPLACE INTO outbox_marks (name, value) VALUES (?, ?)", (mark, text))
        return ids

    def mark(self, name: str) -> object:
        """The progress mark last committed under `name` by put_batch (None if none)."""
        rows = self._rows("SELECT value FROM outbox_marks WHERE name = ?", (name,))
        return json.loads(rows[0][0]) if rows else None

    def _enforce_bounds(self) -> None:
        """Inside the put's transaction: drop the oldest while over a bound (the newest always stays)."""
        while True:
            count, nbytes = self._meta("count"), self._meta("bytes")
            if not (count > self.max_count or (count > 1 and nbytes > self.max_bytes)):
                return
            row = self.db.execute("SELECT id, data FROM outbox ORDER BY id LIMIT 1").fetchone()
            if row is None:
                return
            self.db.execute("DELETE FROM outbox WHERE id = ?", (row[0],))
            self._bump(-1, -len(row[1]))
            self.db.execute("UPDATE outbox_meta SET value = value + 1 WHERE name = 'dropped'")
            rec = _loads(row[1])
            log.warning(
                "outbox full (%d records, %d bytes): dropped the oldest readout t=%s bus=%s (%d dropped so far)",
                count - 1,
                nbytes - len(row[1]),
                rec.get("t"),
                rec.get("bus"),
                self._meta("dropped"),
            )

    def ack(self, ids: Iterable[int]) -> int:
        """Remove exactly the records with these ids (those still there); returns how many went."""
        ids = sorted(set(ids))
        if not ids:
            return 0
        removed = 0
        with self._write():
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                n, nbytes = self.db.execute(
                    f"SELECT count(*), coalesce(sum(length(data)), 0) FROM outbox WHERE id IN ({marks})", chunk
                ).fetchone()
                self.db.execute(f"DELETE FROM outbox WHERE id IN ({marks})", chunk)
                self._bump(-n, -nbytes)
                removed += n
        return removed

    # -- reading ---------------------------------------------------------------------------------
    def count(self) -> int:
        return self._meta("count")

    def dropped(self) -> int:
        return self._meta("dropped")

    def volume(self) -> int:
        """Bytes of the records held (their JSON), what the byte bound counts."""
        return self._meta("bytes")

    def last_id(self) -> int:
        """The highest id ever given out (0 for a new outbox): every record with a higher id is yet to come."""
        rows = self._rows("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'")
        return int(rows[0][0]) if rows else 0

    def bounds(self) -> tuple[int | None, int | None]:
        """(first id, last id) of the records in the outbox, or (None, None) when empty."""
        first, last = self._rows("SELECT min(id), max(id) FROM outbox")[0]
        return first, last

    def read_from(self, start: int | None, limit: int = 1000) -> list[tuple[int, dict]]:
        """Records with ids >= start (all when None), oldest first."""
        rows = self._rows("SELECT id, data FROM outbox WHERE id >= ? ORDER BY id LIMIT ?", (start or 0, limit))
        return [(rid, _loads(data)) for rid, data in rows]

    def read_range(self, start: int, end: int, limit: int = 1000) -> tuple[list[tuple[int, dict]], int]:
        """Records with start <= id < end, up to limit; returns them and the id to continue from."""
        rows = self._rows(
            "SELECT id, data FROM outbox WHERE id >= ? AND id < ? ORDER BY id LIMIT ?", (start, end, limit)
        )
        nxt = rows[-1][0] + 1 if len(rows) == limit else end
        return [(rid, _loads(data)) for rid, data in rows], nxt

    def pending(self, limit: int = 100) -> list[tuple[int, dict]]:
        """The oldest records, oldest first, without removing them."""
        return self.read_from(None, limit)

    def oldest(self) -> dict | None:
        rows = self._rows("SELECT data FROM outbox ORDER BY id LIMIT 1")
        return _loads(rows[0][0]) if rows else None

    def close(self) -> None:
        with self._lock:
            self.db.close()

    # -- the format before: diskcache ----------------------------------------------------------------
    def _take_over_diskcache(self) -> list[Path]:
        """Inside the opening transaction: move diskcache's records (key order, i.e. push order) into
        `outbox` and drop its tables; returns the value files to delete once that committed. Another
        process opening at the same moment waits for the write lock and then finds nothing left to move."""
        has = self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'Cache'").fetchone()
        if not has:
            return []
        files: list[Path] = []
        moved = dropped = kept = 0
        rows = self.db.execute("SELECT rowid, key, mode, filename, value FROM Cache ORDER BY key").fetchall()
        for rowid, key, mode, filename, value in rows:
            if key == _DISKCACHE_DROPPED:
                dropped = int(value)
            elif key == _DISKCACHE_MARKS:  # a backfill's progress: it starts its day again (no loss)
                log.warning("outbox: the backfill progress of the diskcache format is not taken over")
                self.db.execute("DELETE FROM Cache WHERE rowid = ?", (rowid,))
                continue
            elif isinstance(key, int) and mode == 1:  # diskcache MODE_RAW: the bytes in the row
                data = bytes(value)
            elif isinstance(key, int) and mode == 2 and filename:  # MODE_BINARY: in a file beside the database
                files.append(self.directory / filename)
                data = files[-1].read_bytes()
            else:
                log.error("outbox: old record key=%r has a form this outbox never wrote (mode %s); kept", key, mode)
                kept += 1
                continue
            if key != _DISKCACHE_DROPPED:
                self.db.execute("INSERT INTO outbox (data) VALUES (?)", (data,))
                self._bump(1, len(data))
                moved += 1
            self.db.execute("DELETE FROM Cache WHERE rowid = ?", (rowid,))
        self.db.execute("UPDATE outbox_meta SET value = value + ? WHERE name = 'dropped'", (dropped,))
        if not kept:
            self.db.execute("DROP TABLE Cache")
            self.db.execute("DROP TABLE IF EXISTS Settings")
        log.warning("outbox: took over %d readouts from the diskcache format (%d dropped before)", moved, dropped)
        return files


def _loads(data: bytes) -> dict:
    return json.loads(data)
