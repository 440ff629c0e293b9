"""Hostile devices on loopback: a Modbus TCP device on raw sockets that answers each request with a
scripted frame, and devices that stream bytes at the bus without being asked (TCP and serial).

`HostileTcpDevice(script)` reads each 12-byte request (MBAP header and a read-registers PDU) and sends
what `script(request, index)` returns: bytes, a list of byte strings sent one after another with a
short pause between them, or None for no answer. `good_tcp(req)` is a correct answer (register value
1000 + its address), `dead_tcp(req, ...)` the same frame shape carrying 0xDEAD in every register.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

DEAD = 0xDEAD  # 57005: a value only a bad frame carries


def value_at(address: int) -> int:
    return 1000 + address


@dataclass(frozen=True)
class TcpRequest:
    tid: int
    unit: int
    fncode: int
    address: int
    count: int


def mbap(tid: int, unit: int, pdu: bytes, protocol: int = 0, length: int | None = None) -> bytes:
    n = len(pdu) + 1 if length is None else length
    return tid.to_bytes(2, "big") + protocol.to_bytes(2, "big") + n.to_bytes(2, "big") + bytes([unit]) + pdu


def registers_pdu(fncode: int, registers: list[int], byte_count: int | None = None) -> bytes:
    data = b"".join(r.to_bytes(2, "big") for r in registers)
    return bytes([fncode, len(data) if byte_count is None else byte_count]) + data


def good_tcp(req: TcpRequest) -> bytes:
    regs = [value_at(a) for a in range(req.address, req.address + req.count)]
    return mbap(req.tid, req.unit, registers_pdu(req.fncode, regs))


def dead_tcp(req: TcpRequest, **kw) -> bytes:
    """An answer of the request's shape with 0xDEAD everywhere; kw: tid, unit, fncode, count, byte_count,
    protocol, length override single parts."""
    count = kw.get("count", req.count)
    pdu = registers_pdu(kw.get("fncode", req.fncode), [DEAD] * count, kw.get("byte_count"))
    return mbap(kw.get("tid", req.tid), kw.get("unit", req.unit), pdu, kw.get("protocol", 0), kw.get("length"))


Answer = bytes | list[bytes] | None


class HostileTcpDevice:
    def __init__(self, script: Callable[[TcpRequest, int], Answer]):
        self.script = script
        self.requests: list[TcpRequest] = []
        self.connections = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, name="hostile-tcp", daemon=True).start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._conn, args=(conn,), daemon=True).start()

    def _recv(self, conn: socket.socket, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                return b""
            buf += chunk
        return buf

    def _conn(self, conn: socket.socket) -> None:
        with contextlib.closing(conn):
            while not self._stop.is_set():
                try:
                    raw = self._recv(conn, 12)
                except OSError:
                    return
                if not raw:
                    return
                req = TcpRequest(
                    int.from_bytes(raw[0:2], "big"),
                    raw[6],
                    raw[7],
                    int.from_bytes(raw[8:10], "big"),
                    int.from_bytes(raw[10:12], "big"),
                )
                with self._lock:
                    self.requests.append(req)
                    index = len(self.requests) - 1
                out = self.script(req, index)
                try:
                    for i, part in enumerate([out] if isinstance(out, bytes) else out or []):
                        if i:
                            time.sleep(0.02)
                        conn.sendall(part)
                except OSError:
                    return

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


class TcpStreamer:
    """Accepts connections and sends `chunk` over and over as fast as the socket takes it, never
    reading (a device streaming at the bus)."""

    def __init__(self, chunk: bytes = bytes(range(256)) * 16):
        self.chunk = chunk
        self.sent = 0
        self.connections = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._serve, name="tcp-streamer", daemon=True).start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._stream, args=(conn,), daemon=True).start()

    def _stream(self, conn: socket.socket) -> None:
        with contextlib.closing(conn):
            while not self._stop.is_set():
                try:
                    conn.sendall(self.chunk)
                except OSError:
                    return
                self.sent += len(self.chunk)

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


class SerialStreamer:
    """Writes `chunk` to a pty end over and over (a device streaming on the line); a full pty buffer
    blocks the writer until the other end reads."""

    def __init__(self, path: str, chunk: bytes = bytes(range(256)) * 4):
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self.chunk = chunk
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serial-streamer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            _, writable, _ = select.select([], [self.fd], [], 0.1)
            if not writable:
                continue
            try:
                self.sent += os.write(self.fd, self.chunk)
            except BlockingIOError:
                continue
            except OSError:
                time.sleep(0.01)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        os.close(self.fd)
