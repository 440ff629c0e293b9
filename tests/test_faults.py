"""Fault tests of the whole appliance: every (t, device) a bus committed reaches the cloud broker at
least once, whatever fails, and once everything is back (every program running, the bridge
connected), live is live again: every cycle from one cycle after that on arrives within 1 s of its
last commit, and the backlog within its drain time. Duplicates are counted and reported
(test-artifacts/faults.jsonl).

Real parts: `ammp-edge up` (supervisord, mosquitto, bridge-config, publisher, node, buses), simulated
Modbus devices, and a second mosquitto standing in for the AMMP cloud (TLS with a CA made by the test,
password auth, the upstream bridge with its a/<node_id>/ mapping).
"""

from __future__ import annotations

import json
import random
import re
import time

import pytest

from ammp_edge.delivery.outbox import Outbox
from helpers.appliance import (
    Appliance,
    arrival_order,
    assert_on_time,
    latencies,
    percentiles,
    received,
    report,
    wait_delivered,
)
from helpers.brokers import Recorder, cloud_broker, wait_until

pytestmark = pytest.mark.slow

NODE = "0123456789ab"


def site_config(sim_port: int, interval: int = 1) -> dict:
    dev = {"driver": "sma_stp25000", "reading_type": "modbustcp", "timeout": 1}
    return {
        "devices": {
            "logger": {"driver": "sys_generic", "reading_type": "sys", "vendor_id": "lg"},
            "inv1": {**dev, "vendor_id": "i1", "address": {"host": "127.0.0.1", "port": sim_port, "unit_id": 3}},
            "inv2": {**dev, "vendor_id": "i2", "address": {"host": "127.0.0.1", "port": sim_port, "unit_id": 4}},
        },
        "readings": {
            "a": {"device": "logger", "var": "memory_usage"},
            "b": {"device": "inv1", "var": "P_total"},
            "c": {"device": "inv2", "var": "P_total"},
            "d": {"device": "inv1", "var": "total_yield"},
        },
        "output": [{"field": "P_sum", "source": 'inv1[var="P_total"].value + inv2[var="P_total"].value'}],
        "read_interval": interval,
        "read_roundtime": True,
        "calc_vendor_id": "calc",
    }


@pytest.fixture
def site(tmp_path, simulator, builtin_drivers):
    drv = builtin_drivers["sma_stp25000"]
    sim = simulator({3: drv, 4: drv})
    cloud = cloud_broker(tmp_path, node_user=NODE, node_password="node-secret")
    rec = Recorder(cloud.admin_port, f"a/{NODE}/#", **cloud.admin_auth).start()
    apps = []

    def make(interval=1, **env):
        app = Appliance(tmp_path / f"app{len(apps)}", site_config(sim.port, interval), cloud, NODE, **env)
        apps.append(app)
        return app

    yield make, cloud, rec, sim
    for app in apps:
        if app.proc is not None:
            app.kill_everything()
    rec.stop()
    cloud.stop()


def _flowing(app, rec, n=3):
    wait_until(lambda: len(rec.on(f"a/{NODE}/u/data")) >= n, 60, what="data at the cloud")


def _drain_time(app, rec) -> float:
    """What the backlog may take: its messages at a tenth of the publisher's 1000 msg/s, plus 30 s."""
    backlog = {t for t, _ in app.produced() - set(received(rec, NODE))}
    return 30 + len(backlog) / 100


def _live_again(app, rec, back_at: float, interval: int, what: str, cycles: int = 5) -> None:
    """Every cycle from one cycle after everything was back (plus the publisher's 1 s reconnect) on
    arrives within the bound: checked over the next `cycles` cycles."""
    first_t = int(back_at) + interval + 1
    topic = f"a/{NODE}/u/data"
    wait_until(
        lambda: len({t for t in arrival_order(rec, topic) if t >= first_t}) >= cycles + 1,
        cycles * interval + 60,
        0.2,
        what=f"{cycles} live cycles after {what}",
    )
    last_t = max(arrival_order(rec, topic)) - interval
    lat = [x for x in latencies(app, rec, interval) if first_t <= x.t <= last_t]
    assert_on_time(lat, f"live cycles after {what}")
    p50, p99, worst = percentiles([x.delay or 0.0 for x in lat])
    print(f"after {what}: {len(lat)} readouts, latency p50 {p50:.3f} s, p99 {p99:.3f} s, max {worst:.3f} s")


def test_data_reaches_the_cloud_joined_per_cycle(site):
    make, cloud, rec, _ = site
    app = make().start()
    _flowing(app, rec, 5)
    assert app.stop() == 0
    got = wait_delivered(app, rec, 30)
    msgs = [json.loads(m.payload) for m in rec.on(f"a/{NODE}/u/data")]
    full = [m for m in msgs if {r["_d"] for r in m["r"]} == {"logger", "inv1", "inv2", "_calc"}]
    assert len(full) >= len(msgs) - 2, "one message per cycle across both buses, with the JSONata output"
    assert all(r["_vid"] == "calc" for m in full for r in m["r"] if r["_d"] == "_calc")
    assert rec.last(f"a/{NODE}/bridge_state") is not None
    report("baseline", got, app.produced())


def test_cloud_broker_down_for_minutes_then_back(site):
    make, cloud, rec, _ = site
    app = make(interval=2).start()
    _flowing(app, rec)
    cloud.stop()
    down = time.time()
    time.sleep(120)
    produced_while_down = {k for k in app.produced() if k[0] >= down}
    assert len(produced_while_down) > 150, "buses kept polling while the cloud was away"
    assert app.kv() and (app.data / "outbox").exists()
    cloud.start()
    back = app.wait_back(240, "the bridge back (its backoff grows to 120 s)")
    got = wait_delivered(app, rec, _drain_time(app, rec), "the backlog after the outage, within its drain time")
    assert produced_while_down <= set(got)
    produced = app.produced()
    _live_again(app, rec, back, 2, "the cloud came back")
    app.stop()
    report("cloud down 120 s", received(rec, NODE), produced)


def test_kill_9_at_random_moments(site):
    make, cloud, rec, _ = site
    app = make().start()
    _flowing(app, rec)
    rng = random.Random(20261126)
    targets = ["publisher", "bus-tcp", "mosquitto", "everything", "bus-sys"]
    for round_ in range(24):
        target = targets[round_ % len(targets)] if round_ < len(targets) else rng.choice(targets)
        time.sleep(rng.uniform(0.2, 2.5))
        if target == "everything":
            app.kill_everything()
            app.start(with_config=False)
        else:
            name = wait_until(lambda t=target: next((n for n in app.programs() if n.startswith(t)), None), 60)
            app.kill_program(name)  # waits until supervisord runs it again
    back = app.wait_back(240, "every program and the bridge after 24 kills")
    wait_delivered(app, rec, _drain_time(app, rec), "every reading after 24 kills, within its drain time")
    produced = app.produced()
    _live_again(app, rec, back, 1, "24 kills")
    app.stop()
    s = report("kill -9 x24", received(rec, NODE), produced)
    assert s["produced"] > 50


def test_local_broker_down_buses_keep_polling_on_time(site):
    make, cloud, rec, _ = site
    app = make().start()
    _flowing(app, rec)
    app.stop_program("mosquitto")
    t0 = int(time.time())
    time.sleep(15)
    app.start_program("mosquitto")
    back = app.wait_back(120, "the local broker and the bridge back")
    for bus in ("sys", "tcp"):
        ts = [t for t in app.produced_ts(bus) if t0 <= t <= t0 + 14]
        assert ts == list(range(ts[0], ts[0] + len(ts))) and len(ts) >= 13, f"{bus}: {ts}"
    wait_delivered(app, rec, _drain_time(app, rec), "every reading, within its drain time")
    produced = app.produced()
    _live_again(app, rec, back, 1, "the local broker came back")
    app.stop()
    report("local broker down 15 s", received(rec, NODE), produced)


def test_outbox_full_drops_the_oldest_and_counts(site):
    make, cloud, rec, _ = site
    app = make(AE_OUTBOX_MAX_COUNT=30).start()
    _flowing(app, rec)
    cloud.stop()
    down = int(time.time())
    # 2 buses x 30 cycles: more than the outbox holds
    wait_until(lambda: len({t for t, _ in app.produced() if t > down}) >= 30, 120, 0.5, what="30 cycles offline")
    wait_until(lambda: "dropped the oldest" in app.logs("bus-"), 30, what="drop log")
    cloud.start()
    back = app.wait_back(240, "the bridge back (10..120 s backoff)")  # drops go on until then
    box = Outbox(app.data / "outbox")
    try:  # drained: nothing from before the bridge came back is left in the outbox (sent, or dropped)
        wait_until(
            lambda: all(r["t"] >= back for _, r in box.read_from(None, 100)), 120, 0.5, what="the backlog drained"
        )
    finally:
        box.close()
    drops = [int(n) for n in re.findall(r"\((\d+) dropped so far\)", app.logs("bus-"))]
    assert drops and max(drops) >= 10
    produced = {k for k in app.produced() if k[0] < time.time() - 3}  # not what is on its way now
    wait_until(
        lambda: {k for k in produced if k[0] >= back} <= set(received(rec, NODE)),
        30,
        0.5,
        what="everything committed since the bridge came back",
    )
    got = received(rec, NODE)
    missing = produced - set(got)
    assert len({t for t, _ in missing}) <= max(drops), "only dropped readouts are missing"
    # oldest first: of what was committed while the cloud was away, what arrived is the newest part (from
    # 5 s after the drop: what the publisher sent before it saw the bridge drop may still come out of
    # mosquitto's queue for the bridge, and is in the outbox too until confirmed or dropped)
    away = down + 5
    oldest_arrived = min(t for t, d in produced if t >= away and (t, d) in got)
    late_missing = sorted(k for k in missing if k[0] > oldest_arrived)
    assert not late_missing, (
        f"the oldest were dropped, not the newest: {late_missing[:6]} (arrived from {oldest_arrived})"
    )
    assert all(t < back for t, _ in missing), "nothing committed once the bridge was back is missing"
    _live_again(app, rec, back, 1, "the outbox overflowed")
    app.stop()
    report("outbox full", got, produced - missing)


def test_config_change_mid_cycle_and_unusable_config(site, builtin_drivers, simulator):
    make, cloud, rec, sim = site
    app = make().start()
    _flowing(app, rec)
    raw = json.loads(app.config_file.read_text())
    sim2 = simulator({5: builtin_drivers["sma_stp25000"]})
    raw["devices"]["inv3"] = {
        "driver": "sma_stp25000",
        "reading_type": "modbustcp",
        "vendor_id": "i3",
        "timeout": 1,
        "address": {"host": "127.0.0.1", "port": sim2.port, "unit_id": 5},
    }
    raw["readings"]["e"] = {"device": "inv3", "var": "P_total"}
    time.sleep(0.5)  # land in the middle of a cycle
    kv = app.kv()
    kv.set_raw("config", json.dumps(raw).encode())
    wait_until(lambda: any(n.endswith(str(sim2.port)) for n in app.programs()), 15, what="the new bus")
    pids = {n: p["pid"] for n, p in app.programs().items() if n.startswith("bus-")}
    kv.set_raw("config", b"{ this is not a config")
    time.sleep(4)
    assert {n: p["pid"] for n, p in app.programs().items() if n.startswith("bus-")} == pids, "nothing restarted"
    assert "cannot be used" in app.logs("node")
    wait_until(lambda: any(k[1] == "inv3" for k in app.produced()), 10, what="inv3 read")
    got = wait_delivered(app, rec, 60)
    app.stop()
    report("config change + unusable config", got, app.produced())


def test_local_users_only_read_u_while_the_cloud_still_commands_the_node(site):
    """The local broker, locked down: a client without the appliance's password (any local user) reads
    u/data, but what it publishes on d/command or d/config never reaches the node and it reads nothing
    of d/#; d/command from the cloud, over the bridge, still does. The data directory had no broker
    password (as one from before the lock-down): it was made at the first start, owner-only, never logged."""
    from helpers.brokers import publish

    make, cloud, rec, _ = site
    app = make(interval=2)
    password_file = app.data / "broker-password"
    assert not password_file.exists()
    app.start()
    _flowing(app, rec)
    assert password_file.stat().st_mode & 0o777 == 0o600
    password = password_file.read_text().strip()
    assert len(password) >= 24

    with Recorder(app.port, "#") as anyone:  # a local user, no password
        anyone.wait_for(lambda m: m.topic == "u/data", 15, what="u/data for an anonymous reader")
        publish(app.port, "d/command", b'["sent_by_a_local_user"]')  # acknowledged (MQTT 3.1.1), then dropped
        wrong = json.loads(app.config_file.read_text())
        wrong["read_interval"] = 7
        publish(app.port, "d/config", json.dumps(wrong))
        answer_topic = f"a/{NODE}/u/command_response"
        deadline = time.monotonic() + 30
        while not rec.on(answer_topic) and time.monotonic() < deadline:  # the bridge may still be subscribing
            publish(cloud.admin_port, f"a/{NODE}/d/command", b'["sent_by_the_cloud"]', **cloud.admin_auth)
            time.sleep(1.0)
        answers = [m.text for m in rec.on(answer_topic)]
        assert answers and answers[0] == "Unrecognized command: sent_by_the_cloud", answers
        assert not any("sent_by_a_local_user" in a for a in answers)
        assert json.loads(app.kv().get_raw("config"))["read_interval"] == 2, "the local user's d/config was not applied"
        assert "sent_by_a_local_user" not in app.logs("node")
        seen = {m.topic for m in anyone.messages}
        assert "u/data" in seen and not any(t.startswith(("d/", "a/", "$SYS")) for t in seen), seen
    logs = "".join(f.read_text(errors="replace") for f in (app.temp / "logs").glob("*.log*"))
    logs += app.up_log.read_text(errors="replace")
    assert password not in logs
    _flowing(app, rec, len(rec.on(f"a/{NODE}/u/data")) + 2)  # data still flows
    assert app.stop() == 0
