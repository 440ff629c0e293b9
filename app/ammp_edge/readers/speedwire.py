"""SMA Speedwire: energy meters (SMA Energy Meter, Sunny Home Manager) multicasting their readings.

A meter sends a datagram about every second to 239.12.255.254:9522. One bus owns one group and
port; one socket (SpeedwireSocket) receives for every meter on it, and each device picks the
datagrams that carry its serial. Every datagram is checked in full before anything of it is used
(`parse_datagram`); a datagram that fails a check is dropped and counted, so garbage or another
device's datagram can never become a value:

  bytes 0:4    "SMA\\0"                     signature
  bytes 4:8    00 04 02 a0                   tag: group (length 4)
  bytes 12:14  L                             length of the data from byte 16 on
  bytes 14:16  00 10                         tag: SMA Net 2
  bytes 16:18  60 69                         protocol id of the energy meter
  bytes 18:20  SUSy id, 20:24 serial (uint32 BE), 24:28 tick counter (ms)
  bytes 28..   OBIS records up to 16 + L: a 4-byte header (channel uint16 BE, type, tariff) and a
               value of 4 bytes (type 4, "actual"), 8 bytes (type 8, "counter"), or 4 bytes for the
               version record (channel 0x9000, type 0)
  then         00 00 00 00                   end tag (or nothing): the datagram is 16 + L (+ 4) bytes

A record of another type ends the parse, as upstream (its length is unknown); a record that runs
past the data, a datagram shorter or longer than its length says, a wrong signature, tag or protocol
id make the datagram invalid. Upstream checked none of this, and read the version record from the
wrong offset.

A field is `obis_channel` + `obis_type`; its bytes are decoded by the one codec (uint32 for type 4,
uint64 for type 8 unless the driver says otherwise) with the driver's multiplier (0.1 W for power,
1/3600 for Ws -> Wh energy, as upstream).
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import time
from dataclasses import dataclass, field

from ..core import codec
from ..core.config import Device
from ..core.netfields import SpeedwireField
from .modbus import INTERRUPT_SLICE, DeviceResult, DeviceSilent, Interrupt, Interrupted, LinkError

log = logging.getLogger(__name__)

GROUP = "239.12.255.254"
PORT = 9522
SIGNATURE = b"SMA\x00"
GROUP_TAG = b"\x00\x04\x02\xa0"
NET2_TAG = b"\x00\x10"
PROTOCOL_EM = 0x6069
HEADER = 28  # bytes before the first OBIS record
MAX_DATAGRAM = 65535
TYPE_ACTUAL, TYPE_COUNTER, TYPE_VERSION = 4, 8, 0
CHANNEL_VERSION = 0x9000
VALUE_BYTES = {TYPE_ACTUAL: 4, TYPE_COUNTER: 8}
_TIMEVAL = struct.Struct("@ll")  # struct timeval, native
SO_TIMESTAMP = getattr(socket, "SO_TIMESTAMP", 29)  # Linux's value; Python 3.11 does not name it


class BadDatagram(ValueError):
    """A datagram that is not a well-formed energy meter datagram (the reason names what is wrong)."""


@dataclass
class Datagram:
    serial: int
    susy_id: int
    ticks: int
    values: dict[tuple[int, int], bytes] = field(default_factory=dict)  # (channel, type) -> raw bytes


def check_header(data: bytes) -> int:
    """The sender's serial after checking everything before the records (signature, tags, protocol
    id, the length against the datagram's size); raises BadDatagram."""
    if len(data) < HEADER:
        raise BadDatagram(f"{len(data)} bytes (a meter datagram has at least {HEADER})")
    if data[0:4] != SIGNATURE:
        raise BadDatagram(f"signature {data[0:4]!r} is not 'SMA\\0'")
    if data[4:8] != GROUP_TAG:
        raise BadDatagram(f"group tag {data[4:8].hex()} is not 000402a0")
    if data[14:16] != NET2_TAG:
        raise BadDatagram(f"data tag {data[14:16].hex()} is not 0010 (SMA Net 2)")
    protocol = int.from_bytes(data[16:18], "big")
    if protocol != PROTOCOL_EM:
        raise BadDatagram(f"protocol id 0x{protocol:04x} is not the energy meter's 0x{PROTOCOL_EM:04x}")
    end = 16 + int.from_bytes(data[12:14], "big")
    if end < HEADER:
        raise BadDatagram(f"data length {end - 16} is shorter than the meter header")
    if len(data) < end:
        raise BadDatagram(f"{len(data)} bytes, shorter than the {end} its length field says")
    if len(data) not in (end, end + 4) or data[end:] not in (b"", b"\x00\x00\x00\x00"):
        raise BadDatagram(f"{len(data)} bytes, longer than the {end} (+ 4 end tag) its length field says")
    return int.from_bytes(data[20:24], "big")


def parse_datagram(data: bytes) -> Datagram:
    """A checked datagram with its OBIS records; raises BadDatagram."""
    serial = check_header(data)
    end = 16 + int.from_bytes(data[12:14], "big")
    out = Datagram(serial, int.from_bytes(data[18:20], "big"), int.from_bytes(data[24:28], "big"))
    pos = HEADER
    while pos < end:
        if pos + 4 > end:
            raise BadDatagram(f"OBIS record header at byte {pos} runs past the data end ({end})")
        channel, kind = int.from_bytes(data[pos : pos + 2], "big"), data[pos + 2]
        if kind in VALUE_BYTES:
            size = VALUE_BYTES[kind]
        elif kind == TYPE_VERSION and channel == CHANNEL_VERSION:
            size = 4
        else:
            break  # an unknown record type: its length is unknown, so the parse stops (as upstream)
        if pos + 4 + size > end:
            raise BadDatagram(f"OBIS record {channel}.{kind} at byte {pos} runs past the data end ({end})")
        out.values.setdefault((channel, kind), data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return out


def encode_datagram(serial: int, values: dict[tuple[int, int], bytes], susy_id: int = 349, ticks: int = 0) -> bytes:
    """A datagram as a meter sends it (for the simulator, the tests and the benchmark)."""
    body = b"".join(
        channel.to_bytes(2, "big") + bytes([kind, 0]) + raw for (channel, kind), raw in sorted(values.items())
    )
    data = (
        PROTOCOL_EM.to_bytes(2, "big")
        + susy_id.to_bytes(2, "big")
        + serial.to_bytes(4, "big")
        + (ticks & 0xFFFFFFFF).to_bytes(4, "big")
        + body
    )
    return SIGNATURE + GROUP_TAG + (1).to_bytes(4, "big") + len(data).to_bytes(2, "big") + NET2_TAG + data + bytes(4)


def open_socket(group: str = GROUP, port: int = PORT, interface: str = "0.0.0.0") -> socket.socket:
    """A UDP socket on `port` that has joined `group` (SO_REUSEADDR: the scan may listen beside a bus;
    SO_TIMESTAMP: each datagram's arrival time)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 1)
        sock.bind(("", port))
        mreq = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(interface))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def receive(sock: socket.socket) -> tuple[bytes, float, bool] | None:
    """(datagram, arrival time (epoch s), truncated) or None when nothing waits."""
    try:
        data, ancdata, flags, _ = sock.recvmsg(MAX_DATAGRAM, socket.CMSG_SPACE(_TIMEVAL.size))
    except (BlockingIOError, InterruptedError):
        return None
    arrived = time.time()
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMP and len(payload) >= _TIMEVAL.size:
            sec, usec = _TIMEVAL.unpack(payload[: _TIMEVAL.size])
            arrived = sec + usec / 1e6
    return data, arrived, bool(flags & socket.MSG_TRUNC)


class SpeedwireSocket:
    """The bus's one socket for a group and port: keeps the latest valid datagram of every serial with
    its arrival time (only a datagram that passed parse_datagram is kept); opened at the first read
    (a bind error is that read's error, and is retried)."""

    def __init__(self, group: str = GROUP, port: int = PORT):
        self.group, self.port = group, port
        self.sock: socket.socket | None = None
        self.interrupt: Interrupt | None = None
        self.latest: dict[int, tuple[float, Datagram]] = {}
        self.received = 0  # datagrams received, valid or not
        self.invalid = 0
        self.last_invalid = ""

    def _open(self) -> socket.socket:
        if self.sock is None:
            try:
                self.sock = open_socket(self.group, self.port)
            except OSError as exc:
                raise LinkError(f"cannot listen on {self.group}:{self.port}: {exc}") from None
        return self.sock

    def _take(self, data: bytes, arrived: float, truncated: bool) -> int | None:
        self.received += 1
        try:
            if truncated:
                raise BadDatagram(f"longer than {MAX_DATAGRAM} bytes")
            datagram = parse_datagram(data)
        except BadDatagram as exc:
            self.invalid += 1
            self.last_invalid = str(exc)
            log.debug("%s:%s: invalid datagram dropped: %s", self.group, self.port, exc)
            return None
        self.latest[datagram.serial] = (arrived, datagram)
        return datagram.serial

    def drain(self) -> None:
        sock = self._open()
        while (got := receive(sock)) is not None:
            self._take(*got)

    def datagram_for(self, serial: int, max_age: float, timeout: float) -> Datagram:
        """The newest datagram from `serial` that arrived at most `max_age` s ago, waiting up to
        `timeout` for one; DeviceSilent when none comes."""
        self.drain()
        deadline = time.monotonic() + timeout
        while True:
            seen = self.latest.get(serial)
            if seen is not None and time.time() - seen[0] <= max_age:
                return seen[1]
            if self.interrupt is not None and self.interrupt.is_set():
                raise Interrupted("the bus is stopping")
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeviceSilent(self._silence(serial, timeout))
            assert self.sock is not None  # opened by drain()
            ready, _, _ = select.select([self.sock], [], [], min(left, INTERRUPT_SLICE))
            if ready:
                self.drain()

    def _silence(self, serial: int, timeout: float) -> str:
        others = sorted(s for s in self.latest if s != serial)
        text = f"no datagram from serial {serial} within {timeout:.1f} s"
        notes = []
        if others:
            notes.append("serials heard: " + ", ".join(map(str, others[:5])) + (" ..." if len(others) > 5 else ""))
        if self.invalid:
            notes.append(f"{self.invalid} invalid datagram(s) dropped, the last: {self.last_invalid}")
        return text + (f" ({'; '.join(notes)})" if notes else "")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None


class SpeedwireDevice:
    """One meter on the bus's socket, found by its serial."""

    def __init__(self, device: Device, transport: SpeedwireSocket):
        self.device, self.transport = device, transport
        self.serial = int(device.address["serial"])
        self.fields: dict[str, SpeedwireField] = dict(device.fields)

    def read(self, deadline: float) -> DeviceResult:
        res = DeviceResult()
        before = self.transport.received
        try:
            left = max(0.0, min(self.device.timeout, deadline - time.monotonic()))
            datagram = self.transport.datagram_for(self.serial, self.device.timeout, left)
        except Interrupted as exc:
            res.interrupted = True
            res.errors.append(str(exc))
            return res
        except (DeviceSilent, LinkError) as exc:
            res.failed = True
            why = str(exc)
            res.errors.append(why)
            res.item_errors.update((k, why) for k in self.fields)
            return res
        finally:
            res.requests = self.transport.received - before
        for name, f in self.fields.items():
            raw = datagram.values.get((f.channel, f.obis_type))
            if raw is None:
                why = f"OBIS {f.channel}.{f.obis_type} is not in the datagram of serial {self.serial}"
                res.errors.append(f"{name}: {why}")
                res.item_errors[name] = why
                continue
            try:
                res.values[name] = codec.decode_bytes(raw, f.spec)
            except codec.DecodeError as exc:
                res.errors.append(f"{name}: {exc} (raw {raw.hex()})")
                res.item_errors[name] = str(exc)
        return res
