"""A local unprivileged user against the whole appliance (`ammp-edge up` under a real supervisord):
everything the appliance keeps (KV store with the session secret and access key, its WAL, the outbox,
the broker's persistence and rendered bridge configs with passwords, logs, supervisord's config and
socket, the initial password) is out of reach of `nobody`, also when an older version had left it
readable; and no log holds a password or secret. The attack this stops: read the session secret from
kvs-db/kvstore.db, forge a session cookie; or read the initial password in logs/webui.log."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import requests

from ammp_edge.core.kvs import KVStore
from helpers.appliance import Appliance
from helpers.brokers import wait_until
from helpers.common import AMMP_EDGE, child_env, free_port
from helpers.webui import login

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
BRIDGE_PASSWORD = "bridge-pw-8c1d47e2"
ACCESS_KEY = "access-key-5f0e9a3b"

# run as nobody: try to read every path given; print {path: "read" | "denied: ..."}
PROBE = """
import json, os, socket, sys
out = {}
for p in sys.argv[1:]:
    try:
        if p.endswith(".sock"):
            s = socket.socket(socket.AF_UNIX); s.connect(p); s.close()
        elif os.path.isdir(p):
            os.listdir(p)
        else:
            open(p, "rb").read(1)
        out[p] = "read"
    except OSError as exc:
        out[p] = "denied: " + type(exc).__name__
print(json.dumps(out))
"""


def as_nobody(paths: list[Path]) -> dict[str, str]:
    r = subprocess.run(
        [*NOBODY, sys.executable, "-I", "-c", PROBE, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture
def world_traversable_root():
    """pytest's tmp_path is 0700 (nobody could read nothing in it anyway): a root others can enter."""
    root = Path(tempfile.mkdtemp(prefix="ae-lu-", dir="/tmp"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_a_local_user_reads_nothing_of_the_appliance_and_no_log_holds_a_secret(world_traversable_root, isolated_dirs):
    root = world_traversable_root
    web_port = free_port()
    config = {
        "devices": {"lg": {"driver": "sys_generic", "reading_type": "sys", "vendor_id": "lg"}},
        "readings": {"m": {"device": "lg", "var": "memory_usage"}},
        "read_interval": 2,
    }
    app = Appliance(root / "a", config, None, access_key=ACCESS_KEY, AE_WEBUI_PORT=web_port, AE_WEBUI_HOST="127.0.0.1")
    kv = app.kv()
    kv.set(
        "mqtt_bridge_custom",
        {"host": "127.0.0.1", "port": free_port(), "tls": False, "username": "site7", "password": BRIDGE_PASSWORD},
    )
    kv.close()
    # what an older version left: everything readable by all
    (root / "a").chmod(0o755)
    (app.temp / "logs").mkdir(parents=True, exist_ok=True)
    old_log = app.temp / "logs" / "webui.log"
    old_log.write_text("an old log\n")
    for p in [app.data, app.temp, old_log, *app.data.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    control = root / "a" / "world-readable"
    control.write_text("x")
    control.chmod(0o644)

    app.start()
    try:
        base = f"http://127.0.0.1:{web_port}"
        password = (app.data / "webui-initial-password").read_text().strip()
        wait_until(lambda: _login_page(base), 60, 0.2, what="the web UI")
        s = login(base, password)  # a session: its cookie must not reach a log either
        assert s.get(base + "/", timeout=30).status_code == 200
        wait_until(lambda: (app.temp / "mosquitto" / "conf.d" / "bridge-custom.conf").exists(), 30, 0.2)

        private = [
            app.data,
            app.data / "kvs-db",
            app.data / "kvs-db" / "kvstore.db",
            app.data / "kvs-db" / "kvstore.db-wal",
            app.data / "kvs-db" / "kvstore.db-shm",
            app.data / "outbox",
            app.data / "outbox" / "cache.db",
            app.data / "outbox" / "cache.db-wal",
            app.data / "mosquitto",
            app.data / "webui-initial-password",
            app.temp,
            app.temp / "logs",
            app.temp / "logs" / "webui.log",
            app.temp / "logs" / "node.log",
            app.temp / "supervisord.log",
            app.temp / "supervisord.conf",
            app.temp / "supervisor.sock",
            app.temp / "supervisor.d" / "bus-sys.conf",
            app.temp / "mosquitto" / "mosquitto.conf",
            app.temp / "mosquitto" / "conf.d" / "bridge-custom.conf",
            app.temp / "ae-kvcache.db",
        ]
        for p in private:
            assert p.exists(), p
        seen = as_nobody([root / "a", control, *private])
        assert seen[str(root / "a")] == "read" and seen[str(control)] == "read", seen  # the probe can read
        readable = {p: v for p, v in seen.items() if v == "read" and p not in (str(root / "a"), str(control))}
        assert not readable, f"nobody can read: {sorted(readable)}"

        assert not loose_files(app), loose_files(app)  # no permission for group or others, at any depth

        # no password or secret in any log; the initial password is on `up`'s console only
        secret = KVStore(app.data / "kvs-db" / "kvstore.db").get("webui_secret")
        secrets = {
            "initial password": password,
            "session secret": secret,
            "session cookie": s.cookies["ae_session"],
            "access key": ACCESS_KEY,
            "bridge password": BRIDGE_PASSWORD,
        }
        logs = [*(app.temp / "logs").glob("*"), app.temp / "supervisord.log"]
        assert len(logs) > 5
        for f in logs:
            text = f.read_text(errors="replace")
            for what, value in secrets.items():
                assert value not in text, f"the {what} is in {f}"
        assert "the initial web UI password is in" in (app.temp / "logs" / "webui.log").read_text()
        console = app.up_log.read_text()
        assert password in console  # `up` shows it, so whoever starts the appliance finds it
        assert BRIDGE_PASSWORD in (app.temp / "mosquitto" / "conf.d" / "bridge-custom.conf").read_text()
    finally:
        assert app.stop() == 0
    assert (app.data / "mosquitto" / "mosquitto.db").exists()  # saved at shutdown
    assert not loose_files(app), loose_files(app)


def loose_files(app: Appliance) -> list[str]:
    """Files and directories of the appliance that group or others may use."""
    return [
        f"{p} {stat.filemode(p.lstat().st_mode)}"
        for top in (app.data, app.temp)
        for p in [top, *top.rglob("*")]
        if p.exists() and not p.is_symlink() and stat.S_IMODE(p.lstat().st_mode) & 0o077
    ]


def _login_page(base: str) -> bool:
    try:
        return requests.get(base + "/login", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


@pytest.mark.parametrize("kind", ["another user's", "a symbolic link", "shared like /tmp"])
def test_up_refuses_a_temp_directory_another_user_could_use(world_traversable_root, kind):
    """A local user who made /tmp/ammp-edge first (or a link there to a place of theirs) would own the
    logs, rendered configs and supervisor socket the appliance puts in it."""
    temp = world_traversable_root / "t"
    if kind == "another user's":
        temp.mkdir()
        os.chown(temp, 65534, 65534)
    elif kind == "a symbolic link":
        (world_traversable_root / "elsewhere").mkdir()
        temp.symlink_to(world_traversable_root / "elsewhere")
    else:
        temp.mkdir()
        temp.chmod(0o1777)
    r = subprocess.run(
        [*AMMP_EDGE, "up"],
        env=child_env(AE_TEMP_DIR=temp, AE_DATA_DIR=world_traversable_root / "d"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and ("AE_TEMP_DIR" in r.stderr or "directory of its own" in r.stderr), r.stderr
    assert not (temp / "supervisord.conf").exists() and not (world_traversable_root / "d" / "kvs-db").exists()
