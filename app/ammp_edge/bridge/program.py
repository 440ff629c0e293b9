"""`ammp-edge bridge-config`: the broker's config kept in step with the KV store.

It renders into $AE_TEMP_DIR/mosquitto/ (mosquitto.conf, conf.d/bridge-*.conf, certs/) and re-reads the
KV store every few seconds; when the rendered text changes, it writes the files and restarts the broker
through supervisord's XML-RPC interface (and only then).
"""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path

from ..core import paths
from .model import Bridge, Layout
from .persistence import check_persistence
from .plan import plan, read_kv
from .render import render, write_if_changed

log = logging.getLogger(__name__)


def _broker_listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def restart_broker(
    program: str = "mosquitto", layout: Layout | None = None, sock: Path | None = None, quiet: bool = False
) -> bool:
    """Stop the broker program, check its persistence, start it again. False if that failed.

    quiet: an unreachable supervisord is logged at debug level only (a retry of a failed attempt).
    """
    import xmlrpc.client  # here, not at the top: http.client loads OpenSSL, ~5 MB this program rarely needs

    from supervisor.xmlrpc import Faults

    from ..core.supervisor import connect  # XML-RPC as well: lazily, for the same reason

    layout = layout or Layout.default()
    sock = sock or paths.supervisor_socket()
    proxy = connect(sock)
    try:
        try:
            proxy.supervisor.stopProcess(program, True)
        except xmlrpc.client.Fault as exc:
            if exc.faultCode != Faults.NOT_RUNNING:
                raise
        check_persistence(layout.persistence_dir)
        try:
            proxy.supervisor.startProcess(program, True)
        except xmlrpc.client.Fault as exc:
            if exc.faultCode != Faults.ALREADY_STARTED:
                raise
    except (OSError, xmlrpc.client.ProtocolError) as exc:
        log.log(
            logging.DEBUG if quiet else logging.WARNING,
            "supervisord not reachable at %s (%s): the broker keeps its old config until it restarts; retrying",
            sock,
            exc,
        )
        return False
    except xmlrpc.client.Fault as exc:
        log.error("supervisord could not restart %r: %s", program, exc.faultString)
        return False
    log.info("broker %r restarted with the new config", program)
    return True


def _render_current(layout: Layout) -> tuple[dict[str, str], list[tuple[int, str]], list[Bridge]]:
    problems: list[tuple[int, str]] = []
    try:
        kv = read_kv()
    except Exception as exc:  # noqa: BLE001 - a broken KV store still gets a working local broker
        problems.append((logging.ERROR, f"KV store unreadable ({type(exc).__name__}: {exc}): no bridges"))
        kv = {}
    files = render(kv, layout, report=lambda level, msg: problems.append((level, msg)))
    return files, problems, plan(kv, layout).bridges


def run_bridge_config(
    once: bool = False,
    interval: float = 5.0,
    program: str = "mosquitto",
    stop: threading.Event | None = None,
    layout: Layout | None = None,
) -> int:
    """Render now; with once, check persistence and exit. Else keep the rendered files in step with the KV store."""
    layout = layout or Layout.default()
    stop = stop or threading.Event()
    layout.persistence_dir.mkdir(parents=True, exist_ok=True)
    last_problems: list | None = None
    pending_restart = False
    failed_before = False  # say an unreachable supervisord once, not every few seconds
    if not once:
        log.info(
            "bridge-config: rendering %s from the KV store every %g s; supervisord program %r at %s",
            layout.conf_dir,
            interval,
            program,
            paths.supervisor_socket(),
        )
    while True:
        files, problems, bridges = _render_current(layout)
        if problems != last_problems:
            for level, message in problems:
                log.log(level, "%s", message)
            last_problems = problems
        changed = write_if_changed(layout.conf_dir, files)
        if changed or once:
            log.info(
                "broker config %s in %s: listener 127.0.0.1:%d, bridges: %s",
                "written" if changed else "unchanged",
                layout.conf_dir,
                layout.port,
                "; ".join(b.describe() for b in bridges) or "none",
            )
        if once:
            if _broker_listening(layout.port):
                log.info("a broker is listening on 127.0.0.1:%d: persistence check skipped", layout.port)
            else:
                check_persistence(layout.persistence_dir)
            return 0
        if changed:
            pending_restart = True
        if pending_restart:
            pending_restart = not restart_broker(program, layout, quiet=failed_before)
            failed_before = pending_restart
        if stop.wait(interval):
            log.info("bridge-config stopping")
            return 0
