"""The `rawserial` reader (reference 8.2): a query written to a serial line, the answer cut into values.

Each field names a `query` (hex or text); fields with the same query (and the same answer rules)
share one transaction per cycle. The answer ends at `resp_termination`, or when the line has been
quiet for `resp_quiet` seconds (default 0.1 s) after its last byte, instead of upstream's blind 1 s
sleep; it must match `resp_template` from its start (the regular expression's `.` matches any byte);
the value is `answer[pos : pos + length]` (0-based), then `parse_as` str or hex and the codec.

The line is the bus's serial port (modbus_rtu's RtuTransport, opened exclusively), so rawserial and
Modbus RTU devices on one port take turns, one transaction at a time, with the same quiet before
each request and the same watch for late answers after a failed one. Upstream's defects, fixed:
an answer cut short by its timeout (no terminator) was used; an answer shorter than pos + length gave
a shorter value (a wrong number, or an unpacking error); a silent device's query was sent again for
every field that used it (one timeout per field).
"""

from __future__ import annotations

from typing import Any

from ..core.config import Device
from ..core.rawfields import RawSerialField
from . import streams
from .modbus import LinkError

LINE_KEYS = ("baudrate", "bytesize", "parity", "stopbits")


class RawSerialDevice(streams.RawDevice):
    def __init__(self, device: Device, transport: streams.Exchange):
        if not all(isinstance(f, RawSerialField) for f in device.fields.values()):
            raise ValueError("a rawserial device reads only fields with a query")
        super().__init__(device, transport)

    def request(self, f: RawSerialField) -> bytes:
        return f.query

    def key(self, f: RawSerialField) -> Any:
        return (f.query, f.termination, f.quiet, f.template.pattern if f.template else None)

    def receiver(self, f: RawSerialField, timeout: float, deadline: float) -> streams.Receive:
        what = "the query"
        receive = (
            streams.by_terminator(f.termination, timeout, what, deadline=deadline)
            if f.termination
            else streams.by_quiet(f.quiet, timeout, what, deadline=deadline)
        )
        if f.template is None:
            return receive
        template = f.template

        def checked(chunk: streams.Chunk) -> bytes:
            answer = receive(chunk)
            if not template.match(answer):
                raise LinkError(f"answer does not match resp_template: {streams.show(answer)}")
            return answer

        return checked

    def value_bytes(self, f: RawSerialField, answer: bytes) -> bytes:
        if f.pos + f.length > len(answer):
            raise LinkError(f"short answer: {len(answer)} bytes, the value is bytes {f.pos}..{f.pos + f.length - 1}")
        return answer[f.pos : f.pos + f.length]


def line_settings(address: dict) -> tuple:
    """A serial device's line settings, comparable between the devices of one port."""
    return (
        int(address.get("baudrate", 9600)),
        int(address.get("bytesize", 8)),
        str(address.get("parity", "none")).lower()[:1],
        float(address.get("stopbits", 1)),
    )
