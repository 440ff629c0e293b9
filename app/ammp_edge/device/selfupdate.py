"""App updates on the Raspberry Pi image (the `image_update` command; upstream refreshed its snap).

The root file system is read-only, so an update installs the app beside it, on /data, and the next
start runs it; the previous version stays until the new one has proven itself:

    /data/app/versions/<version>/venv       the app (a venv made with the image's python3)
    /data/app/versions/<version>/root       its drivers/ and conf/ (AE_ROOT_DIR)
    /data/app/current  -> versions/<version>  what the entry point runs (absent: the image's own app)
    /data/app/previous -> versions/<old>    what a rollback returns to (absent: the image's own app)
    /data/app/pending                       the new version has not yet run 60 s with every program up
    /data/app/pending-tries                 starts of the pending version so far

Flow: `image_update` (or upstream's `snap_refresh`) runs /usr/lib/ammp-edge/update -> `ammp-edge
self-update`: download the bundle from the KV key `image_update_url` (settings file UPDATE_URL) and
`<url>.sha256` (through the HTTP proxy in the KV key `image_update_proxy` when `snap_proxy_on` set one;
an https URL is then tunnelled, so the proxy sees no content), check the digest and
each wheel's digest in the manifest, the platform and Python version; install into a new venv with
`--no-index` (nothing else is fetched); check that the new `ammp-edge --version` runs and its
modules import; then switch `current` and restart the appliance 5 s later (after the command's
answer is out). The entry point
(image/rootfs/usr/lib/ammp-edge/entrypoint) counts the starts of a pending version and after three
goes back to `previous`; `ammp-edge up` deletes `pending` once every program ran 60 s (`commit`).

A bundle (`ammp-edge update-bundle`, run by `./build.sh rpi`): a tar of manifest.json
({"version", "platform", "python", "wheels": {name: sha256}}), wheels/*.whl, root/drivers, root/conf.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .. import __version__
from ..core import keys, paths, supervisor as supervisord
from ..core.fileio import fsync_dir, write_atomic
from ..core.kvs import KVStore

log = logging.getLogger(__name__)

MAX_BUNDLE_BYTES = 400 * 1024 * 1024
COMMIT_AFTER_S = 60.0


class UpdateError(Exception):
    pass


# -- making a bundle (build.sh) --------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_bundle(wheels: Path, drivers: Path, conf: Path, out: Path, version: str, plat: str, python: str) -> Path:
    names = sorted(p.name for p in wheels.glob("*.whl"))
    if not any(n.startswith("ammp_edge-") for n in names):
        raise UpdateError(f"no ammp_edge wheel in {wheels}")
    manifest = {
        "version": version,
        "platform": plat,
        "python": python,
        "wheels": {n: _sha256(wheels / n) for n in names},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w") as tar:
        data = json.dumps(manifest, indent=1).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size, info.mtime = len(data), int(time.time())
        tar.addfile(info, io.BytesIO(data))
        for n in names:
            tar.add(wheels / n, f"wheels/{n}")
        tar.add(drivers, "root/drivers")
        tar.add(conf, "root/conf")
    Path(f"{out}.sha256").write_text(f"{_sha256(out)}  {out.name}\n")
    return out


# -- installing ----------------------------------------------------------------------------------------


def _download(url: str, dest: Path, timeout: float, proxy: str | None = None) -> None:
    if not url.startswith(("https://", "http://")):
        raise UpdateError(f"update URL must be http(s)://, got {url[:80]!r}")
    # the proxy given, else the environment's *_proxy variables as before
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"http": proxy, "https": proxy} if proxy else None)
    )
    with opener.open(url, timeout=timeout) as answer, open(dest, "wb") as f:
        total = 0
        for chunk in iter(lambda: answer.read(1 << 20), b""):
            total += len(chunk)
            if total > MAX_BUNDLE_BYTES:
                raise UpdateError(f"{url}: larger than {MAX_BUNDLE_BYTES // (1024 * 1024)} MB")
            f.write(chunk)


def _safe_extract(tar: tarfile.TarFile, dest: Path) -> None:
    for m in tar.getmembers():
        target = (dest / m.name).resolve()
        if not str(target).startswith(str(dest.resolve()) + os.sep) or not (m.isfile() or m.isdir()):
            raise UpdateError(f"bundle member {m.name!r} is not a plain file inside the bundle")
    tar.extractall(dest)


def _link(path: Path, target: str) -> None:
    """Point the symlink `path` at `target` atomically, on disk before returning."""
    tmp = path.with_name(path.name + ".new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def install(
    url: str,
    app_dir: Path = paths.DEFAULT_APP_DIR,
    python: str = "/usr/bin/python3",
    timeout: float = 120.0,
    restart: bool = True,
    proxy: str | None = None,
) -> str:
    """Download (through `proxy` when given), check and install the bundle at `url`; switch to it.
    Returns a text for the answer."""
    app_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=app_dir, prefix=".download-") as tmp:
        tmpdir = Path(tmp)
        bundle = tmpdir / "bundle.tar"
        _download(url, bundle, timeout, proxy)
        _download(url + ".sha256", tmpdir / "bundle.sha256", timeout, proxy)
        words = (tmpdir / "bundle.sha256").read_text(errors="replace").split()
        expected = words[0].lower() if words else ""
        actual = _sha256(bundle)
        if expected != actual:
            raise UpdateError(f"the bundle's sha256 is {actual}, {url}.sha256 says {expected or 'nothing'}")
        extracted = tmpdir / "x"
        extracted.mkdir()
        try:
            with tarfile.open(bundle) as tar:
                _safe_extract(tar, extracted)
            manifest = json.loads((extracted / "manifest.json").read_text())
            version, wheels = str(manifest["version"]), dict(manifest["wheels"])
        except (tarfile.TarError, OSError, ValueError, KeyError, TypeError) as exc:
            raise UpdateError(f"not an update bundle: {exc}") from exc
        if manifest.get("platform") != platform.machine():
            raise UpdateError(f"the bundle is for {manifest.get('platform')}, this device is {platform.machine()}")
        here = "{}.{}".format(*sys.version_info[:2])
        if manifest.get("python") != here:
            raise UpdateError(f"the bundle is for Python {manifest.get('python')}, this device has {here}")
        for name, digest in wheels.items():
            wheel = extracted / "wheels" / name
            if "/" in name or not wheel.is_file() or _sha256(wheel) != digest:
                raise UpdateError(f"wheel {name} is missing or does not match the manifest")
        if version == __version__:
            return f"already at version {version}; nothing to do\n"
        versions = app_dir / "versions"
        final = versions / version  # built in place: a venv's scripts name its path, it cannot move
        versions.mkdir(exist_ok=True)
        shutil.rmtree(final, ignore_errors=True)
        try:
            _run([python, "-m", "venv", str(final / "venv")], "making the venv")
            _run(
                [
                    str(final / "venv/bin/pip"),
                    "install",
                    "-q",
                    "--no-index",
                    "--no-cache-dir",
                    "--disable-pip-version-check",
                    "--find-links",
                    str(extracted / "wheels"),
                    "ammp-edge",
                ],
                "pip install",
            )
            shutil.copytree(extracted / "root", final / "root")
            out = _run([str(final / "venv/bin/ammp-edge"), "--version"], "the smoke test")
            if version not in out:
                raise UpdateError(f"the installed app says {out.strip()!r}, the manifest {version!r}")
            if (
                _run(
                    [
                        str(final / "venv/bin/python"),
                        "-c",
                        "import ammp_edge.device.appliance, ammp_edge.node.program, "
                        "ammp_edge.delivery.publisher, ammp_edge.webui.app, supervisor.supervisord; print('ok')",
                    ],
                    "the import check",
                ).strip()
                != "ok"
            ):
                raise UpdateError("the import check printed nothing")
        except BaseException:
            shutil.rmtree(final, ignore_errors=True)
            raise
        subprocess.run(["sync", "-f", str(final)], check=False)
    current = app_dir / "current"
    if current.is_symlink():
        _link(app_dir / "previous", os.readlink(current))
    else:
        (app_dir / "previous").unlink(missing_ok=True)
    (app_dir / "pending-tries").unlink(missing_ok=True)
    write_atomic(app_dir / "pending", f"{version}\n", durable=True)
    _link(current, f"versions/{version}")
    _prune(
        versions,
        keep={version, Path(os.readlink(app_dir / "previous")).name if (app_dir / "previous").is_symlink() else ""},
    )
    text = f"installed version {version} (was {__version__}); the appliance restarts in 5 s\n"
    if restart:
        restart_later()
    return text


def _prune(versions: Path, keep: set[str]) -> None:
    for d in versions.iterdir():
        if d.is_dir() and d.name not in keep:
            shutil.rmtree(d, ignore_errors=True)


def _run(argv: list[str], what: str) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=1200)
    if out.returncode != 0:
        raise UpdateError(f"{what} failed ({out.returncode}): {(out.stderr or out.stdout).strip()[-800:]}")
    return out.stdout


def restart_later(delay_s: int = 5) -> None:
    """Restart the appliance's systemd service a few seconds from now (the command's answer goes out first)."""
    subprocess.run(
        [
            "systemd-run",
            f"--on-active={delay_s}",
            "--unit",
            f"ammp-edge-update-restart-{int(time.time())}",
            "systemctl",
            "restart",
            "ammp-edge.service",
        ],
        check=False,
        capture_output=True,
        timeout=30,
    )


def commit_when_healthy(
    stop: threading.Event, app_dir: Path = paths.DEFAULT_APP_DIR, programs: Callable[[], list[dict]] | None = None
) -> None:
    """In `ammp-edge up` (a thread): once every program has been RUNNING for COMMIT_AFTER_S, the pending
    update is kept (the entry point stops counting starts towards a rollback)."""
    pending = app_dir / "pending"
    if not pending.exists():
        return
    if programs is None:
        programs = lambda: supervisord.programs()[0]
    since = None
    while not stop.wait(5.0):
        progs = programs()
        ok = bool(progs) and all(p["state"] == "RUNNING" for p in progs)
        since = (since or time.monotonic()) if ok else None
        if since and time.monotonic() - since >= COMMIT_AFTER_S:
            pending.unlink(missing_ok=True)
            (app_dir / "pending-tries").unlink(missing_ok=True)
            log.info("update to %s kept: every program ran %.0f s", __version__, COMMIT_AFTER_S)
            return


def cmd(args) -> int:
    if args.command == "update-bundle":
        out = make_bundle(
            Path(args.wheels),
            Path(args.drivers),
            Path(args.conf),
            Path(args.out),
            args.version,
            args.platform,
            args.python,
        )
        print(out)
        return 0
    store = KVStore()
    try:
        url = args.url or store.get(keys.IMAGE_UPDATE_URL)
        proxy = store.get(keys.IMAGE_UPDATE_PROXY)
    finally:
        store.close()
    if not url:
        print(
            f"no update URL: set the KV key {keys.IMAGE_UPDATE_URL} "
            "(UPDATE_URL in the settings file on the boot partition)",
            file=sys.stderr,
        )
        return 2
    via = f" through the proxy {proxy} (KV key {keys.IMAGE_UPDATE_PROXY})" if proxy else ""
    try:
        text = install(str(url), Path(args.app_dir), restart=not args.no_restart, proxy=proxy or None)
        print(f"downloaded {url}{via}\n{text}", end="")
    except (UpdateError, OSError, subprocess.SubprocessError) as exc:
        print(f"update from {url}{via} failed, nothing changed: {exc}", file=sys.stderr)
        return 1
    return 0
