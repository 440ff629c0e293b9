"""MQTT 3.1.1 packets: what the subscriber sends, built; what it receives, read and checked.

A remaining length is at most 4 bytes; a topic name from the broker is UTF-8 without NUL or
wildcards; a packet that stops half-way within PACKET_TIMEOUT is a protocol error.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 1, 2, 3, 4, 8, 9, 12, 13, 14
CONNACK_REFUSED = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}
MAX_PAYLOAD = 256 * 1024
SLICE = 0.25  # seconds: the I/O thread looks at its stop flag and the keepalive this often
PACKET_TIMEOUT = 10.0  # seconds for the rest of a packet once its first byte arrived
TOPICS_PER_SUBSCRIBE = 50
BACKOFF_START, BACKOFF_MAX = 1.0, 60.0


class ProtocolError(Exception):
    """The broker sent something that is not a valid MQTT 3.1.1 packet for us."""


class Refused(Exception):
    """CONNACK with a refusal code, or a subscription the broker refused."""


@dataclass(frozen=True, slots=True)
class Message:
    payload: bytes | None  # None: the message could not be taken (see error)
    received: float  # time.monotonic() at arrival
    received_wall: float  # time.time() at arrival
    retained: bool
    error: str | None = None


def _utf8(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 0xFFFF:
        raise ValueError(f"{text[:40]!r}... is longer than MQTT allows (65535 bytes)")
    return len(raw).to_bytes(2, "big") + raw


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([(kind << 4) | flags]) + _remaining_length(len(body)) + body


def connect_packet(
    client_id: str, keepalive: int, clean: bool, username: str | None = None, password: str | None = None
) -> bytes:
    flags = (0x02 if clean else 0) | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = _utf8("MQTT") + bytes([4, flags]) + keepalive.to_bytes(2, "big") + _utf8(client_id)
    if username is not None:
        body += _utf8(username)
    if password is not None:
        body += _utf8(password)
    return packet(CONNECT, 0, body)


def subscribe_packet(packet_id: int, topics: list[str], qos: int) -> bytes:
    body = packet_id.to_bytes(2, "big") + b"".join(_utf8(t) + bytes([qos]) for t in topics)
    return packet(SUBSCRIBE, 0b0010, body)


def check_topic(raw: bytes) -> str:
    """A topic name from a PUBLISH: UTF-8, not empty, no NUL, no wildcards; ProtocolError otherwise."""
    try:
        topic = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"a PUBLISH topic is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if not topic or "\x00" in topic or "+" in topic or "#" in topic:
        raise ProtocolError(f"a PUBLISH carries the invalid topic name {topic!r}")
    return topic


class Wire:
    """Buffered reads of exact byte counts from a socket with a short timeout."""

    def __init__(self, sock: Any, stop: threading.Event):
        self.sock, self.stop = sock, stop
        self.buf = bytearray()

    def fill(self, deadline: float | None) -> bool:
        """One recv into the buffer; False when nothing came within SLICE. EOF is an OSError."""
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            if deadline is not None and time.monotonic() > deadline:
                raise ProtocolError("the broker stopped in the middle of a packet") from None
            return False
        if not data:
            raise ConnectionError("the broker closed the connection")
        self.buf += data
        return True

    def take(self, n: int, deadline: float) -> bytes:
        while len(self.buf) < n:
            if self.stop.is_set():
                raise ConnectionAbortedError("stopping")
            self.fill(deadline)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def skip(self, n: int, deadline: float) -> None:
        while n > 0:
            if not self.buf:
                if self.stop.is_set():
                    raise ConnectionAbortedError("stopping")
                self.fill(deadline)
            k = min(n, len(self.buf))
            del self.buf[:k]
            n -= k


def read_header(wire: Wire, first: int, deadline: float) -> tuple[int, int, int]:
    """(type, flags, remaining length) after the first byte; the length is at most 4 bytes."""
    length, shift = 0, 0
    for _ in range(4):
        byte = wire.take(1, deadline)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return first >> 4, first & 0x0F, length
    raise ProtocolError("a remaining length longer than 4 bytes")
