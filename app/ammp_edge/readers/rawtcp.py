"""The `rawtcp` reader (reference 8.3): requests built from a driver's schema, sent over TCP.

A field's request is its schema's sequence: `input` values of the field (register, words, fncode),
`device_arg` values of the device's address (unit_id), `const` bytes and a Modbus `crc`; fields with
the same request share one transaction per cycle. The answer is put together from as many TCP
segments as it arrives in: with `check_crc16` until its last two bytes are the CRC of the rest,
otherwise until it holds the value and then stays quiet for 0.1 s; at most `recv_buffer_size` bytes.
The value is `answer[pos - 1 : pos - 1 + length]` (1-based `pos`), inside the CRC-checked body.

The connection is the bus's (modbus_tcp's TcpTransport, one per host:port): kept between cycles,
made again when bytes nobody asked for wait on it, closed after a timeout or a bad answer, so a late
answer is never taken for the next one. Upstream's defects, fixed: one recv() took the first segment
for the whole answer; an answer whose CRC did not match gave no error anyone saw; a request with an
input missing was sent without it.
"""

from __future__ import annotations

from typing import Any

from ..core.config import Device
from ..core.rawfields import CRC16, DEFAULT_QUIET, DEFAULT_RECV_BUFFER, DeviceArg, RawTcpField
from . import streams
from .frames import crc16
from .modbus import LinkError

NOT_DEVICE_ARGS = ("host", "port", "recv_buffer_size")


def render(f: RawTcpField, args: dict, device_key: str) -> bytes:
    """The request bytes of a field for a device (ValueError naming the address key when one is missing)."""
    out = b""
    for c in f.sequence:
        if isinstance(c, DeviceArg):
            value = args.get(c.key, c.default)
            where = f"devices.{device_key}.address.{c.key}"
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{where}: {value!r} is not an integer, and field {f.name}'s request needs it")
            if not 0 <= value < 1 << (8 * c.num_bytes):
                raise ValueError(f"{where}: {value} does not fit the {c.num_bytes} byte(s) of field {f.name}'s request")
            out += value.to_bytes(c.num_bytes, c.byteorder)  # type: ignore[arg-type]
        elif c == CRC16:
            out += crc16(out)
        else:
            assert isinstance(c, bytes)
            out += c
    return out


class RawTcpDevice(streams.RawDevice):
    def __init__(self, device: Device, transport: streams.Exchange):
        if not all(isinstance(f, RawTcpField) for f in device.fields.values()):
            raise ValueError("a rawtcp device reads only fields with a request schema")
        super().__init__(device, transport)
        args = {k: v for k, v in device.address.items() if k not in NOT_DEVICE_ARGS}
        self.requests = {name: render(f, args, device.key) for name, f in self.fields.items()}
        self.limit = int(device.address.get("recv_buffer_size", DEFAULT_RECV_BUFFER))

    def request(self, f: RawTcpField) -> bytes:
        return self.requests[f.name]

    def key(self, f: RawTcpField) -> Any:
        return (self.requests[f.name], f.check_crc)

    def receiver(self, f: RawTcpField, timeout: float, deadline: float) -> streams.Receive:
        what = "the request"
        if f.check_crc:
            return streams.by_crc(timeout, what, self.limit, deadline)
        return streams.by_quiet(DEFAULT_QUIET, timeout, what, self.limit, f.pos - 1 + f.length, deadline)

    def value_bytes(self, f: RawTcpField, answer: bytes) -> bytes:
        body = len(answer) - 2 if f.check_crc else len(answer)
        start = f.pos - 1
        if start + f.length > body:
            raise LinkError(
                f"short answer: {len(answer)} bytes{' with its CRC' if f.check_crc else ''}, the value is "
                f"bytes {f.pos}..{f.pos + f.length - 1} (1-based): {streams.show(answer)}"
            )
        return answer[start : start + f.length]
