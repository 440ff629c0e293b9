"""Issue 12 item 2 through every real door: a config at the size and depth limits is accepted and runs
(buses up, data on u/data), one over a limit is refused with a reason naming the limit while the previous
config keeps producing data, and nothing crash-loops.

Before the one parser, an array nested 1000 to 5000 deep was accepted by the web UI, d/config,
`validate` and `read`, and every bus died loading it (118 exits); 100,000 levels made node exit on a
d/config without a word and the web UI answer 500.

The doors: `validate` and `read` (CLI), `up --config` (refused before anything starts; accepted: the
appliance runs it), the provisioning file, d/config on the appliance's own mosquitto with node running,
the web UI over HTTP, the AMMP API (tests/helpers/fake_cloud.py), and the KV key as the buses, the
publisher and node load it (a config written there directly, by no door).
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
import requests

from ammp_edge.core import jsontext
from helpers.appliance import Appliance
from helpers.brokers import Recorder, local_auth, port_open, publish, wait_until
from helpers.common import AMMP_EDGE, free_port
from helpers.fake_cloud import FakeCloud

INTERVAL = 2
NODE_ID = "0123456789ab"
DEEP_NOTE = "more than 64 levels deep"
SIZE_NOTE = "the limit is 4,194,304 bytes (4 MiB)"


def site(port: int, var: str) -> dict:
    """The logger and a simulated inverter; `var` is the inverter field read, so u/data tells which
    config runs."""
    return {
        "devices": {
            "lg": {"driver": "sys_generic", "reading_type": "sys", "vendor_id": "lg"},
            "inv": {
                "driver": "sma_stp25000",
                "reading_type": "modbustcp",
                "vendor_id": "inv-1",
                "timeout": 1,
                "address": {"host": "127.0.0.1", "port": port, "unit_id": 3},
            },
        },
        "readings": {"mem": {"device": "lg", "var": "memory_usage"}, var: {"device": "inv", "var": var}},
        "read_interval": INTERVAL,
    }


def at_limits(doc: dict) -> bytes:
    """`doc` with an unused member nested exactly MAX_DEPTH deep, padded to exactly MAX_BYTES."""
    levels = jsontext.MAX_DEPTH - 1  # the config object itself is the first level
    text = json.dumps(doc)[:-1] + ', "notes": ' + "[" * levels + "]" * levels + "}"
    raw = text[:-1].encode() + b" " * (jsontext.MAX_BYTES - len(text.encode())) + b"}"
    assert len(raw) == jsontext.MAX_BYTES and jsontext.nesting_depth(raw.decode()) == jsontext.MAX_DEPTH
    return raw


def too_deep(doc: dict, levels: int) -> bytes:
    return (json.dumps(doc)[:-1] + ', "notes": ' + "[" * levels + "]" * levels + "}").encode()


def too_big(doc: dict) -> bytes:
    text = json.dumps(doc).encode()
    return text[:-1] + b" " * (jsontext.MAX_BYTES - len(text) + 1) + b"}"


# -- the command line -------------------------------------------------------------------------------


def test_validate_read_and_up_at_and_over_the_limits(tmp_path, simulator, builtin_drivers):
    sim = simulator({3: builtin_drivers["sma_stp25000"]})
    at = tmp_path / "at.json"
    at.write_bytes(at_limits(site(sim.port, "P_total")))
    deep, big = tmp_path / "deep.json", tmp_path / "big.json"
    deep.write_bytes(too_deep(site(sim.port, "P_total"), 5000))
    big.write_bytes(too_big(site(sim.port, "P_total")))

    r = subprocess.run(
        [*AMMP_EDGE, "validate", str(at), str(deep), str(big)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 1
    assert f"{at}: ok" in r.stdout
    assert f"{deep}: $: file nests arrays and objects more than 64 levels deep" in r.stdout
    assert f"{big}: $: file is 4,194,305 bytes; {SIZE_NOTE}" in r.stdout

    r = subprocess.run([*AMMP_EDGE, "read", "--config", str(at), "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    inv = next(d for d in json.loads(r.stdout)["r"] if d["_d"] == "inv")
    assert isinstance(inv["P_total"], (int, float)), "the config at the limits reads the device"
    for f, note in ((deep, DEEP_NOTE), (big, SIZE_NOTE)):
        r = subprocess.run([*AMMP_EDGE, "read", "--config", str(f)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and note in r.stderr and "Traceback" not in r.stderr
        r = subprocess.run([*AMMP_EDGE, "up", "--config", str(f)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and f"{f}: $: config" in r.stderr and note in r.stderr
    deeper = tmp_path / "deeper.json"
    deeper.write_bytes(too_deep(site(sim.port, "P_total"), 100_000))
    r = subprocess.run([*AMMP_EDGE, "validate", str(deeper)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and DEEP_NOTE in r.stdout and "Traceback" not in r.stderr


# -- the appliance ----------------------------------------------------------------------------------


class Watch:
    """u/data and u/log/msg on the appliance's local broker."""

    def __init__(self, rec: Recorder):
        self.rec = rec

    def mark(self) -> tuple[int, float]:
        return len(self.rec.messages), time.time()

    def log_after(self, mark, *words: str, timeout: float = 30) -> str:
        n = mark[0]

        def found():
            return next(
                (m.text for m in self.rec.messages[n:] if m.topic == "u/log/msg" and all(w in m.text for w in words)),
                None,
            )

        return wait_until(found, timeout, 0.1, what=f"u/log/msg with {words}")

    def data_after(self, mark, var: str, timeout: float = 60) -> float:
        """Wait for a cycle that started after `mark` whose inverter record has `var`; its latency."""
        n, t0 = mark

        def found():
            for m in self.rec.messages[n:]:
                if m.topic != "u/data":
                    continue
                msg = json.loads(m.payload)
                inv = [r for r in msg["r"] if r["_d"] == "inv"]
                if msg["t"] >= t0 and inv and isinstance(inv[0].get(var), (int, float)):
                    return time.time() - t0
            return None

        return wait_until(found, timeout, 0.2, what=f"u/data with inv.{var} after the change")


def bus_pids(app: Appliance) -> dict[str, int]:
    return {n: p["pid"] for n, p in app.programs().items() if p["statename"] == "RUNNING"}


@pytest.mark.slow
def test_every_door_of_the_appliance_at_and_over_the_limits(tmp_path, simulator, builtin_drivers):
    sim = simulator({3: builtin_drivers["sma_stp25000"]})
    web_port = free_port()
    provisioning = tmp_path / "provisioning.json"
    provisioning.write_bytes(at_limits(site(sim.port, "P_total")))
    api = FakeCloud().start()
    api.keys[NODE_ID] = "node-secret"
    app = Appliance(
        tmp_path / "a",
        {},
        None,
        node_id=NODE_ID,
        access_key="node-secret",
        AE_PROVISIONING_FILE=provisioning,
        AE_CONFIG_CHECK_INTERVAL=3,
        AE_WEBUI_PORT=web_port,
        AE_WEBUI_HOST="127.0.0.1",
        LOGGING_LEVEL="info",
    )
    kv = app.kv()
    kv.set("http_api_base_url", api.base_url)
    kv.close()
    latencies: dict[str, float] = {}
    try:
        # -- the provisioning file at the limits: stored as it is, the buses run it
        app.start(with_config=False)
        wait_until(lambda: port_open(app.port), 30, 0.2, what="the local broker")
        rec = Recorder(app.port, "u/data", "u/log/msg").start()
        w = Watch(rec)
        start = (0, time.time() - 5)
        wait_until(lambda: app.kv().get_raw("config") == provisioning.read_bytes(), 30, 0.2, what="provisioned")
        latencies["provisioning file"] = w.data_after(start, "P_total")
        # said on u/log/msg too, possibly before the recorder subscribed: node's own log has it for sure
        wait_until(lambda: "running, from the provisioning file" in app.logs("node"), 30, 0.2, what="node's log")
        wanted = {"node", "publisher", "webui", f"bus-tcp_127.0.0.1_{sim.port}", "bus-sys"}
        # a program is RUNNING once up for its startsecs, which can come after its first data
        pids = wait_until(lambda: p if wanted <= set(p := bus_pids(app)) else None, 30, 0.2, what=str(wanted))

        # -- d/config: 100,000 levels (node exited on it) and one byte over the size: refused, said, A runs on
        for bad, note in (
            (too_deep(site(sim.port, "freq"), 100_000), DEEP_NOTE),
            (too_big(site(sim.port, "freq")), SIZE_NOTE),
        ):
            mark = w.mark()
            publish(app.port, "d/config", bad, qos=2, **local_auth(app.data))
            text = w.log_after(mark, "config from d/config refused, the previous config keeps running", note)
            assert text.startswith("config from d/config refused")
            w.data_after(w.mark(), "P_total")
        assert bus_pids(app) == pids, "no program restarted"
        # ... and at the limits: stored, runs
        mark = w.mark()
        b = at_limits(site(sim.port, "freq"))
        publish(app.port, "d/config", b, qos=2, **local_auth(app.data))
        latencies["d/config"] = w.data_after(mark, "freq")
        assert app.kv().get_raw("config") == b
        w.log_after(mark, "running, from d/config")

        # -- the web UI: 5000 levels (the crash loop), 100,000 (the 500), one byte over: refused on the page
        base = f"http://127.0.0.1:{web_port}"
        wait_until(lambda: health(base), 60, 0.5, what="the web UI")
        s = login(base, (app.data / "webui-initial-password").read_text().strip())
        token = re.search(r'<meta name="csrf" content="([^"]+)"', s.get(base + "/config").text).group(1)
        for bad, note in (
            (too_deep(site(sim.port, "total_yield"), 5000), DEEP_NOTE),
            (too_deep(site(sim.port, "total_yield"), 100_000), DEEP_NOTE),
            (too_big(site(sim.port, "total_yield")), SIZE_NOTE),
        ):
            mark = w.mark()
            r = s.post(base + "/config", data={"csrf": token}, files={"file": ("c.json", bad)}, timeout=60)
            assert r.status_code == 400 and "Not applied" in r.text and note in r.text
            w.log_after(mark, "config from the web UI refused", note)
            w.data_after(w.mark(), "freq")
        assert app.kv().get_raw("config") == b and bus_pids(app) == pids
        mark = w.mark()
        c = at_limits(site(sim.port, "total_yield"))
        r = s.post(
            base + "/config", data={"csrf": token, "cloud": "replace"}, files={"file": ("c.json", c)}, timeout=60
        )
        assert r.status_code == 200 and "Config applied" in r.text
        latencies["web UI"] = w.data_after(mark, "total_yield")
        assert app.kv().get_raw("config") == c
        w.log_after(mark, "running, from the web UI")

        # -- written to the KV store by no door: the buses, the publisher, node and the web UI refuse to load
        # it and keep the previous config (it crash-looped every bus before)
        pids = bus_pids(app)
        mark = w.mark()
        kv = app.kv()
        kv.set_raw("config", too_deep(site(sim.port, "freq"), 5000))
        kv.close()
        bus = f"bus-tcp_127.0.0.1_{sim.port}"
        for prog in (bus, "bus-sys", "publisher", "node"):
            wait_until(
                lambda prog=prog: "config cannot be used, keeping the previous one" in app.logs(prog),
                30,
                0.5,
                what=prog,
            )
            assert DEEP_NOTE in app.logs(prog)
        for _ in range(3):
            w.data_after(w.mark(), "total_yield")
        assert bus_pids(app) == pids, "no program restarted"
        page = s.get(base + "/config", timeout=30)
        assert page.status_code == 200 and "The stored config cannot be used" in page.text and DEEP_NOTE in page.text
        assert requests.get(base + "/health", timeout=10).status_code == 200

        # -- the AMMP API: 100,000 levels refused (said once), then a config at the limits stored and run
        mark = w.mark()
        api.set_config(too_deep(site(sim.port, "status"), 100_000))
        w.log_after(mark, "config from the cloud API refused", DEEP_NOTE)
        w.data_after(w.mark(), "total_yield")
        mark = w.mark()
        e = at_limits(site(sim.port, "status"))
        api.set_config(e)
        latencies["cloud API"] = w.data_after(mark, "status", timeout=90)
        assert app.kv().get_raw("config") == e
        assert bus_pids(app) == pids
        assert "Traceback" not in app.logs("node") + app.logs("bus-") + app.logs("publisher") + app.logs("webui")
        rec.stop()

        # -- up --config at the limits: stored, the appliance runs it (the cloud has no config now: the node
        # is cloud-managed and would put the cloud's back at its first check)
        assert app.stop() == 0
        api.set_config(None)
        f = at_limits(site(sim.port, "V_L1"))
        app.config_file.write_bytes(f)
        app.start()
        wait_until(lambda: port_open(app.port), 30, 0.2, what="the local broker")
        rec = Recorder(app.port, "u/data", "u/log/msg").start()
        w = Watch(rec)
        latencies["up --config"] = w.data_after((0, time.time() - INTERVAL), "V_L1")
        assert app.kv().get_raw("config") == f
        wait_until(lambda: "running, from up --config" in app.logs("node"), 30, 0.2, what="node's log")
        rec.stop()
        print("time from a config at the limits to its first data:", {k: f"{v:.1f} s" for k, v in latencies.items()})
    finally:
        if app.proc is not None:
            app.stop()
        api.stop()


def health(base: str) -> bool:
    try:
        return requests.get(base + "/health", timeout=5).status_code == 200
    except requests.ConnectionError:
        return False


def login(base: str, password: str) -> requests.Session:
    s = requests.Session()
    page = s.get(base + "/login", timeout=30)
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    r = s.post(base + "/login", data={"csrf": token, "password": password, "next": "/"}, timeout=30)
    assert r.status_code == 200, r.text[:300]
    return s
