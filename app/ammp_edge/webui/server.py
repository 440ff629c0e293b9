"""`ammp-edge webui`: serve the web UI with cheroot (threaded, production WSGI server).

Port AE_WEBUI_PORT (default 8000) on AE_WEBUI_HOST (default 0.0.0.0). When the port is taken the
program waits and tries again (logged once) instead of exiting, so the rest of the appliance is not
disturbed. SIGTERM stops it within a second or two.
"""

from __future__ import annotations

import logging
import os
import threading

from cheroot import wsgi

from . import auth
from .settings import apply_log_level
from .app import Ctx, make_app
from .state import WebState

log = logging.getLogger(__name__)

THREADS = 8


def host_port() -> tuple[str, int]:
    return os.environ.get("AE_WEBUI_HOST") or "0.0.0.0", int(os.environ.get("AE_WEBUI_PORT") or 8000)


def announce_password(state: WebState) -> None:
    initial = auth.ensure_password(state.store)
    if initial:
        log.warning("initial web UI password: %s (change it under Settings; also in %s)", initial,
                    auth.initial_password_path())


def serve(stop: threading.Event, host: str | None = None, port: int | None = None) -> int:
    dh, dp = host_port()
    host, port = host or dh, port or dp
    state = WebState()
    apply_log_level(state.store.get("log_level"))
    announce_password(state)
    state.start()
    server = wsgi.Server((host, port), make_app(Ctx(state)), numthreads=THREADS, server_name="ammp-edge",
                         shutdown_timeout=2)
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
