"""The normal day (issue 11): the whole appliance in steady state, at a 1 s interval, for 30+ cycles.
Every cycle arrives, in time order, once, each within 1 s of the last of its bus readouts being
committed (or of the grouping grace period ending), through a custom bridge (TLS, password) to a
second mosquitto, and with no bridge at all (the local broker's acknowledgement is delivery).

Before issue 11 the outbox numbered records from 500000000000000 again whenever it ran empty, below
the publisher's live cursor: every other cycle waited for a restart of the publisher.
"""

from __future__ import annotations

import time

import pytest

from helpers.appliance import Appliance, arrival_order, assert_on_time, latencies, percentiles
from helpers.brokers import Recorder, cloud_broker, port_open, wait_until

pytestmark = pytest.mark.slow

NODE = "0123456789ab"
CYCLES = 32


def site(sim_port: int, interval: int = 1) -> dict:
    dev = {"driver": "sma_stp25000", "reading_type": "modbustcp", "timeout": 1}
    return {
        "devices": {  # two buses: the system, and one Modbus TCP gateway with two devices
            "logger": {"driver": "sys_generic", "reading_type": "sys", "vendor_id": "lg"},
            "inv1": {**dev, "vendor_id": "i1", "address": {"host": "127.0.0.1", "port": sim_port, "unit_id": 3}},
            "inv2": {**dev, "vendor_id": "i2", "address": {"host": "127.0.0.1", "port": sim_port, "unit_id": 4}},
        },
        "readings": {
            "a": {"device": "logger", "var": "memory_usage"},
            "b": {"device": "inv1", "var": "P_total"},
            "c": {"device": "inv2", "var": "P_total"},
        },
        "read_interval": interval,
        "read_roundtime": True,
    }


def _steady(app: Appliance, rec: Recorder, topic: str, what: str) -> None:
    start = app.wait_back(90)
    first_t = int(start) + 2  # what was committed before the gate opened went as backlog

    def cycles_arrived():
        return len({t for t in arrival_order(rec, topic) if t >= first_t}) >= CYCLES

    wait_until(cycles_arrived, CYCLES + 120, 0.2, what=f"{CYCLES} cycles at the remote broker")
    last_t = max(arrival_order(rec, topic)) - 1  # the newest cycle may still be on its way
    time.sleep(2)
    assert app.stop() == 0
    lat = [x for x in latencies(app, rec, 1, topic) if first_t <= x.t <= last_t]
    cycles = {x.t for x in lat}
    skipped = sorted(set(range(first_t, last_t + 1)) - cycles)  # a bus that overran (a loaded machine)
    assert len(cycles) >= CYCLES - 4, f"the buses committed only {len(cycles)} cycles (skipped {skipped})"
    assert_on_time(lat, what)
    order = [t for t in arrival_order(rec, topic) if first_t <= t <= last_t]
    assert order == sorted(order), f"{what}: out of time order: {order}"
    assert len(order) == len(set(order)), f"{what}: a cycle went in two messages or twice: {order}"
    p50, p99, worst = percentiles([x.delay or 0.0 for x in lat])
    print(
        f"{what}: {len(cycles)} cycles, latency"
        f" p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {worst * 1000:.0f} ms"
    )


def test_steady_state_through_a_custom_bridge(tmp_path, simulator, builtin_drivers):
    drv = builtin_drivers["sma_stp25000"]
    sim = simulator({3: drv, 4: drv})
    cloud = cloud_broker(tmp_path, node_user=NODE, node_password="node-secret")
    topic = f"a/{NODE}/u/data"
    rec = Recorder(cloud.admin_port, topic, **cloud.admin_auth).start()
    app = Appliance(tmp_path / "app", site(sim.port), cloud, NODE, bridge="custom")
    try:
        app.start()
        _steady(app, rec, topic, "custom bridge")
    finally:
        if app.proc is not None:
            app.kill_everything()
        rec.stop()
        cloud.stop()


def test_steady_state_without_a_bridge(tmp_path, simulator, builtin_drivers):
    drv = builtin_drivers["sma_stp25000"]
    sim = simulator({3: drv, 4: drv})
    app = Appliance(tmp_path / "app", site(sim.port), None, NODE)
    try:
        app.start()
        wait_until(lambda: port_open(app.port), 30, what="the local broker")
        with Recorder(app.port, "u/data") as rec:  # a local reader: anyone may read u/#
            _steady(app, rec, "u/data", "no bridge")
    finally:
        if app.proc is not None:
            app.kill_everything()
