"""The whole appliance (`ammp-edge up`) under test, bridged to a test cloud broker, with the tools to
break it: kill -9 any program or everything, stop the broker or the cloud, and to check the promise:
every (t, device) a bus committed arrives at the cloud at least once.

What was produced is read from the buses' logs ("committed t=... devices=... at=<time>" at debug level,
written after the outbox commit returned); what arrived is recorded by a subscriber on the cloud broker
(with the time it arrived), so `latencies` can tell how late each cycle was.

`bridge="prod"` (default) points the AMMP production bridge at the test cloud; `bridge="custom"` turns
the AMMP bridge off and configures `mqtt_bridge_custom` to the same cloud (TLS, CA, password);
`cloud=None`: no bridge at all (the local broker's acknowledgement is delivery).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import psutil

from ammp_edge.core import supervisor
from ammp_edge.core.kvs import KVStore
from helpers.brokers import CloudBroker, Recorder, wait_until
from helpers.common import AMMP_EDGE, REPO, free_port

COMMITTED = re.compile(r"committed t=(\d+) key=\d+ devices=(\S*)")
COMMITTED_AT = re.compile(r"committed t=(\d+) key=\d+ devices=(\S*) delay=\S+ at=([\d.]+)")


class Appliance:
    def __init__(
        self,
        root: Path,
        config: dict,
        cloud: CloudBroker | None,
        node_id: str = "0123456789ab",
        access_key: str = "node-secret",
        bridge: str = "prod",
        **env,
    ):
        self.root = root
        self.data, self.temp = root / "d", root / "t"  # short: the supervisor socket path has a length limit
        self.data.mkdir(parents=True, exist_ok=True)
        self.temp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.node_id = node_id
        self.cloud = cloud
        self.env = {
            **os.environ,
            "AE_DATA_DIR": str(self.data),
            "AE_TEMP_DIR": str(self.temp),
            "AE_ROOT_DIR": str(REPO),
            "MQTT_BRIDGE_PORT": str(self.port),
            "LOGGING_LEVEL": "debug",
            "PYTHONUNBUFFERED": "1",
            "AE_OFFLINE": "0",  # the bridges are on; the API is a closed local port (below)
            **{k: str(v) for k, v in env.items()},
        }
        self.config_file = root / "config.json"
        self.config_file.write_text(json.dumps(config))
        kv = self.kv()
        kv.set("node_id", node_id)
        kv.set("access_key", access_key)
        kv.set("http_api_base_url", "http://127.0.0.1:9/api/v0")  # no test talks to the real AMMP API
        if cloud is not None and bridge == "prod":  # the AMMP production bridge, pointed at the test cloud
            kv.set("mqtt_bridge_prod_address", f"127.0.0.1:{cloud.tls_port}")
            kv.set("mqtt_bridge_prod_cafile", str(cloud.ca.ca_crt))
        elif cloud is not None and bridge == "custom":  # no AMMP bridge: a broker of one's own
            kv.set("mqtt_bridge_prod", False)
            kv.set(
                "mqtt_bridge_custom",
                {
                    "host": "127.0.0.1",
                    "port": cloud.tls_port,
                    "tls": True,
                    "ca_file": str(cloud.ca.ca_crt),
                    "username": cloud.node_user,
                    "password": cloud.node_password,
                },
            )
        else:
            kv.set("mqtt_bridge_prod", False)
        kv.close()
        self.proc: subprocess.Popen | None = None
        self.up_log = root / "up.log"

    def kv(self) -> KVStore:
        return KVStore(self.data / "kvs-db" / "kvstore.db")

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, with_config: bool = True, timeout: float = 120) -> Appliance:
        args = ["up", "--config", str(self.config_file)] if with_config else ["up"]
        log = open(self.up_log, "a")
        self.proc = subprocess.Popen([*AMMP_EDGE, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_until(lambda: self.all_running(), timeout, 0.2, what="every program RUNNING")
        return self

    def rpc(self):
        return supervisor.connect(self.temp / "supervisor.sock", timeout=10)

    def programs(self) -> dict[str, dict]:
        try:
            return {p["name"]: p for p in self.rpc().supervisor.getAllProcessInfo()}
        except Exception:  # noqa: BLE001 - not up yet
            return {}

    def all_running(self) -> bool:
        progs = self.programs()
        return bool(progs) and all(p["statename"] == "RUNNING" for p in progs.values()) and "publisher" in progs

    def stop(self, timeout: float = 30) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.proc = None

    def tree(self) -> list[psutil.Process]:
        if self.proc is None:
            return []
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill_everything(self) -> None:
        """A power cut, as far as processes go: SIGKILL to up, supervisord and every program at once."""
        for p in self.tree():
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        if self.proc is not None:
            self.proc.wait(10)
            self.proc = None
        psutil.wait_procs([p for p in self.tree()], timeout=5)

    def running_pid(self, name: str) -> int | None:
        p = self.programs().get(name)
        return p["pid"] if p and p["statename"] == "RUNNING" and p["pid"] > 0 else None

    def kill_program(self, name: str, timeout: float = 120) -> int:
        """SIGKILL to a program once it runs (a pid of 0 would be our own process group), then wait until
        supervisord has it running again under a new pid."""
        pid = wait_until(lambda: self.running_pid(name), timeout, 0.1, what=f"{name} running")
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: self.running_pid(name) not in (None, pid), timeout, 0.2, what=f"{name} restarted")
        return pid

    def stop_program(self, name: str) -> None:
        self.rpc().supervisor.stopProcess(name, True)

    def start_program(self, name: str) -> None:
        self.rpc().supervisor.startProcess(name, True)

    # -- what happened --------------------------------------------------------------------------
    def logs(self, prefix: str) -> str:
        text = ""
        for f in sorted((self.temp / "logs").glob(f"{prefix}*.log*")):
            text += f.read_text(errors="replace")
        return text

    def produced(self) -> set[tuple[int, str]]:
        out = set()
        for t, devices in COMMITTED.findall(self.logs("bus-")):
            out.update((int(t), d) for d in devices.split(",") if d)
        return out

    def commits(self) -> list[tuple[int, str, float, list[str]]]:
        """(t, bus, commit time, devices) of every readout the buses committed, from their logs."""
        out = []
        for f in sorted((self.temp / "logs").glob("bus-*.log*")):
            bus = f.name.split(".log")[0][len("bus-") :]
            for t, devices, at in COMMITTED_AT.findall(f.read_text(errors="replace")):
                out.append((int(t), bus, float(at), [d for d in devices.split(",") if d]))
        return out

    def bridge_up(self) -> bool:
        """Every configured bridge reports itself connected (its retained state topic on the local broker)."""
        from ammp_edge.bridge.plan import bridge_state_topics

        if self.cloud is None:
            return True
        from helpers.brokers import local_auth, retained

        kv = self.kv()
        try:  # as the appliance sees it (the test process has AE_OFFLINE=1, which leaves the AMMP bridge out)
            with mock.patch.dict(os.environ, {"AE_OFFLINE": self.env["AE_OFFLINE"]}):
                topics = bridge_state_topics(kv)
        finally:
            kv.close()
        assert topics, "a cloud is configured but no bridge: the test would not wait for anything"
        try:
            return all(retained(self.port, t, 1.0, **local_auth(self.data)) == b"1" for t in topics)
        except (OSError, AssertionError):
            return False

    def wait_back(self, timeout: float, what: str = "programs running and the bridge connected") -> float:
        """Wait until every program runs and the bridge is connected; returns that moment (time.time())."""
        wait_until(lambda: self.all_running() and self.bridge_up(), timeout, 0.2, what=what)
        return time.time()

    def produced_ts(self, bus: str) -> list[int]:
        return sorted({int(t) for t, _ in COMMITTED.findall(self.logs(f"bus-{bus}"))})


def received(recorder: Recorder, node_id: str) -> Counter:
    got: Counter = Counter()
    for m in recorder.on(f"a/{node_id}/u/data"):
        msg = json.loads(m.payload)
        for r in msg["r"]:
            got[(msg["t"], r["_d"])] += 1
    return got


def wait_delivered(app: Appliance, recorder: Recorder, timeout: float, what: str = "every produced reading") -> Counter:
    """Wait until every (t, device) the buses committed has arrived; returns the arrival counts."""

    def done():
        got = received(recorder, app.node_id)
        missing = app.produced() - set(got)
        return got if not missing else None

    try:
        return wait_until(done, timeout, 0.5, what=what)
    except AssertionError:
        got = received(recorder, app.node_id)
        missing = sorted(app.produced() - set(got))
        raise AssertionError(
            f"{len(missing)} of {len(app.produced())} readings never arrived, e.g. {missing[:10]}"
        ) from None


def report(name: str, got: Counter, produced: set) -> dict:
    dup = sum(n - 1 for k, n in got.items() if k in produced and n > 1)
    summary = {"test": name, "produced": len(produced), "arrived": len(set(got) & produced), "duplicates": dup}
    out = REPO / "test-artifacts"
    out.mkdir(exist_ok=True)
    with open(out / "faults.jsonl", "a") as fh:
        fh.write(json.dumps(summary) + "\n")
    print(summary)
    return summary


@dataclass
class Latency:
    t: int
    bus: str
    committed: float
    ready: float  # when its message could go: the latency bound counts from here
    arrived: float | None  # when its last device arrived there (first copy), None: not (yet)

    @property
    def delay(self) -> float | None:
        return None if self.arrived is None else self.arrived - self.ready


BOUND = 1.0  # seconds: a cycle's message at the remote broker after its last readout was committed


def grace(interval: float) -> float:
    """The publisher's grouping grace period for a read_interval (publisher.ready_groups)."""
    return min(max(interval * 0.9, 3.0), 60.0)


def latencies(app: Appliance, recorder: Recorder, interval: float, topic: str | None = None) -> list[Latency]:
    """Per bus readout committed with devices: when its message could go and when it arrived. Could go:
    when the last readout of its cycle was committed, or when the grace period ended if a bus did not
    deliver in time; a readout committed after that goes on its own, from its commit."""
    topic = topic or f"a/{app.node_id}/u/data"
    first: dict[tuple[int, str], float] = {}
    for m in recorder.on(topic):
        msg = json.loads(m.payload)
        for r in msg["r"]:
            first.setdefault((msg["t"], r["_d"]), m.at)
    commits = app.commits()
    buses = {bus for _, bus, _, _ in commits}
    by_t: dict[int, dict[str, float]] = {}
    for t, bus, at, _ in commits:
        by_t.setdefault(t, {}).setdefault(bus, at)
    out = []
    for t, bus, at, devices in commits:
        if not devices or at != by_t[t][bus]:
            continue  # nothing to publish, or a second commit of the same cycle
        cycle = by_t[t]
        ready = max(cycle.values()) if set(cycle) >= buses else t + grace(interval)
        ready = min(ready, t + grace(interval))
        got = [first.get((t, d)) for d in devices]
        arrived = None if any(g is None for g in got) else max(g for g in got if g is not None)
        out.append(Latency(t, bus, at, max(at, ready), arrived))
    return sorted(out, key=lambda x: (x.t, x.bus))


def arrival_order(recorder: Recorder, topic: str) -> list[int]:
    """The t of each u/data message in the order they arrived."""
    return [json.loads(m.payload)["t"] for m in recorder.on(topic)]


def assert_on_time(lat: list[Latency], what: str, bound: float = BOUND) -> None:
    missing = [x for x in lat if x.arrived is None]
    late = [x for x in lat if x.delay is not None and x.delay > bound]
    assert lat, f"{what}: no cycles to check"
    assert not missing and not late, (
        f"{what}: {len(missing)} of {len(lat)} readouts never arrived (e.g. {[(x.t, x.bus) for x in missing[:5]]}), "
        f"{len(late)} later than {bound} s (e.g. {[(x.t, x.bus, round(x.delay or 0, 2)) for x in late[:5]]})"
    )


def percentiles(values: list[float]) -> tuple[float, float, float]:
    """p50, p99, max."""
    v = sorted(values)
    if not v:
        return float("nan"), float("nan"), float("nan")
    return v[len(v) // 2], v[min(len(v) - 1, int(0.99 * len(v)))], v[-1]
