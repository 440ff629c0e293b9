"""In Debian's Chromium (Playwright, headless) against the web UI server: an engineer adding a device
finds its driver by searching the catalogue; a network scan that found a SunSpec inverter adds it to
the config in one click, with a driver made from its model chain. Screenshots go to
test-artifacts/screenshots/."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from ammp_edge.core import keys
from ammp_edge.core.kvs import KVStore
from ammp_edge.node import scan
from test_sunspec import EXPECTED, image
from test_webui import password, webui  # noqa: F401 - the web UI fixture (a real server in a thread)
from test_webui_browser import ARGS, CHROMIUM, shot

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (scripts/setup --test)"),
]


@pytest.fixture
def page(tmp_path, webui):  # noqa: F811
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=ARGS, headless=True
        )
        p = ctx.new_page()
        p.goto(webui + "/login")
        p.fill("#password", password())
        p.click("button[type=submit]")
        p.wait_for_url(lambda url: "/login" not in url)
        yield p
        ctx.close()


def test_adding_a_device_finds_its_driver_in_the_catalogue(page, webui):  # noqa: F811
    page.goto(webui + "/config/add")
    page.fill("#driver-search", "huawei inverter")
    page.wait_for_selector('#driver-results button[data-driver="huawei_sun2000"]', timeout=15000)
    listed = page.inner_text("#driver-results")
    assert "Huawei SUN2000" in listed and "61 fields" in listed and "modbustcp/modbusrtu" in listed
    shot(page, "driver-search")
    page.click('#driver-results button[data-driver="huawei_sun2000"]')
    assert page.input_value("#driver") == "huawei_sun2000"
    page.fill('input[name="key"]', "inv")
    page.fill('input[name="vendor_id"]', "HW-1")
    page.fill('input[name="host"]', "127.0.0.1")
    page.click("#device-save")
    page.wait_for_url("**/config?applied=1")
    assert json.loads(KVStore().get_raw(keys.CONFIG))["devices"]["inv"]["driver"] == "huawei_sun2000"
    page.goto(webui + "/config/add")
    page.fill("#driver-search", "no such device anywhere")
    page.wait_for_selector("#driver-results li.muted", timeout=15000)
    assert page.inner_text("#driver-results") == "no driver matches"


def test_a_scanned_sunspec_inverter_is_added_in_one_click(page, webui, simulator, monkeypatch):  # noqa: F811
    sim = simulator({1: {"fields": {}}}, registers={1: {3: image(40000)}})
    monkeypatch.setattr(scan, "network_scan", functools.partial(scan.network_scan, modbus_ports=(sim.port,)))
    page.goto(webui + "/scans")
    if not page.is_enabled("#scan-network button"):
        pytest.skip("the network scan is not available here (nmap)")
    page.fill("#scan-targets", "127.0.0.1")
    page.fill('#scan-network input[name="ports"]', str(sim.port))
    page.click("#scan-network button")
    page.wait_for_selector('.job[data-state="done"], .job[data-state="failed"]', timeout=120000)
    assert page.get_attribute(".job", "data-state") == "done", page.inner_text(".job")
    assert "sunspec_base=40000" in page.inner_text(".job")
    page.click(".sunspec-look")
    page.wait_for_selector(".sunspec-message p", timeout=15000)
    assert "1 SunSpec device(s) found" in page.inner_text(".sunspec-message")
    assert "sunspec_127_0_0_1_1: Fronius Symo 10.0-3-M 33344455" in page.inner_text(".sunspec-message")
    page.click(".sunspec-apply")
    page.wait_for_selector(".sunspec-message.okbox p:has-text('stored')", timeout=15000)
    shot(page, "scan-sunspec")
    stored = json.loads(KVStore().get_raw(keys.CONFIG))
    readings = {r["var"] for r in stored["readings"].values() if r["device"] == "sunspec_127_0_0_1_1"}
    assert readings == set(EXPECTED)
