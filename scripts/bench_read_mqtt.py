"""Benchmark the mqtt reader against a local mosquitto; prints numbers for the README.

  .venv/bin/python scripts/bench_read_mqtt.py [--topics N] [--rss-seconds S]

1. N (default 50) retained topics, one field each: time from the bus starting (connection, subscribe,
   retained messages) to its first cycle with every value, and the cycle time after that.
2. Latency: a message published while the bus runs, until a cycle sees it (cycles back to back).
3. Peak RSS (VmHWM) of a real `ammp-edge bus mqtt_...` process polling them every second.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as paho

from ammp_edge.bus.poller import BusPoller
from ammp_edge.core import config as cfg

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def site(port: int, topics: int) -> dict:
    fields = {f"v{i}": {"topic": f"bench/{i}", "parse_as": "str"} for i in range(topics)}
    return {
        "devices": {
            "m": {
                "driver": "mq",
                "reading_type": "mqtt",
                "vendor_id": "m",
                "address": {"host": "127.0.0.1", "port": port},
            }
        },
        "drivers": {"mq": {"fields": fields}},
        "readings": {f"r{i}": {"device": "m", "var": f"v{i}"} for i in range(topics)},
        "read_interval": 1,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--topics", type=int, default=50)
    ap.add_argument("--rss-seconds", type=float, default=12.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\n" + ("user root\n" if os.geteuid() == 0 else "")
        )
        broker = subprocess.Popen(["mosquitto", "-c", str(conf)], stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
            pub = paho.Client(paho.CallbackAPIVersion.VERSION2)
            pub.connect("127.0.0.1", port)
            pub.loop_start()
            for i in range(args.topics):
                pub.publish(f"bench/{i}", str(i * 1.5), qos=1, retain=True).wait_for_publish(10)

            config = cfg.load(site(port, args.topics), {})
            ((bus_id, devices),) = config.buses().items()
            begun = time.monotonic()
            poller = BusPoller(bus_id, devices, 1)
            first = poller.poll(int(time.time()))
            first_s = time.monotonic() - begun
            complete = len(first["devices"][0]) - 2
            cycles = []
            for _ in range(20):
                t0 = time.monotonic()
                poller.poll(int(time.time()))
                cycles.append(time.monotonic() - t0)
            lat = []
            for k in range(20):
                sent = time.monotonic()
                pub.publish("bench/0", f"{1000 + k}", qos=1)
                while poller.poll(int(time.time()))["devices"][0].get("v0") != 1000 + k:
                    pass
                lat.append(time.monotonic() - sent)
            poller.close()
            print(f"mqtt reader, {args.topics} retained topics on a local mosquitto")
            print(
                f"  bus start to the first cycle with every value: {first_s * 1000:.0f} ms "
                f"({complete}/{args.topics} values)"
            )
            print(f"  cycle time after that (median of 20): {statistics.median(cycles) * 1000:.2f} ms")
            print(
                f"  publish to a cycle seeing it (median / max of 20): "
                f"{statistics.median(lat) * 1000:.1f} / {max(lat) * 1000:.1f} ms"
            )

            cfile = Path(tmp) / "c.json"
            cfile.write_text(json.dumps(site(port, args.topics)))
            env = dict(os.environ, AE_DATA_DIR=tmp, AE_TEMP_DIR=tmp, AE_ROOT_DIR=str(REPO))
            proc = subprocess.Popen(
                [sys.executable, "-m", "ammp_edge", "bus", bus_id, "--config", str(cfile), "--no-outbox"],
                env=env,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(args.rss_seconds)
            status = Path(f"/proc/{proc.pid}/status").read_text()
            hwm = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
            print(f"  bus process peak RSS (VmHWM) polling every 1 s for {args.rss_seconds:.0f} s: {hwm / 1024:.1f} MB")
            pub.loop_stop()
        finally:
            broker.kill()
            broker.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
