"""The BER subset SNMP uses (X.690): definite lengths, INTEGER, OCTET STRING, NULL, OBJECT IDENTIFIER,
SEQUENCE, the SMI application types and the v2 exception values.

Decoding is strict: a length that runs past its container, an indefinite length, a length longer
than needed by more than the usual leading zeros, an empty INTEGER, an OID sub-identifier with a
padding byte or cut off, bytes left over after a value: each is a BerError naming what and where,
never a guess.
"""

from __future__ import annotations

INTEGER, OCTET_STRING, NULL, OID, SEQUENCE = 0x02, 0x04, 0x05, 0x06, 0x30
IP_ADDRESS, COUNTER32, GAUGE32, TIMETICKS, OPAQUE, COUNTER64 = 0x40, 0x41, 0x42, 0x43, 0x44, 0x46
NO_SUCH_OBJECT, NO_SUCH_INSTANCE, END_OF_MIB_VIEW = 0x80, 0x81, 0x82
EXCEPTIONS = {NO_SUCH_OBJECT: "noSuchObject", NO_SUCH_INSTANCE: "noSuchInstance", END_OF_MIB_VIEW: "endOfMibView"}
UNSIGNED = {
    COUNTER32: ("Counter32", 32),
    GAUGE32: ("Gauge32", 32),
    TIMETICKS: ("TimeTicks", 32),
    COUNTER64: ("Counter64", 64),
}
MAX_LENGTH_BYTES = 4


class BerError(ValueError):
    """Bytes that are not valid BER of the expected shape."""


# -- encoding ---------------------------------------------------------------------------------------


def length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + length(len(body)) + body


def integer(value: int, tag: int = INTEGER) -> bytes:
    size = max(1, (value.bit_length() + 8) // 8)  # room for the sign bit
    return tlv(tag, value.to_bytes(size, "big", signed=True))


def octets(value: bytes) -> bytes:
    return tlv(OCTET_STRING, value)


def oid(parts: tuple[int, ...]) -> bytes:
    if len(parts) < 2:
        raise ValueError("an OID has at least two arcs")
    body = bytearray()
    for n in (parts[0] * 40 + parts[1], *parts[2:]):
        chunk = [n & 0x7F]
        n >>= 7
        while n:
            chunk.append(0x80 | (n & 0x7F))
            n >>= 7
        body += bytes(reversed(chunk))
    return tlv(OID, bytes(body))


def sequence(*items: bytes, tag: int = SEQUENCE) -> bytes:
    return tlv(tag, b"".join(items))


# -- decoding ---------------------------------------------------------------------------------------


class Reader:
    """Reads TLVs one after another from data[pos:end]."""

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None, where: str = "message"):
        self.data, self.pos, self.end, self.where = data, pos, len(data) if end is None else end, where

    def at_end(self) -> bool:
        return self.pos >= self.end

    def next(self, expect: int | tuple[int, ...] | None = None, what: str = "value") -> tuple[int, int, int]:
        """(tag, start of the value, end of the value); the reader moves past it."""
        data, pos = self.data, self.pos
        if pos + 2 > self.end:
            raise BerError(f"{self.where}: {what} expected at byte {pos}, but the data ends")
        tag, first = data[pos], data[pos + 1]
        if tag & 0x1F == 0x1F:
            raise BerError(f"{self.where}: multi-byte tag at byte {pos} (SNMP uses none)")
        pos += 2
        if first < 0x80:
            size = first
        elif first == 0x80:
            raise BerError(f"{self.where}: indefinite length at byte {pos - 1} (BER in SNMP is definite)")
        else:
            count = first & 0x7F
            if count > MAX_LENGTH_BYTES or pos + count > self.end:
                raise BerError(f"{self.where}: length of {count} bytes at byte {pos - 1}")
            size = int.from_bytes(data[pos : pos + count], "big")
            pos += count
        if pos + size > self.end:
            raise BerError(f"{self.where}: {what} of {size} bytes at byte {pos} runs past its container ({self.end})")
        if expect is not None and tag not in ((expect,) if isinstance(expect, int) else expect):
            raise BerError(f"{self.where}: {what} has tag 0x{tag:02x} at byte {self.pos}, expected {_tags(expect)}")
        self.pos = pos + size
        return tag, pos, pos + size

    def sub(self, expect: int | tuple[int, ...], what: str) -> tuple[int, Reader]:
        tag, start, stop = self.next(expect, what)
        return tag, Reader(self.data, start, stop, self.where)

    def integer(self, what: str) -> int:
        _, start, stop = self.next(INTEGER, what)
        return decode_integer(self.data[start:stop], what)

    def octets(self, what: str) -> bytes:
        _, start, stop = self.next(OCTET_STRING, what)
        return self.data[start:stop]

    def oid(self, what: str) -> tuple[int, ...]:
        _, start, stop = self.next(OID, what)
        return decode_oid(self.data[start:stop])

    def done(self, what: str) -> None:
        if self.pos != self.end:
            raise BerError(f"{self.where}: {self.end - self.pos} byte(s) left over after the {what}")


def _tags(expect: int | tuple[int, ...]) -> str:
    return " or ".join(f"0x{t:02x}" for t in ((expect,) if isinstance(expect, int) else expect))


def decode_integer(body: bytes, what: str = "INTEGER") -> int:
    if not body:
        raise BerError(f"{what}: empty INTEGER")
    if len(body) > 9:
        raise BerError(f"{what}: INTEGER of {len(body)} bytes (at most 64 bits)")
    return int.from_bytes(body, "big", signed=True)


def decode_unsigned(body: bytes, bits: int, what: str) -> int:
    if not body:
        raise BerError(f"{what}: empty value")
    value = int.from_bytes(body, "big", signed=True)
    if value < 0 or value >= 1 << bits:
        raise BerError(f"{what}: {value} is outside 0..2^{bits}-1")
    return value


def decode_oid(body: bytes) -> tuple[int, ...]:
    if not body:
        raise BerError("empty OBJECT IDENTIFIER")
    arcs: list[int] = []
    n, fresh = 0, True
    for b in body:
        if fresh and b == 0x80:
            raise BerError("OBJECT IDENTIFIER sub-identifier with a padding byte")
        n = (n << 7) | (b & 0x7F)
        fresh = not b & 0x80
        if fresh:
            arcs.append(n)
            n = 0
    if not fresh:
        raise BerError("OBJECT IDENTIFIER ends inside a sub-identifier")
    first = arcs[0]
    head = (first // 40, first % 40) if first < 80 else (2, first - 80)
    return (*head, *arcs[1:])


def decode_value(tag: int, body: bytes, what: str) -> object:
    """A varbind value as Python: int for INTEGER and the counters, bytes for OCTET STRING and Opaque,
    a dotted string for IpAddress and OID, None for NULL. Exceptions are handled by the caller."""
    if tag == INTEGER:
        return decode_integer(body, what)
    if tag in UNSIGNED:
        name, bits = UNSIGNED[tag]
        return decode_unsigned(body, bits, f"{what} ({name})")
    if tag in (OCTET_STRING, OPAQUE):
        return bytes(body)
    if tag == IP_ADDRESS:
        if len(body) != 4:
            raise BerError(f"{what}: IpAddress of {len(body)} bytes")
        return ".".join(str(b) for b in body)
    if tag == OID:
        return ".".join(map(str, decode_oid(body)))
    if tag == NULL:
        if body:
            raise BerError(f"{what}: NULL with {len(body)} content bytes")
        return None
    raise BerError(f"{what}: value of unknown type 0x{tag:02x}")
