"""The outbox: bounded, oldest dropped first and counted, and nothing committed is lost or corrupted
when the writer is killed with SIGKILL at random moments."""

from __future__ import annotations

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
    assert box.cache.volume() <= 2.2 * 1024 * 1024
    assert box.dropped() > 0 and box.count() + box.dropped() == 3000
    assert box.oldest()["t"] == 3000 - box.count()


def test_read_range_ack_and_bounds(tmp_path):
    box = Outbox(tmp_path)
    keys = [box.put({"t": i, "bus": "b"}) for i in range(10)]
    assert keys == list(range(keys[0], keys[0] + 10)), "keys are consecutive"
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
