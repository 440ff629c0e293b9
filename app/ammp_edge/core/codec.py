"""The one decoder (and its inverse, the encoder) used by every reader, the simulator and the web UI.

Pipeline for one field, as upstream (reference section 3.6):
  registers --order--> raw bytes --valuemap (full raw hex)--> | --bit field or datatype--> number
  --> multiplier, then offset --> typecast --> NaN/inf become None

Values as the device meant them: a float32 becomes the shortest decimal that reads back as the same
float32 (0x4365CA3D is 229.79, not 229.7899932861328); multiplier and offset are applied in decimal
to the shortest form of each operand (12.345 x 1000 is 12345.0, 2301 x 0.1 is 230.1), so scaling adds
no binary noise; an integer with an integer multiplier and offset stays an integer.

A compiled field is a `ValueSpec`; `drivers.compile_field` builds it from driver JSON.
"""

from __future__ import annotations

import decimal
import math
import re
import struct
from dataclasses import dataclass, field
from typing import Any

ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")
ORDER_ALIASES = {"msr": "ABCD", "lsr": "CDAB", "abcd": "ABCD", "cdab": "CDAB", "badc": "BADC", "dcba": "DCBA"}

# datatype -> (struct code, bytes)
NUMERIC_TYPES = {
    "int8": ("b", 1),
    "uint8": ("B", 1),
    "int16": ("h", 2),
    "uint16": ("H", 2),
    "int32": ("i", 4),
    "uint32": ("I", 4),
    "int64": ("q", 8),
    "uint64": ("Q", 8),
    "float": ("f", 4),
    "single": ("f", 4),
    "float32": ("f", 4),
    "double": ("d", 8),
    "float64": ("d", 8),
}
# Upstream length inference for a field without datatype (Py): bytes -> datatype
INFERRED_TYPES = {1: "uint8", 2: "uint16", 4: "uint32", 8: "double"}
TEXT_RE = re.compile(r"^(?:str|string|text)(\d*)$")
TYPECASTS = ("int", "float", "str", "bool")
# lsb: bit 0 is the least significant. msb: upstream's (the 16 bits reversed, then shifted and masked:
# a multi-bit value comes out bit-reversed, kept so upstream configs publish the same numbers).
# msb_natural: bit 0 is the most significant and a multi-bit field keeps its natural bit order.
BIT_ORDERS = ("lsb", "msb", "msb_natural")


class DecodeError(ValueError):
    """Raw data that cannot be turned into a value with the field's settings."""


def normalize_order(order: Any) -> str:
    if order is None:
        return "ABCD"
    if isinstance(order, str):
        key = order.strip()
        if key.upper() in ORDERS:
            return key.upper()
        if key.lower() in ORDER_ALIASES:
            return ORDER_ALIASES[key.lower()]
    raise ValueError(f"order {order!r} is not one of msr, lsr, {', '.join(ORDERS)}")


def text_length(datatype: str) -> int | None:
    """For a text datatype ('str', 'str16', ...) the byte length it names (None: from words)."""
    m = TEXT_RE.match(datatype)
    if not m:
        raise ValueError(f"{datatype!r} is not a text datatype")
    return int(m.group(1)) if m.group(1) else None


def is_text(datatype: str | None) -> bool:
    return isinstance(datatype, str) and TEXT_RE.match(datatype) is not None


def _swap_bytes(word: int) -> int:
    return ((word & 0xFF) << 8) | (word >> 8)


def registers_to_bytes(registers: list[int] | tuple[int, ...], order: str = "ABCD") -> bytes:
    """16-bit registers (as read off the wire) to the raw big-endian byte string of the value.

    ABCD/msr: as read. CDAB/lsr: register list reversed (upstream 'lsr'). BADC: bytes swapped
    inside each register. DCBA: both (a little-endian value).
    """
    regs = list(registers)
    if order in ("CDAB", "DCBA"):
        regs.reverse()
    if order in ("BADC", "DCBA"):
        regs = [_swap_bytes(r) for r in regs]
    return b"".join((r & 0xFFFF).to_bytes(2, "big") for r in regs)


def bytes_to_registers(raw: bytes, order: str = "ABCD") -> list[int]:
    """Inverse of registers_to_bytes (raw is padded to a whole number of registers)."""
    if len(raw) % 2:
        raw = raw + b"\x00"
    regs = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
    if order in ("BADC", "DCBA"):
        regs = [_swap_bytes(r) for r in regs]
    if order in ("CDAB", "DCBA"):
        regs.reverse()
    return regs


class ValueMap:
    """A driver `valuemap`, matched against the full raw bytes (upstream: '0x' + lowercase hex, full width).

    Keys whose hex digits make a whole byte width (e.g. '0xffff', '0x80000000') match only values of exactly
    that width, as upstream. A key that cannot be a full-width form (an odd digit count, e.g. the upstream
    '0x0' that never matched) is compared by number, zero-padded to the field's width. Case is ignored.
    Non-hex keys are compared with decoded text (text fields).
    """

    __slots__ = ("exact", "numeric", "literal")

    def __init__(self, mapping: dict[str, Any]):
        self.exact: dict[str, Any] = {}
        self.numeric: dict[int, Any] = {}
        self.literal: dict[str, Any] = {}
        for key, value in mapping.items():
            k = str(key).strip()
            digits = k[2:] if k[:2].lower() == "0x" else None
            if digits and all(c in "0123456789abcdefABCDEF" for c in digits):
                if len(digits) % 2 == 0:
                    self.exact[digits.lower()] = value
                else:
                    self.numeric[int(digits, 16)] = value
            else:
                self.literal[k] = value

    def lookup(self, raw: bytes) -> tuple[bool, Any]:
        if self.exact:
            h = raw.hex()
            if h in self.exact:
                return True, self.exact[h]
        if self.numeric:
            n = int.from_bytes(raw, "big")
            if n in self.numeric:
                return True, self.numeric[n]
        return False, None

    def lookup_text(self, text: str) -> tuple[bool, Any]:
        if text in self.literal:
            return True, self.literal[text]
        return False, None

    def raw_for(self, value: Any, nbytes: int) -> bytes | None:
        """A raw byte string that maps to `value` (used by the simulator to encode sentinels)."""
        for h, v in self.exact.items():
            if v == value and len(h) == 2 * nbytes:
                return bytes.fromhex(h)
        for n, v in self.numeric.items():
            if v == value and n < (1 << (8 * nbytes)):
                return n.to_bytes(nbytes, "big")
        return None


@dataclass(frozen=True, slots=True)
class BitField:
    start: int
    length: int = 1
    order: str = "lsb"

    def extract(self, word: int) -> int:
        mask = (1 << self.length) - 1
        if self.order == "lsb":
            return (word >> self.start) & mask
        if self.order == "msb_natural":
            # bit 0 is the most significant bit; the field's bits keep their natural order
            return (word >> (16 - self.start - self.length)) & mask
        # "msb", as upstream: the 16 bits reversed, then shifted and masked
        rev = int(f"{word:016b}"[::-1], 2)
        return (rev >> self.start) & mask

    def insert(self, word: int, value: int) -> int:
        mask = (1 << self.length) - 1
        value &= mask
        if self.order == "lsb":
            shift = self.start
            return (word & ~(mask << shift) & 0xFFFF) | (value << shift)
        if self.order == "msb_natural":
            shift = 16 - self.start - self.length
            return (word & ~(mask << shift) & 0xFFFF) | (value << shift)
        rev = int(f"{word:016b}"[::-1], 2)
        rev = (rev & ~(mask << self.start) & 0xFFFF) | (value << self.start)
        return int(f"{rev:016b}"[::-1], 2)


@dataclass(frozen=True, slots=True)
class ValueSpec:
    """How to turn raw bytes into a value. Built by drivers.compile_field."""

    datatype: str | None = None  # None: inferred from the byte length
    order: str = "ABCD"
    valuemap: ValueMap | None = None
    bits: BitField | None = None
    multiplier: float | int | None = None
    offset: float | int | None = None
    typecast: str | None = None
    text_bytes: int | None = None  # text datatypes: bytes to keep
    extra: dict = field(default_factory=dict, compare=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _typecast(value: Any, typecast: str | None) -> Any:
    if typecast is None or value is None:
        return value
    try:
        if typecast == "int":
            return int(value)
        if typecast == "float":
            return float(value)
        if typecast == "str":
            return str(value)
        if typecast == "bool":
            return bool(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise DecodeError(f"cannot typecast {value!r} to {typecast}") from exc
    raise DecodeError(f"unknown typecast {typecast!r}")


_F32 = struct.Struct(">f")
_F32_BITS = struct.Struct(">I")
# exact for any product of two shortest doubles (17 digits each), plus an offset
_DECIMAL = decimal.Context(prec=40, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)


def _reads_back(text: str, bits: bytes) -> bool:
    """Does this decimal, read as a double (as JSON readers do) and narrowed to float32, give `bits`?"""
    try:
        return _F32.pack(float(text)) == bits
    except OverflowError:  # rounded up past the largest float32
        return False


def _float32_text(value: float, bits: bytes, digits: int, power_of_two: bool) -> float | None:
    """The float32 `value` written with `digits` significant digits, when that reads back; else None."""
    text = f"{value:.{digits}g}"  # the nearest such decimal
    if _reads_back(text, bits):
        return float(text)
    if power_of_two:
        # below a power of two the float32 grid is twice as fine: the nearest decimal may fall under
        # the float32's interval while the next one above it is still inside
        exact = decimal.Decimal(value).copy_abs()
        up = exact.quantize(decimal.Decimal(1).scaleb(exact.adjusted() - digits + 1), rounding=decimal.ROUND_CEILING)
        text = ("-" if value < 0 else "") + str(up)
        if _reads_back(text, bits):
            return float(text)
    return None


def shortest_float32(value: float) -> float:
    """The double nearest to the shortest decimal that reads back as the float32 `value` (a float32
    widened to a double, as struct gives it): 229.7899932861328 -> 229.79. NaN, infinities and zero
    are returned as they are."""
    if value == 0 or not math.isfinite(value):
        return value
    bits = _F32.pack(value)
    power_of_two = _F32_BITS.unpack(bits)[0] & 0x7FFFFF == 0
    # If d digits read back, so do d + 1 (the nearest (d+1)-digit decimal is at least as near), so
    # search from 6 digits down, or up to 9, which always suffice for a float32.
    best = _float32_text(value, bits, 6, power_of_two)
    if best is not None:
        for digits in range(5, 0, -1):
            shorter = _float32_text(value, bits, digits, power_of_two)
            if shorter is None:
                break
            best = shorter
        return best
    for digits in (7, 8, 9):
        found = _float32_text(value, bits, digits, power_of_two)
        if found is not None:
            return found
    return value  # not reached


def _decimal(number: int | float) -> decimal.Decimal:
    """The number as written: a float's shortest repr (0.1, not 0.1000000000000000055...)."""
    return decimal.Decimal(repr(number)) if isinstance(number, float) else decimal.Decimal(number)


def _scaled(
    value: int | float, multiplier: int | float | None, offset: int | float | None, power: int | None = None
) -> int | decimal.Decimal:
    """value x 10**power x multiplier + offset: exact in integers when all are integers (and power is
    not negative), else in decimal."""
    whole = power is None or power >= 0
    if isinstance(value, int) and whole and not isinstance(multiplier, float) and not isinstance(offset, float):
        return value * 10 ** (power or 0) * (1 if multiplier is None else multiplier) + (offset or 0)
    d = _decimal(value)
    if power is not None:
        d = d.scaleb(power, _DECIMAL)
    if multiplier is not None:
        d = _DECIMAL.multiply(d, _decimal(multiplier))
    if offset is not None:
        d = _DECIMAL.add(d, _decimal(offset))
    return d


MAX_POWER = 10  # a SunSpec scale factor (sunssf) is -10..10


def check_power(power: Any, name: str = "scale factor") -> int:
    """A scale factor's value as the power of ten it is; DecodeError when it cannot be one."""
    if isinstance(power, float) and power.is_integer():
        power = int(power)
    if isinstance(power, bool) or not isinstance(power, int):
        raise DecodeError(f"{name} {power!r} is not an integer")
    if not -MAX_POWER <= power <= MAX_POWER:
        raise DecodeError(f"{name} {power} is outside -{MAX_POWER}..{MAX_POWER}")
    return power


def scale(value: Any, spec: ValueSpec, power: int | None = None) -> Any:
    """x 10**power (a scale factor read from the device, when the field has one), multiplier, then
    offset (in decimal, see the module text), then typecast; NaN and infinity become None."""
    value = _finite(value)
    if value is None:
        return None
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    scaled = spec.multiplier is not None or spec.offset is not None or power is not None
    if numeric and spec.typecast not in ("str", "bool") and scaled:
        result = _scaled(value, spec.multiplier, spec.offset, power)
        if isinstance(result, decimal.Decimal):
            # int() straight from the decimal: exact for large integers a double would round
            value = int(result) if spec.typecast == "int" and result.is_finite() else float(result)
        else:
            value = result
    return _finite(_typecast(_finite(value), spec.typecast))


def decode_text(raw: bytes, nbytes: int | None = None) -> str:
    if nbytes is not None:
        raw = raw[:nbytes]
    # NUL ends the text; trailing padding spaces go, leading spaces are part of the text
    return raw.split(b"\x00", 1)[0].decode("utf-8", errors="replace").rstrip()


def unpack(raw: bytes, datatype: str | None) -> Any:
    """Raw big-endian bytes to a number (datatype None: inferred from the length as upstream); a
    float32 as its shortest decimal (shortest_float32)."""
    if datatype is None:
        datatype = INFERRED_TYPES.get(len(raw))
        if datatype is None:
            raise DecodeError(f"cannot infer a datatype for {len(raw)} bytes; set 'datatype'")
    code, size = NUMERIC_TYPES[datatype]
    if len(raw) != size:
        raise DecodeError(f"{datatype} needs {size} bytes, got {len(raw)}")
    value = struct.unpack(">" + code, raw)[0]
    return shortest_float32(value) if code == "f" else value


def decode_bytes(raw: bytes, spec: ValueSpec, power: int | None = None) -> Any:
    """Decode raw bytes (already in big-endian value order) with a field's spec (and the power of ten
    its scale factor field gave, if any)."""
    if not raw:
        raise DecodeError("no data")
    if spec.bits is not None:
        if len(raw) != 2:
            raise DecodeError(f"a bit field needs exactly one register, got {len(raw)} bytes")
        return scale(spec.bits.extract(int.from_bytes(raw, "big")), spec, power)
    if spec.valuemap is not None:
        hit, mapped = spec.valuemap.lookup(raw)
        if hit:
            return scale(mapped, spec, power)
    if is_text(spec.datatype):
        text = decode_text(raw, spec.text_bytes)
        if spec.valuemap is not None:
            hit, mapped = spec.valuemap.lookup_text(text)
            if hit:
                return scale(mapped, spec, power)
        return _finite(_typecast(text, spec.typecast)) if spec.typecast not in (None, "str") else text
    return scale(unpack(raw, spec.datatype), spec, power)


def decode_registers(registers: list[int] | tuple[int, ...], spec: ValueSpec, power: int | None = None) -> Any:
    if is_text(spec.datatype):
        # text keeps register order; BADC/DCBA swap the two characters inside each register
        order = "BADC" if spec.order in ("BADC", "DCBA") else "ABCD"
        return decode_bytes(registers_to_bytes(registers, order), spec, power)
    raw = registers_to_bytes(registers, spec.order)
    if spec.bits is None and spec.datatype in NUMERIC_TYPES and NUMERIC_TYPES[spec.datatype][1] == 1 and len(raw) == 2:
        # int8/uint8 in one register: the low byte of the value (as encode_registers writes it);
        # the valuemap still sees the full register
        if spec.valuemap is not None:
            hit, mapped = spec.valuemap.lookup(raw)
            if hit:
                return scale(mapped, spec, power)
        return scale(unpack(raw[1:], spec.datatype), spec, power)
    return decode_bytes(raw, spec, power)


# ---------------------------------------------------------------------------------------------
# Byte-stream readers (mqtt, rawserial, rawtcp): `parse_as` (upstream 2.1) before the steps above

PARSE_AS = ("bytes", "str", "hex", "json")  # json: mqtt only (a value at a key path of a JSON payload)
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")


def utf8_text(raw: bytes) -> str:
    """Raw bytes as UTF-8 text; DecodeError naming the first bad byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at {exc.start}: {exc.reason})") from None


def decode_text_value(text: str, spec: ValueSpec) -> Any:
    """A value written as text (parse_as str, or a JSON string): the valuemap by literal, typecast str
    keeps the text, else the number it spells, scaled (an integer stays an integer)."""
    if spec.valuemap is not None:
        hit, mapped = spec.valuemap.lookup_text(text)
        if hit:
            return scale(mapped, spec)
    if spec.typecast == "str":
        return text
    number = text.strip()
    if len(number) > 400:
        raise DecodeError(f"{number[:40]!r}... is too long for a number")
    if _INTEGER.fullmatch(number):
        return scale(int(number), spec)
    if _NUMBER.fullmatch(number) or number.lower() in ("nan", "+nan", "-nan", "inf", "+inf", "-inf"):
        return scale(float(number), spec)  # NaN and infinity become None (null), as everywhere
    raise DecodeError(f"{number[:40]!r} is not a number")


def decode_as(raw: bytes, parse_as: str | None, spec: ValueSpec) -> Any:
    """bytes (default): decode_bytes; hex: ASCII hex digits to bytes, then decode_bytes; str: UTF-8
    text to decode_text_value. DecodeError naming what was wrong (never a value from bad bytes)."""
    if parse_as in (None, "bytes"):
        return decode_bytes(raw, spec)
    text = utf8_text(raw)
    if parse_as == "hex":
        digits = text.strip()
        try:
            raw = bytes.fromhex(digits)
        except ValueError:
            raise DecodeError(f"{digits[:40]!r} is not an even number of hex digits") from None
        return decode_bytes(raw, spec)
    if parse_as == "str":
        return decode_text_value(text, spec)
    raise DecodeError(f"parse_as {parse_as!r} is not one of bytes, str, hex")


def decode_value(value: Any, spec: ValueSpec) -> Any:
    """A value taken from a JSON document: a number or boolean scaled, text as decode_text_value,
    null as None; an object or a list is not a value."""
    if value is None:
        return None
    if isinstance(value, str):
        return decode_text_value(value, spec)
    if isinstance(value, (bool, int, float)):
        if spec.valuemap is not None and not isinstance(value, bool):
            hit, mapped = spec.valuemap.lookup_text(str(value))
            if hit:
                return scale(mapped, spec)
        return scale(value, spec)
    raise DecodeError(f"{'an object' if isinstance(value, dict) else 'a list'}, not a value")


# ---------------------------------------------------------------------------------------------
# Encoding: the inverse, for the simulator and tests


def _unscale(value: Any, spec: ValueSpec, power: int | None = None) -> Any:
    if spec.typecast in ("str", "bool") or isinstance(value, (str, bool)):
        return value
    if spec.offset is not None:
        value = value - spec.offset
    if spec.multiplier not in (None, 0):
        value = value / spec.multiplier
    if power:
        value = value / 10**power
    return value


def encode_bytes(value: Any, spec: ValueSpec, nbytes: int, power: int | None = None) -> bytes:
    """Raw big-endian value bytes that decode to `value` (rounded to the datatype's resolution)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        if spec.valuemap is not None:
            raw = spec.valuemap.raw_for(None, nbytes)
            if raw is not None:
                return raw
        datatype = spec.datatype or INFERRED_TYPES.get(nbytes)
        if datatype in ("float", "single", "float32", "double", "float64"):
            return struct.pack(">" + NUMERIC_TYPES[datatype][0], math.nan)
        raise ValueError("cannot encode a missing value: no valuemap entry maps to null")
    if is_text(spec.datatype):
        data = str(value).encode("utf-8")[:nbytes]
        return data + b"\x00" * (nbytes - len(data))
    raw_value = _unscale(value, spec, power)
    datatype = spec.datatype or INFERRED_TYPES.get(nbytes)
    if datatype is None:
        raise ValueError(f"cannot encode into {nbytes} bytes without a datatype")
    code, size = NUMERIC_TYPES[datatype]
    if code not in ("f", "d"):
        raw_value = int(round(raw_value))
        bits = 8 * size
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if code.islower() else (0, (1 << bits) - 1)
        raw_value = min(max(raw_value, lo), hi)
    return struct.pack(">" + code, raw_value)


def encode_registers(
    value: Any, spec: ValueSpec, words: int, current: list[int] | None = None, power: int | None = None
) -> list[int]:
    """Registers that decode to `value` (with that scale factor power). A bit field is merged into
    `current` (one register)."""
    if spec.bits is not None:
        word = current[0] if current else 0
        return [spec.bits.insert(word, int(round(_unscale(value or 0, spec, power))))]
    raw = encode_bytes(value, spec, 2 * words, power)
    if is_text(spec.datatype):
        raw = raw + b"\x00" * (2 * words - len(raw))
        order = "BADC" if spec.order in ("BADC", "DCBA") else "ABCD"
        return bytes_to_registers(raw, order)
    if len(raw) < 2 * words:  # e.g. uint8 in one register
        raw = b"\x00" * (2 * words - len(raw)) + raw
    return bytes_to_registers(raw, spec.order)


# ---------------------------------------------------------------------------------------------
# Status info (reference section 2.2)


@dataclass(frozen=True, slots=True)
class StatusSpec:
    content: str
    bits: BitField | None
    order: str = "ABCD"
    level_map: tuple[tuple[Any, int], ...] = ()


def decode_status(registers: list[int], spec: StatusSpec) -> dict | None:
    """{"c": content, "l": level}, or None when the value is not in the level map (item dropped)."""
    raw = registers_to_bytes(registers, spec.order)
    if spec.bits is not None:
        if len(raw) != 2:
            raise DecodeError("status bits need exactly one register")
        value = spec.bits.extract(int.from_bytes(raw, "big"))
    else:
        value = int.from_bytes(raw, "big")
    if not spec.level_map:
        return {"c": spec.content, "l": value}
    for mapped_value, level in spec.level_map:
        if mapped_value == value:
            return {"c": spec.content, "l": level}
    return None


# ---------------------------------------------------------------------------------------------
# Byte-stream readers (rawserial, rawtcp, mqtt): `parse_as` before the pipeline (reference 3.6 step 1)

RAW_PARSE_AS = ("bytes", "str", "hex")  # rawserial, rawtcp (str keeps text unless typecast)
_NUMBER_TEXT = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*")
_INT_TEXT = re.compile(r"\s*[+-]?\d+\s*")
_HEX_TEXT = re.compile(r"(?:[0-9A-Fa-f]{2})+")


def _number_from_text(text: str, typecast: str) -> int | float:
    """The number a device wrote as text: decimal notation only (no 'nan', 'inf', '1_000', hex)."""
    if typecast == "int":
        if not _INT_TEXT.fullmatch(text):
            raise DecodeError(f"{text!r} is not an integer")
        return int(text)
    if not _NUMBER_TEXT.fullmatch(text):
        raise DecodeError(f"{text!r} is not a number")
    return float(text)


def decode_parsed(raw: bytes, spec: ValueSpec, parse_as: str = "bytes") -> Any:
    """A value from the raw bytes a byte-stream reader cut out of an answer, as upstream's parse_as:

    - bytes: the bytes as they are (valuemap on their hex, datatype or length inference);
    - str: UTF-8 text (strictly: invalid UTF-8 is an error, never a value); the valuemap's literal
      keys; then typecast int or float reads the number (decimal notation only) and multiplier and
      offset apply; str, bool or no typecast keep the text;
    - hex: ASCII hex digits (an even number of them, nothing else) to bytes, then as bytes.
    """
    if not raw:
        raise DecodeError("no data")
    if parse_as == "str":
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"{raw!r} is not UTF-8 text (byte {exc.start}: {raw[exc.start]:#04x})") from None
        if spec.valuemap is not None:
            hit, mapped = spec.valuemap.lookup_text(text)
            if hit:
                return scale(mapped, spec)
        if spec.typecast in ("int", "float"):
            return scale(_number_from_text(text, spec.typecast), spec)
        return _finite(_typecast(text, spec.typecast))
    if parse_as == "hex":
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise DecodeError(f"{raw!r} is not ASCII hex digits") from None
        if not _HEX_TEXT.fullmatch(text):
            raise DecodeError(f"{text!r} is not an even number of hex digits")
        raw = bytes.fromhex(text)
    elif parse_as != "bytes":
        raise DecodeError(f"parse_as {parse_as!r} is not one of {', '.join(RAW_PARSE_AS)}")
    return decode_bytes(raw, spec)
