"""`ammp-edge webui`: serve the web UI with cheroot (threaded, production WSGI server).

Port AE_WEBUI_PORT (default 8000) on AE_WEBUI_HOST (default 0.0.0.0). When the port is taken the
program waits and tries again (logged once) instead of exiting, so the rest of the appliance is not
disturbed. SIGTERM stops it within a second or two.
"""

from __future__ import annotations

import logging
import threading

from cheroot import wsgi

from ..core import credentials, keys, paths
from .app import make_app
from .settings import apply_log_level
from .state import WebState
from .web import Ctx

log = logging.getLogger(__name__)

THREADS = 8


def announce_password(state: WebState) -> None:
    initial = credentials.ensure_password(state.store)
    if initial:
        log.warning(
            "initial web UI password: %s (change it under Settings; also in %s)",
            initial,
            paths.webui_initial_password_path(),
        )


def serve(stop: threading.Event, host: str | None = None, port: int | None = None) -> int:
    host, port = host or paths.webui_host(), port or paths.webui_port()
    state = WebState()
    apply_log_level(state.store.get(keys.LOG_LEVEL))
    announce_password(state)
    state.start()
    server = wsgi.Server(
        (host, port), make_app(Ctx(state)), numthreads=THREADS, server_name="ammp-edge", shutdown_timeout=2
    )
    complained = False
    while not stop.is_set():
        try:
            server.prepare()
            break
        except OSError as exc:
            if not complained:
                log.error("web UI cannot listen on %s:%d (%s); trying again every 5 s", host, port, exc)
                complained = True
            stop.wait(5)
    if stop.is_set():
        state.stop()
        return 0
    log.info("web UI on http://%s:%d/", host, port)
    thread = threading.Thread(target=server.serve, name="webui-server", daemon=True)
    thread.start()
    stop.wait()
    server.stop()
    state.stop()
    log.info("web UI stopped")
    return 0
