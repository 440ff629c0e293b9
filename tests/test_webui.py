"""The web UI over HTTP (cheroot in a thread, requests as the client): security, status, live readings,
configuration, device test, scans (with a stand-in scan function), logs and settings.
The browser tests (Chromium against the whole appliance) are in test_webui_browser.py."""

from __future__ import annotations

import functools
import json
import re
import stat
import threading
import time

import pytest
import requests

from ammp_edge.core import credentials, keys, paths
from ammp_edge.core.kvs import KVStore, cache as kv_cache
from ammp_edge.webui import auth, jobs as jobs_mod
from helpers.common import free_port


def wait_for(fn, timeout=10.0, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = fn()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("timed out")


@pytest.fixture
def webui(monkeypatch):
    from ammp_edge.webui import server

    monkeypatch.setenv("MQTT_BRIDGE_PORT", str(free_port()))  # no broker: the UI must not care
    port = free_port()
    stop = threading.Event()
    th = threading.Thread(target=server.serve, args=(stop, "127.0.0.1", port), daemon=True)
    th.start()
    base = f"http://127.0.0.1:{port}"

    def up():
        try:
            return requests.get(base + "/health", timeout=2).status_code in (200, 503)
        except requests.ConnectionError:
            return False

    wait_for(up)
    yield base
    stop.set()
    th.join(10)


def password() -> str:
    return paths.webui_initial_password_path().read_text().strip()


def login(base: str, pw: str | None = None, timeout: float | None = None) -> requests.Session:
    """A session logged in (or not: see s.last_login); `timeout` bounds each of its requests."""
    s = requests.Session()
    if timeout is not None:
        s.request = functools.partial(s.request, timeout=timeout)
    page = s.get(base + "/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    r = s.post(base + "/login", data={"csrf": token, "password": pw or password(), "next": "/"}, allow_redirects=False)
    s.last_login = r
    return s


def csrf_of(s: requests.Session, base: str, path: str = "/") -> str:
    return re.search(r'<meta name="csrf" content="([^"]+)"', s.get(base + path).text).group(1)


def config_doc(sim_port: int, unit: int = 3) -> dict:
    return {
        "devices": {
            "inv": {
                "name": "Inverter",
                "driver": "sma_stp25000",
                "reading_type": "modbustcp",
                "vendor_id": "inv-1",
                "address": {"host": "127.0.0.1", "port": sim_port, "unit_id": unit},
                "timeout": 1,
            }
        },
        "readings": {"p": {"device": "inv", "var": "P_total"}, "f": {"device": "inv", "var": "freq"}},
        "read_interval": 10,
    }


# -- security ---------------------------------------------------------------------------------------


def test_initial_password_is_random_private_and_only_hashed_in_the_store(webui):
    path = paths.webui_initial_password_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    pw = password()
    assert len(pw) >= 12
    stored = KVStore().get(keys.WEBUI_PASSWORD)
    assert stored["scheme"] == "scrypt" and pw not in json.dumps(stored)
    assert credentials.verify_password(pw, stored) and not credentials.verify_password(pw + "x", stored)


def test_an_initial_password_file_given_before_the_first_start_is_used(tmp_path):
    paths.webui_initial_password_path().parent.mkdir(parents=True, exist_ok=True)
    paths.webui_initial_password_path().write_text("from-the-image-42\n")
    store = KVStore()
    assert credentials.ensure_password(store) == "from-the-image-42"
    assert credentials.verify_password("from-the-image-42", store.get(keys.WEBUI_PASSWORD))


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/live",
        "/config",
        "/config/download",
        "/test",
        "/scans",
        "/logs",
        "/settings",
        "/config/device/inv",
        "/config/add",
    ],
)
def test_every_page_but_health_needs_a_login(webui, path):
    r = requests.get(webui + path, allow_redirects=False)
    assert r.status_code == 303 and r.headers["Location"].startswith("/login?next=")


def test_api_without_login_is_401_and_health_is_public(webui):
    assert requests.get(webui + "/api/live").status_code == 401
    assert requests.post(webui + "/config", data={"text": "{}"}).status_code == 401
    r = requests.get(webui + "/health")
    assert r.headers["Content-Type"] == "application/json" and "status" in r.json()
    system = r.json()["system"]  # the device facts (the Pi image's boot test reads them too)
    assert system["data_total_bytes"] > system["data_free_bytes"] > 0 and system["memory_available_bytes"] > 0
    assert isinstance(system["root_read_only"], bool) and system["hostname"]
    assert system["settings_problems"] is None  # no settings file outside the Pi image


def test_login_logout_and_cookie_flags(webui):
    bad = login(webui, "wrong-password")
    assert bad.last_login.status_code == 401 and "Wrong password" in bad.last_login.text
    assert bad.get(webui + "/", allow_redirects=False).status_code == 303
    s = login(webui)
    assert s.last_login.status_code == 303
    cookie = s.last_login.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert s.get(webui + "/").status_code == 200
    token = csrf_of(s, webui)
    stolen = dict(s.cookies)
    r = s.post(webui + "/logout", data={"csrf": token}, allow_redirects=False)
    assert r.status_code == 303
    assert requests.get(webui + "/", cookies=stolen, allow_redirects=False).status_code == 303  # revoked


def test_post_without_or_with_a_wrong_csrf_token_is_refused(webui):
    s = login(webui)
    before = KVStore().get_raw("config")
    for data in ({"text": "{}"}, {"text": "{}", "csrf": "forged"}):
        r = s.post(webui + "/config", data=data)
        assert r.status_code == 403
    assert s.post(webui + "/api/scans", json={"kind": "env"}).status_code == 403
    assert KVStore().get_raw("config") == before
    other = requests.post(webui + "/login", data={"password": password()}, allow_redirects=False)
    assert other.status_code == 403  # the login form has its own token
    r = s.post(
        webui + "/settings/loglevel",
        data={"csrf": csrf_of(s, webui), "log_level": "debug"},
        headers={"Origin": "http://evil.example"},
    )
    assert r.status_code == 403


def test_login_attempts_are_rate_limited(webui):
    for _ in range(auth.LoginLimiter.FREE):
        assert login(webui, "nope-nope").last_login.status_code == 401
    r = login(webui, "nope-nope").last_login
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert login(webui).last_login.status_code == 429  # even the right password waits


def test_password_change_ends_sessions_and_removes_the_initial_file(webui):
    s = login(webui)
    token = csrf_of(s, webui, "/settings")
    r = s.post(
        webui + "/settings/password", data={"csrf": token, "current": password(), "new": "short", "repeat": "short"}
    )
    assert r.status_code == 400 and "at least" in r.text
    r = s.post(
        webui + "/settings/password",
        data={"csrf": token, "current": password(), "new": "a-new-long-pass", "repeat": "a-new-long-pass"},
        allow_redirects=False,
    )
    assert r.status_code == 303
    assert not paths.webui_initial_password_path().exists()
    assert s.get(webui + "/", allow_redirects=False).status_code == 303
    assert login(webui, "a-new-long-pass").get(webui + "/").status_code == 200


def test_reset_password_command(capsys):
    from ammp_edge.cli import main

    assert main(["webui", "--reset-password"]) == 0
    pw = re.search(r"new web UI password: (\S+)", capsys.readouterr().out).group(1)
    assert credentials.verify_password(pw, KVStore().get(keys.WEBUI_PASSWORD)) and password() == pw


def test_user_text_is_escaped(webui):
    doc = config_doc(1)
    doc["devices"]["inv"]["name"] = "<script>alert(1)</script>"
    KVStore().set("config", doc)
    s = login(webui)
    for path in ("/config", "/live"):
        text = s.get(webui + path).text
        assert "<script>alert(1)" not in text and "&lt;script&gt;alert(1)" in text
    assert "Content-Security-Policy" in s.get(webui + "/").headers


# -- status, live readings -----------------------------------------------------------------------------


def test_status_page_and_api(webui):
    KVStore().set("node_id", "0123456789ab")
    s = login(webui)
    page = s.get(webui + "/")
    assert page.status_code == 200 and "0123456789ab" in page.text and "Network interfaces" in page.text
    data = s.get(webui + "/api/status").json()
    assert data["outbox"]["count"] == 0 and any(i["name"] == "lo" for i in data["interfaces"])


def test_live_readings_from_the_cache_and_the_outbox(webui):
    from ammp_edge.delivery.outbox import Outbox

    KVStore().set("config", config_doc(1))
    now = int(time.time())
    c = kv_cache()
    c.set(
        "last_readings",
        [{"_d": "inv", "_vid": "inv-1", "P_total": 1200.5, "freq": None, "_s": [{"c": "grid fault", "l": 3}]}],
    )
    c.set("last_readings_ts", now - 10)
    box = Outbox()
    box.put(
        {
            "t": now,
            "bus": "tcp_127.0.0.1_1",
            "devices": [{"_d": "inv", "_vid": "inv-1", "P_total": 1300.0, "freq": None}],
            "duration": 0.05,
            "requests": 2,
            "errors": {"inv": ["registers 1..2: timeout"]},
        }
    )
    box.close()
    s = login(webui)

    def live():
        # the cache (status) and the outbox (value) may be sampled in different rounds: wait for both
        d = s.get(webui + "/api/live").json()["devices"]
        return d if d and d[0]["fields"][0]["value"] == 1300.0 and d[0]["status"] else None

    dev = wait_for(live)[0]
    fields = {f["name"]: f for f in dev["fields"]}
    assert fields["P_total"]["unit"] == "W" and fields["freq"]["null"] and not dev["stale"]
    assert dev["status"] == [{"c": "grid fault", "l": 3}]
    hist = s.get(webui + "/api/history", params={"device": "inv", "field": "P_total"}).json()["points"]
    assert hist == [[now - 10, 1200.5], [now, 1300.0]]
    status = s.get(webui + "/api/status").json()
    assert status["buses"]["tcp_127.0.0.1_1"]["errors"] == {"inv": ["registers 1..2: timeout"]}
    assert status["outbox"]["count"] == 1


# -- configuration ----------------------------------------------------------------------------------------


def test_invalid_config_is_refused_with_paths_and_the_old_one_kept(webui):
    good = config_doc(1502)
    KVStore().set("config", good)
    before = KVStore().get_raw("config")
    s = login(webui)
    token = csrf_of(s, webui, "/config")
    bad = config_doc(70000)
    bad["devices"]["inv"]["driver"] = "no_such_driver"
    r = s.post(webui + "/config", data={"csrf": token, "text": json.dumps(bad)})
    assert r.status_code == 400 and "Not applied" in r.text
    assert "devices.inv.driver" in r.text
    r = s.post(webui + "/config", data={"csrf": token, "text": "{not json"})
    assert r.status_code == 400 and "not valid JSON" in r.text
    r = s.post(webui + "/config", data={"csrf": token}, files={"file": ("c.json", b'{"devices": []}')})
    assert r.status_code == 400 and "devices" in r.text
    assert KVStore().get_raw("config") == before
    new = config_doc(1503)
    r = s.post(webui + "/config", data={"csrf": token}, files={"file": ("c.json", json.dumps(new).encode())})
    assert r.status_code == 200 and "Config applied" in r.text
    assert json.loads(KVStore().get_raw("config")) == new
    assert s.get(webui + "/config/download").json() == new
    r = s.post(webui + "/config/restore", data={"csrf": token})
    assert json.loads(KVStore().get_raw("config")) == good


def test_edit_and_add_a_device(webui):
    KVStore().set("config", config_doc(1502))
    s = login(webui)
    form = s.get(webui + "/config/device/inv").text
    assert 'name="unit_id"' in form and 'value="3"' in form
    token = csrf_of(s, webui, "/config")
    data = {
        "csrf": token,
        "driver": "sma_stp25000",
        "enabled": "on",
        "host": "127.0.0.1",
        "port": "1502",
        "unit_id": "300",
        "reading_type": "modbustcp",
    }
    r = s.post(webui + "/config/device/inv", data=data)
    assert r.status_code == 400 and "unit_id" in r.text
    r = s.post(webui + "/config/device/inv", data={**data, "unit_id": "7"}, allow_redirects=False)
    assert r.status_code == 303
    assert json.loads(KVStore().get_raw("config"))["devices"]["inv"]["address"]["unit_id"] == 7
    r = s.post(
        webui + "/config/add",
        data={
            "csrf": token,
            "key": "meter",
            "reading_type": "modbustcp",
            "driver": "eastron_sdm530",
            "host": "10.0.0.9",
            "port": "502",
            "unit_id": "1",
        },
        allow_redirects=False,
    )
    assert r.status_code == 303
    doc = json.loads(KVStore().get_raw("config"))
    assert doc["devices"]["meter"]["address"] == {"host": "10.0.0.9", "port": 502, "unit_id": 1}
    assert sum(1 for r in doc["readings"].values() if r["device"] == "meter") > 5


# -- test a device ---------------------------------------------------------------------------------------------


def test_read_a_device_once_with_raw_registers_and_all_orders(webui, simulator, builtin_drivers):
    sim = simulator({3: builtin_drivers["sma_stp25000"]}, values={3: {"P_total": 4321.0}})
    KVStore().set("config", config_doc(sim.port))
    s = login(webui)
    token = csrf_of(s, webui, "/test")
    r = s.post(webui + "/api/test/read", json={"device": "inv"}, headers={"X-CSRF-Token": token}).json()
    rows = {f["name"]: f for f in r["fields"]}
    assert rows["P_total"]["value"] == 4321.0 and len(rows["P_total"]["raw"]) == 2 and rows["P_total"]["error"] is None
    manual = {
        "driver": "sma_stp25000",
        "reading_type": "modbustcp",
        "host": "127.0.0.1",
        "port": str(sim.port),
        "unit_id": "3",
    }
    r = s.post(webui + "/api/test/read", json=manual, headers={"X-CSRF-Token": token}).json()
    assert {f["name"]: f["value"] for f in r["fields"]}["P_total"] == 4321.0
    reg = rows["P_total"]["register"]
    r = s.post(
        webui + "/api/test/register",
        json={"device": "inv", "register": reg, "fncode": 3},
        headers={"X-CSRF-Token": token},
    ).json()
    at = next(x for x in r["starts"] if x["register"] == reg)
    orders = {o["order"]: o for o in at["orders"]}
    assert set(orders) == {"ABCD", "CDAB", "BADC", "DCBA"} and orders["ABCD"]["int32"] == 4321
    assert [x["register"] for x in r["starts"]] == [reg - 1, reg, reg + 1]
    r = s.post(webui + "/api/test/read", json={**manual, "unit_id": "9"}, headers={"X-CSRF-Token": token}).json()
    assert all(f["error"] for f in r["fields"])
    r = s.post(webui + "/api/test/read", json={**manual, "host": "bad host;rm"}, headers={"X-CSRF-Token": token})
    assert r.status_code == 400 and "host" in r.json()["error"]


# -- scans (the runner, with a stand-in scan function) ------------------------------------------------------


def test_job_runner_progress_result_and_cancel():
    gate = threading.Event()

    def fake(targets=None, ports=(), progress=None, cancel=None):
        progress(0.5, "half way")
        gate.wait(5)
        if cancel.is_set():
            return []
        return [{"ipv4": "127.0.0.1", "ports": ["502"]}]

    runner = jobs_mod.Jobs(resolve=lambda kind: fake)
    job = runner.start("network", {"targets": ["127.0.0.1"], "ports": (502,)})
    wait_for(lambda: job.fraction == 0.5)
    with pytest.raises(ValueError):
        runner.start("network", {})
    gate.set()
    wait_for(lambda: job.state == "done")
    assert job.result == [{"ipv4": "127.0.0.1", "ports": ["502"]}]
    gate.clear()
    job2 = runner.start("network", {})
    assert runner.cancel(job2.id)
    gate.set()
    wait_for(lambda: job2.state == "cancelled")


def test_scan_input_is_validated(webui):
    from ammp_edge.webui.settings import scan_args

    assert scan_args({"kind": "network", "targets": "127.0.0.1", "ports": "502, 80"}) == (
        "network",
        {"targets": ["127.0.0.1"], "ports": (502, 80)},
    )
    for body in (
        {"kind": "network", "targets": "10.0.0.0/8"},
        {"kind": "network", "targets": "x; reboot"},
        {"kind": "serial", "port": "/dev/../etc/passwd"},
        {"kind": "serial", "baudrate": "12"},
        {"kind": "rm"},
    ):
        with pytest.raises(ValueError):
            scan_args(body)


# -- settings ------------------------------------------------------------------------------------------------------


def test_settings_are_validated_and_the_custom_broker_password_kept(webui):
    s = login(webui)
    token = csrf_of(s, webui, "/settings")
    r = s.post(
        webui + "/settings/custom", data={"csrf": token, "host": "broker.example.com", "port": "70000", "tls": "on"}
    )
    assert r.status_code == 400 and "70000" in r.text
    assert KVStore().get("mqtt_bridge_custom") is None
    r = s.post(
        webui + "/settings/custom",
        data={
            "csrf": token,
            "host": "broker.example.com",
            "port": "8883",
            "tls": "on",
            "username": "site7",
            "password": "s3cret",
        },
    )
    assert r.status_code == 200
    r = s.post(
        webui + "/settings/custom",
        data={"csrf": token, "host": "broker2.example.com", "tls": "on", "username": "site7"},
    )
    assert r.status_code == 200 and "s3cret" not in s.get(webui + "/settings").text
    assert KVStore().get("mqtt_bridge_custom")["password"] == "s3cret"
    assert KVStore().get("mqtt_bridge_custom")["host"] == "broker2.example.com"
    s.post(webui + "/settings/bridges", data={"csrf": token, "stage": "on"})
    assert KVStore().get("mqtt_bridge_prod") is False and KVStore().get("mqtt_bridge_stage") is True
    assert (
        s.post(webui + "/settings/api", data={"csrf": token, "http_api_base_url": "javascript:alert(1)"}).status_code
        == 400
    )
    assert (
        s.post(
            webui + "/settings/api", data={"csrf": token, "http_api_base_url": "https://edge.example/api/v0"}
        ).status_code
        == 200
    )
    assert KVStore().get("http_api_base_url") == "https://edge.example/api/v0"
    assert s.post(webui + "/settings/loglevel", data={"csrf": token, "log_level": "loud"}).status_code == 400


def test_logs_api_refuses_bad_names(webui):
    s = login(webui)
    assert s.get(webui + "/api/logs/..%2f..%2fetc").status_code in (400, 404)
    assert "error" in s.get(webui + "/api/logs/node").json()  # no supervisord here


def test_config_generation_request_as_upstream():
    from ammp_edge.webui.settings import request_config_generation, tank_dims_from

    sent = []
    scan = {"time": "2026-01-01T00:00:00Z", "network_scan": [], "serial_scan": [], "speedwire_serials": []}
    dims = tank_dims_from({"tank": "on", "width": "2", "length": "3.5", "height": "1"})
    r = request_config_generation(scan, dims, lambda topic, text: sent.append((topic, json.loads(text))) or True)
    assert r["ok"] and sent[0][0] == "u/state/env_scan"
    assert sent[0][1]["generate_new_config"] is True and sent[0][1]["input_parameters"][0]["width"] == 2.0
    assert tank_dims_from({}) is None
    for bad in ({"tank": "on", "width": "0", "length": "1", "height": "1"}, {"tank": "on", "width": "x"}):
        with pytest.raises(ValueError):
            tank_dims_from(bad)
    assert not request_config_generation(scan, None, lambda topic, text: False)["ok"]


def test_sensor_addressing_actions_run_as_jobs(monkeypatch):
    from ammp_edge.node.scan import sensor_address

    monkeypatch.setattr(
        sensor_address, "holykell_sensor_address", lambda port, target: {"port": port, "new address": target}
    )
    runner = jobs_mod.Jobs()
    assert runner.available()["holykell_sensor_address_8"]
    job = runner.start("holykell_sensor_address_8", {"port": "/dev/ttyNOPE0"})
    wait_for(lambda: job.state != "running")
    assert job.state == "done" and job.result == {"port": "/dev/ttyNOPE0", "new address": 8}


def test_history_keeps_time_order_whichever_source_came_first(tmp_path, monkeypatch):
    """The cache (published cycles) and the outbox (newer, not yet sent) are sampled in turn: a point
    older than the last one seen is put in its place, a full history drops its oldest for it."""
    from ammp_edge.webui import state as st

    monkeypatch.setattr(st, "HISTORY_POINTS", 4)
    ws = st.WebState(KVStore(tmp_path / "kv.db"), KVStore(tmp_path / "cache.db"), watch_broker=False)
    ws.history.clear()
    ws._record(100, {"_d": "inv", "P": 3.0})  # the outbox's newer cycle first
    ws._record(90, {"_d": "inv", "P": 2.0})  # then the cache's older one
    ws._record(100, {"_d": "inv", "P": 3.5})  # the same t again: replaced
    assert list(ws.history[("inv", "P")]) == [(90, 2.0), (100, 3.5)]
    assert ws.latest["inv"][0] == 100 and ws.latest["inv"][1]["P"] == 3.5, "an older record never wins"
    for t in (110, 120):
        ws._record(t, {"_d": "inv", "P": float(t)})
    ws._record(95, {"_d": "inv", "P": 9.5})  # full: the oldest (90) goes
    assert [p[0] for p in ws.history[("inv", "P")]] == [95, 100, 110, 120]
    ws._record(80, {"_d": "inv", "P": 8.0})  # older than all of a full history: not kept
    assert [p[0] for p in ws.history[("inv", "P")]] == [95, 100, 110, 120]
