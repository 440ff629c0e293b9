"""Outbox commit cost by SQLite durability setting; prints numbers for the README.

  .venv/bin/python scripts/bench_outbox.py [--n 2000]

Each put is one bus readout (about 1.5 KB of JSON) committed in its own transaction, as a bus does once
per cycle. WAL journal in every case; synchronous FULL syncs the WAL on every commit (a committed
readout survives a power cut), NORMAL only at checkpoints (a power cut may lose the last commits,
though the file stays consistent), OFF never.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from ammp_edge.delivery.outbox import Outbox


def measure(sync: int, n: int) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        box = Outbox(tmp)
        box.db.execute(f"PRAGMA synchronous={sync}")
        record = {
            "t": 0,
            "bus": "tcp_192.168.1.10_502",
            "devices": [
                {"_d": f"d{i}", "_vid": "v", "P": 1234.5, "E": 987654.25, "V": 230.1, "I": 12.3} for i in range(12)
            ],
        }
        lat = []
        for i in range(n):
            record["t"] = i
            t0 = time.perf_counter()
            box.put(record)
            lat.append(time.perf_counter() - t0)
        box.close()
    lat.sort()
    return n / sum(lat), statistics.median(lat) * 1000, lat[int(0.99 * len(lat))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    print(f"outbox put, {args.n} readouts of ~1.5 KB, one transaction each, in the current directory's file system")
    print(f"  {'synchronous':<12} {'puts/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for name, sync in (("FULL", 2), ("NORMAL", 1), ("OFF", 0)):
        rate, p50, p99 = measure(sync, args.n)
        print(f"  {name:<12} {rate:>8.0f} {p50:>8.2f} {p99:>8.2f}")


if __name__ == "__main__":
    main()
