"""Scripted byte-stream devices for the rawserial and rawtcp tests.

`RawSerialResponder(path, script)` owns one end of a socat pty pair (serial_lines.pty_pair). It
collects what the reader writes; `script(buf)` sees the bytes received since the last answer and
returns None (wait for more), or (consumed, reply), where reply is bytes, None (stay silent), or a
list of (delay seconds, bytes) parts written one after another. It also answers Modbus RTU reads
when given `rtu` (request tuple -> frame), so one line can carry both protocols. Every transaction
is logged with its times, so a test can check that the master waited for each answer.

`RawTcpResponder(script)` listens on 127.0.0.1 (a free port); `script(request, index)` gets each
request (all bytes of one read from the socket) and returns what `RawSerialResponder` scripts return
after `consumed`: bytes, None, or timed parts (each part its own TCP segment: TCP_NODELAY and a
pause between them), or the string "close" to close the connection.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import serial

from .serial_lines import crc16

Parts = bytes | list[tuple[float, bytes]] | None


def parts_of(reply: Parts) -> list[tuple[float, bytes]]:
    if reply is None:
        return []
    if isinstance(reply, bytes):
        return [(0.0, reply)]
    return reply


class RawSerialResponder:
    def __init__(
        self,
        path: str,
        script: Callable[[bytes], tuple[int, Parts] | None],
        rtu: Callable[[tuple[int, int, int, int]], bytes | None] | None = None,
    ):
        self.script, self.rtu = script, rtu
        self.log: list[tuple[str, bytes, float, float]] = []  # (kind, request, received at, answer done at)
        self.ser = serial.Serial(path, timeout=0.01)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="raw-responder", daemon=True)

    def __enter__(self) -> RawSerialResponder:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self.ser.close()

    def _answer(self, kind: str, request: bytes, reply: Parts) -> None:
        got = time.monotonic()
        for delay, data in parts_of(reply):
            if delay and self._stop.wait(delay):
                return
            self.ser.write(data)
            self.ser.flush()
        self.log.append((kind, request, got, time.monotonic()))

    def _run(self) -> None:
        buf = b""
        while not self._stop.is_set():
            chunk = self.ser.read(1)
            if chunk:
                chunk += self.ser.read(self.ser.in_waiting)
            buf += chunk
            if not buf:
                continue
            if self.rtu is not None and len(buf) == 8 and crc16(buf[:6]) == buf[6:]:
                req = (buf[0], buf[1], int.from_bytes(buf[2:4], "big"), int.from_bytes(buf[4:6], "big"))
                request, buf = buf, b""
                self._answer("rtu", request, self.rtu(req))
                continue
            verdict = self.script(buf)
            if verdict is not None:
                consumed, reply = verdict
                request, buf = buf[:consumed], buf[consumed:]
                self._answer("raw", request, reply)


def answer_queries(replies: dict[bytes, Callable[[], Parts] | Parts]) -> Callable[[bytes], tuple[int, Parts] | None]:
    """A script answering each known query (the whole of what was received) with its reply (or the
    reply a callable gives at that moment); bytes that cannot begin a known query are dropped unanswered."""

    def script(buf: bytes) -> tuple[int, Parts] | None:
        for query, reply in replies.items():
            if buf == query:
                return len(buf), reply() if callable(reply) else reply
        if not any(query.startswith(buf) for query in replies):
            return len(buf), None  # not the start of a query it knows: dropped, unanswered
        return None

    return script


class RawTcpResponder:
    def __init__(self, script: Callable[[bytes, int], Parts | str]):
        self.script = script
        self.requests: list[bytes] = []
        self.connections = 0
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.server.settimeout(0.05)
        self.port = self.server.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="raw-tcp-responder", daemon=True)

    def __enter__(self) -> RawTcpResponder:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self.server.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(0.05)
        with conn:
            while not self._stop.is_set():
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                self.requests.append(data)
                reply = self.script(data, len(self.requests) - 1)
                if reply == "close":
                    return
                assert not isinstance(reply, str)
                for delay, part in parts_of(reply):
                    if delay and self._stop.wait(delay):
                        return
                    try:
                        conn.sendall(part)
                    except OSError:
                        return
