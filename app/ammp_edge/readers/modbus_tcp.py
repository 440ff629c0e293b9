"""Modbus TCP transport: a small MBAP client of our own, one connection per host:port shared by its unit ids.

Not pymodbus' client: that matches an answer to its request by transaction and unit id only; it
decoded an answer with function code 4 to a request with code 3, cut down an answer whose byte count
did not fit the request and used it, and so took a stray extra frame for the answer to the next
request. Here every answer is checked against its request in full (frames.py: transaction, protocol
and unit id, the MBAP length, function code, byte count) before anything of it is decoded; a
mismatch is a LinkError for that request and the connection is reset.

- Connects with retries and growing delays inside the caller's timeout.
- Transaction ids are random, different for every request: a stray frame cannot carry "the next" one.
- Bytes already waiting before a request (an extra frame, a late answer) mean the connection is out of
  step with the device: it is dropped and a new one made before the request is sent. A connection the
  device closed while idle is noticed the same way and made again.
- After a timeout, an incomplete or a wrong answer the connection is closed, so a late answer can never
  be taken for the answer to a later request. A well-formed exception answer keeps the connection.
- Bytes that arrive together with an answer (a second frame glued to it, a stream) make it a
  LinkError: nothing of it is used.
- At most one answer's bytes are read per request (the header is checked first: at most 260 bytes), so
  a device that streams data costs one short read, a LinkError and its backoff.
- Every wait is a select() of at most INTERRUPT_SLICE that looks at `interrupt` (the bus's stop event, after its grace).
"""

from __future__ import annotations

import errno
import logging
import random
import select
import socket
import time
from collections.abc import Callable

from ..core.macs import MacResolver, lookup
from . import frames
from .modbus import INTERRUPT_SLICE, DeviceSilent, Interrupt, Interrupted, LinkError

log = logging.getLogger(__name__)

CONNECT_DELAYS = (0.0, 0.25, 0.5, 1.0, 2.0)


class TcpTransport:
    """host:port, or a device known only by its MAC: resolved by `resolve_mac` at every connect, so a
    new DHCP lease is followed (the bus program's resolver: ARP, the scan cache, then a rate-limited
    background scan)."""

    def __init__(self, host: str | None, port: int = 502, mac: str | None = None, resolve_mac: MacResolver = lookup):
        self.host, self.port, self.mac = host, port, (None if host else mac)
        self.resolve_mac = resolve_mac
        self.sock: socket.socket | None = None
        self.interrupt: Interrupt | None = None
        self.connects = 0
        self.dropped = 0  # bytes found waiting before a request (the connection was made again)
        self._tid = random.randrange(0x10000)

    @property
    def connected(self) -> bool:
        return self.sock is not None

    # -- waiting ----------------------------------------------------------------------------------
    def _check_interrupt(self) -> None:
        if self.interrupt is not None and self.interrupt.is_set():
            self.close()
            raise Interrupted("the bus is stopping")

    def _wait(self, sock: socket.socket, deadline: float, write: bool = False) -> bool:
        """Until sock is readable (writable): True, or False at the deadline."""
        while True:
            self._check_interrupt()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            r, w, _ = select.select([] if write else [sock], [sock] if write else [], [], min(left, INTERRUPT_SLICE))
            if r or w:
                return True

    def _pause(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self._check_interrupt()
            time.sleep(min(left, INTERRUPT_SLICE))

    # -- connecting -------------------------------------------------------------------------------
    def _connect(self, deadline: float) -> socket.socket:
        if self.sock is not None:
            return self.sock
        if self.mac:
            ip = self.resolve_mac(self.mac)
            if ip is None:
                raise DeviceSilent(f"MAC {self.mac}: no IP address known yet (ARP table, scan cache)")
            if ip != self.host:
                log.info("MAC %s is at %s", self.mac, ip)
            self.host = ip
        why = "no time left"
        for delay in CONNECT_DELAYS:
            if time.monotonic() + delay >= deadline:
                break
            if delay:
                self._pause(delay)
            sock, why = self._connect_once(deadline)
            if sock is not None:
                self.sock = sock
                self.connects += 1
                return sock
        raise DeviceSilent(f"cannot connect to {self.host}:{self.port} ({why})")

    def _connect_once(self, deadline: float) -> tuple[socket.socket | None, str]:
        try:
            family, kind, proto, _, addr = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)[0]
        except (OSError, UnicodeError) as exc:
            return None, str(exc)
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            err = sock.connect_ex(addr)
            if err not in (0, errno.EINPROGRESS):
                sock.close()
                return None, errno.errorcode.get(err, str(err))
            if not self._wait(sock, deadline, write=True):
                sock.close()
                return None, "timed out"
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                sock.close()
                return None, errno.errorcode.get(err, str(err))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock, ""
        except BaseException:
            sock.close()
            raise

    def _in_step(self, sock: socket.socket) -> bool:
        """False when bytes wait on the connection before a request, or the device closed it."""
        try:
            ready, _, _ = select.select([sock], [], [], 0)
            if not ready:
                return True
            data = sock.recv(frames.MAX_TCP_ADU)
        except OSError:
            return False
        if data:
            self.dropped += len(data)
            log.info(
                "%s:%s: %d byte(s) nobody asked for waited before a request; connection made again",
                self.host,
                self.port,
                len(data),
            )
        return False

    # -- one transaction --------------------------------------------------------------------------
    def _recv_exactly(self, sock: socket.socket, n: int, deadline: float) -> bytes:
        buf = b""
        while len(buf) < n:
            if not self._wait(sock, deadline):
                break
            try:
                chunk = sock.recv(n - len(buf))
            except (BlockingIOError, InterruptedError):
                continue
            if not chunk:
                raise LinkError(f"connection closed by the device after {len(buf)} byte(s) of the answer")
            buf += chunk
        return buf

    def _nothing_follows(self, sock: socket.socket) -> None:
        """After a complete answer: bytes already waiting behind it (a second frame sent with it, a
        stream) mean the connection is out of step, and the answer is not used."""
        ready, _, _ = select.select([sock], [], [], 0)
        if not ready:
            return
        try:
            data = sock.recv(frames.MAX_TCP_ADU, socket.MSG_PEEK)
        except OSError:
            data = b""
        if not data:  # the device closed the connection after answering: the answer stands
            self.close()
            return
        self.dropped += len(sock.recv(frames.MAX_TCP_ADU))
        raise LinkError(f"{len(data)} more byte(s) came with the answer (the connection is out of step)")

    def read(self, unit: int, fncode: int, address: int, count: int, timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        pdu = frames.read_request(fncode, address, count)
        sock = self._connect(deadline)
        if not self._in_step(sock):
            self.close()
            sock = self._connect(deadline)
        self._tid = (self._tid + random.randrange(1, 0x10000)) & 0xFFFF
        tid = self._tid
        try:
            sock.sendall(frames.mbap_request(tid, unit, pdu))  # 12 bytes: always fits the send buffer
            header = self._recv_exactly(sock, frames.MBAP_HEADER, deadline)
            if not header:
                self.close()
                raise DeviceSilent(f"no answer from unit {unit} within {timeout:.1f} s")
            if len(header) < frames.MBAP_HEADER:
                raise LinkError(f"incomplete answer: {len(header)} of 7 header bytes in {timeout:.1f} s")
            length = frames.check_mbap_header(header, tid, unit, count)
            body = self._recv_exactly(sock, length, deadline)
            if len(body) < length:
                raise LinkError(f"incomplete answer: {len(body)} of the {length} bytes announced in {timeout:.1f} s")
            self._nothing_follows(sock)
            return frames.check_read_answer(body, fncode, count)
        except LinkError as exc:
            self.close()
            raise LinkError(f"bad answer from unit {unit}: {exc}") from None
        except OSError as exc:
            self.close()
            raise LinkError(f"connection to {self.host}:{self.port} lost: {exc}") from None

    def exchange(
        self,
        request: bytes,
        receive: Callable[[Callable[[float], bytes]], bytes],
        timeout: float,
        deadline: float | None = None,
    ) -> bytes:
        """One transaction of a byte-stream protocol on this connection (rawtcp, readers.streams): the
        connection made or found in step, `request` sent, the answer read by `receive` from as many
        segments as it comes in; after a timeout or a bad answer the connection is closed. (`deadline`:
        the device's, which the connect already keeps within the timeout.)"""
        deadline = time.monotonic() + timeout
        sock = self._connect(deadline)
        if not self._in_step(sock):
            self.close()
            sock = self._connect(deadline)

        def chunk(until: float) -> bytes:
            while self._wait(sock, until):
                try:
                    data = sock.recv(4096)
                except (BlockingIOError, InterruptedError):
                    continue
                if not data:
                    raise LinkError("connection closed by the device")
                return data
            return b""

        try:
            sock.sendall(request)
            return receive(chunk)
        except DeviceSilent as exc:
            self.close()
            raise DeviceSilent(f"{exc} from {self.host}:{self.port}") from None
        except LinkError as exc:
            self.close()
            raise LinkError(f"bad answer from {self.host}:{self.port}: {exc}") from None
        except OSError as exc:
            self.close()
            raise LinkError(f"connection to {self.host}:{self.port} lost: {exc}") from None

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
