"""Devices that stay silent instead of refusing a read (issue 14.2): a simulated device that never
answers a read touching a register no field maps (`Simulator(silent_gaps=True)`), with gaps between
fields inside its first block. It is read completely from the first cycle on, from the second with
exactly the requests its readable runs need, and after a restart of the bus with the learned plan at
once; a dead device costs about one timeout per attempt."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from ammp_edge.bus.poller import BusPoller
from ammp_edge.core import config as cfg, keys
from ammp_edge.core.kvs import cache
from ammp_edge.simulate import Simulator
from helpers.common import AMMP_EDGE, child_env, write_json
from helpers.serial_lines import pty_pair

T0 = 1_700_000_000
# fc3: 0..21 with gaps (one planned block on TCP, max_gap 32) and 200..210 with a gap; fc4 100..101
DRIVER = {
    "fields": {
        "a": {"register": 0, "datatype": "uint16"},
        "b": {"register": 1, "datatype": "int16"},
        "c": {"register": 4, "datatype": "uint32"},
        "d": {"register": 10, "datatype": "uint16"},
        "e": {"register": 20, "datatype": "float"},
        "f": {"register": 100, "fncode": 4, "datatype": "uint16"},
        "g": {"register": 101, "fncode": 4, "datatype": "uint16"},
        "h": {"register": 200, "datatype": "uint16"},
        "i": {"register": 206, "datatype": "uint16"},
    }
}
VALUES = {"a": 11, "b": -2, "c": 70000, "d": 4, "e": 2.5, "f": 6, "g": 7, "h": 8, "i": 9}
# what a device silent on gaps can answer: the runs of fields without gap registers
RUNS = [(1, 3, 0, 2), (1, 3, 4, 2), (1, 3, 10, 1), (1, 3, 20, 2), (1, 3, 200, 1), (1, 3, 206, 1), (1, 4, 100, 2)]


def site(address: dict, reading_type: str = "modbustcp", timeout: float = 0.5, fields=VALUES) -> dict:
    return {
        "drivers": {"gappy": DRIVER},
        "devices": {
            "dev": {
                "driver": "gappy",
                "reading_type": reading_type,
                "vendor_id": "v",
                "timeout": timeout,
                "address": address,
            }
        },
        "readings": {f: {"device": "dev", "var": f} for f in fields},
        "read_interval": 10,
    }


def poller_for(raw: dict, plans=None) -> BusPoller:
    config = cfg.load(raw, {})
    assert not config.errors, config.errors
    ((bus_id, devices),) = config.buses().items()
    return BusPoller(bus_id, devices, config.read_interval, plans=plans)


def record(readout: dict) -> dict:
    (rec,) = readout["devices"]
    return {k: v for k, v in rec.items() if not k.startswith("_")}


def cycle(poller: BusPoller, sim: Simulator, t: int) -> tuple[dict, list, float]:
    """(readout, the requests the device saw, seconds) of one cycle"""
    n = len(sim.seen)
    started = time.monotonic()
    readout = poller.poll(t)
    return readout, sim.seen[n:], time.monotonic() - started


@pytest.fixture
def gappy(simulator):
    return simulator({1: DRIVER}, values={1: VALUES}, silent_gaps=True)


def test_simulator_stays_silent_on_reads_touching_a_gap(gappy):
    from ammp_edge.readers.modbus import DeviceSilent
    from ammp_edge.readers.modbus_tcp import TcpTransport

    tr = TcpTransport("127.0.0.1", gappy.port)
    try:
        assert tr.read(1, 3, 0, 2, 1.0) == [11, 0xFFFE]
        with pytest.raises(DeviceSilent):
            tr.read(1, 3, 0, 3, 0.3)  # register 2 is no field's
        assert tr.read(1, 4, 100, 2, 1.0) == [6, 7]
    finally:
        tr.close()


def test_read_completely_from_the_first_cycle_then_with_the_readable_runs_only(gappy):
    poller = poller_for(site({"host": "127.0.0.1", "port": gappy.port, "unit_id": 1}), plans=cache())
    try:
        first, seen, took = cycle(poller, gappy, T0)
        assert record(first) == VALUES, first["errors"]
        assert first["errors"] == {}
        assert not poller.health["dev"].failures
        # the planned block 0..21 went unanswered (one timeout); one field alone answered (the device is
        # alive); then the gapless runs, the other block with a gap cut into runs at once
        assert seen[:2] == [(1, 3, 0, 22), (1, 3, 0, 1)]
        assert sorted(seen[2:]) == sorted(RUNS)
        assert 0.5 <= took < 1.0  # one timeout, not one per block with gaps
        for t in (T0 + 10, T0 + 20):
            readout, seen, took = cycle(poller, gappy, t)
            assert record(readout) == VALUES and readout["errors"] == {}
            assert sorted(seen) == sorted(RUNS)  # no more requests than its readable runs need
            assert readout["requests"] == len(RUNS)
            assert took < 0.4
    finally:
        poller.close()


def test_a_restarted_bus_starts_with_the_learned_plan(gappy):
    raw = site({"host": "127.0.0.1", "port": gappy.port, "unit_id": 1})
    poller = poller_for(raw, plans=cache())
    cycle(poller, gappy, T0)
    poller.close()
    stored = cache().get(keys.modbus_plan_key(poller.bus_id, "dev"))
    assert sorted((b[0], b[1], b[2]) for b in stored["blocks"]) == sorted((r[1], r[2], r[3]) for r in RUNS)

    again = poller_for(raw, plans=cache())  # a new bus process: the same KV cache
    try:
        readout, seen, took = cycle(again, gappy, T0 + 10)
        assert record(readout) == VALUES
        assert sorted(seen) == sorted(RUNS)
        assert took < 0.4
    finally:
        again.close()

    # another config for the device (one field fewer): its plan is learned again
    changed = poller_for(site(raw["devices"]["dev"]["address"], fields=[f for f in VALUES if f != "i"]), plans=cache())
    try:
        readout, seen, _ = cycle(changed, gappy, T0 + 20)
        assert seen[0] == (1, 3, 0, 22)
        assert record(readout) == {k: v for k, v in VALUES.items() if k != "i"}
    finally:
        changed.close()


def test_a_bus_process_restarted_uses_the_plan_it_learned(tmp_path, gappy):
    raw = site({"host": "127.0.0.1", "port": gappy.port, "unit_id": 1})
    conf = write_json(tmp_path / "site.json", raw)
    bus_id = next(iter(cfg.load(raw, {}).buses()))
    counts = []
    for _ in range(2):
        n = len(gappy.seen)
        r = subprocess.run(
            [*AMMP_EDGE, "bus", bus_id, "--config", str(conf), "--once"],
            capture_output=True,
            text=True,
            timeout=60,
            env=child_env(),
        )
        assert r.returncode == 0, r.stderr
        counts.append(gappy.seen[n:])
    assert counts[0][0] == (1, 3, 0, 22) and len(counts[0]) == len(RUNS) + 2
    assert sorted(counts[1]) == sorted(RUNS)
    assert "using its learned plan: 7 request(s)" in r.stderr


def test_plan_stored_for_other_fields_is_not_used(gappy):
    raw = site({"host": "127.0.0.1", "port": gappy.port, "unit_id": 1})
    poller = poller_for(raw)
    key = keys.modbus_plan_key(poller.bus_id, "dev")
    reader = poller.readers["dev"]
    kv = cache()
    # the right digest, but blocks that do not cover the fields (a damaged or foreign entry)
    kv.set(key, {"digest": reader.digest, "blocks": [[3, 0, 2, True, ["a", "b"]]], "probe": "a"})
    poller = poller_for(raw, plans=kv)
    try:
        readout, seen, _ = cycle(poller, gappy, T0)
        assert seen[0] == (1, 3, 0, 22)  # planned afresh
        assert record(readout) == VALUES
    finally:
        poller.close()


def test_a_dead_device_costs_about_one_timeout_per_attempt(gappy):
    gappy.silent_units.add(1)
    poller = poller_for(site({"host": "127.0.0.1", "port": gappy.port, "unit_id": 1}, timeout=0.4))
    try:
        first, seen, took = cycle(poller, gappy, T0)
        assert record(first) == {}
        assert seen == [(1, 3, 0, 22), (1, 3, 0, 1)]  # the block, then one field alone: no answer either
        assert 0.75 < took < 1.2  # the first time two timeouts (the device's deadline)
        assert "a alone: no answer either" in first["errors"]["dev"][0]
        attempts = []
        for i in range(1, 5):  # backoff: the next attempts in cycles 1 and 3
            readout, seen, took = cycle(poller, gappy, T0 + 10 * i)
            if seen:
                attempts.append((seen, took))
            else:
                assert took < 0.1 and "backed off" in readout["errors"]["dev"][0]
        assert len(attempts) == 2
        singles = {
            (1, f.get("fncode", 3), f["register"], 2 if f["datatype"] in ("uint32", "float") else 1)
            for f in DRIVER["fields"].values()
        }
        for seen, took in attempts:  # the probe first: one request, one field (another one each time)
            assert len(seen) == 1 and seen[0] in singles, seen
            assert 0.35 < took < 0.7  # one timeout
        gappy.silent_units.clear()  # back: the probe answers, the plan follows
        for i in range(5, 12):
            readout, seen, _ = cycle(poller, gappy, T0 + 10 * i)
            if seen:
                break
        assert record(readout) == VALUES
    finally:
        poller.close()


def test_over_rtu_a_silent_gap_device_is_read_from_the_first_cycle(tmp_path):
    with pty_pair(tmp_path) as (master, slave_end):
        sim = Simulator({1: DRIVER}, values={1: VALUES}, serial_port=slave_end, silent_gaps=True).start()
        try:
            raw = site({"device": master, "slaveaddr": 1, "max_gap": 32}, "modbusrtu", timeout=1.0)
            poller = poller_for(raw, plans=cache())
            try:
                first, seen, _ = cycle(poller, sim, T0)
                assert record(first) == VALUES, first["errors"]
                assert seen[:2] == [(1, 3, 0, 22), (1, 3, 0, 1)]
                second, seen, _ = cycle(poller, sim, T0 + 10)
                assert record(second) == VALUES
                assert sorted(seen) == sorted(RUNS)
            finally:
                poller.close()
        finally:
            sim.stop()


def test_simulate_cli_silent_gaps(tmp_path, port):
    values = write_json(tmp_path / "v.json", VALUES)
    drv = write_json(tmp_path / "gappy.json", DRIVER)
    proc = subprocess.Popen(
        [*AMMP_EDGE, "simulate", "--driver", str(drv), "--port", str(port), "--values", str(values), "--silent-gaps"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=child_env(),
    )
    try:
        assert "simulating" in proc.stdout.readline()
        conf = write_json(tmp_path / "site.json", site({"host": "127.0.0.1", "port": port, "unit_id": 1}))
        r = subprocess.run(
            [*AMMP_EDGE, "read", "--config", str(conf), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            env=child_env(),
        )
        assert r.returncode == 0, r.stderr
        (rec,) = json.loads(r.stdout)["r"]
        assert {k: rec[k] for k in VALUES} == VALUES
    finally:
        proc.terminate()
        proc.wait(10)
