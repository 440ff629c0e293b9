"""The web UI in Debian's Chromium (Playwright, headless) against the whole appliance (`ammp-edge up
--config`) with a simulated inverter: log in, live values, a chart, an invalid config, a device's unit
id fixed, a device test, a network scan of loopback, logs, settings, log out. Screenshots of every page
at desktop and phone width go to test-artifacts/screenshots/."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
import requests

from helpers.appliance import Appliance
from helpers.brokers import wait_until
from helpers.common import REPO, free_port
from helpers.webui import WebUI

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = REPO / "test-artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (scripts/setup --test)"),
]


@pytest.fixture
def browser(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=ARGS, headless=True, viewport=DESKTOP
        )
        yield b
        b.close()


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}-desktop.png"), full_page=True)
    page.set_viewport_size(PHONE)
    page.wait_for_timeout(150)
    page.screenshot(path=str(SHOTS / f"{name}-phone.png"), full_page=True)
    page.set_viewport_size(DESKTOP)


def config(sim_port: int, unit: int) -> dict:
    return {
        "devices": {
            "logger": {"name": "This logger", "driver": "sys_generic", "reading_type": "sys", "vendor_id": "lg"},
            "inverter": {
                "name": "SMA inverter (simulated)",
                "driver": "sma_stp25000",
                "reading_type": "modbustcp",
                "vendor_id": "inv-1",
                "timeout": 1,
                "address": {"host": "127.0.0.1", "port": sim_port, "unit_id": unit},
            },
        },
        "readings": {
            "cpu": {"device": "logger", "var": "cpu_load"},
            "p": {"device": "inverter", "var": "P_total"},
            "f": {"device": "inverter", "var": "freq"},
            "e": {"device": "inverter", "var": "total_yield"},
            "st": {"device": "inverter", "var": "status"},
        },
        "read_interval": 2,
    }


def test_commissioning_in_a_browser(tmp_path, simulator, builtin_drivers, browser):
    sim = simulator({3: builtin_drivers["sma_stp25000"]})
    web_port = free_port()
    app = Appliance(
        tmp_path / "a",
        config(sim.port, unit=4),
        None,
        AE_WEBUI_PORT=web_port,
        AE_WEBUI_HOST="127.0.0.1",
        LOGGING_LEVEL="info",
    )
    app.start()
    base = f"http://127.0.0.1:{web_port}"
    try:
        wait_until(lambda: _health(base), 30, 0.2, what="webui /health")
        password = (app.data / "webui-initial-password").read_text().strip()
        page = browser.new_page()
        js_errors: list[str] = []  # script errors and CSP violations
        page.on("pageerror", lambda e: js_errors.append(str(e)))
        page.on(
            "console",
            lambda m: (
                js_errors.append(m.text) if m.type == "error" and "Failed to load resource" not in m.text else None
            ),
        )

        # -- without login, everything but /health leads to the login page; a forged POST is refused
        page.goto(base + "/live")
        assert page.url.startswith(base + "/login")
        assert page.request.post(base + "/config", form={"text": "{}"}).status in (401, 403)
        shot(page, "login")
        page.fill("#password", "not-the-password")
        page.click("button[type=submit]")
        assert "Wrong password" in page.inner_text("#login-error")
        page.fill("#password", password)
        page.click("button[type=submit]")
        page.wait_for_url(base + "/live")

        # -- status page
        page.goto(base + "/")
        assert page.inner_text("#node-id") == app.node_id
        wait_until(lambda: page.reload() or "RUNNING" in page.inner_text("#programs"), 20, 1, what="programs")
        assert "webui" in page.inner_text("#programs")
        shot(page, "status")
        csrf = page.get_attribute('meta[name="csrf"]', "content")
        assert page.request.post(base + "/config", form={"text": "{}"}).status == 403  # session, no token
        assert csrf

        # -- live readings: the wrong unit id answers nothing; the sys device's values arrive
        page.goto(base + "/live")
        page.wait_for_selector(
            '[data-device="logger"] tr[data-field="cpu_load"] td.value:not(:text("–"))', timeout=30000
        )
        page.wait_for_selector('[data-device="inverter"] .bad:text("no answer")', timeout=30000)

        # -- an invalid config is refused with its paths; the old one keeps running
        before = app.kv().get_raw("config")
        bad = config(sim.port, unit=999)
        bad["read_interval"] = 0
        page.goto(base + "/config")
        page.fill("#config-text", json.dumps(bad))
        page.click("#config-submit")
        errors = page.inner_text("#config-errors")
        assert "read_interval" in errors and "Not applied" in errors
        shot(page, "config-invalid")
        assert app.kv().get_raw("config") == before

        # -- fix the inverter's unit id: its bus reloads and values appear
        page.goto(base + "/config/device/inverter")
        shot(page, "device-edit")
        page.fill("#unit_id", "3")
        page.click("#device-save")
        page.wait_for_url(re.compile(r".*/config\?applied=1"))
        assert json.loads(app.kv().get_raw("config"))["devices"]["inverter"]["address"]["unit_id"] == 3
        shot(page, "config")
        page.goto(base + "/live")
        cell = '[data-device="inverter"] tr[data-field="P_total"] td.value'
        page.wait_for_function(
            f"() => {{ const c = document.querySelector('{cell}'); return c && /\\d/.test(c.textContent); }}",
            timeout=60000,
        )
        first = page.inner_text(cell)
        page.wait_for_function(
            f"() => document.querySelector('{cell}').textContent !== {json.dumps(first)}", timeout=30000
        )
        # -- a chart of the field's history
        page.click('[data-device="inverter"] tr[data-field="P_total"] .field-link')
        page.wait_for_selector("#chart svg path.line", timeout=15000)
        shot(page, "live-chart")

        # -- test a device: raw registers beside decoded values, one register in four orders
        page.goto(base + "/test?device=inverter")
        page.click("#test-read")
        page.wait_for_selector("#test-table", timeout=20000)
        assert "P_total" in page.inner_text("#test-table")
        page.click("#inspect-read")
        page.wait_for_selector("#inspect-table, #inspect-result .error", timeout=20000)
        assert page.is_visible("#inspect-table"), page.inner_text("#inspect-result")
        assert all(o in page.inner_text("#inspect-table") for o in ("ABCD", "CDAB", "BADC", "DCBA")), page.inner_text(
            "#inspect-table"
        )
        shot(page, "test-device")

        # -- a network scan of loopback, in the background
        page.goto(base + "/scans")
        if page.is_enabled("#scan-network button"):
            page.fill("#scan-targets", "127.0.0.1")
            page.fill('#scan-network input[name="ports"]', f"22, 80, 443, 502, {sim.port}")
            page.click("#scan-network button")
            page.wait_for_selector('.job[data-state="done"], .job[data-state="failed"]', timeout=120000)
            assert page.get_attribute(".job", "data-state") == "done", page.inner_text(".job")
            assert "127.0.0.1" in page.inner_text(".job")
            shot(page, "scans")
            # a found device goes into the config in one step
            page.click('.job a:text("add to config")')
            page.fill('input[name="key"]', "inverter2")
            page.select_option("#driver", "sma_stp25000")
            page.fill("#unit_id", "3")
            page.click("#device-save")
            page.wait_for_url(re.compile(r".*/config\?applied=1"))
            added = json.loads(app.kv().get_raw("config"))["devices"]["inverter2"]
            assert added["address"] == {"host": "127.0.0.1", "port": sim.port, "unit_id": 3}
        else:
            shot(page, "scans")

        # -- logs and settings
        page.goto(base + "/logs?program=webui")
        page.wait_for_function(
            "() => document.querySelector('#log-text').textContent.includes('web UI on')", timeout=15000
        )
        shot(page, "logs")
        page.goto(base + "/settings")
        shot(page, "settings")

        # -- log out
        page.click("#logout")
        page.wait_for_url(re.compile(r".*/login"))
        page.goto(base + "/")
        assert page.url.startswith(base + "/login")
        assert not js_errors, js_errors
    finally:
        app.stop()


# Where `next` could send the browser after logging in, as an attacker would write the link. Browsers drop
# tab, CR and LF inside a URL and read a backslash as a slash: the first ones became //evil.example.
REDIRECTS = [
    "/%09/evil.example",
    "/%0d/evil.example",
    "/%0a/evil.example",
    "/%0D%0A/evil.example",
    "/%00/",
    "//evil.example",
    "/%2F/evil.example",
    "/%5Cevil.example",
    "/%5C%5Cevil.example",
    "%2F%2Fevil.example",
    "https://evil.example/",
    "/%E2%80%8B/evil.example",
]


def test_after_login_the_browser_stays_on_this_ui(tmp_path, isolated_dirs, browser):
    web = WebUI(isolated_dirs[0], tmp_path / "webui.log").start()
    try:
        page = browser.new_page()
        own = urlsplit(web.base).netloc
        for target in [*REDIRECTS, quote("/live?x=1", safe="")]:
            page.goto(f"{web.base}/login?next={target}")
            assert page.url.startswith(web.base + "/login")
            page.fill("#password", web.password())
            try:
                with page.expect_navigation(timeout=30000):
                    page.click("button[type=submit]")
            except Exception as exc:  # noqa: BLE001 - playwright's errors: a failed navigation, a timeout
                pytest.fail(f"next={target}: after login the browser is at {page.url} ({exc})")
            assert urlsplit(page.url).netloc == own, (target, page.url)
            assert not page.url.startswith(web.base + "/login"), (target, page.url, page.content()[:300])
        assert page.url == web.base + "/live?x=1"  # a path of this UI is where the browser goes
    finally:
        web.stop()


def _health(base: str) -> bool:
    try:
        return requests.get(base + "/health", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False
