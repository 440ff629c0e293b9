"""App updates on the Pi image (app/ammp_edge/selfupdate.py and the entry point's start counting and
rollback). Bad bundles are refused before anything changes; the entry point runs the installed version,
counts the starts of a pending one and goes back to the previous after three. The whole path (a bundle
served on the host, `image_update` sent through the bridge, the device restarting into the new
version) runs in the Pi boot test, tests/test_images.py."""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from ammp_edge.device import selfupdate
from helpers.common import REPO

ENTRYPOINT = REPO / "image/rootfs/usr/lib/ammp-edge/entrypoint"


@pytest.fixture
def served(file_server):
    www, port = file_server
    return www, f"http://127.0.0.1:{port}"


def _bundle(www: Path, tmp_path: Path, *, plat: str | None = None, python: str | None = None) -> Path:
    wheels = tmp_path / "wheels"
    wheels.mkdir(exist_ok=True)
    (wheels / "ammp_edge-9.9.9-py3-none-any.whl").write_bytes(b"not really a wheel")
    return selfupdate.make_bundle(
        wheels,
        REPO / "drivers",
        REPO / "conf",
        www / "app.tar",
        "9.9.9",
        plat or platform.machine(),
        python or "{}.{}".format(*sys.version_info[:2]),
    )


def test_a_bundle_lists_every_wheel_with_its_digest(tmp_path, served):
    www, _ = served
    out = _bundle(www, tmp_path)
    with tarfile.open(out) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        names = tar.getnames()
    assert manifest["version"] == "9.9.9" and manifest["platform"] == platform.machine()
    digest = hashlib.sha256(b"not really a wheel").hexdigest()
    assert manifest["wheels"] == {"ammp_edge-9.9.9-py3-none-any.whl": digest}
    assert "root/drivers/sma_stp25000.json" in names and "root/conf/mosquitto.conf.tpl" in names
    assert Path(f"{out}.sha256").read_text().split()[0] == hashlib.sha256(out.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "damage, expected",
    [
        ("digest", "the bundle's sha256 is"),
        ("platform", "the bundle is for sparc64"),
        ("python", "the bundle is for Python 2.7"),
        ("wheel", "does not match the manifest"),
        ("traversal", "is not a plain file inside the bundle"),
        ("not-a-tar", "not an update bundle"),
        ("missing", "HTTP Error 404"),
    ],
)
def test_bad_bundles_are_refused_and_nothing_changes(tmp_path, served, damage, expected):
    www, base = served
    app = tmp_path / "app"
    out = _bundle(
        www, tmp_path, plat="sparc64" if damage == "platform" else None, python="2.7" if damage == "python" else None
    )
    if damage == "digest":
        Path(f"{out}.sha256").write_text("0" * 64 + "  app.tar\n")
    elif damage in ("wheel", "traversal", "not-a-tar"):
        if damage == "not-a-tar":
            out.write_bytes(b"\x00garbage" * 100)
        else:
            with tarfile.open(out) as tar:
                members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
            with tarfile.open(out, "w") as tar:
                for m, data in members:
                    if data is not None and m.name.endswith(".whl"):
                        data = b"tampered"
                        m.size = len(data)
                    tar.addfile(m, io.BytesIO(data) if data is not None else None)
                if damage == "traversal":
                    evil = tarfile.TarInfo("../../evil")
                    evil.size = 4
                    tar.addfile(evil, io.BytesIO(b"evil"))
        Path(f"{out}.sha256").write_text(hashlib.sha256(out.read_bytes()).hexdigest() + "  app.tar\n")
    url = f"{base}/{'nothing.tar' if damage == 'missing' else 'app.tar'}"
    with pytest.raises((selfupdate.UpdateError, OSError)) as err:
        selfupdate.install(url, app, restart=False)
    assert expected in str(err.value)
    assert not (app / "current").exists() and not (app / "pending").exists()
    assert not (tmp_path / "evil").exists()
    assert not (app / "versions").exists() or not any((app / "versions").iterdir())


def test_self_update_without_a_url_says_where_to_set_one(tmp_path):
    env = {**os.environ, "AE_DATA_DIR": str(tmp_path / "data")}
    out = subprocess.run(
        [sys.executable, "-m", "ammp_edge", "self-update", "--app-dir", str(tmp_path / "app")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 2 and "image_update_url" in out.stderr and "UPDATE_URL" in out.stderr


def _fake_version(app: Path, name: str) -> None:
    bin_dir = app / "versions" / name / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "ammp-edge").write_text(f'#!/bin/sh\necho "{name} $AE_ROOT_DIR $*"\n')
    (bin_dir / "ammp-edge").chmod(0o755)


def _start(app: Path, tmp_path: Path, *args: str) -> str:
    env = {
        "PATH": os.environ["PATH"],
        "AE_APP_UPDATES": "1",
        "AE_APP_DIR": str(app),
        "AE_DEFAULTS_FILE": str(tmp_path / "no-defaults"),
        "AE_DATA_DIR": str(tmp_path / "data"),
        "AE_TEMP_DIR": str(tmp_path / "run"),
    }
    out = subprocess.run(["sh", str(ENTRYPOINT), *args], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout + out.stderr


def test_entrypoint_runs_the_update_counts_its_starts_and_rolls_back_after_three(tmp_path):
    app = tmp_path / "app"
    _fake_version(app, "1.0.0")
    _fake_version(app, "2.0.0")
    (app / "current").symlink_to("versions/2.0.0")
    (app / "previous").symlink_to("versions/1.0.0")
    (app / "pending").write_text("2.0.0\n")
    for n in (1, 2, 3):
        assert _start(app, tmp_path, "up").startswith(f"2.0.0 {app}/current/root up")
        assert (app / "pending-tries").read_text().strip() == str(n)
    assert _start(app, tmp_path, "self-update").startswith("2.0.0")  # other subcommands do not count
    out = _start(app, tmp_path, "up")  # a fourth start: the new version never proved itself
    assert "rolling back" in out and out.startswith("1.0.0")
    assert os.readlink(app / "current") == "versions/1.0.0" and not (app / "pending").exists()
    assert _start(app, tmp_path, "up").startswith("1.0.0")

    # kept by `up` (no pending file): no counting, no rollback
    (app / "current").unlink()
    (app / "current").symlink_to("versions/2.0.0")
    for _ in range(5):
        assert _start(app, tmp_path, "up").startswith("2.0.0")


def test_commit_when_healthy_keeps_the_update_after_every_program_ran(tmp_path, monkeypatch):
    app = tmp_path / "app"
    app.mkdir()
    (app / "pending").write_text("2.0.0\n")
    (app / "pending-tries").write_text("1\n")
    monkeypatch.setattr(selfupdate, "COMMIT_AFTER_S", 0.0)
    stop = threading.Event()
    states = iter([[{"state": "STARTING"}], [{"state": "RUNNING"}], [{"state": "RUNNING"}]])

    class FastStop:
        def wait(self, _):
            return stop.is_set()

    selfupdate.commit_when_healthy(FastStop(), app, programs=lambda: next(states))
    assert not (app / "pending").exists() and not (app / "pending-tries").exists()


@pytest.fixture
def http_proxy():
    """A forwarding HTTP proxy on loopback (absolute-URI GETs, fetched directly); yields (url, seen)."""
    import http.server
    import urllib.error
    import urllib.request

    seen: list[str] = []
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    class Proxy(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.path)
            try:
                with direct.open(self.path, timeout=10) as answer:
                    status, body = answer.status, answer.read()
            except urllib.error.HTTPError as exc:
                status, body = exc.code, b""
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_the_download_goes_through_the_proxy_snap_proxy_on_set(tmp_path, served, http_proxy):
    www, base = served
    proxy, seen = http_proxy
    _bundle(www, tmp_path, plat="sparc64")  # refused after the download: nothing is installed
    with pytest.raises(selfupdate.UpdateError, match="the bundle is for sparc64"):
        selfupdate.install(f"{base}/app.tar", tmp_path / "app", restart=False, proxy=proxy)
    assert seen == [f"{base}/app.tar", f"{base}/app.tar.sha256"]


def test_self_update_uses_the_proxy_in_the_kv_store(tmp_path, served, http_proxy):
    from ammp_edge.core.kvs import KVStore

    www, base = served
    proxy, seen = http_proxy
    _bundle(www, tmp_path, plat="sparc64")
    data = tmp_path / "data"
    store = KVStore(data / "kvs-db" / "kvstore.db")
    store.set("image_update_url", f"{base}/app.tar")
    store.set("image_update_proxy", proxy)  # as snap_proxy_on sets it (there with upstream's address)
    store.close()
    env = {**os.environ, "AE_DATA_DIR": str(data)}
    out = subprocess.run(
        [sys.executable, "-m", "ammp_edge", "self-update", "--app-dir", str(tmp_path / "app"), "--no-restart"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 1
    assert f"update from {base}/app.tar through the proxy {proxy} (KV key image_update_proxy) failed" in out.stderr
    assert seen == [f"{base}/app.tar", f"{base}/app.tar.sha256"]
