"""codec.decode_parsed, table-driven: the bytes a byte-stream reader cut out of an answer -> the value
(upstream's parse_as, then the one pipeline), or the error that stands instead of a wrong value."""

from __future__ import annotations

import pytest

from ammp_edge.core import codec

S = codec.ValueSpec
VM = codec.ValueMap

CASES = [
    # raw, parse_as, spec, value
    (b"230.1", "str", S(typecast="float"), 230.1),
    (b"0459", "str", S(typecast="float"), 459.0),
    (b"0459", "str", S(typecast="int"), 459),
    (b" 12 ", "str", S(typecast="int"), 12),
    (b"1", "str", S(typecast="int"), 1),
    (b"B", "str", S(typecast="str"), "B"),
    (b"B", "str", S(), "B"),
    (b"2301", "str", S(typecast="float", multiplier=0.1), 230.1),
    (b"-5", "str", S(typecast="int", multiplier=2, offset=1), -9),
    (b"1.5e3", "str", S(typecast="float"), 1500.0),
    (b"off", "str", S(valuemap=VM({"off": 0}), typecast="int"), 0),
    (b"0CE5", "hex", S(datatype="uint16", multiplier=0.001), 3.301),
    (b"0ce5", "hex", S(datatype="uint16"), 3301),
    (b"FFF6", "hex", S(datatype="int16", multiplier=0.1), -1.0),
    (b"0BA5", "hex", S(datatype="uint16", multiplier=0.1, offset=-273.1), 25.0),
    (b"FFFF", "hex", S(datatype="uint16", valuemap=VM({"0xffff": None})), None),
    (b"0CE5", "hex", S(), 3301),  # 2 bytes: uint16 inferred
    (bytes.fromhex("43668000"), "bytes", S(datatype="float"), 230.5),
    (bytes.fromhex("0001"), "bytes", S(), 1),
]

ERRORS = [
    (b"", "str", S(typecast="float"), "no data"),
    (b"01x34", "str", S(typecast="float"), "'01x34' is not a number"),
    (b"nan", "str", S(typecast="float"), "'nan' is not a number"),
    (b"inf", "str", S(typecast="float"), "'inf' is not a number"),
    (b"1_000", "str", S(typecast="int"), "'1_000' is not an integer"),
    (b"12.5", "str", S(typecast="int"), "'12.5' is not an integer"),
    (b"0x1f", "str", S(typecast="int"), "'0x1f' is not an integer"),
    (b"01\xff34", "str", S(typecast="float"), "is not UTF-8 text (byte 2: 0xff)"),
    (b"0CG5", "hex", S(datatype="uint16"), "'0CG5' is not an even number of hex digits"),
    (b"0CE", "hex", S(), "'0CE' is not an even number of hex digits"),
    (b"0C E5", "hex", S(), "'0C E5' is not an even number of hex digits"),
    (b"\xc3\xa90E", "hex", S(), "is not ASCII hex digits"),
    (b"0CE5", "hex", S(datatype="uint32"), "uint32 needs 4 bytes, got 2"),
    (b"\x00\x01\x02", "bytes", S(), "cannot infer a datatype for 3 bytes"),
    (b"1", "text", S(), "parse_as 'text' is not one of bytes, str, hex"),
]


@pytest.mark.parametrize("raw,parse_as,spec,value", CASES)
def test_decodes(raw, parse_as, spec, value):
    got = codec.decode_parsed(raw, spec, parse_as)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("raw,parse_as,spec,error", ERRORS)
def test_refuses(raw, parse_as, spec, error):
    with pytest.raises(codec.DecodeError, match=None) as exc:
        codec.decode_parsed(raw, spec, parse_as)
    assert error in str(exc.value)
