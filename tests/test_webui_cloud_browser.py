"""Cloud-managed or local, in Debian's Chromium (Playwright) against the whole appliance (`ammp-edge up`)
with the fake AMMP API (tests/helpers/fake_cloud.py) and the config check every CHECK_S seconds
(AE_CONFIG_CHECK_INTERVAL; an hour in the field).

(b) An edit saved without keeping: the page said the cloud's next config replaces it; at the next check
    the cloud's config comes back and the config page, the status page, /health and u/log/msg say so.
(a) An edit saved with "keep": the checks do not revert it (the cloud's config is not even fetched);
    a new config_id from the cloud replaces it, and the pages, /health and u/log/msg say so.
    Handing control back makes the node check at once and the cloud's config run again.
"""

from __future__ import annotations

import json
import re
import time

import pytest
import requests

from ammp_edge.core import config as cfg
from helpers.appliance import Appliance
from helpers.brokers import Recorder, port_open, wait_until
from helpers.common import free_port
from helpers.fake_cloud import FakeCloud
from test_webui_browser import _health, browser, shot  # noqa: F401 - the browser fixture

pytestmark = pytest.mark.slow

NODE_ID = "0123456789ab"
CHECK_S = 6


def site(port: int, *fields: str) -> dict:
    return {
        "devices": {
            "logger": {"name": "This logger", "driver": "sys_generic", "reading_type": "sys", "vendor_id": "lg"},
            "inverter": {
                "name": "SMA inverter (simulated)",
                "driver": "sma_stp25000",
                "reading_type": "modbustcp",
                "vendor_id": "inv-1",
                "timeout": 1,
                "address": {"host": "127.0.0.1", "port": port, "unit_id": 3},
            },
        },
        "readings": {
            "cpu": {"device": "logger", "var": "cpu_load"},
            **{f: {"device": "inverter", "var": f} for f in fields},
        },
        "read_interval": 2,
    }


def stored(app: Appliance) -> dict | None:
    raw = app.kv().get_raw("config")
    return json.loads(raw) if raw else None


def edit_name(page, base: str, name: str, button: str) -> None:
    page.goto(base + "/config/device/inverter")
    warning = page.inner_text(".cloud-choice")
    assert "The AMMP cloud manages this node's config: its next config" in warning and "replaces an edit" in warning
    page.fill('input[name="name"]', name)
    page.click(button)
    page.wait_for_url(re.compile(r".*/config\?applied=1"))


def test_cloud_managed_or_local_in_a_browser(tmp_path, simulator, builtin_drivers, browser):  # noqa: F811
    sim = simulator({3: builtin_drivers["sma_stp25000"]})
    web_port = free_port()
    api = FakeCloud().start()
    api.keys[NODE_ID] = "node-secret"
    x = site(sim.port, "P_total")
    api.set_config(x)
    app = Appliance(
        tmp_path / "a",
        {},
        None,
        node_id=NODE_ID,
        access_key="node-secret",
        AE_CONFIG_CHECK_INTERVAL=CHECK_S,
        AE_WEBUI_PORT=web_port,
        AE_WEBUI_HOST="127.0.0.1",
        LOGGING_LEVEL="info",
    )
    kv = app.kv()
    kv.set("http_api_base_url", api.base_url)
    kv.close()
    base = f"http://127.0.0.1:{web_port}"
    rec = None
    try:
        app.start(with_config=False)
        wait_until(lambda: port_open(app.port), 30, 0.2, what="the local broker")
        rec = Recorder(app.port, "u/log/msg").start()
        wait_until(lambda: stored(app) == x, 60, 0.5, what="the cloud's config")
        x_id = cfg.digest(x)
        wait_until(lambda: _health(base), 60, 0.5, what="webui /health")
        page = browser.new_page()
        page.goto(base + "/login")
        page.fill("#password", (app.data / "webui-initial-password").read_text().strip())
        page.click("button[type=submit]")
        page.wait_for_url(base + "/")

        page.goto(base + "/config")
        assert "Managed by the AMMP cloud" in page.inner_text("#config-managed")
        assert page.inner_text("#config-origin") == "the cloud API"
        health = requests.get(base + "/health", timeout=10).json()["config"]
        assert health["config_id"] == x_id and health["source"] == "api" and health["managed_by_cloud"] is True
        assert health["kept_locally"] is None and health["from"] == "the cloud API"
        shot(page, "config-managed")

        # -- (b) saved without keeping: the cloud's config comes back at the next check, and the UI says so
        edit_name(page, base, "edited, not kept", "#device-save")
        assert "its config replaces this edit at the next check" in page.inner_text("#config-applied")
        local = stored(app)
        assert local["devices"]["inverter"]["name"] == "edited, not kept"
        local_id = cfg.digest(local)
        assert page.inner_text("#config-origin") == "the web UI"
        assert f"the cloud's config {x_id} replaces it at the next check" in page.inner_text("#config-local")
        shot(page, "config-local-not-kept")
        saved = time.monotonic()
        wait_until(lambda: stored(app) == x, 4 * CHECK_S + 30, 0.5, what="the cloud's config back")
        back_after = time.monotonic() - saved
        page.goto(base + "/config")
        assert page.inner_text("#config-origin") == "the cloud API"
        replaced = page.inner_text("#config-replaced")
        assert f"The AMMP cloud's config replaced the local config {local_id} from the web UI" in replaced
        shot(page, "config-cloud-came-back")
        page.goto(base + "/")
        assert f"replaced the local config {local_id} (the web UI)" in page.inner_text("#status-config-source")
        assert page.inner_text("#status-config-control") == "managed by the AMMP cloud"
        health = requests.get(base + "/health", timeout=10).json()["config"]
        assert health["source"] == "api" and health["replaced_local"]["config_id"] == local_id
        msg = rec.wait_for(lambda m: f"config {x_id} running, from the cloud API" in m.text and local_id in m.text, 30)
        assert f"it replaced the local config {local_id} from the web UI" in msg.text

        # -- (a) saved with "keep": the checks leave it alone ...
        edit_name(page, base, "edited and kept", "#device-keep")
        assert "kept until the AMMP cloud sends a new config" in page.inner_text("#config-applied")
        kept = stored(app)
        kept_id = cfg.digest(kept)
        assert kept["devices"]["inverter"]["name"] == "edited and kept"
        kept_text = page.inner_text("#config-kept")
        assert f"the cloud's config {x_id}, the one it replaced, is not applied again" in kept_text
        shot(page, "config-kept")
        checks, fetches = api.calls("GET", "node"), api.calls("GET", "config")
        wait_until(lambda: api.calls("GET", "node") >= checks + 3, 6 * CHECK_S + 30, 0.5, what="three more checks")
        assert stored(app) == kept, "the hourly check did not revert the kept edit"
        assert api.calls("GET", "config") == fetches, "the cloud's old config was not even fetched"
        health = requests.get(base + "/health", timeout=10).json()["config"]
        assert health["source"] == "webui" and health["kept_locally"]["replaced"] == x_id
        page.goto(base + "/")
        assert "a local config is kept until the cloud sends a new one" in page.inner_text("#status-config-control")
        rec.wait_for(lambda m: f"config {kept_id} running, from the web UI" in m.text and "kept locally" in m.text, 30)

        # ... until the cloud sends a new config
        y = site(sim.port, "P_total", "freq")
        y_id = cfg.digest(y)
        api.set_config(y)
        sent = time.monotonic()
        wait_until(lambda: stored(app) == y, 4 * CHECK_S + 30, 0.5, what="the cloud's new config")
        new_after = time.monotonic() - sent
        page.goto(base + "/config")
        assert page.inner_text("#config-origin") == "the cloud API"
        assert f"replaced the local config {kept_id} from the web UI" in page.inner_text("#config-replaced")
        assert page.query_selector("#config-kept") is None
        health = requests.get(base + "/health", timeout=10).json()["config"]
        assert health["config_id"] == y_id and health["source"] == "api" and health["kept_locally"] is None
        assert health["replaced_local"]["config_id"] == kept_id
        msg = rec.wait_for(lambda m: f"config {y_id} running, from the cloud API" in m.text, 30)
        assert f"it replaced the local config {kept_id} from the web UI" in msg.text
        shot(page, "config-new-cloud-config")

        # -- hand control back: the node checks at once and the cloud's config runs again
        edit_name(page, base, "kept, then handed back", "#device-keep")
        assert page.query_selector("#config-kept") is not None
        page.click("#hand-back")
        clicked = time.monotonic()
        page.wait_for_url(re.compile(r".*/config\?handed_back=1"))
        assert "Control handed back to the AMMP cloud" in page.inner_text("#config-notice")
        wait_until(lambda: stored(app) == y, 4 * CHECK_S + 30, 0.2, what="the cloud's config after the hand back")
        handed_after = time.monotonic() - clicked
        assert "config check now, as asked in the web UI" in app.logs("node")
        page.goto(base + "/config")
        assert page.inner_text("#config-origin") == "the cloud API" and page.query_selector("#config-kept") is None
        print(
            f"cloud config back after an edit not kept: {back_after:.1f} s; new cloud config over a kept edit: "
            f"{new_after:.1f} s; after hand back: {handed_after:.1f} s (check interval {CHECK_S} s)"
        )
        assert "Traceback" not in app.logs("node") + app.logs("webui")
    finally:
        if rec is not None:
            rec.stop()
        app.stop()
        api.stop()
