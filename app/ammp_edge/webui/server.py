"""`ammp-edge webui`: serve the web UI with cheroot (threaded, production WSGI server).

Port AE_WEBUI_PORT (default 8000) on AE_WEBUI_HOST (default 0.0.0.0). When the port is taken the
program waits and tries again (logged once) instead of exiting, so the rest of the appliance is not
disturbed. SIGTERM stops it within a second or two.

What a request may cost before any page runs (cheroot's own defaults have no limit):
  - request line and headers: at most 64 KiB, all of them within 10 s of the first byte;
  - body: Content-Length only (Transfer-Encoding: chunked is refused with 411 before a byte of it is
    read: no page needs it, and decoding it costs CPU growing with the square of its size), at most
    security.MAX_BODY (and far less before login, security.guard), all of it within 10 s plus 1 s
    per 32 KiB; a request late with either gets 408 and its connection is closed;
  - a body a page did not read is not drained for keep-alive when it is larger than 64 KiB: the
    connection is closed instead.
A thread stuck on a slow client is free again after those deadlines plus one socket timeout (10 s).
"""

from __future__ import annotations

import _pyio
import logging
import socket
import threading
import time

from cheroot import makefile, server as cheroot_server, wsgi

from ..core import credentials, keys, paths
from .app import make_app
from .security import MAX_BODY
from .settings import apply_log_level
from .state import WebState
from .web import Ctx

log = logging.getLogger(__name__)

THREADS = 8
SOCKET_TIMEOUT_S = 10  # one recv (cheroot's default)
HEAD_DEADLINE_S = 10.0  # request line and headers, from their first byte
MAX_HEAD_BYTES = 64 * 1024
BODY_DEADLINE_S = 10.0  # a body, plus BODY_SECONDS_PER_BYTE for each byte it declares
BODY_SECONDS_PER_BYTE = 1 / (32 * 1024)
DRAIN_MAX_BYTES = 64 * 1024  # an unread body larger than this closes the connection instead


class _DeadlineSocketIO(socket.SocketIO):
    """A socket's reads, each within what is left of the current deadline (None: the socket timeout)."""

    deadline: float | None = None
    expired = False

    def readinto(self, b):
        if self.deadline is None:
            return super().readinto(b)
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.expired = True
            raise TimeoutError("timed out")
        sock = self._sock
        before = sock.gettimeout()
        sock.settimeout(min(left, before) if before else left)
        try:
            return super().readinto(b)
        except TimeoutError:
            self.expired = self.expired or time.monotonic() >= self.deadline
            raise
        finally:
            sock.settimeout(before)


class _Reader(makefile.StreamReader):
    def __init__(self, sock: socket.socket, mode: str = "r", bufsize: int = _pyio.DEFAULT_BUFFER_SIZE):
        _pyio.BufferedReader.__init__(self, _DeadlineSocketIO(sock, "rb"), bufsize)
        self.bytes_read = 0


def _makefile(sock: socket.socket, mode: str = "r", bufsize: int = _pyio.DEFAULT_BUFFER_SIZE):
    return _Reader(sock, mode, bufsize) if "r" in mode else makefile.StreamWriter(sock, mode, bufsize)


class _Request(cheroot_server.HTTPRequest):
    """cheroot's request with deadlines, no chunked bodies and no draining of large unread ones."""

    def _raw(self) -> _DeadlineSocketIO:
        return self.conn.rfile.raw

    def parse_request(self) -> None:
        self._raw().deadline = time.monotonic() + HEAD_DEADLINE_S
        super().parse_request()

    def read_request_headers(self) -> bool:
        if not super().read_request_headers():
            return False
        if self.chunked_read:
            self.close_connection = True
            self.simple_response("411 Length Required", "chunked request bodies are not accepted: send Content-Length")
            return False
        return True

    def respond(self) -> None:
        try:
            length = max(int(self.inheaders.get(b"Content-Length", 0)), 0)
        except ValueError:
            length = 0
        self._raw().deadline = time.monotonic() + BODY_DEADLINE_S + length * BODY_SECONDS_PER_BYTE
        try:
            super().respond()
        finally:
            self._raw().deadline = None

    def send_headers(self) -> None:
        if self._raw().expired or getattr(self.rfile, "remaining", 0) > DRAIN_MAX_BYTES:
            self.close_connection = True
        super().send_headers()


class _Connection(cheroot_server.HTTPConnection):
    RequestHandlerClass = _Request

    def __init__(self, server, sock, makefile=None):
        super().__init__(server, sock, _makefile)


def make_server(host: str, port: int, app) -> wsgi.Server:
    server = wsgi.Server(
        (host, port), app, numthreads=THREADS, server_name="ammp-edge", shutdown_timeout=2, timeout=SOCKET_TIMEOUT_S
    )
    server.ConnectionClass = _Connection
    server.max_request_header_size = MAX_HEAD_BYTES
    # a net under security.guard, which refuses a body over MAX_BODY by its Content-Length, unread, and names
    # the limits; cheroot's own refusal (above this) says only that it is too large
    server.max_request_body_size = 4 * MAX_BODY
    return server


def announce_password(state: WebState) -> None:
    """Make sure a password is set. The initial one is never written to this program's log (a file
    others might read, also shown on the Logs page): `up` shows it on the console, and it is in the
    private file named here."""
    if credentials.ensure_password(state.store):
        log.warning(
            "the initial web UI password is in %s (and on the console of `ammp-edge up`); change it under Settings",
            paths.webui_initial_password_path(),
        )


def serve(stop: threading.Event, host: str | None = None, port: int | None = None) -> int:
    host, port = host or paths.webui_host(), port or paths.webui_port()
    state = WebState()
    apply_log_level(state.store.get(keys.LOG_LEVEL))
    announce_password(state)
    state.start()
    server = make_server(host, port, make_app(Ctx(state)))
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
