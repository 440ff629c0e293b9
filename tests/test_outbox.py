"""The outbox: bounded, oldest dropped first and counted; ids never repeat (through an empty outbox,
restarts, kill -9 and drops); acks remove exactly what they name; nothing committed is lost or
corrupted when the writer is killed with SIGKILL at random moments; concurrent writers never put a
record behind a reader's cursor; a diskcache-format outbox is taken over without loss, in order."""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import subprocess
import sys
import time

from ammp_edge.delivery.outbox import Outbox

WRITER = r"""
import sys
from ammp_edge.delivery.outbox import Outbox
box = Outbox(sys.argv[1])
i = 0
while True:
    key = box.put({"t": i, "bus": "b", "devices": [{"_d": "d", "_vid": "v", "x": "y" * 1500}]})
    print(key, i, flush=True)  # printed only after the commit returned
    i += 1
"""


def test_count_bound_drops_the_oldest_and_counts(tmp_path, caplog):
    box = Outbox(tmp_path, max_count=10)
    with caplog.at_level(logging.WARNING):
        for i in range(25):
            box.put({"t": i, "bus": "b", "devices": []})
    assert box.count() == 10 and box.dropped() == 15
    assert [r["t"] for _, r in box.read_from(None, 100)] == list(range(15, 25))
    drops = [r.getMessage() for r in caplog.records if "dropped the oldest" in r.getMessage()]
    assert len(drops) == 15 and "t=0 " in drops[0] and "(15 dropped so far)" in drops[-1]
    box.close()
    assert Outbox(tmp_path, max_count=10).dropped() == 15, "the drop counter survives a restart"


def test_byte_bound(tmp_path):
    box = Outbox(tmp_path, max_bytes=2 * 1024 * 1024)
    for i in range(3000):
        box.put({"t": i, "bus": "b", "blob": "z" * 2000})
    assert box.volume() <= 2 * 1024 * 1024
    assert box.dropped() > 0 and box.count() + box.dropped() == 3000
    assert box.oldest()["t"] == 3000 - box.count()


def test_read_range_ack_and_bounds(tmp_path):
    box = Outbox(tmp_path)
    keys = [box.put({"t": i, "bus": "b"}) for i in range(10)]
    assert keys == list(range(keys[0], keys[0] + 10)), "ids are consecutive while nothing else writes"
    box.ack(keys[2:5])
    got, nxt = box.read_range(keys[0], keys[0] + 8, limit=4)
    assert [r["t"] for _, r in got] == [0, 1, 5, 6] and nxt == keys[7]
    assert box.bounds() == (keys[0], keys[-1])
    box.ack(keys)
    assert box.bounds() == (None, None) and box.read_from(None) == [] and box.count() == 0


def test_sigkill_never_loses_or_corrupts_a_committed_readout(tmp_path):
    rng = random.Random(7)
    confirmed: dict[int, int] = {}
    for _round in range(20):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        time.sleep(0.4 + rng.random() * 0.4)
        proc.kill()
        out, _ = proc.communicate()
        for line in out.splitlines(keepends=True):
            parts = line.split()
            if line.endswith("\n") and len(parts) == 2:  # a line cut by the kill was never confirmed
                confirmed[int(parts[0])] = int(parts[1])
    assert len(confirmed) > 100
    db = sqlite3.connect(str(tmp_path / "cache.db"))
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    box = Outbox(tmp_path)
    stored = dict(box.read_from(None, 10**6))
    missing = [k for k in confirmed if k not in stored]
    assert not missing, f"{len(missing)} committed readouts lost"
    assert all(stored[k]["t"] == i for k, i in confirmed.items())
    assert box.count() == len(stored)
    # no id was given twice across the 20 kills (the writer numbers its records 0, 1, 2... per round)
    by_key = sorted(confirmed.items())
    assert len({k for k, _ in by_key}) == len(by_key)
    assert box.put({"t": -1, "bus": "b"}) > max(confirmed)


def test_ids_never_repeat_through_an_empty_outbox_restarts_and_drops(tmp_path):
    box = Outbox(tmp_path, max_count=3)
    given = [box.put({"t": 0, "bus": "b"})]
    box.ack(given)  # empty now
    assert box.count() == 0 and box.bounds() == (None, None)
    given.append(box.put({"t": 1, "bus": "b"}))
    given.append(box.put({"t": 2, "bus": "b"}))
    box.ack([given[-1]])  # the newest removed: its id is not given again
    given.append(box.put({"t": 3, "bus": "b"}))
    box.close()
    box = Outbox(tmp_path, max_count=3)  # a restart
    given += [box.put({"t": 4 + i, "bus": "b"}) for i in range(5)]  # the bound drops the oldest
    box.ack([r for r, _ in box.read_from(None)])
    box.close()
    box = Outbox(tmp_path, max_count=3)
    assert box.count() == 0 and box.last_id() == given[-1]
    given.append(box.put({"t": 99, "bus": "b"}))
    assert given == sorted(given) and len(set(given)) == len(given), given


def test_ack_removes_exactly_what_it_names(tmp_path):
    box = Outbox(tmp_path)
    a = box.put({"t": 1, "bus": "b"})
    assert box.ack([a]) == 1
    b = box.put({"t": 2, "bus": "b"})  # once a and b could share a key (diskcache reused it)
    assert box.ack([a]) == 0, "an ack of a gone record removes nothing"
    assert [r["t"] for _, r in box.read_from(None)] == [2] and box.count() == 1 and b != a
    assert box.volume() == len(b'{"t":2,"bus":"b"}')


CONCURRENT_WRITER = r"""
import sys
from ammp_edge.delivery.outbox import Outbox
box = Outbox(sys.argv[1])
for i in range(int(sys.argv[3])):
    key = box.put({"t": i, "bus": sys.argv[2]})
    print(key, flush=True)
"""


def test_concurrent_writers_never_put_a_record_behind_the_live_cursor(tmp_path):
    """Three bus-like writers commit while a reader follows with the live cursor and acks what it read
    (the outbox runs empty again and again): the reader sees every committed record, once."""
    from ammp_edge.delivery.cursors import Readers

    box = Outbox(tmp_path)
    readers = Readers(box)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_WRITER, str(tmp_path), f"bus{n}", "300"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(3)
    ]
    seen: list[int] = []
    while any(p.poll() is None for p in procs):
        got = readers.live()
        seen += [i for i, _ in got]
        readers.done([i for i, _ in got])
        time.sleep(0.001)
    outs = [p.communicate()[0] for p in procs]
    got = readers.live()
    seen += [i for i, _ in got]
    readers.done([i for i, _ in got])
    committed = sorted(int(x) for out in outs for x in out.split())
    assert len(committed) == 900 and len(set(committed)) == 900
    assert sorted(seen) == committed and len(seen) == len(set(seen)), "every record read once"
    assert seen == sorted(seen), "ids appear in commit order"
    assert box.count() == 0


def test_a_diskcache_outbox_is_taken_over_in_order_without_loss(tmp_path, caplog):
    """An outbox written by the diskcache version (push keys, a drop counter, one readout big enough for
    diskcache to keep it in a file) is moved into the new table on first open, in push order."""
    import diskcache

    old = diskcache.Cache(str(tmp_path), eviction_policy="none", disk_min_file_size=2**20, sqlite_synchronous=2)
    old.incr("meta:dropped", 7)
    for i in range(5):
        old.push(json.dumps({"t": i, "bus": "b"}).encode())
    old.pull()  # the oldest was delivered: keys start above the first one
    big = {"t": 5, "bus": "b", "blob": "x" * (2**20 + 10)}
    old.push(json.dumps(big).encode())
    old.close()
    with caplog.at_level(logging.WARNING):
        box = Outbox(tmp_path)
    assert "took over 5 readouts from the diskcache format (7 dropped before)" in caplog.text
    got = box.read_from(None)
    assert [r["t"] for _, r in got] == [1, 2, 3, 4, 5] and got[-1][1] == big
    assert box.count() == 5 and box.dropped() == 7 and box.volume() > 2**20
    db = sqlite3.connect(str(tmp_path / "cache.db"))
    assert not db.execute("SELECT name FROM sqlite_master WHERE name IN ('Cache', 'Settings')").fetchall()
    db.close()
    assert not [p for p in tmp_path.rglob("*.val")], "the value file went once its bytes were moved"
    nxt = box.put({"t": 6, "bus": "b"})
    assert nxt > got[-1][0]
    box.close()
    again = Outbox(tmp_path)  # a second open moves nothing twice
    assert [r["t"] for _, r in again.read_from(None)] == [1, 2, 3, 4, 5, 6] and again.dropped() == 7
