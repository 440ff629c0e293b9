"""The `snmp` reader: GET of each field's `oid`, batched per device, over v1, v2c (community) or v3 (USM).

A small client of our own (ber.py, message.py, usm.py) rather than pysnmp: the bus process stays
light (hashlib and cryptography load only for a v3 device) and every answer is checked our way:

- One UDP socket per agent, connected, so the kernel drops datagrams from anyone else.
- The fields' OIDs go in as few GETs as the agent allows: `max_oids` per request (default 24); an
  agent's tooBig splits the request in halves and the device keeps the smaller size for later cycles.
- An answer is used only when it is a Response with the request id sent (v3: also the message id,
  the HMAC, decrypted with our salt) naming exactly the OIDs asked, in order (message.check_answer).
  A datagram with another request id (a late answer to a request that timed out) is dropped and the
  wait goes on; anything else wrong is a LinkError for that request, nothing of it used.
- noSuchObject, noSuchInstance, endOfMibView, v1's noSuchName (the rest of the request is asked
  again without it) and a value that cannot be decoded: that field is null, with the reason.
- A device whose first request gets no answer is down (one timeout, then the bus's backoff).
- Values: INTEGER and the counters are integers, OCTET STRING text (a number when the driver's
  typecast or multiplier asks for one, as upstream); then multiplier, offset and typecast as everywhere.
"""

from __future__ import annotations

import logging
import random
import select
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ...core import codec
from ...core.config import Device
from ...core.netfields import SnmpField
from ..modbus import INTERRUPT_SLICE, DeviceResult, DeviceSilent, Interrupt, Interrupted, LinkError
from . import ber, message as msg
from .message import MessageError, Stray

log = logging.getLogger(__name__)

MAX_DATAGRAM = 65535
MAX_MSG_SIZE = 65507
T = TypeVar("T")


class SnmpTransport:
    """The bus's sockets, one per agent (host, port)."""

    def __init__(self) -> None:
        self.socks: dict[tuple[str, int], socket.socket] = {}
        self.interrupt: Interrupt | None = None
        self.strays = 0

    def _sock(self, host: str, port: int) -> socket.socket:
        key = (host, port)
        if key not in self.socks:
            try:
                info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
                sock = socket.socket(info[0], info[1], info[2])
                sock.setblocking(False)
                sock.connect(info[4])
            except (OSError, UnicodeError) as exc:
                raise DeviceSilent(f"cannot reach {host}:{port}: {exc}") from None
            self.socks[key] = sock
        return self.socks[key]

    def exchange(self, host: str, port: int, payload: bytes, timeout: float, accept: Callable[[bytes], T]) -> T:
        """Send `payload`, then hand each datagram to `accept` until it returns (it raises Stray for
        a datagram that answers something else, MessageError for a bad answer) or the timeout."""
        sock = self._sock(host, port)
        deadline = time.monotonic() + timeout
        try:
            while True:  # bytes left from an earlier request (late answers) are not this request's
                sock.recv(MAX_DATAGRAM)
                self.strays += 1
        except (BlockingIOError, InterruptedError, ConnectionRefusedError):
            pass
        try:
            sock.send(payload)
            while True:
                if self.interrupt is not None and self.interrupt.is_set():
                    raise Interrupted("the bus is stopping")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DeviceSilent(f"no answer from {host}:{port} within {timeout:.1f} s")
                ready, _, _ = select.select([sock], [], [], min(left, INTERRUPT_SLICE))
                if not ready:
                    continue
                try:
                    data = sock.recv(MAX_DATAGRAM)
                except (BlockingIOError, InterruptedError):
                    continue
                try:
                    return accept(data)
                except Stray as exc:
                    self.strays += 1
                    log.debug("%s:%s: %s; dropped", host, port, exc)
                except MessageError as exc:
                    raise LinkError(f"bad answer from {host}:{port}: {exc}") from None
        except ConnectionRefusedError:
            raise DeviceSilent(f"{host}:{port} refused (ICMP port unreachable: no agent there)") from None
        except OSError as exc:
            raise LinkError(f"{host}:{port}: {exc}") from None

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close()
        self.socks.clear()


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def convert(vb: msg.Varbind, f: SnmpField) -> Any:
    """A varbind's value through the field's scaling and typecast; DecodeError when it has none."""
    if vb.tag in ber.EXCEPTIONS:
        raise codec.DecodeError(f"{ber.EXCEPTIONS[vb.tag]} for {msg.dotted(vb.oid)}")
    try:
        value = ber.decode_value(vb.tag, vb.body, msg.dotted(vb.oid))
    except ber.BerError as exc:
        raise codec.DecodeError(str(exc)) from None
    if value is None:
        raise codec.DecodeError(f"NULL value for {msg.dotted(vb.oid)}")
    if isinstance(value, bytes):
        if vb.tag == ber.OPAQUE:
            raise codec.DecodeError(f"Opaque value for {msg.dotted(vb.oid)} ({value.hex()}) is not supported")
        try:
            text = value.decode("utf-8").rstrip("\x00").strip()
        except UnicodeDecodeError:
            raise codec.DecodeError(f"OCTET STRING {value[:16].hex()}... is not UTF-8 text") from None
        s = f.spec
        if s.typecast in ("int", "float") or (s.typecast is None and (s.multiplier, s.offset) != (None, None)):
            try:
                return codec.scale(_number(text), s)
            except ValueError:
                raise codec.DecodeError(f"{text[:40]!r} is not a number") from None
        return codec.scale(text, s)
    return codec.scale(value, f.spec)


class SnmpDevice:
    """One agent: its fields' OIDs read in batches each cycle."""

    def __init__(self, device: Device, transport: SnmpTransport):
        self.device, self.transport = device, transport
        a = device.address
        self.host, self.port, self.version = str(a["host"]), int(a.get("port", 161)), int(a.get("version", 2))
        self.community = str(a.get("community", "public"))
        self.batch = int(a.get("max_oids", 24))
        self.fields: dict[str, SnmpField] = dict(device.fields)
        self.by_oid: dict[tuple[int, ...], list[str]] = {}
        for name, f in self.fields.items():
            self.by_oid.setdefault(f.oid, []).append(name)
        self.v3 = None
        if self.version == 3:
            from .v3 import V3Session  # hashlib (and cryptography with privacy) only for v3

            self.v3 = V3Session(a, self)

    def _request_id(self) -> int:
        return random.randrange(1, 0x7FFFFFFF)

    def get(self, oids: list[tuple[int, ...]], timeout: float) -> msg.Pdu:
        if self.v3 is not None:
            return self.v3.get(oids, timeout)
        rid = self._request_id()
        payload = msg.encode_community(self.version, self.community, msg.encode_pdu(msg.GET, rid, oids))

        def accept(data: bytes) -> msg.Pdu:
            pdu = msg.decode_community(data, self.version, self.community)
            if pdu.request_id != rid:
                raise Stray(f"request id {pdu.request_id} (waiting for {rid})")
            msg.check_answer(pdu, rid, oids)
            return pdu

        return self.transport.exchange(self.host, self.port, payload, timeout, accept)

    def read(self, deadline: float) -> DeviceResult:
        res = DeviceResult()
        oids = list(self.by_oid)
        queue = [oids[i : i + self.batch] for i in range(0, len(oids), self.batch)]
        answered = False

        def fail(batch: list[tuple[int, ...]], why: str, null: bool) -> None:
            for oid in batch:
                for name in self.by_oid[oid]:
                    res.item_errors[name] = why
                    res.errors.append(f"{name} ({msg.dotted(oid)}): {why}")
                    if null:
                        res.values[name] = None

        while queue:
            batch = queue.pop(0)
            left = deadline - time.monotonic()
            if left <= 0:
                fail([o for b in [batch, *queue] for o in b], "deadline passed; not read", False)
                break
            try:
                pdu = self.get(batch, min(self.device.timeout, left))
                res.requests += 1
            except Interrupted as exc:
                res.interrupted = True
                res.errors.append(str(exc))
                break
            except (DeviceSilent, LinkError) as exc:
                res.requests += 1
                if not answered:
                    res.failed = True
                    res.errors.append(str(exc))
                    res.item_errors.update((n, str(exc)) for b in [batch, *queue] for o in b for n in self.by_oid[o])
                    break
                fail(batch, str(exc), False)
                continue
            answered = True
            if pdu.error_status:
                self._error(pdu, batch, queue, fail)
                continue
            for vb in pdu.varbinds:
                for name in self.by_oid[vb.oid]:
                    try:
                        res.values[name] = convert(vb, self.fields[name])
                    except codec.DecodeError as exc:
                        fail_one = str(exc)
                        res.values[name] = None
                        res.item_errors[name] = fail_one
                        res.errors.append(f"{name}: {fail_one}")
        return res

    def _error(self, pdu: msg.Pdu, batch: list, queue: list, fail: Callable[[list, str, bool], None]) -> None:
        name = msg.ERRORS.get(pdu.error_status, f"error {pdu.error_status}")
        if pdu.error_status == msg.TOO_BIG:
            if len(batch) > 1:
                half = (len(batch) + 1) // 2
                if half < self.batch:
                    log.info("[%s] tooBig for %d OIDs: %d per request from now on", self.device.key, len(batch), half)
                    self.batch = half
                queue[0:0] = [batch[:half], batch[half:]]
            else:
                fail(batch, "tooBig: the agent cannot answer this OID in one message", True)
            return
        if 1 <= pdu.error_index <= len(batch):
            bad = batch[pdu.error_index - 1]
            fail([bad], f"{name} (error-index {pdu.error_index})", True)
            rest = [o for o in batch if o != bad]
            if rest:
                queue.insert(0, rest)  # v1: one missing OID fails the whole request; ask the others again
            return
        fail(batch, f"{name} (error-index {pdu.error_index})", True)
