"""What the byte-stream readers (rawserial, rawtcp) share: the transaction both transports offer, the
ways an answer is known to be complete, and the reading of a device through answers cached per
request.

A transport that carries byte-stream transactions (the serial line of modbus_rtu, the connection of
modbus_tcp) has `exchange(request, receive, timeout)`: it makes the line ready (the serial line quiet,
the connection in step), writes `request` and calls `receive(chunk)`, where `chunk(until)` returns the
bytes that arrived by monotonic time `until` (b"" when none did) and raises LinkError when the
connection was closed. After a DeviceSilent or LinkError the transport makes sure no late part of that
answer is taken for the next one (the line watched and drained, the connection closed).

An answer is complete (each receiver raises DeviceSilent when nothing came within the timeout, and
LinkError when the bytes cannot be an answer; at most MAX_RESPONSE bytes are read):

- by_terminator: the bytes up to and including the terminator; bytes after it are an error.
- by_quiet: when the line stays quiet for `quiet` seconds after the last byte (upstream slept a
  blind second and took whatever had come).
- by_crc: when the last two bytes are the Modbus CRC-16 of the bytes before them (a response in
  several TCP segments is put together; upstream used the first segment).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..core import codec
from ..core.config import Device
from ..core.rawfields import MAX_RESPONSE
from .frames import crc16
from .modbus import DeviceResult, DeviceSilent, Interrupt, Interrupted, LinkError

log = logging.getLogger(__name__)

Chunk = Callable[[float], bytes]
Receive = Callable[[Chunk], bytes]


class Exchange(Protocol):
    interrupt: Interrupt | None

    def exchange(self, request: bytes, receive: Receive, timeout: float, deadline: float | None = None) -> bytes: ...

    def close(self) -> None: ...


def show(data: bytes, limit: int = 48) -> str:
    """Bytes for an error message: their repr, cut to `limit` bytes."""
    return repr(data[:limit]) + (f"... ({len(data)} bytes)" if len(data) > limit else "")


def _first(chunk: Chunk, timeout: float, what: str) -> bytes:
    data = chunk(time.monotonic() + timeout)
    if not data:
        raise DeviceSilent(f"no answer to {what} within {timeout:.1f} s")
    return data


def _within(timeout: float, deadline: float | None) -> float:
    """The timeout of an answer, cut to the device's deadline (the line may have taken some of it to
    settle before the request was sent)."""
    return timeout if deadline is None else max(0.0, min(timeout, deadline - time.monotonic()))


def _bounded(buf: bytearray, limit: int) -> None:
    if len(buf) > limit:
        raise LinkError(f"answer longer than {limit} bytes (a device streaming, or another protocol?)")


def by_terminator(
    terminator: bytes, timeout: float, what: str, limit: int = MAX_RESPONSE, deadline: float | None = None
) -> Receive:
    def receive(chunk: Chunk) -> bytes:
        timeout_ = _within(timeout, deadline)
        end = time.monotonic() + timeout_
        buf = bytearray(_first(chunk, timeout_, what))
        while True:
            at = buf.find(terminator)
            if at >= 0:
                extra = len(buf) - at - len(terminator)
                if extra:
                    raise LinkError(f"{extra} byte(s) followed the terminator {terminator!r}: {show(bytes(buf))}")
                return bytes(buf)
            _bounded(buf, limit)
            more = chunk(end)
            if not more:
                raise LinkError(f"no terminator {terminator!r} within {timeout_:.1f} s: {show(bytes(buf))}")
            buf += more

    return receive


def by_quiet(
    quiet: float, timeout: float, what: str, limit: int = MAX_RESPONSE, least: int = 0, deadline: float | None = None
) -> Receive:
    """Complete when nothing more arrives for `quiet` seconds (after at least `least` bytes: before
    that the rest is waited for until the timeout)."""

    def receive(chunk: Chunk) -> bytes:
        timeout_ = _within(timeout, deadline)
        end = time.monotonic() + timeout_
        buf = bytearray(_first(chunk, timeout_, what))
        while True:
            _bounded(buf, limit)
            now = time.monotonic()
            if now >= end + quiet:
                raise LinkError(f"still sending {timeout_:.1f} s after the request: {show(bytes(buf))}")
            until = now + quiet if len(buf) >= least else end
            try:
                more = chunk(until)
            except LinkError:
                if len(buf) >= least:
                    return bytes(buf)  # the device closed the connection after answering
                raise
            if not more:
                if len(buf) < least:
                    raise LinkError(f"short answer: {len(buf)} byte(s) within {timeout_:.1f} s, {least} needed")
                return bytes(buf)
            buf += more

    return receive


def by_crc(timeout: float, what: str, limit: int = MAX_RESPONSE, deadline: float | None = None) -> Receive:
    def receive(chunk: Chunk) -> bytes:
        timeout_ = _within(timeout, deadline)
        end = time.monotonic() + timeout_
        buf = bytearray(_first(chunk, timeout_, what))
        while True:
            if len(buf) >= 3 and crc16(bytes(buf[:-2])) == bytes(buf[-2:]):
                return bytes(buf)
            _bounded(buf, limit)
            more = chunk(end)
            if not more:
                raise LinkError(
                    f"no answer with a valid CRC within {timeout_:.1f} s (CRC {bytes(buf[-2:]).hex()}, expected "
                    f"{crc16(bytes(buf[:-2])).hex()}): {show(bytes(buf))}"
                )
            buf += more

    return receive


class RawDevice:
    """Reads a byte-stream device: one transaction per distinct request (the answer is cached for the
    cycle, so fields sharing a query cost one), each within the device's timeout and its deadline.

    A device found down (no request answered) starts its next attempt with its first request only,
    and stops at the first silent one: a dead device costs one timeout per attempt (at most two the
    first time, by its deadline), then its backoff. Subclasses say what a field's request is, how its
    answer is received and where its value is."""

    def __init__(self, device: Device, transport: Exchange):
        self.device = device
        self.transport = transport
        self.fields: dict[str, Any] = dict(device.fields)
        self.down = False
        self.last_answers: dict[bytes, bytes | str] = {}  # request -> the last cycle's answer (for the device test)

    def request(self, f: Any) -> bytes:
        raise NotImplementedError

    def key(self, f: Any) -> Any:
        """Fields with the same key share one transaction per cycle (default: the same request bytes)."""
        return self.request(f)

    def receiver(self, f: Any, timeout: float, deadline: float) -> Receive:
        raise NotImplementedError

    def value_bytes(self, f: Any, answer: bytes) -> bytes:
        """The field's bytes in its answer; LinkError when the answer cannot hold them."""
        raise NotImplementedError

    def read(self, deadline: float, keep_raw: bool = False) -> DeviceResult:
        res = DeviceResult(raw={} if keep_raw else None)
        answers: dict[Any, bytes | str] = {}
        asked: dict[Any, bytes] = {}
        answered = stop = False
        for var, f in self.fields.items():
            key = self.key(f)
            if key not in answers:
                asked[key] = self.request(f)
                answers[key] = self._ask(asked[key], f, deadline, res, stop)
                if res.interrupted:
                    break
                if isinstance(answers[key], bytes):
                    answered = True
                elif self.down and not answered:
                    stop = True  # found down before and silent again: the other requests are not asked
            answer = answers[key]
            if isinstance(answer, str):
                res.item_errors[var] = answer
                continue
            try:
                raw = self.value_bytes(f, answer)
                if res.raw is not None:
                    res.raw[var] = list(raw)
                res.values[var] = codec.decode_parsed(raw, f.spec, f.parse_as)
            except (LinkError, codec.DecodeError) as exc:
                res.errors.append(f"{var}: {exc}")
                res.item_errors[var] = str(exc)
        if res.interrupted:
            for var in self.fields:
                if var not in res.values and var not in res.item_errors:
                    res.item_errors[var] = "the bus is stopping; not read"
        res.errors[0:0] = _failures(asked, answers)
        res.failed = bool(self.fields) and not answered and not res.interrupted
        if not res.interrupted:
            self.down = res.failed
        self.last_answers = {asked[k]: a for k, a in answers.items()}
        return res

    def _ask(self, request: bytes, f: Any, deadline: float, res: DeviceResult, stop: bool) -> bytes | str:
        if stop:
            return "not asked: the device is not answering"
        left = deadline - time.monotonic()
        if left <= 0:
            return "deadline passed; not read"
        timeout = min(self.device.timeout, left)
        try:
            answer = self.transport.exchange(request, self.receiver(f, timeout, deadline), timeout, deadline)
        except Interrupted:
            res.interrupted = True
            res.errors.append("the bus is stopping: not read")
            return "the bus is stopping; not read"
        except (DeviceSilent, LinkError) as exc:
            res.requests += 1
            return str(exc)
        res.requests += 1
        return answer


def _failures(asked: dict[Any, bytes], answers: dict[Any, bytes | str]) -> list[str]:
    """One error line per reason: the request it happened to, or the first of those and how many."""
    by_reason: dict[str, list[bytes]] = {}
    for key, answer in answers.items():
        if isinstance(answer, str):
            by_reason.setdefault(answer, []).append(asked[key])
    lines = []
    for reason, requests in by_reason.items():
        more = f" and {len(requests) - 1} more" if len(requests) > 1 else ""
        lines.append(f"request {show(requests[0], 24)}{more}: {reason}")
    return lines
