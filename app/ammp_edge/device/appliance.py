"""`ammp-edge up`: the whole appliance under supervisord, in the foreground.

`up --config FILE` (and `--demo`) hands the file to the one config door (core.configdoor, the rules of
every door: refused with its problems when unusable, the stored config unchanged). `up` then renders
supervisord.conf and one include per bus of the config in the KV store (supervise.py),
has the broker config rendered once (`ammp-edge bridge-config --once`) so mosquitto can start, then
runs supervisord as its child and waits. supervisord runs in its own session (a Ctrl-C in the
terminal reaches `up` only) and gets SIGTERM if `up` dies (PR_SET_PDEATHSIG), so it never outlives it.

Files: `up` and everything it starts run with umask 077, and at each start `up` takes group and other
permissions away from the data directory, the temp directory and what the appliance keeps in them (KV
store and cache, outbox, broker persistence, logs, rendered configs, the supervisor socket), so files
an older version left readable are fixed too. A temp directory (default /tmp/ammp-edge) that is a
symbolic link or belongs to another user is refused: whoever owns it could read or replace them.
The initial web UI password is shown on the console (`docker logs`), never in a program's log; under
systemd (whose console is the journal) only where it is kept.

SIGTERM or SIGINT to `up` stops everything in order within seconds: first all bus programs together
(each finishes its cycle and commits it to the outbox), then node, publisher, bridge-config, mosquitto
and the demo's simulators, one priority tier after the other through XML-RPC (supervise.stop_in_order;
supervisord's own shutdown would take a second or two per group); then supervisord gets SIGTERM and
exits, and `up` exits 0 (1 when supervisord did not stop cleanly).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import stat
import subprocess
import sys
import threading
import xmlrpc.client
from collections.abc import Callable

import psutil

from ..core import configdoor, credentials, drivers, keys, paths, supervisor as supervisord, yamltext
from ..core.config import Config
from ..core.configsource import ConfigSource
from ..core.fileio import PRIVATE_DIR, make_private, make_private_tree, write_atomic
from ..core.kvs import KVStore, cache as kv_cache
from ..core.problems import ConfigUnusable, Problem
from ..core.supervisor_conf import ammp_edge, write_bus_include
from ..delivery.outputcheck import output_problems
from . import supervise

log = logging.getLogger(__name__)

DEMO_CONFIG = paths.PACKAGE_DIR / "defaults" / "demo-config.json"
SUPERVISORD_EXIT_WAIT_S = 60  # normally nothing is left to stop by then


class SetupError(Exception):
    """The appliance cannot start; the message says why and what to do."""


class ConfigRefused(SetupError):
    """The config given to `up` cannot be used (the stored one is unchanged)."""

    def __init__(self, verdict: configdoor.Verdict):
        super().__init__(verdict.message)
        self.verdict = verdict


def already_running() -> bool:
    try:
        supervisord.connect().supervisor.getState()
    except (OSError, xmlrpc.client.Error):
        return False
    return True


def private_dirs() -> None:
    """The data and temp directories and everything of the appliance's in them: owner only."""
    temp = paths.temp_dir()
    if temp.is_symlink() or (temp.exists() and temp.stat().st_uid != os.geteuid()):
        raise SetupError(
            f"{temp} is a symbolic link or belongs to another user, who could read or replace the appliance's "
            "files there; remove it or set AE_TEMP_DIR to a directory of your own"
        )
    for d in (paths.data_dir(), temp):
        if d.exists() and d.stat().st_mode & (stat.S_ISVTX | stat.S_IWOTH):
            raise SetupError(f"{d} is a shared directory (like /tmp); give the appliance a directory of its own")
        d.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
        make_private(d)
    for p in (
        paths.kvstore_path().parent,
        paths.outbox_dir(),
        paths.mosquitto_persistence_dir(),
        paths.webui_initial_password_path(),
        paths.legacy_config_db_path(),
        temp,
    ):
        make_private_tree(p)


def announce_password(initial: str) -> None:
    """The initial web UI password on the console; under systemd the console is the journal, a log:
    there only where it is kept."""
    where = paths.webui_initial_password_path()
    if os.environ.get("JOURNAL_STREAM"):
        log.warning("web UI on port %s: the initial password is in %s", paths.webui_port(), where)
        return
    log.warning(
        "web UI on port %s: initial password %s (also in %s; change it under Settings)",
        paths.webui_port(),
        initial,
        where,
    )


def store_config(store: KVStore, config_raw: bytes, demo: bool, detail: str | None) -> configdoor.Verdict:
    """`up --config FILE` (or `--demo`) through the one door; ConfigRefused when it cannot be used."""
    builtin = drivers.load_builtin_drivers(paths.drivers_dir())
    if detail and yamltext.yaml_name(detail):  # `up --config site.yaml`: the door takes its JSON
        try:
            config_raw = yamltext.to_json(config_raw)
        except ConfigUnusable as exc:
            raise ConfigRefused(configdoor.refuse("up", exc.problems, None, detail)) from None
    verdict = configdoor.submit(store, config_raw, "demo" if demo else "up", builtin, output_problems, detail=detail)
    if not verdict.accepted:
        raise ConfigRefused(verdict)
    return verdict


def prepare(
    config_raw: bytes | None = None,
    demo: bool = False,
    detail: str | None = None,
    report: Callable[[Problem], None] = lambda p: None,
) -> tuple[list[str], Config | None]:
    """Store the config, render supervisord's files; returns the bus ids started with and the demo's
    config (its devices are simulated)."""
    os.umask(0o077)  # inherited by supervisord, which sets the same for its programs
    private_dirs()
    sock = paths.supervisor_socket()
    if len(str(sock).encode()) > supervisord.MAX_UNIX_SOCKET_PATH:
        raise SetupError(f"{sock}: too long for a unix socket; use a shorter AE_TEMP_DIR")
    if already_running():
        raise SetupError(
            f"an appliance is already running with AE_TEMP_DIR={paths.temp_dir()} (socket {sock}); stop it first"
        )
    store = KVStore()
    demo_config = None
    if config_raw is not None:
        try:
            verdict = store_config(store, config_raw, demo, detail)
        except ConfigRefused:
            store.close()
            raise
        for problem in verdict.problems:
            report(problem)
        demo_config = verdict.config if demo else None
    cache = kv_cache()
    cache.delete(keys.CLOCK_TRUSTED)  # node decides afresh whether the clock can be trusted; buses wait for it
    cache.close()
    config = ConfigSource(kvstore=store).current()
    initial = credentials.ensure_password(store)  # the web UI's per-node password: on the console, `docker logs`
    if initial:
        announce_password(initial)
    store.close()
    bus_ids = sorted(config.buses()) if config else []
    if config is None:
        log.warning("no usable config in the KV store yet: no bus runs until node receives one")

    paths.log_dir().mkdir(parents=True, exist_ok=True)
    paths.supervisor_include_dir().mkdir(parents=True, exist_ok=True)
    for stale in paths.supervisor_include_dir().glob("*.conf"):
        stale.unlink()
    env = paths.environment()
    for bus_id in bus_ids:
        write_bus_include(bus_id, env)
    text = supervise.render_main(supervise.fixed_programs(demo_config), paths.temp_dir(), env)
    write_atomic(paths.supervisor_conf_path(), text, 0o600)
    return bus_ids, demo_config


def render_broker_once() -> None:
    rc: int | str
    try:
        rc = subprocess.run(ammp_edge("bridge-config", "--once"), timeout=60).returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    if rc != 0:
        log.error(
            "`ammp-edge bridge-config --once` failed (%s): mosquitto may not start until the "
            "bridge-config program renders its config",
            rc,
        )


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when `up` dies, even by SIGKILL."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def run(
    config_raw: bytes | None = None,
    demo: bool = False,
    detail: str | None = None,
    report: Callable[[Problem], None] = lambda p: None,
) -> int:
    bus_ids, _ = prepare(config_raw, demo, detail, report)
    render_broker_once()
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(paths.supervisor_conf_path())],
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    log.info(
        "supervisord started (pid %d), buses: %s; logs in %s", proc.pid, ", ".join(bus_ids) or "none", paths.log_dir()
    )
    if paths.app_updates_enabled():  # Pi image: keep an app update once it has proven itself
        from . import selfupdate  # here: urllib loads OpenSSL (~5 MB), which `up` needs only on the Pi image

        threading.Thread(
            target=selfupdate.commit_when_healthy, name="update-commit", daemon=True, args=(stop, paths.app_dir())
        ).start()
    while proc.poll() is None and not stop.is_set():
        _reap_orphans(proc)
        stop.wait(1)
    if proc.returncode is not None:  # `supervisorctl shutdown` (0) or a crash
        log.log(
            logging.INFO if proc.returncode == 0 else logging.ERROR, "supervisord exited (status %s)", proc.returncode
        )
        return proc.returncode if proc.returncode >= 0 else 1
    return shutdown(proc)


def shutdown(proc: subprocess.Popen) -> int:
    log.info("stopping: buses, node, publisher, bridge-config, mosquitto")
    try:
        supervise.stop_in_order(supervisord.connect())
    except (OSError, xmlrpc.client.Error) as exc:
        log.warning("could not stop the programs through supervisord (%s); its own shutdown stops them in turn", exc)
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(SUPERVISORD_EXIT_WAIT_S)
    except subprocess.TimeoutExpired:
        log.error("supervisord still running after %d s: killing it and its programs", SUPERVISORD_EXIT_WAIT_S)
        _kill_session(proc.pid)
        rc = proc.wait()
    log.info("stopped (supervisord status %d)", rc)
    return 0 if rc == 0 else 1


def _kill_session(sid: int) -> None:
    """SIGKILL supervisord and every program: they all live in the session it leads."""
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid:
                p.kill()
        except (OSError, psutil.Error):
            pass  # gone meanwhile


def _reap_orphans(proc: subprocess.Popen) -> None:
    """As PID 1 in a container, orphans are ours to reap (supervisord's own children are its)."""
    if os.getpid() != 1:
        return
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
