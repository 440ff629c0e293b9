"""The config limits (core/jsontext.py) against the biggest realistic config; prints numbers for the README.

  .venv/bin/python scripts/bench_config.py

The biggest realistic config: a utility-scale site of 250 string inverters (sma_stp25000, every field
read) behind 25 Modbus TCP gateways, 20 Eastron meters on two RS-485 lines, the logger itself, every
built-in driver embedded in the config's `drivers` (a config that carries its own drivers), pretty
printed as a person would save it. Then a config at the size limit (the realistic one padded with
whitespace) and one at the depth limit. For each: bytes, nesting depth, the time of the one parser
(iterative depth scan + json.loads) against json.loads alone, config.load, and the peak RSS of a
fresh process that loads it as a bus does (ConfigSource from the KV store).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ammp_edge.core import config as cfg, drivers, jsontext

ROOT = Path(__file__).resolve().parents[1]


def biggest_realistic(builtin: dict) -> dict:
    doc: dict = {"devices": {}, "readings": {}, "read_interval": 60, "read_roundtime": True}
    doc["devices"]["logger"] = {"name": "logger", "driver": "sys_generic", "reading_type": "sys", "vendor_id": "lg"}
    inv_fields = list(builtin["sma_stp25000"]["fields"])
    for i in range(250):
        key = f"inv{i:03d}"
        doc["devices"][key] = {
            "name": f"Inverter {i} (block {i // 10})",
            "driver": "sma_stp25000",
            "reading_type": "modbustcp",
            "vendor_id": f"SN30012{i:05d}",
            "address": {"host": f"10.0.{i // 10}.{10 + i % 10}", "port": 502, "unit_id": 3},
        }
        for var in inv_fields:
            doc["readings"][f"{key}_{var}"] = {"device": key, "var": var}
    meter_fields = list(builtin["eastron_sdm530"]["fields"])
    for i in range(20):
        key = f"meter{i:02d}"
        doc["devices"][key] = {
            "name": f"Meter {i}",
            "driver": "eastron_sdm530",
            "reading_type": "modbusrtu",
            "vendor_id": f"M{i:04d}",
            "address": {"device": f"/dev/ttyUSB{i // 10}", "slaveaddr": 1 + i % 10, "baudrate": 9600},
        }
        for var in meter_fields:
            doc["readings"][f"{key}_{var}"] = {"device": key, "var": var}
    doc["drivers"] = builtin
    doc["output"] = [{"field": "P_site", "source": "$sum(*.P_total)", "typecast": "float"}]
    return doc


def nested(depth: int) -> str:
    """A small usable config with an unused member nested `depth` deep in all."""
    base = json.dumps({"devices": {}, "readings": {}, "read_interval": 60})
    inner = "[" * (depth - 1) + "]" * (depth - 1)
    return base[:-1] + f', "notes": {inner}}}'


def timed(fn, n: int = 3) -> float:
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


PEAK = """
import sys
from ammp_edge.core.configsource import ConfigSource
from ammp_edge.core.kvs import KVStore
src = ConfigSource(kvstore=KVStore())
config = src.current()
assert config is not None, "not loaded"
print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])
"""


def peak_rss_mb(raw: bytes | None) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "AE_DATA_DIR": tmp, "AE_TEMP_DIR": tmp, "AE_ROOT_DIR": str(ROOT)}
        from ammp_edge.core.kvs import KVStore

        kv = KVStore(Path(tmp) / "kvs-db" / "kvstore.db")
        kv.set_raw("config", raw or json.dumps({"devices": {}, "readings": {}}).encode())
        kv.close()
        out = subprocess.run([sys.executable, "-c", PEAK], env=env, capture_output=True, text=True, check=True)
        return int(out.stdout.strip()) / 1024


def main() -> None:
    builtin = drivers.load_builtin_drivers(ROOT / "drivers")
    realistic = json.dumps(biggest_realistic(builtin), indent=2).encode()
    at_size = realistic + b" " * (jsontext.MAX_BYTES - len(realistic))
    at_depth = nested(jsontext.MAX_DEPTH).encode()
    empty_rss = peak_rss_mb(None)
    print(f"limits: {jsontext.MAX_BYTES:,} bytes, {jsontext.MAX_DEPTH} levels")
    print(f"bus-like process loading an empty config: peak RSS {empty_rss:.1f} MB")
    for name, raw in (
        ("biggest realistic", realistic),
        ("at the size limit", at_size),
        ("at the depth limit", at_depth),
    ):
        text = raw.decode()
        depth = jsontext.nesting_depth(text)
        t_parse = timed(lambda raw=raw: jsontext.parse(raw))
        t_loads = timed(lambda text=text: json.loads(text))
        doc = json.loads(text)
        t_load = timed(lambda doc=doc: cfg.load(doc, builtin), 1)
        rss = peak_rss_mb(raw)
        print(
            f"{name}: {len(raw):,} bytes, depth {depth}; jsontext.parse {t_parse * 1000:.0f} ms "
            f"(json.loads alone {t_loads * 1000:.0f} ms), config.load {t_load * 1000:.0f} ms, "
            f"peak RSS of a process loading it {rss:.1f} MB (+{rss - empty_rss:.1f})"
        )
    deep = ("[" * 100_000 + "]" * 100_000).encode()
    t_refuse = timed(lambda: _refused(deep))
    print(f"100,000 levels refused in {t_refuse * 1000:.0f} ms")


def _refused(raw: bytes) -> None:
    try:
        jsontext.parse(raw)
    except jsontext.OverLimit:
        return
    raise AssertionError("not refused")


if __name__ == "__main__":
    main()
