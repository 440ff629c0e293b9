"""The web UI as its own process (`ammp-edge webui` on loopback, the real cheroot/Bottle server), and the
client steps the attack tests share: a login form's token, logging in, a session from a chosen source
address (anything in 127.0.0.0/8 reaches a server on 127.0.0.1)."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import psutil
import requests
from requests.adapters import HTTPAdapter

from helpers.brokers import wait_until
from helpers.common import AMMP_EDGE, child_env, free_port


class WebUI:
    def __init__(self, data: Path, log: Path, **env):
        self.data, self.log = data, log
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = child_env(MQTT_BRIDGE_PORT=free_port(), **env)  # no broker: the UI must not care
        self.proc: subprocess.Popen | None = None

    def start(self) -> WebUI:
        with open(self.log, "a") as out:
            self.proc = subprocess.Popen(
                [*AMMP_EDGE, "webui", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until(self._answers, 60, 0.1, what="the web UI answering")
        return self

    def _answers(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
        try:
            return requests.get(self.base + "/login", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
            self.proc = None

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        t = psutil.Process(self.proc.pid).cpu_times()
        return t.user + t.system

    def password(self) -> str:
        return (self.data / "webui-initial-password").read_text().strip()


class FromAddress(HTTPAdapter):
    """Connections from one source address."""

    def __init__(self, ip: str):
        self.ip = ip
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.ip, 0)
        super().init_poolmanager(*args, **kwargs)


def session_from(ip: str | None = None) -> requests.Session:
    s = requests.Session()
    if ip:
        s.mount("http://", FromAddress(ip))
    return s


def login_form(s: requests.Session, base: str, query: str = "") -> str:
    """Fetch the login page (sets the pre-session cookie); its CSRF token."""
    page = s.get(base + "/login" + query, timeout=30)
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def post_login(s: requests.Session, base: str, token: str, password: str, next_: str = "/") -> requests.Response:
    return s.post(
        base + "/login",
        data={"csrf": token, "password": password, "next": next_},
        allow_redirects=False,
        timeout=60,
    )


def login(base: str, password: str, ip: str | None = None, s: requests.Session | None = None) -> requests.Session:
    s = s or session_from(ip)
    r = post_login(s, base, login_form(s, base), password)
    assert r.status_code == 303, (r.status_code, r.text[:300])
    return s


def csrf_of(s: requests.Session, base: str, path: str = "/") -> str:
    return re.search(r'<meta name="csrf" content="([^"]+)"', s.get(base + path, timeout=30).text).group(1)
