"""The image builds of one test session, started in the background as soon as the session has collected
an image test, so that they overlap the rest of the suite (conftest.py runs the image tests last).

One thread runs, in turn: `scripts/setup --test --images` when a tool is missing, `./build.sh dockerd`
(when it starts the daemon, it is stopped again at the end of the session), `./build.sh docker`, then
`./build.sh rpi` (not when AE_TEST_RPI_IMAGE names an image already built). The builds run at the lowest
CPU and I/O priority (nice 19, ionice best-effort 7): they take what the other tests leave idle and cannot make
them late; once the other tests are done, nothing competes and they run at full speed. Each build's
output goes to test-artifacts/build-<target>.log; the fixtures of tests/test_images.py wait for the
result with `result(target)`, so each image is built once per session.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]  # tests/helpers/ -> the checkout
ARTIFACTS = REPO / "test-artifacts"
# A cap on a whole build, not a wait tuned to a machine: CI's own limit for the whole run.
BUILD_CAP_S = 5400
TOOLS = {
    "docker": ["docker", "mmdebstrap", "mosquitto_sub"],
    "rpi": [
        "mmdebstrap",
        "genimage",
        "mkdosfs",
        "mcopy",
        "mdir",
        "mtype",
        "mke2fs",
        "xz",
        "arch-test",
        "update-binfmts",
        "qemu-system-aarch64",
        "sfdisk",
        "socat",
        "ssh-keyscan",
        "ssh-keygen",
        "debugfs",
    ],
}


@dataclass
class Build:
    target: str
    done: threading.Event = field(default_factory=threading.Event)
    output: str | None = None  # what build.sh printed last on stdout: the image tag or file
    error: str | None = None
    skipped: str | None = None
    seconds: float | None = None
    started: float | None = None  # time.monotonic() when it began (it may wait for the one before)
    log: Path | None = None


_builds: dict[str, Build] = {}
_pidfile: Path | None = None  # of the build running now
_dockerd_pidfile: Path | None = None
_stopping = threading.Event()


def _have(tools: list[str]) -> bool:
    return all(shutil.which(t) or os.path.exists(f"/usr/sbin/{t}") for t in tools)


def _run(argv: list[str], log: Path, timeout: float) -> tuple[int, str]:
    """Run at the lowest priority, detached (`setsid -f`: not a descendant of the test process, whose
    tests look for their own leftover children); stderr to `log`; (status, last stdout line)."""
    global _pidfile
    low = ["nice", "-n", "19"] + (["ionice", "-c", "2", "-n", "7"] if shutil.which("ionice") else [])
    pidfile, status, out = (log.with_suffix(s) for s in (".pid", ".status", ".out"))
    for f in (pidfile, status, out):
        f.unlink(missing_ok=True)
    script = 'echo $$ > "$1"; st=$2; out=$3; shift 3; "$@" > "$out"; echo $? > "$st"'
    with open(log, "a") as err:
        err.write(f"$ {' '.join(argv)}\n")
        err.flush()
        _pidfile = pidfile
        subprocess.run(
            ["setsid", "-f", "sh", "-c", script, "sh", str(pidfile), str(status), str(out), *low, *argv],
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            cwd=REPO,
            check=True,
        )
    end = time.monotonic() + timeout
    while not (status.is_file() and status.read_text().strip()):
        if time.monotonic() > end:
            _kill_tree()
            return -1, f"timed out after {timeout:.0f} s"
        if _stopping.is_set():
            return -1, "stopped at the end of the session"
        time.sleep(1)
    _pidfile = None
    lines = out.read_text().strip().splitlines() if out.is_file() else []
    return int(status.read_text().strip()), lines[-1] if lines else ""


def _kill_tree() -> None:
    """End the build running now and everything it started (each `timeout` step is a group of its own)."""
    pidfile = _pidfile
    if pidfile is None or not pidfile.is_file():
        return
    try:
        top = psutil.Process(int(pidfile.read_text().strip()))
        tree = [top, *top.children(recursive=True)]
    except (psutil.Error, ValueError):
        return
    for p in tree:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(tree, timeout=60)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass


def _worker(targets: list[str]) -> None:
    global _dockerd_pidfile
    ARTIFACTS.mkdir(exist_ok=True)
    need = sorted({t for target in targets for t in TOOLS[target]})
    setup_error = None
    if not _have(need):
        log = ARTIFACTS / "build-setup.log"
        log.write_text("")
        if os.geteuid() != 0:
            setup_error = f"missing {', '.join(t for t in need if not _have([t]))} and not root to install them"
        else:
            rc, _ = _run([str(REPO / "scripts/setup"), "--test", "--images"], log, BUILD_CAP_S)
            if rc != 0 or not _have(need):
                setup_error = f"scripts/setup --test --images failed (status {rc}); see {log}"
    for target in targets:
        build = _builds[target]
        build.started = time.monotonic()
        build.log = ARTIFACTS / f"build-{target}.log"
        build.log.write_text("")
        try:
            if setup_error:
                build.skipped = setup_error
                continue
            if _stopping.is_set():
                build.error = "the session ended before the build began"
                continue
            if target == "docker":
                rc, pidfile = _run([str(REPO / "build.sh"), "dockerd"], build.log, 300)
                if rc != 0:
                    build.error = f"./build.sh dockerd failed (status {rc}); see {build.log}"
                    continue
                if pidfile:
                    _dockerd_pidfile = Path(pidfile)
            t0 = time.monotonic()
            rc, last = _run([str(REPO / "build.sh"), target], build.log, BUILD_CAP_S)
            build.seconds = time.monotonic() - t0
            if rc != 0:
                build.error = f"./build.sh {target} failed (status {rc}): {last}\n" + build.log.read_text()[-4000:]
            else:
                build.output = last
        finally:
            build.done.set()


def start(targets: list[str]) -> None:
    """Start the builds of `targets` ("docker", "rpi"), in this order, in one background thread."""
    todo = [t for t in targets if t not in _builds]
    if not todo:
        return
    for t in todo:
        _builds[t] = Build(t)
    threading.Thread(target=_worker, args=(todo,), name="image-builds", daemon=True).start()


def result(target: str) -> Build:
    """The build of `target` (started now when it was not yet); waits until it is done."""
    if target not in _builds:
        start([target])
    build = _builds[target]
    build.done.wait(2 * BUILD_CAP_S)
    return build


def stop() -> None:
    """End of the session: stop a build still running and the dockerd started for the session."""
    _stopping.set()
    _kill_tree()
    if _dockerd_pidfile and _dockerd_pidfile.is_file():
        pid = int(_dockerd_pidfile.read_text().strip())
        try:
            os.kill(pid, signal.SIGTERM)
            for _ in range(120):
                os.kill(pid, 0)
                time.sleep(0.5)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _dockerd_pidfile.unlink(missing_ok=True)
