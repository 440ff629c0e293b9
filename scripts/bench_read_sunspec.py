"""Benchmark a SunSpec inverter read through its generated driver; bench_read.py runs it.

  .venv/bin/python scripts/bench_read_sunspec.py [--cycles N] [--latency-ms MS]

A simulated device (pymodbus, MS per response, default 20) with the chain common + 103 (three-phase
inverter) + 160 (MPPT, 2 modules) + 203 (meter) + end at 40000: the model walk (requests and time
the discovery costs, once), then every published field of the generated driver each cycle with the
planner (fields and their scale factors in block reads) and with one request per field.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import time

from ammp_edge.bus.poller import BusPoller
from ammp_edge.core import config as cfg, sunspec
from ammp_edge.node import configgen
from ammp_edge.node.scan import modbus as scan_modbus
from ammp_edge.readers.modbus_tcp import TcpTransport
from ammp_edge.simulate import Simulator

LAYOUT = [[1, 40002, 66], [103, 40070, 50], [160, 40122, 48], [203, 40172, 105]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def device(latency: float) -> tuple[Simulator, dict]:
    chain = sunspec.from_layout(40000, LAYOUT, [{"Mn": "Bench", "Md": "Inverter 10", "Vr": "1", "SN": "1"}])
    [gen] = sunspec.drivers_for(chain)
    headers = {40000: 0x5375, 40001: 0x6E53, 40278: 0xFFFF, 40279: 0}
    for model_id, address, length in LAYOUT:
        headers[address], headers[address + 1] = model_id, length
    headers[40122 + 8] = 2  # 160: N = 2 modules
    values = {k: 0 for k in gen.driver["fields"] if k.startswith("sf_")}  # every scale factor 10**0
    values.update({"manufacturer": "Bench", "model": "Inverter 10", "serial": "1", "firmware_version": "1"})
    sim = Simulator({1: gen.driver}, free_port(), values={1: values}, delay=latency, registers={1: {3: headers}})
    return sim.start(), gen.driver


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=10)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    args = ap.parse_args()
    sim, _ = device(args.latency_ms / 1000)
    try:
        seen0 = len(sim.seen)
        transport = TcpTransport("127.0.0.1", sim.port)
        t0 = time.perf_counter()
        chain = sunspec.discover(scan_modbus._reader(transport, 1, 5))
        walk_s = time.perf_counter() - t0
        transport.close()
        walk_requests = len(sim.seen) - seen0
        assert chain is not None and chain.layout() == LAYOUT, chain
        host = {"ipv4": "127.0.0.1", "ports": [str(sim.port)]}
        scan_modbus.probe_host(host, sim.port, timeout=5)  # as the scan does it (unit 126 too: silent here)
        generated, problems = configgen.sunspec_config({"hosts": [host]})
        assert not problems and len(generated["devices"]) == 1, problems
        key = next(iter(generated["devices"]))
        published = [r["var"] for r in generated["readings"].values()]
        out = {}
        for label, merge in (("planner", True), ("one per field", False)):
            doc = {**generated, "read_interval": 1}
            doc["devices"] = {key: {**generated["devices"][key], "timeout": 5}}
            if not merge:
                doc["devices"][key]["address"] = {**doc["devices"][key]["address"], "merge": False}
            config = cfg.load(doc, {})
            ((bus_id, devices),) = config.buses().items()
            poller = BusPoller(bus_id, devices, 1)
            poller.poll(0)
            times, reqs = [], []
            for i in range(args.cycles):
                t1 = time.perf_counter()
                r = poller.poll(i + 1)
                times.append(time.perf_counter() - t1)
                reqs.append(r["requests"])
                assert len(r["devices"][0]) == 2 + len(published), r["errors"]
            poller.close()
            out[label] = (statistics.mean(reqs), statistics.median(times))
    finally:
        sim.stop()
    print(
        f"SunSpec inverter (common + 103 + 160 x2 + 203 at 40000; {len(published)} published fields), "
        f"device latency {args.latency_ms:.0f} ms, median of {args.cycles} cycles"
    )
    print(f"  model walk (discovery, once): {walk_requests} requests, {walk_s * 1000:.0f} ms")
    print(f"  {'plan':<15} {'requests/cycle':>15} {'cycle ms':>10}")
    for label, (requests, cycle) in out.items():
        print(f"  {label:<15} {requests:>15.0f} {cycle * 1000:>10.1f}")
    print(f"  planner sends {out['one per field'][0] / out['planner'][0]:.0f}x fewer requests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
