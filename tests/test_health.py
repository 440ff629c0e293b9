"""/health tells the truth (issue 12 item 3), against the whole appliance under a real supervisord: one
bus whose device never answers ("no data"), one bus process that hangs (SIGSTOP: "no readout"), one
killed again and again ("crash loop"), one whose config makes it exit at start ("process down"); the
Docker health check fails with the reasons, the status page lists them, and healthy buses are not
blamed. Thresholds: webui.status (MAX_RESTARTS, RESTART_WINDOW_S, NO_DATA_CYCLES, NO_DATA_MIN_S)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from ammp_edge.webui import status
from helpers.appliance import Appliance
from helpers.brokers import wait_until
from helpers.common import REPO, free_port
from helpers.webui import login

pytestmark = pytest.mark.slow

HEALTHCHECK = REPO / "image" / "rootfs" / "usr" / "lib" / "ammp-edge" / "healthcheck"
READ_INTERVAL = 2
LIMIT = max(status.NO_DATA_CYCLES * READ_INTERVAL, status.NO_DATA_MIN_S)


def device(port: int) -> dict:
    return {
        "driver": "sma_stp25000",
        "reading_type": "modbustcp",
        "vendor_id": f"inv-{port}",
        "timeout": 1,
        "address": {"host": "127.0.0.1", "port": port, "unit_id": 3},
    }


def site(ports: dict[str, int]) -> dict:
    devices = {k: device(p) for k, p in ports.items()}
    if "rare" in devices:
        devices["rare"]["min_read_interval"] = 3600  # read once an hour: left out of the cycles in between
    return {
        "devices": devices,
        "readings": {f"p_{k}": {"device": k, "var": "P_total"} for k in ports},
        "read_interval": READ_INTERVAL,
    }


def health(base: str) -> tuple[int, dict]:
    r = requests.get(base + "/health", timeout=30)
    return r.status_code, r.json()


def problems_of(body: dict) -> dict[str, dict]:
    return {p["program"]: p for p in body.get("problems", [])}


def test_health_reports_silent_hung_crash_looping_and_exiting_buses(tmp_path, simulator, builtin_drivers):
    sma = builtin_drivers["sma_stp25000"]
    good, looping, exiting, hung, rare = (simulator({3: sma}) for _ in range(5))
    mute = socket.socket()  # accepts connections (the kernel does), never answers a request
    mute.bind(("127.0.0.1", 0))
    mute.listen(16)
    ports = {
        "good": good.port,
        "loop": looping.port,
        "exit": exiting.port,
        "hung": hung.port,
        "rare": rare.port,
        "mute": mute.getsockname()[1],
    }
    bus = {k: f"bus-tcp_127.0.0.1_{p}" for k, p in ports.items()}
    web_port = free_port()
    app = Appliance(tmp_path / "a", site(ports), None, AE_WEBUI_PORT=web_port, AE_WEBUI_HOST="127.0.0.1")
    app.start()
    base = f"http://127.0.0.1:{web_port}"
    stopped_pid = None
    try:
        code, body = wait_until(lambda: _answer(base), 60, 0.5, what="/health")
        assert code == 200 and body["status"] == "ok" and body["problems"] == [], body  # every bus within its grace
        assert subprocess.run([sys.executable, str(HEALTHCHECK)], env=_env(web_port), timeout=30).returncode == 0

        # a hung bus process: it stays RUNNING for supervisord, but commits nothing
        wait_until(lambda: app.produced_ts(f"tcp_127.0.0.1_{ports['hung']}"), 30, 0.5, what="a cycle of the hung bus")
        stopped_pid = app.programs()[bus["hung"]]["pid"]
        os.kill(stopped_pid, signal.SIGSTOP)
        t_stop = time.time()
        mute_start = app.programs()[bus["mute"]]["start"]

        def silent_found():
            _, b = health(base)
            p = problems_of(b)
            return b if bus["mute"] in p and bus["hung"] in p else None

        body = wait_until(silent_found, LIMIT + 60, 1, what="no data and no readout on /health")
        t_found = time.time()
        p = problems_of(body)
        print(json.dumps(body["problems"], indent=1))
        assert p[bus["mute"]]["problem"] == "no data" and p[bus["mute"]]["bus"] == f"tcp_127.0.0.1_{ports['mute']}"
        assert "mute" in p[bus["mute"]]["why"]  # the device's errors, as the bus reported them
        assert p[bus["hung"]]["problem"] == "no readout"
        assert set(p) == {bus["mute"], bus["hung"]}, p  # the buses that work are not blamed
        # not before the threshold: the silent bus was given LIMIT seconds from its start
        assert t_found - mute_start >= LIMIT - 1 and t_found - t_stop >= LIMIT - READ_INTERVAL - 2
        r = subprocess.run(
            [sys.executable, str(HEALTHCHECK)], env=_env(web_port), capture_output=True, text=True, timeout=30
        )
        assert r.returncode == 1 and "no data" in r.stdout and "no readout" in r.stdout, r
        assert requests.get(base + "/health", timeout=30).status_code == 503
        s = login(base, (app.data / "webui-initial-password").read_text().strip())
        page = s.get(base + "/", timeout=30).text
        assert 'id="problems"' in page and "no data" in page and bus["mute"] in page

        # a program killed again and again is a crash loop, though RUNNING whenever one looks
        for _ in range(status.MAX_RESTARTS + 1):
            pid = app.kill_program(bus["loop"])
            wait_until(lambda pid=pid: _restarted(app, bus["loop"], pid), 30, 0.2, what="the bus restarted")
            time.sleep(2.5)  # the web UI samples supervisord every 2 s (and at each /health)
            health(base)
        body = wait_until(lambda: _with_problem(base, bus["loop"]), 30, 1, what="the crash loop on /health")
        loop = problems_of(body)[bus["loop"]]
        restarts = re.search(r"restarted (\d+) times", loop["why"])
        assert loop["problem"] == "crash loop" and restarts and int(restarts[1]) > status.MAX_RESTARTS, loop

        # a bus whose config makes it exit at start: node is down (it would remove the bus program), the
        # config loses the bus's device, the bus exits at each start ("no devices on this bus")
        app.stop_program("node")
        kv = app.kv()
        kv.set("config", site({k: v for k, v in ports.items() if k != "exit"}))
        kv.close()

        body = wait_until(lambda: _with_problem(base, bus["exit"]), 60, 1, what="the exiting bus on /health")
        p = problems_of(body)
        # BACKOFF when it exits within supervisord's startsecs, else RUNNING between quick restarts
        assert p[bus["exit"]]["problem"] in ("process down", "crash loop"), p[bus["exit"]]
        if p[bus["exit"]]["problem"] == "process down":
            assert "exits at start" in p[bus["exit"]]["why"], p[bus["exit"]]
        assert p["node"]["problem"] == "process down" and "STOPPED" in p["node"]["why"]
        assert p[bus["mute"]]["problem"] == "no data" and bus["good"] not in p  # told apart
    finally:
        if stopped_pid:
            os.kill(stopped_pid, signal.SIGCONT)
        app.stop()
        mute.close()


def _restarted(app: Appliance, name: str, old_pid: int) -> bool:
    info = app.programs().get(name)
    return bool(info) and info["statename"] == "RUNNING" and info["pid"] != old_pid


def _with_problem(base: str, program: str) -> dict | None:
    body = health(base)[1]
    return body if program in problems_of(body) else None


def _answer(base: str):
    try:
        return health(base)
    except requests.ConnectionError:
        return None


def _env(port: int) -> dict:
    return {**os.environ, "AE_WEBUI_PORT": str(port)}
