"""Benchmark the byte-stream readers: requests and time per cycle, and the cost of a silent device.

  .venv/bin/python scripts/bench_read_raw.py [--cycles 5] [--latency-ms 20] [--baud 9600]

rawserial  pylontech_rs485 module 1 (25 fields, one query) and steca_solarix_pli (22 fields, two
           queries) against a scripted responder on a socat pty pair (tests/helpers/raw_lines.py)
           that holds each answer back by the line's airtime ((query + answer bytes) x 10 bits / baud)
           plus the device latency; the reader ends each answer 0.1 s (resp_quiet) after its last
           byte. Upstream's model: a blind 1 s sleep per query, and 0.5 s before each device.
rawtcp     eastron_sdm_lora (26 fields, one request each) against a TCP responder on loopback that
           answers after the device latency.
silent     the same devices not answering (timeout 1 s, deadline 2 s): the first cycle, the next
           attempt, and the cycles the backoff then skips.
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("AE_ROOT_DIR", str(REPO))

from ammp_edge.bus.poller import BusPoller  # noqa: E402
from ammp_edge.core import config as cfg, drivers  # noqa: E402
from helpers.raw_lines import RawSerialResponder, RawTcpResponder, answer_queries  # noqa: E402
from helpers.serial_lines import crc16, pty_pair  # noqa: E402
from test_rawserial import PYLON_ANSWER, PYLON_Q1, QMOD, QMOD_ANSWER, QPIGS, QPIGS_ANSWER  # noqa: E402


def site(rt: str, driver: str, fields, address: dict, timeout: float = 1.0) -> dict:
    return {
        "devices": {
            "dev": {"driver": driver, "reading_type": rt, "vendor_id": "b", "timeout": timeout, "address": address}
        },
        "readings": {f"r_{f}": {"device": "dev", "var": f} for f in fields},
        "read_interval": 60,
    }


def cycles(config: cfg.Config, n: int) -> tuple[float, float, list[dict]]:
    ((bus_id, devices),) = config.buses().items()
    poller = BusPoller(bus_id, devices, 60)
    times, readouts = [], []
    try:
        for i in range(n):
            t0 = time.perf_counter()
            readouts.append(poller.poll(i * 60))
            times.append(time.perf_counter() - t0)
    finally:
        poller.close()
    return statistics.median(times), statistics.mean(r["requests"] for r in readouts), readouts


def silent_cost(config: cfg.Config, n: int = 6) -> str:
    ((bus_id, devices),) = config.buses().items()
    poller = BusPoller(bus_id, devices, 60)
    parts = []
    try:
        for i in range(n):
            t0 = time.perf_counter()
            r = poller.poll(i * 60)
            parts.append(f"{time.perf_counter() - t0:.2f} s/{r['requests']}")
    finally:
        poller.close()
    return ", ".join(parts)


def serial_bench(builtin: dict, n: int, latency: float, baud: int) -> None:
    def air(query: bytes, answer: bytes):
        return [((len(query) + len(answer)) * 10 / baud + latency, answer)]

    pylon = [f for f in builtin["pylontech_rs485"]["fields"] if f.startswith("M1_")]
    steca = list(builtin["steca_solarix_pli"]["fields"])
    replies = {
        PYLON_Q1: air(PYLON_Q1, PYLON_ANSWER),
        QPIGS: air(QPIGS, QPIGS_ANSWER),
        QMOD: air(QMOD, QMOD_ANSWER),
    }
    with tempfile.TemporaryDirectory() as tmp, pty_pair(Path(tmp)) as (a, b):
        print(f"rawserial at {baud} baud, device latency {latency * 1000:.0f} ms, median of {n} cycles")
        print(f"  {'driver':<32} {'fields':>6} {'requests/cycle':>15} {'cycle ms':>9} {'upstream model ms':>18}")
        with RawSerialResponder(b, answer_queries(replies)):
            for name, fields in (("pylontech_rs485 (module 1)", pylon), ("steca_solarix_pli", steca)):
                driver = name.split()[0]
                config = cfg.load(site("rawserial", driver, fields, {"device": a, "baudrate": baud}), builtin)
                took, reqs, readouts = cycles(config, n)
                assert not readouts[-1]["errors"], readouts[-1]["errors"]
                model = reqs * 1.0 + 0.5  # upstream: a blind 1 s per query, and 0.5 s before each device
                print(f"  {name:<32} {len(fields):>6} {reqs:>15.0f} {took * 1000:>9.0f} {model * 1000:>18.0f}")
        with RawSerialResponder(b, answer_queries({})):
            config = cfg.load(site("rawserial", "steca_solarix_pli", steca, {"device": a}), builtin)
            print(f"  silent steca (timeout 1 s), per cycle time/requests: {silent_cost(config)}")


def tcp_bench(builtin: dict, n: int, latency: float) -> None:
    def answer(request: bytes, i: int):
        body = request[:4] + b"\x01" + bytes([request[5], 4]) + struct.pack(">f", 230.5)
        return [(latency, body + crc16(body))]

    fields = list(builtin["eastron_sdm_lora"]["fields"])
    print(f"\nrawtcp, eastron_sdm_lora ({len(fields)} fields), device latency {latency * 1000:.0f} ms, median of {n}")
    with RawTcpResponder(answer) as dev:
        address = {"host": "127.0.0.1", "port": dev.port, "unit_id": 1}
        took, reqs, readouts = cycles(cfg.load(site("rawtcp", "eastron_sdm_lora", fields, address), builtin), n)
        assert not readouts[-1]["errors"], readouts[-1]["errors"]
        print(f"  requests/cycle {reqs:.0f}, cycle {took * 1000:.0f} ms ({took / reqs * 1000:.1f} ms per request)")
    with RawTcpResponder(lambda r, i: None) as dev:
        address = {"host": "127.0.0.1", "port": dev.port, "unit_id": 1}
        config = cfg.load(site("rawtcp", "eastron_sdm_lora", fields, address), builtin)
        print(f"  silent (timeout 1 s), per cycle time/requests: {silent_cost(config)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=5)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--baud", type=int, default=9600)
    args = ap.parse_args()
    builtin = drivers.load_builtin_drivers(REPO / "drivers")
    serial_bench(builtin, args.cycles, args.latency_ms / 1000, args.baud)
    tcp_bench(builtin, args.cycles, args.latency_ms / 1000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
