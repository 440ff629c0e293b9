"""The codec: raw Modbus registers -> values, as the driver JSON describes them (reference sections 2, 3.6, 9).

Every spec is built through drivers.compile_field / compile_status_item from a driver dict, so the driver
JSON path is exercised too. Expected values are written out by hand (byte layouts in hex) or computed with
struct from hand-written bytes, never with the function under test.
"""

from __future__ import annotations

import json
import math
import struct
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ammp_edge.core import codec, drivers
from ammp_edge.core.codec import DecodeError
from ammp_edge.core.problems import InvalidInput
from helpers.common import UPSTREAM_CONFIGS, UPSTREAM_DRIVERS

# the autouse isolated_dirs fixture is function scoped; these tests do not touch the directories
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ---------------------------------------------------------------------------------------------
# helpers


def compile_one(opts: dict, common: dict | None = None) -> drivers.ModbusField:
    opts = {"register": 0, **opts}
    driver: dict = {"fields": {"f": opts}}
    if common is not None:
        driver["common"] = common
    warnings: list = []
    fld = drivers.compile_field(driver, "f", "drivers.t.fields.f", warnings)
    assert isinstance(fld, drivers.ModbusField)
    return fld


def decode(registers: list[int], opts: dict, common: dict | None = None):
    fld = compile_one(opts, common)
    assert fld.words == len(registers), f"field reads {fld.words} registers, case gives {len(registers)}"
    return codec.decode_registers(registers, fld.spec)


def assert_same(got, expected):
    """Equal, and of the same type (25 is not 25.0, True is not 1)."""
    assert type(got) is type(expected), f"{got!r} ({type(got).__name__}) != {expected!r} ({type(expected).__name__})"
    if isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == expected


def f32(hexstr: str) -> float:
    """The float32 with these big-endian bytes (hand-written layout, decoded by struct)."""
    return struct.unpack(">f", bytes.fromhex(hexstr))[0]


def ref_bytes(registers: list[int], order: str) -> bytes:
    """Independent reference for register order: the value's big-endian bytes.

    ABCD: wire bytes as read. CDAB: the register list reversed. BADC: each register little-endian.
    DCBA: the whole wire byte string reversed (a little-endian value).
    """
    wire = b"".join(bytes([r >> 8, r & 0xFF]) for r in registers)
    if order == "ABCD":
        return wire
    if order == "CDAB":
        return b"".join(bytes([r >> 8, r & 0xFF]) for r in reversed(registers))
    if order == "BADC":
        return b"".join(bytes([r & 0xFF, r >> 8]) for r in registers)
    if order == "DCBA":
        return wire[::-1]
    raise AssertionError(order)


def ref_bits(word: int, start: int, length: int, order: str) -> int:
    """Independent reference for bit fields, on the 16-character bit string (index 0 = MSB)."""
    bits = f"{word:016b}"
    if order == "lsb":  # bit i counted from the LSB is bits[15 - i]
        return int(bits[16 - start - length : 16 - start], 2)
    if order == "msb_natural":  # bit i counted from the MSB, the field read left to right
        return int(bits[start : start + length], 2)
    if order == "msb":  # upstream: the word bit-reversed, then shifted and masked
        return int(bits[start : start + length][::-1], 2)
    raise AssertionError(order)


def text_regs(data: bytes, words: int) -> list[int]:
    data = data + b"\x00" * (2 * words - len(data))
    return [(data[i] << 8) | data[i + 1] for i in range(0, 2 * words, 2)]


def text_regs_badc(data: bytes, words: int) -> list[int]:
    data = data + b"\x00" * (2 * words - len(data))
    return [(data[i + 1] << 8) | data[i] for i in range(0, 2 * words, 2)]


SMA_VM = {"0x80000000": None, "0xffffffff": None}

# ---------------------------------------------------------------------------------------------
# 1. table-driven decoding: (id, registers, field options, expected)

DECODE_CASES = [
    # --- int16 / uint16
    ("int16 positive", [0x0102], {"datatype": "int16"}, 258),
    ("int16 -2", [0xFFFE], {"datatype": "int16"}, -2),
    ("int16 min", [0x8000], {"datatype": "int16"}, -32768),
    ("int16 max", [0x7FFF], {"datatype": "int16"}, 32767),
    ("int16 BADC", [0xFEFF], {"datatype": "int16", "order": "BADC"}, -2),
    ("int16 DCBA", [0x0201], {"datatype": "int16", "order": "DCBA"}, 258),
    ("int16 lsr on one register", [0xFFFE], {"datatype": "int16", "order": "lsr"}, -2),
    ("int16 CDAB on one register", [0x0102], {"datatype": "int16", "order": "CDAB"}, 258),
    ("uint16", [0xFFFE], {"datatype": "uint16"}, 65534),
    ("uint16 BADC", [0x3412], {"datatype": "uint16", "order": "BADC"}, 0x1234),
    ("uint16 words 1 explicit", [0x8000], {"datatype": "uint16", "words": 1}, 32768),
    # --- int32 0x01020304 in every order
    ("int32 msr", [0x0102, 0x0304], {"datatype": "int32", "order": "msr"}, 0x01020304),
    ("int32 default order is msr", [0x0102, 0x0304], {"datatype": "int32"}, 0x01020304),
    ("int32 ABCD", [0x0102, 0x0304], {"datatype": "int32", "order": "ABCD"}, 0x01020304),
    ("int32 lsr", [0x0304, 0x0102], {"datatype": "int32", "order": "lsr"}, 0x01020304),
    ("int32 CDAB", [0x0304, 0x0102], {"datatype": "int32", "order": "CDAB"}, 0x01020304),
    ("int32 BADC", [0x0201, 0x0403], {"datatype": "int32", "order": "BADC"}, 0x01020304),
    ("int32 DCBA", [0x0403, 0x0201], {"datatype": "int32", "order": "DCBA"}, 0x01020304),
    ("int32 lowercase order", [0x0403, 0x0201], {"datatype": "int32", "order": "dcba"}, 0x01020304),
    ("int32 -2 msr", [0xFFFF, 0xFFFE], {"datatype": "int32"}, -2),
    ("int32 -2 lsr", [0xFFFE, 0xFFFF], {"datatype": "int32", "order": "lsr"}, -2),
    ("int32 min without valuemap", [0x8000, 0x0000], {"datatype": "int32"}, -2147483648),
    ("int32 words 2 explicit", [0x0000, 0x0001], {"datatype": "int32", "words": 2}, 1),
    # --- uint32 0xDEADBEEF in every order
    ("uint32 ABCD", [0xDEAD, 0xBEEF], {"datatype": "uint32"}, 0xDEADBEEF),
    ("uint32 lsr", [0xBEEF, 0xDEAD], {"datatype": "uint32", "order": "lsr"}, 0xDEADBEEF),
    ("uint32 BADC", [0xADDE, 0xEFBE], {"datatype": "uint32", "order": "BADC"}, 0xDEADBEEF),
    ("uint32 DCBA", [0xEFBE, 0xADDE], {"datatype": "uint32", "order": "DCBA"}, 0xDEADBEEF),
    ("uint32 max", [0xFFFF, 0xFFFF], {"datatype": "uint32"}, 4294967295),
    # --- int64 / uint64
    ("int64 ABCD", [0x0102, 0x0304, 0x0506, 0x0708], {"datatype": "int64"}, 0x0102030405060708),
    ("int64 CDAB", [0x0708, 0x0506, 0x0304, 0x0102], {"datatype": "int64", "order": "CDAB"}, 0x0102030405060708),
    ("int64 lsr", [0x0708, 0x0506, 0x0304, 0x0102], {"datatype": "int64", "order": "lsr"}, 0x0102030405060708),
    ("int64 BADC", [0x0201, 0x0403, 0x0605, 0x0807], {"datatype": "int64", "order": "BADC"}, 0x0102030405060708),
    ("int64 DCBA", [0x0807, 0x0605, 0x0403, 0x0201], {"datatype": "int64", "order": "DCBA"}, 0x0102030405060708),
    ("int64 -2", [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE], {"datatype": "int64"}, -2),
    ("int64 -2 lsr", [0xFFFE, 0xFFFF, 0xFFFF, 0xFFFF], {"datatype": "int64", "order": "lsr"}, -2),
    ("int64 min", [0x8000, 0, 0, 0], {"datatype": "int64"}, -(2**63)),
    ("uint64 near max", [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE], {"datatype": "uint64"}, 2**64 - 2),
    ("uint64 DCBA", [0xFEFF, 0xFFFF, 0xFFFF, 0xFFFF], {"datatype": "uint64", "order": "DCBA"}, 2**64 - 2),
    ("uint64 lsr", [0x0708, 0x0506, 0x0304, 0x0102], {"datatype": "uint64", "order": "lsr"}, 0x0102030405060708),
    # --- float32: 1.0 = 0x3F800000
    ("float 1.0 msr", [0x3F80, 0x0000], {"datatype": "float", "order": "msr"}, 1.0),
    ("float 1.0 ABCD", [0x3F80, 0x0000], {"datatype": "float", "order": "ABCD"}, 1.0),
    ("float 1.0 lsr", [0x0000, 0x3F80], {"datatype": "float", "order": "lsr"}, 1.0),
    ("float 1.0 CDAB", [0x0000, 0x3F80], {"datatype": "float", "order": "CDAB"}, 1.0),
    ("float 1.0 BADC", [0x803F, 0x0000], {"datatype": "float", "order": "BADC"}, 1.0),
    ("float 1.0 DCBA", [0x0000, 0x803F], {"datatype": "float", "order": "DCBA"}, 1.0),
    ("float -2.0", [0xC000, 0x0000], {"datatype": "float"}, -2.0),
    ("float 0.1 (shortest float32 decimal)", [0x3DCC, 0xCCCD], {"datatype": "float"}, 0.1),
    ("float 0.1 lsr", [0xCCCD, 0x3DCC], {"datatype": "float", "order": "lsr"}, 0.1),
    ("float 0.1 BADC", [0xCC3D, 0xCDCC], {"datatype": "float", "order": "BADC"}, 0.1),
    ("float max finite", [0x7F7F, 0xFFFF], {"datatype": "float"}, 3.4028235e38),
    ("single is float", [0x3F80, 0x0000], {"datatype": "single"}, 1.0),
    ("single lsr", [0x0000, 0xC000], {"datatype": "single", "order": "lsr"}, -2.0),
    # --- double: 1.0 = 0x3FF0000000000000
    ("double 1.0 ABCD", [0x3FF0, 0, 0, 0], {"datatype": "double"}, 1.0),
    ("double 1.0 lsr", [0, 0, 0, 0x3FF0], {"datatype": "double", "order": "lsr"}, 1.0),
    ("double 1.0 BADC", [0xF03F, 0, 0, 0], {"datatype": "double", "order": "BADC"}, 1.0),
    ("double 1.0 DCBA", [0, 0, 0, 0xF03F], {"datatype": "double", "order": "DCBA"}, 1.0),
    ("double -2.5", [0xC004, 0, 0, 0], {"datatype": "double"}, -2.5),
    ("double 0.1", [0x3FB9, 0x9999, 0x9999, 0x999A], {"datatype": "double"}, 0.1),
    ("double 0.1 lsr", [0x999A, 0x9999, 0x9999, 0x3FB9], {"datatype": "double", "order": "lsr"}, 0.1),
    ("double 0.1 DCBA", [0x9A99, 0x9999, 0x9999, 0xB93F], {"datatype": "double", "order": "DCBA"}, 0.1),
    # --- length inference without datatype (upstream Py: 2 bytes uint16, 4 uint32, 8 double)
    ("infer 1 register uint16", [0xFFFE], {}, 65534),
    ("infer 1 register is unsigned", [0x8000], {"words": 1}, 32768),
    ("infer 2 registers uint32", [0xFFFF, 0xFFFE], {"words": 2}, 4294967294),
    ("infer 2 registers lsr", [0x0001, 0x0002], {"words": 2, "order": "lsr"}, 0x00020001),
    ("infer 4 registers double", [0x3FF0, 0, 0, 0], {"words": 4}, 1.0),
    ("infer 4 registers double -2.5 lsr", [0, 0, 0, 0xC004], {"words": 4, "order": "lsr"}, -2.5),
    # --- upstream section 9 mock registers
    # the float32 325218.8125 is the one nearest 325218.8 (its neighbours are 1/32 away)
    ("mock ems 122/123 lsr float", [0xCC5A, 0x489E], {"datatype": "float", "order": "lsr"}, 325218.8),
    ("mock ems 124/125 lsr float", [0xF330, 0x48AA], {"datatype": "float", "order": "lsr"}, 350105.5),
    ("mock ems 126/127 lsr float", [0xE441, 0x489F], {"datatype": "float", "order": "lsr"}, 327458.03),
    ("mock sma total yield uint32", [123, 45678], {"datatype": "uint32"}, 123 * 65536 + 45678),
    ("mock sma power int32", [0, 12345], {"datatype": "int32"}, 12345),
    ("mock sma serial uint32", [18838, 722], {"datatype": "uint32"}, 1234567890),
    ("mock sma device class", [0, 8081], {"datatype": "uint32", "valuemap": SMA_VM}, 8081),
    ("mock sma power with sma valuemap", [0, 12345], {"datatype": "int32", "valuemap": SMA_VM}, 12345),
    # --- valuemap on the full raw hex, before decoding
    ("vm int32 0x80000000 -> null", [0x8000, 0x0000], {"datatype": "int32", "valuemap": SMA_VM}, None),
    ("vm int32 0xffffffff -> null", [0xFFFF, 0xFFFF], {"datatype": "int32", "valuemap": SMA_VM}, None),
    ("vm int32 near sentinel decodes", [0x8000, 0x0001], {"datatype": "int32", "valuemap": SMA_VM}, -2147483647),
    ("vm int32 -2 decodes", [0xFFFF, 0xFFFE], {"datatype": "int32", "valuemap": SMA_VM}, -2),
    ("vm uint32 0xffffffff -> null", [0xFFFF, 0xFFFF], {"datatype": "uint32", "valuemap": {"0xffffffff": None}}, None),
    ("vm uppercase hex digits", [0xFFFF, 0xFFFF], {"datatype": "uint32", "valuemap": {"0xFFFFFFFF": None}}, None),
    ("vm uppercase 0X prefix", [0x8000, 0x0000], {"datatype": "int32", "valuemap": {"0X80000000": None}}, None),
    (
        "vm 1-register key vs 2-register value",
        [0x0000, 0xFFFF],
        {"datatype": "uint32", "valuemap": {"0xffff": None}},
        65535,
    ),
    (
        "vm 2-register key vs 1-register value",
        [0xFFFF],
        {"datatype": "uint16", "valuemap": {"0x0000ffff": None}},
        65535,
    ),
    ("vm 1-register key on 1 register", [0xFFFF], {"datatype": "uint16", "valuemap": {"0xffff": None}}, None),
    ("vm int16 0x7fff", [0x7FFF], {"datatype": "int16", "valuemap": {"0x7fff": None}}, None),
    ("vm int16 0x8000 decodes", [0x8000], {"datatype": "int16", "valuemap": {"0x7fff": None}}, -32768),
    ("vm odd key 0x0 on 1 register", [0x0000], {"valuemap": {"0x0": None}}, None),
    ("vm odd key 0x0 on 2 registers", [0, 0], {"datatype": "uint32", "valuemap": {"0x0": None}}, None),
    ("vm odd key 0x0 on 4 registers", [0, 0, 0, 0], {"datatype": "double", "valuemap": {"0x0": None}}, None),
    ("vm odd key 0x0 leaves 1 alone", [0, 1], {"datatype": "uint32", "valuemap": {"0x0": None}}, 1),
    ("vm odd key 0x123 by number", [0x0123], {"datatype": "uint16", "valuemap": {"0x123": 5}}, 5),
    ("vm after lsr ordering", [0x0000, 0x8000], {"datatype": "int32", "order": "lsr", "valuemap": SMA_VM}, None),
    (
        "vm lsr wire order is not the key",
        [0x8000, 0x0000],
        {"datatype": "int32", "order": "lsr", "valuemap": SMA_VM},
        32768,
    ),
    ("vm after BADC ordering", [0x0080, 0x0000], {"datatype": "int32", "order": "BADC", "valuemap": SMA_VM}, None),
    (
        "vm before datatype: float NaN bytes mapped",
        [0x7FC0, 0x0000],
        {"datatype": "float", "valuemap": {"0x7fc00000": -1}},
        -1,
    ),
    ("vm hit gets multiplier and offset", [0xFFFF], {"valuemap": {"0xffff": 7}, "multiplier": 10, "offset": -5}, 65),
    (
        "vm hit gets typecast float",
        [0xFFFF],
        {"valuemap": {"0xffff": 7}, "multiplier": 10, "offset": -5, "typecast": "float"},
        65.0,
    ),
    ("vm hit gets typecast int", [0xFFFF], {"valuemap": {"0xffff": 7}, "multiplier": 0.5, "typecast": "int"}, 3),
    (
        "vm null stays null through scaling",
        [0xFFFF],
        {"valuemap": {"0xffff": None}, "multiplier": 2, "offset": 1, "typecast": "float"},
        None,
    ),
    ("vm string value", [0x0001], {"valuemap": {"0x0001": "on"}}, "on"),
    ("vm miss decodes normally", [0x0002], {"valuemap": {"0x0001": "on"}, "multiplier": 3}, 6),
    ("vm empty object ignored", [0x0005], {"valuemap": {}}, 5),
    # --- multiplier, then offset
    ("ingburo temp 500 x0.1 -25", [500], {"multiplier": 0.1, "offset": -25, "typecast": "float"}, 25.0),
    ("ingburo temp without typecast", [500], {"multiplier": 0.1, "offset": -25}, 25.0),
    ("multiplier before offset", [100], {"multiplier": 2, "offset": 10}, 210),
    ("offset only", [10], {"offset": -3}, 7),
    ("multiplier only int", [5], {"multiplier": 2}, 10),
    ("multiplier on negative int32", [0xFFFF, 0xFF9C], {"datatype": "int32", "multiplier": 0.5}, -50.0),
    ("multiplier on float", [0x3F80, 0x0000], {"datatype": "float", "multiplier": 2.5}, 2.5),
    (
        "multiplier on lsr float",
        [0x0000, 0x4000],
        {"datatype": "float", "order": "lsr", "multiplier": 0.5, "offset": 1},
        2.0,
    ),
    # --- typecast
    ("typecast int truncates float", [0x4030, 0x0000], {"datatype": "float", "typecast": "int"}, 2),
    ("typecast int truncates negative", [0xC030, 0x0000], {"datatype": "float", "typecast": "int"}, -2),
    ("typecast int after multiplier", [25], {"multiplier": 0.1, "typecast": "int"}, 2),
    ("typecast float", [5], {"typecast": "float"}, 5.0),
    ("typecast float on int32", [0xFFFF, 0xFFFE], {"datatype": "int32", "typecast": "float"}, -2.0),
    ("typecast str skips multiplier and offset", [7], {"multiplier": 10, "offset": 1, "typecast": "str"}, "7"),
    ("typecast str of float", [0x3F80, 0x0000], {"datatype": "float", "typecast": "str"}, "1.0"),
    ("typecast bool skips offset", [2], {"offset": -2, "typecast": "bool"}, True),
    ("typecast bool skips multiplier", [1], {"multiplier": 0, "typecast": "bool"}, True),
    ("typecast bool of zero", [0], {"typecast": "bool"}, False),
    # --- NaN and infinity become None
    ("float NaN", [0x7FC0, 0x0000], {"datatype": "float"}, None),
    ("float NaN lsr", [0x0000, 0x7FC0], {"datatype": "float", "order": "lsr"}, None),
    ("float signalling NaN", [0x7F80, 0x0001], {"datatype": "float"}, None),
    ("float negative NaN", [0xFFC0, 0x0000], {"datatype": "float"}, None),
    ("float +inf", [0x7F80, 0x0000], {"datatype": "float"}, None),
    ("float -inf", [0xFF80, 0x0000], {"datatype": "float"}, None),
    ("float NaN typecast float", [0x7FC0, 0x0000], {"datatype": "float", "typecast": "float"}, None),
    ("float NaN typecast int", [0x7FC0, 0x0000], {"datatype": "float", "typecast": "int"}, None),
    ("float inf typecast int", [0x7F80, 0x0000], {"datatype": "float", "typecast": "int"}, None),
    ("float NaN with multiplier", [0x7FC0, 0x0000], {"datatype": "float", "multiplier": 2, "offset": 1}, None),
    ("float overflow to inf by multiplier", [0x7F7F, 0xFFFF], {"datatype": "float", "multiplier": 1e300}, None),
    ("double NaN", [0x7FF8, 0, 0, 0], {"datatype": "double"}, None),
    ("double NaN DCBA", [0, 0, 0, 0xF87F], {"datatype": "double", "order": "DCBA"}, None),
    ("double +inf", [0x7FF0, 0, 0, 0], {"datatype": "double"}, None),
    ("double -inf", [0xFFF0, 0, 0, 0], {"datatype": "double"}, None),
    ("inferred double NaN", [0x7FF8, 0, 0, 0], {"words": 4}, None),
    # --- text
    ("str16 NUL padded", text_regs(b"ABC", 8), {"datatype": "str16"}, "ABC"),
    ("str16 trailing spaces", text_regs(b"Hi" + b" " * 14, 8), {"datatype": "str16"}, "Hi"),
    ("str16 spaces then NULs", text_regs(b"Hi   ", 8), {"datatype": "str16"}, "Hi"),
    ("str16 leading spaces kept", text_regs(b"  Hi", 8), {"datatype": "str16"}, "  Hi"),
    ("str16 full width", text_regs(b"ABCDEFGHIJKLMNOP", 8), {"datatype": "str16"}, "ABCDEFGHIJKLMNOP"),
    ("str16 text after NUL ignored", text_regs(b"AB\x00CD", 8), {"datatype": "str16"}, "AB"),
    ("str15 keeps 15 bytes", text_regs(b"ABCDEFGHIJKLMNOP", 8), {"datatype": "str15"}, "ABCDEFGHIJKLMNO"),
    ("str16 BADC swaps characters", [0x4241, 0x0043, 0, 0, 0, 0, 0, 0], {"datatype": "str16", "order": "BADC"}, "ABC"),
    ("str16 BADC helper layout", text_regs_badc(b"SMA-STP", 8), {"datatype": "str16", "order": "BADC"}, "SMA-STP"),
    ("str16 lsr keeps register order", text_regs(b"ABC", 8), {"datatype": "str16", "order": "lsr"}, "ABC"),
    ("str with words", [0x5445, 0x5354], {"datatype": "str", "words": 2}, "TEST"),
    ("str words 1", [0x4F4B], {"datatype": "str", "words": 1}, "OK"),
    ("str20", text_regs(b"Firmware 1.2.3", 10), {"datatype": "str20"}, "Firmware 1.2.3"),
    ("str valuemap literal", text_regs(b"OK", 2), {"datatype": "str", "words": 2, "valuemap": {"OK": 1}}, 1),
    ("str valuemap literal miss", text_regs(b"NO", 2), {"datatype": "str", "words": 2, "valuemap": {"OK": 1}}, "NO"),
    ("str typecast float", text_regs(b"12.5", 2), {"datatype": "str", "words": 2, "typecast": "float"}, 12.5),
    ("str typecast int", text_regs(b"42", 1), {"datatype": "str", "words": 1, "typecast": "int"}, 42),
    (
        "str typecast float nan -> None",
        text_regs(b"nan", 2),
        {"datatype": "str", "words": 2, "typecast": "float"},
        None,
    ),
    # --- bit fields (one register)
    ("bits lsb single set", [0b100], {"start_bit": 2}, 1),
    ("bits lsb single clear", [0b011], {"start_bit": 2}, 0),
    ("bits lsb bit 15", [0x8000], {"start_bit": 15}, 1),
    ("bits lsb explicit", [0x0001], {"start_bit": 0, "bit_order": "lsb"}, 1),
    ("bits lsb 4 high", [0xB200], {"start_bit": 12, "length_bits": 4}, 0xB),
    ("bits lsb 4 middle", [0xB200], {"start_bit": 8, "length_bits": 4}, 0x2),
    ("bits lsb 3 straddling", [0xB200], {"start_bit": 7, "length_bits": 3}, 0b100),
    ("bits lsb all 16", [0xB200], {"start_bit": 0, "length_bits": 16}, 0xB200),
    (
        "bits msb_natural 0xB200 start 4 len 4",
        [0xB200],
        {"start_bit": 4, "length_bits": 4, "bit_order": "msb_natural"},
        2,
    ),
    ("bits msb_natural start 0 len 4", [0xB200], {"start_bit": 0, "length_bits": 4, "bit_order": "msb_natural"}, 0xB),
    ("bits msb_natural start 0", [0xB200], {"start_bit": 0, "bit_order": "msb_natural"}, 1),
    ("bits msb_natural start 1", [0xB200], {"start_bit": 1, "bit_order": "msb_natural"}, 0),
    ("bits msb_natural start 15 is the lsb", [0x0001], {"start_bit": 15, "bit_order": "msb_natural"}, 1),
    (
        "bits msb_natural start 2 len 4 (ems alert_state)",
        [0xB200],
        {"start_bit": 2, "length_bits": 4, "bit_order": "msb_natural"},
        0b1100,
    ),
    ("bits msb_natural start 5 len 3", [0xB200], {"start_bit": 5, "length_bits": 3, "bit_order": "msb_natural"}, 0b010),
    ("bits msb (upstream) example", [0xB200], {"start_bit": 4, "length_bits": 4, "bit_order": "msb"}, 4),
    ("bits msb (upstream) start 0 len 4", [0xB200], {"start_bit": 0, "length_bits": 4, "bit_order": "msb"}, 0xD),
    ("bits msb (upstream) start 2 len 4", [0xB200], {"start_bit": 2, "length_bits": 4, "bit_order": "msb"}, 3),
    ("bits msb (upstream) single bit", [0x4000], {"start_bit": 1, "bit_order": "msb"}, 1),
    (
        "bits plus multiplier and offset",
        [0xB200],
        {"start_bit": 12, "length_bits": 4, "multiplier": 0.5, "offset": 1},
        6.5,
    ),
    ("bits plus typecast bool", [0b100], {"start_bit": 2, "typecast": "bool"}, True),
    ("bits plus typecast float", [0b100], {"start_bit": 2, "typecast": "float"}, 1.0),
    (
        "bits ignore datatype and valuemap",
        [0xB200],
        {"start_bit": 12, "length_bits": 4, "datatype": "int16", "valuemap": {"0xb200": None}},
        0xB,
    ),
    ("bits with words 1", [0x8000], {"start_bit": 15, "words": 1}, 1),
    # --- int8/uint8 in one register: the low byte
    ("uint8 low byte", [0x00FE], {"datatype": "uint8"}, 254),
    ("int8 low byte", [0x00FE], {"datatype": "int8"}, -2),
    ("uint8 BADC", [0xFE00], {"datatype": "uint8", "order": "BADC"}, 254),
    ("uint8 valuemap sees the register", [0x00FF], {"datatype": "uint8", "valuemap": {"0x00ff": None}}, None),
]


@pytest.mark.parametrize("registers, opts, expected", [c[1:] for c in DECODE_CASES], ids=[c[0] for c in DECODE_CASES])
def test_decode(registers, opts, expected):
    assert_same(decode(registers, opts), expected)


def test_case_ids_unique():
    ids = [c[0] for c in DECODE_CASES]
    assert len(ids) == len(set(ids))


# ---------------------------------------------------------------------------------------------
# 1b. what is published: raw words -> the JSON text in u/data (delivery.readout.dumps). The float
# noise in the comments is what plain binary arithmetic gave before (and what upstream publishes).

PUBLISHED_CASES = [
    # float32: the shortest decimal that reads back as the same float32
    ("f32 229.79 (not 229.7899932861328)", [0x4365, 0xCA3D], {"datatype": "float"}, "229.79"),
    ("f32 229.79 lsr", [0xCA3D, 0x4365], {"datatype": "float", "order": "lsr"}, "229.79"),
    ("f32 229.79 DCBA", [0x3DCA, 0x6543], {"datatype": "float", "order": "DCBA"}, "229.79"),
    ("f32 49.98 (not 49.97999954223633)", [0x4247, 0xEB85], {"datatype": "float"}, "49.98"),
    ("f32 -17.3", [0xC18A, 0x6666], {"datatype": "float"}, "-17.3"),
    ("f32 0.5 exact", [0x3F00, 0x0000], {"datatype": "float"}, "0.5"),
    ("f32 1e-07", [0x33D6, 0xBF95], {"datatype": "float"}, "1e-07"),
    ("f32 2^-20 (a power of two)", [0x3580, 0x0000], {"datatype": "float"}, "9.536743e-07"),
    ("f32 max", [0x7F7F, 0xFFFF], {"datatype": "float"}, "3.4028235e+38"),
    ("f32 smallest subnormal", [0x0000, 0x0001], {"datatype": "float"}, "1e-45"),
    ("f32 123456792 is 123456790", [0x4CEB, 0x79A3], {"datatype": "float"}, "123456790.0"),
    ("f32 zero", [0x0000, 0x0000], {"datatype": "float"}, "0.0"),
    ("f32 negative zero", [0x8000, 0x0000], {"datatype": "float"}, "-0.0"),
    # float32 scaled: the shortest decimal times the multiplier, in decimal
    (
        "f32 12.345 kWh x1000 (not 12345.000267028809)",
        [0x4145, 0x851F],
        {"datatype": "float", "multiplier": 1000},
        "12345.0",
    ),
    ("f32 12.345 x0.001", [0x4145, 0x851F], {"datatype": "float", "multiplier": 0.001}, "0.012345"),
    ("f32 229.79 x0.1", [0x4365, 0xCA3D], {"datatype": "float", "multiplier": 0.1}, "22.979"),
    ("f32 25.3 offset -0.1", [0x41CA, 0x6666], {"datatype": "float", "offset": -0.1}, "25.2"),
    ("f32 25.3 x2 offset 1", [0x41CA, 0x6666], {"datatype": "float", "multiplier": 2, "offset": 1}, "51.6"),
    ("f32 229.79 typecast int", [0x4365, 0xCA3D], {"datatype": "float", "typecast": "int"}, "229"),
    ("f32 229.79 typecast float", [0x4365, 0xCA3D], {"datatype": "float", "typecast": "float"}, "229.79"),
    ("f32 229.79 typecast str", [0x4365, 0xCA3D], {"datatype": "float", "typecast": "str"}, '"229.79"'),
    ("f32 NaN", [0x7FC0, 0x0000], {"datatype": "float"}, "null"),
    ("f32 NaN x1000", [0x7FC0, 0x0000], {"datatype": "float", "multiplier": 1000}, "null"),
    ("f32 +inf", [0x7F80, 0x0000], {"datatype": "float"}, "null"),
    ("f32 -inf offset 1", [0xFF80, 0x0000], {"datatype": "float", "offset": 1}, "null"),
    ("f32 max x1e300 overflows", [0x7F7F, 0xFFFF], {"datatype": "float", "multiplier": 1e300}, "null"),
    # double: its shortest repr, scaled in decimal
    ("f64 229.79", [0x406C, 0xB947, 0xAE14, 0x7AE1], {"datatype": "double"}, "229.79"),
    (
        "f64 0.1 x3 (not 0.30000000000000004)",
        [0x3FB9, 0x9999, 0x9999, 0x999A],
        {"datatype": "double", "multiplier": 3},
        "0.3",
    ),
    (
        "f64 0.1 offset 0.2 (not 0.30000000000000004)",
        [0x3FB9, 0x9999, 0x9999, 0x999A],
        {"datatype": "double", "offset": 0.2},
        "0.3",
    ),
    ("f64 NaN", [0x7FF8, 0, 0, 0], {"datatype": "double"}, "null"),
    ("f64 -inf x2", [0xFFF0, 0, 0, 0], {"datatype": "double", "multiplier": 2}, "null"),
    # integers: integer scaling stays an integer, a decimal multiplier gives the exact decimal
    ("u16 2301", [2301], {"datatype": "uint16"}, "2301"),
    ("u16 2301 x0.1 (not 230.10000000000002)", [2301], {"datatype": "uint16", "multiplier": 0.1}, "230.1"),
    ("i16 -2301 x0.1", [0xF703], {"datatype": "int16", "multiplier": 0.1}, "-230.1"),
    ("u16 12345 x0.01 (not 123.45000000000002)", [12345], {"datatype": "uint16", "multiplier": 0.01}, "123.45"),
    ("i32 1234567 x0.001", [0x0012, 0xD687], {"datatype": "int32", "multiplier": 0.001}, "1234.567"),
    ("u16 7 x0.1 (not 0.7000000000000001)", [7], {"datatype": "uint16", "multiplier": 0.1}, "0.7"),
    ("u16 2301 x10", [2301], {"datatype": "uint16", "multiplier": 10}, "23010"),
    ("u16 2301 x10 offset 5", [2301], {"datatype": "uint16", "multiplier": 10, "offset": 5}, "23015"),
    ("u16 2301 offset -3", [2301], {"datatype": "uint16", "offset": -3}, "2298"),
    ("u16 2301 offset -0.5", [2301], {"datatype": "uint16", "offset": -0.5}, "2300.5"),
    ("u16 500 x0.1 offset -25", [500], {"datatype": "uint16", "multiplier": 0.1, "offset": -25}, "25.0"),
    ("u16 2731 x0.1 offset -273.1", [2731], {"datatype": "uint16", "multiplier": 0.1, "offset": -273.1}, "0.0"),
    ("u16 2301 x1.0 is a float", [2301], {"datatype": "uint16", "multiplier": 1.0}, "2301.0"),
    ("u16 2301 x0.1 typecast int", [2301], {"datatype": "uint16", "multiplier": 0.1, "typecast": "int"}, "230"),
    ("u16 2301 x0.1 typecast float", [2301], {"datatype": "uint16", "multiplier": 0.1, "typecast": "float"}, "230.1"),
    (
        "u16 2301 x0.1 typecast str (not scaled)",
        [2301],
        {"datatype": "uint16", "multiplier": 0.1, "typecast": "str"},
        '"2301"',
    ),
    ("u16 x10 typecast float", [2301], {"datatype": "uint16", "multiplier": 10, "typecast": "float"}, "23010.0"),
    (
        "u64 near max stays exact",
        [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE],
        {"datatype": "uint64", "multiplier": 1},
        "18446744073709551614",
    ),
    (
        "u64 x0.5 typecast int is exact (a double gives ...808)",
        [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE],
        {"datatype": "uint64", "multiplier": 0.5, "typecast": "int"},
        "9223372036854775807",
    ),
    ("bits x0.5 offset 1", [0xB200], {"start_bit": 12, "length_bits": 4, "multiplier": 0.5, "offset": 1}, "6.5"),
    ("valuemap hit x0.1", [0xFFFF], {"valuemap": {"0xffff": 7}, "multiplier": 0.1}, "0.7"),
    ("valuemap null", [0xFFFF], {"valuemap": {"0xffff": None}, "multiplier": 0.1}, "null"),
]


@pytest.mark.parametrize("registers, opts, text", [c[1:] for c in PUBLISHED_CASES], ids=[c[0] for c in PUBLISHED_CASES])
def test_published_text(registers, opts, text):
    from ammp_edge.delivery.readout import dumps

    assert dumps({"v": decode(registers, opts)}) == '{"v":' + text + "}"


def test_published_case_ids_unique():
    ids = [c[0] for c in PUBLISHED_CASES]
    assert len(ids) == len(set(ids))


def shortest_reference(bits: bytes) -> int:
    """Independent reference: the fewest significant digits d such that one of the two d-digit
    decimals around the float32 (rounded down or up, in exact decimal) reads back as the same float32."""
    exact = Decimal(struct.unpack(">f", bits)[0]).copy_abs()
    for digits in range(1, 10):
        step = Decimal(1).scaleb(exact.adjusted() - digits + 1)
        for rounding in (ROUND_FLOOR, ROUND_CEILING):
            candidate = exact.quantize(step, rounding=rounding)
            try:
                if struct.pack(">f", float(candidate)) == struct.pack(">f", abs(struct.unpack(">f", bits)[0])):
                    return digits
            except OverflowError:
                continue
    raise AssertionError(bits.hex())


def significant_digits(text: str) -> int:
    return len(Decimal(text).copy_abs().normalize().as_tuple().digits)


@PROPS
@given(
    word_hi=st.integers(0, 0xFFFF),
    word_lo=st.integers(0, 0xFFFF),
    order=st.sampled_from(list(codec.ORDERS) + ["msr", "lsr"]),
)
def test_published_float32_reads_back_as_the_same_float32_and_is_shortest(word_hi, word_lo, order):
    """Any two registers as a float32: the published JSON number, parsed as JSON readers do (a double),
    is the same float32, and no decimal with fewer digits would be."""
    from ammp_edge.delivery.readout import dumps

    regs = [word_hi, word_lo]
    bits = ref_bytes(regs, CANON[order])
    f = struct.unpack(">f", bits)[0]
    published = dumps({"v": decode(regs, {"datatype": "float", "order": order})})
    parsed = json.loads(published)["v"]
    if not math.isfinite(f):
        assert parsed is None
        return
    assert struct.pack(">f", parsed) == bits
    text = published[len('{"v":') : -1]
    if f != 0:
        assert significant_digits(text) == shortest_reference(bits), (bits.hex(), text)


def test_powers_of_two_are_shortest_too():
    """Below a power of two the float32 grid is finer on one side: every power of two, both signs."""
    for exponent in range(1, 255):
        for sign in (0, 1):
            bits = ((sign << 31) | (exponent << 23)).to_bytes(4, "big")
            got = codec.shortest_float32(struct.unpack(">f", bits)[0])
            assert struct.pack(">f", got) == bits
            assert significant_digits(repr(got)) == shortest_reference(bits), bits.hex()


# common + field merge, as upstream drivers use it
COMMON_CASES = [
    (
        "common datatype and order (ems)",
        {"order": "lsr", "words": 2, "fncode": 3, "datatype": "float"},
        {"register": 122},
        [0xCC5A, 0x489E],
        325218.8,
    ),
    (
        "field overrides common datatype",
        {"datatype": "float", "words": 2},
        {"datatype": "uint32"},
        [0x3F80, 0x0000],
        0x3F800000,
    ),
    ("common valuemap applies", {"valuemap": SMA_VM}, {"datatype": "uint32"}, [0xFFFF, 0xFFFF], None),
    (
        "field valuemap replaces common",
        {"valuemap": {"0xffffffff": None}},
        {"datatype": "uint32", "valuemap": {"0x80000000": None}},
        [0xFFFF, 0xFFFF],
        0xFFFFFFFF,
    ),
    ("common multiplier, field offset", {"multiplier": 0.1}, {"offset": -25}, [500], 25.0),
    (
        "empty field valuemap keeps common",
        {"valuemap": SMA_VM},
        {"datatype": "int32", "valuemap": {}},
        [0xFFFF, 0xFFFF],
        None,
    ),
    # schneider_combox: common order lsr and words 2, text fields with 'words: 1'
    (
        "str16 under common lsr (combox)",
        {"order": "lsr", "words": 2},
        {"datatype": "str16", "words": 1},
        text_regs(b"ComBox", 8),
        "ComBox",
    ),
]


@pytest.mark.parametrize(
    "common, opts, registers, expected", [c[1:] for c in COMMON_CASES], ids=[c[0] for c in COMMON_CASES]
)
def test_decode_with_common(common, opts, registers, expected):
    assert_same(decode(registers, opts, common), expected)


def test_field_words_match_datatype():
    assert [
        compile_one({"datatype": dt}).words
        for dt in ("int16", "uint16", "int32", "uint32", "int64", "uint64", "float", "single", "double")
    ] == [1, 1, 2, 2, 4, 4, 2, 2, 4]
    assert compile_one({"datatype": "str16"}).words == 8
    assert compile_one({"datatype": "str15"}).words == 8
    assert compile_one({"datatype": "str20"}).words == 10


# ---------------------------------------------------------------------------------------------
# upstream driver files, decoded with the section 9 mock registers


def load_upstream_driver(name: str) -> dict:
    return json.loads((UPSTREAM_DRIVERS / f"{name}.json").read_text())


def ems_driver() -> dict:
    return json.loads((UPSTREAM_CONFIGS / "docker-test-config.json").read_text())["drivers"]["ems"]


MOCK_EMS = {
    122: 0xCC5A,
    123: 0x489E,
    124: 0xF330,
    125: 0x48AA,
    126: 0xE441,
    127: 0x489F,
    200: 0b0000000000000100,
    201: 0b1011001000000000,
    202: 0b1111001000000101,
}
MOCK_SMA = {
    30051: 0,
    30052: 8081,
    30053: 0,
    30054: 9197,
    30057: 18838,
    30058: 722,
    30529: 123,
    30530: 45678,
    30775: 0,
    30776: 12345,
}


def read_field(driver: dict, name: str, image: dict[int, int]):
    fld = drivers.compile_field(driver, name, f"drivers.x.fields.{name}", [])
    return codec.decode_registers([image[fld.register + i] for i in range(fld.words)], fld.spec)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("P_L1", 325218.8),  # the float32 325218.8125, written as the shortest decimal that reads back
        ("P_L2", 350105.5),
        ("P_L3", 327458.03),  # 327458.03125
        ("relay_status", 1),
        ("alert_state", 0b0011),  # register 201 (1011 0010 ...), upstream msb bits 2..5 = 1,1,0,0 read reversed: 3
    ],
)
def test_docker_ems_fields(name, expected):
    assert_same(read_field(ems_driver(), name, MOCK_EMS), expected)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("total_yield", float(123 * 65536 + 45678)),
        ("P_total", 12345.0),
    ],
)
def test_sma_stp25000_mock_values(name, expected):
    assert_same(read_field(load_upstream_driver("sma_stp25000"), name, MOCK_SMA), expected)


def test_sma_stp25000_sentinels_are_null():
    drv = load_upstream_driver("sma_stp25000")
    assert read_field(drv, "P_total", {30775: 0x8000, 30776: 0x0000}) is None
    assert read_field(drv, "total_yield", {30529: 0xFFFF, 30530: 0xFFFF}) is None


@pytest.mark.parametrize(
    "name, raw, expected",
    [
        ("temp_pv", 500, 25.0),
        ("temp_pv", 0, -25.0),
        ("temp_ext", 0, None),  # "0x0": null (upstream's key never matched; ours matches zero)
        ("temp_ext", 473, 22.3),
        ("irradiance", 8123, 812.3),
    ],
)
def test_ingburo_driver(name, raw, expected):
    drv = load_upstream_driver("ingburo_ss_rad")
    reg = {"temp_pv": 1, "temp_ext": 2, "irradiance": 0}[name]
    assert_same(read_field(drv, name, {reg: raw}), expected)  # exact: scaled in decimal


# ---------------------------------------------------------------------------------------------
# status info (reference 2.2) with the docker-test-config ems driver


def status_of(driver: dict, key: str, image: dict[int, int]):
    item = drivers.compile_status_item(driver, key, f"drivers.ems.status_info.{key}")
    return codec.decode_status([image[item.register + i] for i in range(item.words)], item.spec)


@pytest.mark.parametrize(
    "key, expected",
    [
        ("relay_fault", {"c": "Relay Fault Detected", "l": 3}),
        ("high_temp_warning", {"c": "High Temperature Warning", "l": 2}),
        # msb as upstream: bits 4..7 of 1011 0010 ... are 0010, read reversed: 0b0100 = 4 (upstream's test expects 4)
        ("alarm_state", {"c": "System Alarm", "l": 4}),
        ("unavailable", None),  # bits 12..15 of 0xF205 = 15, not in the common [[0,0],[1,3]] map: dropped
    ],
)
def test_docker_ems_status(key, expected):
    assert status_of(ems_driver(), key, MOCK_EMS) == expected


def test_docker_ems_status_items_emitted():
    drv = ems_driver()
    out = [s for k in drv["status_info"] if (s := status_of(drv, k, MOCK_EMS)) is not None]
    assert sorted(s["c"] for s in out) == ["High Temperature Warning", "Relay Fault Detected", "System Alarm"]


def test_status_msb_natural_reads_the_bits_in_order():
    drv = ems_driver()
    drv["status_info"]["alarm_state"]["bit_order"] = "msb_natural"
    assert status_of(drv, "alarm_state", MOCK_EMS) == {"c": "System Alarm", "l": 2}


def test_status_empty_level_map_level_is_value():
    drv = ems_driver()
    drv["status_info"]["unavailable"]["status_level_value_map"] = []
    assert status_of(drv, "unavailable", MOCK_EMS) == {"c": "Alarm not implemented", "l": 15}


def test_status_levels_follow_the_bits():
    drv = ems_driver()
    cleared = {**MOCK_EMS, 200: 0b1111111111111011, 202: 0}
    assert status_of(drv, "relay_fault", cleared) == {"c": "Relay Fault Detected", "l": 0}
    assert status_of(drv, "high_temp_warning", cleared) == {"c": "High Temperature Warning", "l": 0}
    assert status_of(drv, "alarm_state", {201: 0x0C00}) == {"c": "System Alarm", "l": 3}  # bits 4..7 = 0011 reversed
    assert status_of(drv, "alarm_state", {201: 0x0500}) is None  # 5 is not in the map


def test_status_without_bits_uses_the_register():
    drv = {"fields": {}, "status_info": {"s": {"content": "State", "register": 5}}}
    assert status_of(drv, "s", {5: 3}) == {"c": "State", "l": 3}
    drv["status_info"]["s"]["status_level_value_map"] = [[3, 1], [7, 4]]
    assert status_of(drv, "s", {5: 7}) == {"c": "State", "l": 4}
    assert status_of(drv, "s", {5: 3}) == {"c": "State", "l": 1}


def test_status_lsb_multi_bit():
    drv = {
        "fields": {},
        "status_info": {
            "s": {"content": "M", "register": 1, "start_bit": 8, "length_bits": 3, "status_level_value_map": [[5, 3]]}
        },
    }
    assert status_of(drv, "s", {1: 0b0000_0101_0000_0000}) == {"c": "M", "l": 3}
    assert status_of(drv, "s", {1: 0b0000_0100_0000_0000}) is None


# ---------------------------------------------------------------------------------------------
# 2. errors


@pytest.mark.parametrize(
    "raw, spec",
    [
        (b"\x00\x01\x02", codec.ValueSpec(datatype="int32")),
        (b"\x00\x01", codec.ValueSpec(datatype="int32")),
        (b"\x00\x01\x02\x03\x04\x05", codec.ValueSpec(datatype="int32")),
        (b"\x00\x01\x02\x03", codec.ValueSpec(datatype="double")),
        (b"\x00\x01\x02\x03", codec.ValueSpec(datatype="int16")),
        (b"\x00\x01\x02\x03\x04\x05", codec.ValueSpec()),  # 3 registers: no inferred type
        (b"\x00\x01\x02", codec.ValueSpec()),
        (b"", codec.ValueSpec()),
        (b"", codec.ValueSpec(datatype="uint16")),
        (b"\x00\x01\x02\x03", codec.ValueSpec(bits=codec.BitField(0))),
    ],
    ids=[
        "int32<-3",
        "int32<-2",
        "int32<-6",
        "double<-4",
        "int16<-4",
        "infer 6",
        "infer 3",
        "empty",
        "empty uint16",
        "bits<-4",
    ],
)
def test_decode_bytes_wrong_length(raw, spec):
    with pytest.raises(DecodeError):
        codec.decode_bytes(raw, spec)


@pytest.mark.parametrize(
    "opts, registers",
    [
        ({"datatype": "int32"}, [1]),
        ({"datatype": "int32"}, [1, 2, 3]),
        ({"datatype": "int32"}, []),
        ({"datatype": "double"}, [0x3FF0, 0]),
        ({"datatype": "float", "order": "lsr"}, [0x3F80]),
        ({"start_bit": 3}, [1, 2]),
    ],
)
def test_decode_registers_wrong_count(opts, registers):
    spec = compile_one(opts).spec
    with pytest.raises(DecodeError):
        codec.decode_registers(registers, spec)


def test_decode_error_is_a_value_error():
    assert issubclass(DecodeError, ValueError)


def test_status_bits_on_two_registers_is_a_decode_error():
    spec = codec.StatusSpec("x", codec.BitField(0))
    with pytest.raises(DecodeError):
        codec.decode_status([1, 2], spec)


@pytest.mark.parametrize(
    "opts, bad_key",
    [
        ({"start_bit": 0, "words": 2}, "words"),
        ({"start_bit": 12, "length_bits": 8}, "length_bits"),
        ({"start_bit": 16}, "start_bit"),
        ({"start_bit": 0, "length_bits": 0}, "length_bits"),
        ({"start_bit": 0, "bit_order": "big"}, "bit_order"),
    ],
)
def test_bit_field_rejected_at_compile_time(opts, bad_key):
    with pytest.raises(InvalidInput) as exc:
        compile_one(opts)
    if bad_key:
        assert exc.value.problem.path == f"drivers.t.fields.f.{bad_key}"


def test_bit_field_ignores_a_wider_datatype():
    """Upstream: with start_bit set the datatype is ignored; the field still reads one register."""
    fld = compile_one({"start_bit": 1, "datatype": "int32"})
    assert fld.words == 1
    assert_same(codec.decode_registers([0b10], fld.spec), 1)


def test_status_bits_on_two_registers_rejected_at_compile_time():
    drv = {"fields": {}, "status_info": {"s": {"content": "x", "register": 1, "words": 2, "start_bit": 0}}}
    with pytest.raises(InvalidInput):
        drivers.compile_status_item(drv, "s", "drivers.d.status_info.s")


@pytest.mark.parametrize(
    "opts, registers",
    [
        ({"datatype": "str", "words": 1, "typecast": "int"}, text_regs(b"ab", 1)),
        ({"datatype": "str", "words": 2, "typecast": "int"}, text_regs(b"1.5", 2)),
        ({"datatype": "str", "words": 2, "typecast": "float"}, text_regs(b"x1", 2)),
        ({"valuemap": {"0x0001": "on"}, "typecast": "int"}, [0x0001]),
        ({"valuemap": {"0x0001": "on"}, "typecast": "float"}, [0x0001]),
    ],
)
def test_typecast_of_non_numeric_text_is_a_decode_error(opts, registers):
    spec = compile_one(opts).spec
    with pytest.raises(DecodeError):
        codec.decode_registers(registers, spec)


def test_unknown_typecast_rejected_at_compile_time():
    with pytest.raises(InvalidInput):
        compile_one({"typecast": "long"})


@pytest.mark.parametrize(
    "order, expected",
    [
        (None, "ABCD"),
        ("msr", "ABCD"),
        ("MSR", "ABCD"),
        ("lsr", "CDAB"),
        (" lsr ", "CDAB"),
        ("abcd", "ABCD"),
        ("cdab", "CDAB"),
        ("BADC", "BADC"),
        ("dcba", "DCBA"),
    ],
)
def test_normalize_order(order, expected):
    assert codec.normalize_order(order) == expected


@pytest.mark.parametrize("order", ["xyz", "", "BACD", 1, ["msr"]])
def test_normalize_order_rejects(order):
    with pytest.raises(ValueError):
        codec.normalize_order(order)


def test_unknown_order_rejected_at_compile_time():
    with pytest.raises(InvalidInput) as exc:
        compile_one({"datatype": "int32", "order": "little"})
    assert exc.value.problem.path == "drivers.t.fields.f.order"


def test_is_text_and_text_length():
    assert codec.is_text("str16") and codec.is_text("str") and not codec.is_text("uint16") and not codec.is_text(None)
    assert codec.text_length("str16") == 16 and codec.text_length("str") is None
    with pytest.raises(ValueError):
        codec.text_length("int16")


def test_encode_missing_value_without_null_mapping():
    with pytest.raises(ValueError):
        codec.encode_registers(None, compile_one({"datatype": "int32"}).spec, 2)


def test_encode_missing_value_uses_null_mapping():
    fld = compile_one({"datatype": "int32", "valuemap": SMA_VM})
    regs = codec.encode_registers(None, fld.spec, 2)
    assert regs in ([0x8000, 0x0000], [0xFFFF, 0xFFFF])
    assert codec.decode_registers(regs, fld.spec) is None


def test_scale_direct():
    spec = codec.ValueSpec(multiplier=0.1, offset=-25, typecast="float")
    assert_same(codec.scale(500, spec), 25.0)
    assert codec.scale(math.nan, spec) is None
    assert codec.scale(None, spec) is None
    assert_same(codec.scale(5, codec.ValueSpec(multiplier=2, typecast="str")), "5")


# ---------------------------------------------------------------------------------------------
# 3. property tests

ORDER_NAMES = ["msr", "lsr", "ABCD", "CDAB", "BADC", "DCBA"]
CANON = {"msr": "ABCD", "lsr": "CDAB", "ABCD": "ABCD", "CDAB": "CDAB", "BADC": "BADC", "DCBA": "DCBA"}
INT_TYPES = {
    "int8": (8, True),
    "uint8": (8, False),
    "int16": (16, True),
    "uint16": (16, False),
    "int32": (32, True),
    "uint32": (32, False),
    "int64": (64, True),
    "uint64": (64, False),
}
FLOAT32_TYPES = ["float", "single", "float32"]
FLOAT64_TYPES = ["double", "float64"]


def test_property_type_lists_cover_codec():
    assert set(INT_TYPES) | set(FLOAT32_TYPES) | set(FLOAT64_TYPES) == set(codec.NUMERIC_TYPES)


def int_range(dt: str) -> tuple[int, int]:
    bits, signed = INT_TYPES[dt]
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def roundtrip(value, fld: drivers.ModbusField):
    regs = codec.encode_registers(value, fld.spec, fld.words)
    assert len(regs) == fld.words
    assert all(isinstance(r, int) and 0 <= r <= 0xFFFF for r in regs)
    return codec.decode_registers(regs, fld.spec)


@pytest.mark.parametrize("order", ORDER_NAMES)
@pytest.mark.parametrize("dt", list(INT_TYPES))
@PROPS
@given(data=st.data())
def test_int_roundtrip(dt, order, data):
    lo, hi = int_range(dt)
    value = data.draw(st.one_of(st.integers(lo, hi), st.sampled_from([lo, hi, 0])))
    assert_same(roundtrip(value, compile_one({"datatype": dt, "order": order})), value)


@pytest.mark.parametrize("order", ORDER_NAMES)
@pytest.mark.parametrize("dt", [d for d in INT_TYPES if INT_TYPES[d][0] >= 16])
@PROPS
@given(data=st.data())
def test_int_decode_matches_reference_layout(dt, order, data):
    """Random registers decode as the independently ordered bytes say."""
    bits, signed = INT_TYPES[dt]
    regs = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=bits // 16, max_size=bits // 16))
    expected = int.from_bytes(ref_bytes(regs, CANON[order]), "big", signed=signed)
    assert_same(decode(regs, {"datatype": dt, "order": order}), expected)


@pytest.mark.parametrize("order", ORDER_NAMES)
@pytest.mark.parametrize("dt", FLOAT32_TYPES + FLOAT64_TYPES)
@PROPS
@given(data=st.data())
def test_float_decode_matches_reference_layout(dt, order, data):
    size = 4 if dt in FLOAT32_TYPES else 8
    regs = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=size // 2, max_size=size // 2))
    raw = ref_bytes(regs, CANON[order])
    expected = struct.unpack(">f" if size == 4 else ">d", raw)[0]
    got = decode(regs, {"datatype": dt, "order": order})
    if not math.isfinite(expected):
        assert got is None
    elif size == 4:  # the shortest decimal of that float32: a double that narrows back to its bytes
        assert type(got) is float and struct.pack(">f", got) == raw
    else:
        assert_same(got, expected)


@pytest.mark.parametrize("order", ORDER_NAMES)
@pytest.mark.parametrize("dt", FLOAT32_TYPES)
@PROPS
@given(value=st.floats(-3.4e38, 3.4e38, allow_nan=False))
def test_float32_roundtrip(dt, order, value):
    expected = struct.pack(">f", value)  # float32 rounding
    got = roundtrip(value, compile_one({"datatype": dt, "order": order}))
    assert type(got) is float and struct.pack(">f", got) == expected


@pytest.mark.parametrize("order", ORDER_NAMES)
@pytest.mark.parametrize("dt", FLOAT32_TYPES)
@PROPS
@given(value=st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_float32_exact_values_roundtrip_exactly(dt, order, value):
    """A float32 comes back as the same float32 (written as its shortest decimal)."""
    got = roundtrip(value, compile_one({"datatype": dt, "order": order}))
    assert type(got) is float and struct.pack(">f", got) == struct.pack(">f", value)
    assert got == codec.shortest_float32(value)


@pytest.mark.parametrize("order", ORDER_NAMES)
@pytest.mark.parametrize("dt", FLOAT64_TYPES)
@PROPS
@given(value=st.floats(allow_nan=False, allow_infinity=False))
def test_double_roundtrip_exact(dt, order, value):
    assert_same(roundtrip(value, compile_one({"datatype": dt, "order": order})), value)


@pytest.mark.parametrize("order", ORDER_NAMES)
@pytest.mark.parametrize("dt", FLOAT32_TYPES + FLOAT64_TYPES)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, None])
def test_float_missing_values_roundtrip_to_none(dt, order, value):
    assert roundtrip(value, compile_one({"datatype": dt, "order": order})) is None


@PROPS
@given(words=st.sampled_from([1, 2, 4]), order=st.sampled_from(ORDER_NAMES), data=st.data())
def test_inferred_type_roundtrip(words, order, data):
    fld = compile_one({"words": words, "order": order})
    if words == 4:
        value = data.draw(st.floats(allow_nan=False, allow_infinity=False))
    else:
        value = data.draw(st.integers(0, (1 << (16 * words)) - 1))
    assert_same(roundtrip(value, fld), value)


SCALED = [
    # (datatype, multiplier, offset, lowest raw, highest raw)
    ("int32", 0.01, None, -(2**31), 2**31 - 1),
    ("int32", 0.001, 0, -(2**31), 2**31 - 1),
    ("uint16", 0.1, -40, 0, 65535),
    ("int16", 0.5, 100, -32768, 32767),
    ("uint32", 10, 5, 0, 2**32 - 1),
    ("uint16", 2, None, 0, 65535),
    ("int64", 0.001, -1000, -(2**53), 2**53),
]


@pytest.mark.parametrize("order", ["msr", "lsr", "BADC", "DCBA"])
@pytest.mark.parametrize("dt, mult, off, rlo, rhi", SCALED)
@PROPS
@given(data=st.data())
def test_scaled_int_roundtrip_within_half_a_step(dt, mult, off, rlo, rhi, order, data):
    opts = {"datatype": dt, "order": order, "multiplier": mult}
    if off is not None:
        opts["offset"] = off
    fld = compile_one(opts)
    o = off or 0
    lo, hi = (rlo + 1) * mult + o, (rhi - 1) * mult + o  # keep away from the clamping edge
    value = data.draw(st.floats(lo, hi, allow_nan=False))
    got = roundtrip(value, fld)
    assert isinstance(got, (int, float)) and not isinstance(got, bool)
    assert abs(got - value) <= mult / 2 + 1e-9 * max(1.0, abs(value))


@pytest.mark.parametrize("order", ORDER_NAMES)
@PROPS
@given(value=st.floats(-1e30, 1e30, allow_nan=False))
def test_scaled_float_roundtrip(order, value):
    fld = compile_one({"datatype": "float", "order": order, "multiplier": 0.001, "offset": 7})
    got = roundtrip(value, fld)
    assert got == pytest.approx(value, rel=1e-6, abs=1e-3)


PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
TEXT_FIELDS = [
    ({"datatype": "str16"}, 16),
    ({"datatype": "str15"}, 15),
    ({"datatype": "str20"}, 20),
    ({"datatype": "str", "words": 3}, 6),
    ({"datatype": "str", "words": 1}, 2),
]


@pytest.mark.parametrize("order", ["msr", "lsr", "BADC", "DCBA"])
@pytest.mark.parametrize("opts, width", TEXT_FIELDS, ids=[f"{o['datatype']}w{w}" for o, w in TEXT_FIELDS])
@PROPS
@given(data=st.data())
def test_text_roundtrip(opts, width, order, data):
    text = data.draw(st.text(PRINTABLE, max_size=width))
    fld = compile_one({**opts, "order": order})
    assert_same(roundtrip(text, fld), text.rstrip(" "))


@pytest.mark.parametrize("opts, width", TEXT_FIELDS[:2], ids=["str16", "str15"])
@PROPS
@given(data=st.data())
def test_text_layout_matches_reference(opts, width, data):
    """ABCD text is the characters in register order; BADC swaps the two inside each register."""
    text = data.draw(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=width))
    fld = compile_one(opts)
    assert codec.decode_registers(text_regs(text.encode(), fld.words), fld.spec) == text
    fld = compile_one({**opts, "order": "BADC"})
    assert codec.decode_registers(text_regs_badc(text.encode(), fld.words), fld.spec) == text


bit_layouts = st.integers(0, 15).flatmap(lambda s: st.tuples(st.just(s), st.integers(1, 16 - s)))


@PROPS
@given(layout=bit_layouts, order=st.sampled_from(["lsb", "msb_natural", "msb"]), word=st.integers(0, 0xFFFF))
def test_bit_field_decode_matches_reference(layout, order, word):
    start, length = layout
    got = decode([word], {"start_bit": start, "length_bits": length, "bit_order": order})
    assert_same(got, ref_bits(word, start, length, order))


@PROPS
@given(
    layout=bit_layouts,
    order=st.sampled_from(["lsb", "msb_natural", "msb"]),
    current=st.integers(0, 0xFFFF),
    data=st.data(),
)
def test_bit_field_roundtrip_preserves_other_bits(layout, order, current, data):
    start, length = layout
    value = data.draw(st.integers(0, (1 << length) - 1))
    fld = compile_one({"start_bit": start, "length_bits": length, "bit_order": order})
    [word] = codec.encode_registers(value, fld.spec, 1, [current])
    assert 0 <= word <= 0xFFFF
    assert_same(codec.decode_registers([word], fld.spec), value)
    assert ref_bits(word, start, length, order) == value
    # the field's positions, as LSB indexes: lsb counts from the LSB, both msb orders from the MSB
    positions = range(start, start + length) if order == "lsb" else [15 - i for i in range(start, start + length)]
    mask = sum(1 << p for p in positions)
    assert (word ^ current) & ~mask & 0xFFFF == 0


@PROPS
@given(layout=bit_layouts, word=st.integers(0, 0xFFFF))
def test_upstream_msb_is_msb_natural_with_the_field_bits_reversed(layout, word):
    start, length = layout
    msb = decode([word], {"start_bit": start, "length_bits": length, "bit_order": "msb_natural"})
    rev = decode([word], {"start_bit": start, "length_bits": length, "bit_order": "msb"})
    assert rev == int(f"{msb:0{length}b}"[::-1], 2)


@PROPS
@given(layout=bit_layouts, current=st.integers(0, 0xFFFF), data=st.data())
def test_scaled_bit_field_roundtrip(layout, current, data):
    start, length = layout
    raw = data.draw(st.integers(0, (1 << length) - 1))
    value = raw * 0.5 + 1  # exact in binary
    fld = compile_one({"start_bit": start, "length_bits": length, "multiplier": 0.5, "offset": 1})
    [word] = codec.encode_registers(value, fld.spec, 1, [current])
    assert_same(codec.decode_registers([word], fld.spec), value)


@PROPS
@given(order=st.sampled_from(codec.ORDERS), regs=st.lists(st.integers(0, 0xFFFF), max_size=8))
def test_registers_to_bytes_matches_reference_and_inverts(order, regs):
    raw = codec.registers_to_bytes(regs, order)
    assert raw == ref_bytes(regs, order)
    assert codec.bytes_to_registers(raw, order) == regs


@PROPS
@given(order=st.sampled_from(codec.ORDERS), n=st.integers(0, 8), data=st.data())
def test_bytes_to_registers_inverts(order, n, data):
    raw = data.draw(st.binary(min_size=2 * n, max_size=2 * n))
    regs = codec.bytes_to_registers(raw, order)
    assert len(regs) == n and all(0 <= r <= 0xFFFF for r in regs)
    assert codec.registers_to_bytes(regs, order) == raw


@PROPS
@given(regs=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=8))
def test_order_aliases_agree(regs):
    for alias, canon in (("msr", "ABCD"), ("lsr", "CDAB")):
        assert codec.registers_to_bytes(regs, codec.normalize_order(alias)) == codec.registers_to_bytes(regs, canon)


@PROPS
@given(dt=st.sampled_from(["int32", "uint32"]), data=st.data())
def test_valuemap_hit_wins_over_decoding(dt, data):
    regs = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=2))
    key = "0x" + f"{regs[0]:04x}{regs[1]:04x}"
    key = data.draw(st.sampled_from([key, key.upper().replace("0X", "0x"), key.upper()]))
    mapped = data.draw(st.one_of(st.none(), st.integers(-1000, 1000)))
    got = decode(regs, {"datatype": dt, "valuemap": {key: mapped}})
    assert_same(got, mapped)


def test_the_web_ui_register_inspector_shows_the_shortest_float32():
    from ammp_edge.webui import probe

    rows = {r["order"]: r for r in probe.decode_orders([0x4365, 0xCA3D])}
    assert rows["ABCD"]["float"] == 229.79 and repr(rows["ABCD"]["float"]) == "229.79"
    assert rows["ABCD"]["uint32"] == 0x4365CA3D
