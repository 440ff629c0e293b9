"""Driver fields of the byte-stream readers `rawserial` and `rawtcp` (reference 8.2, 8.3), compiled.

Everything a field says is checked when the driver loads, so a bad field is a problem with its JSON
path and never a wrong request on the line:

rawserial  `query` (`0x...` hex bytes, else literal UTF-8 text), `pos` (0-based) and `length` of the
           value in the response, `parse_as` (bytes, str, hex), optional `resp_template` (a regular
           expression the response must match from its start; `.` matches every byte, CRC bytes
           included), `resp_termination` (the bytes that end a response; without it a response ends
           when the line has been quiet for `resp_quiet` seconds after its last byte, default 0.1 s).
rawtcp     `schema.request.sequence` of `input` (a value of the field: register, words, fncode, ...),
           `device_arg` (an address key: unit_id, ...), `const` and `crc` (Modbus CRC-16, low byte
           first) components; `schema.response`: `check_crc16`, `pos` (1-based) and `length`, each
           `{type: const, value}` or `{type: from_input, input_field, multiplier?, offset?}`.

Upstream sent a request with a component left out when an input was missing or not an integer (a
wrong request; its answer decoded as if right); here that is an error of the field.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from . import codec
from .problems import InvalidInput, Problem, join_path

MAX_RESPONSE = 4096  # bytes: a longer answer is an error (a device streaming, or the wrong protocol)
DEFAULT_QUIET = 0.1  # seconds of silence after the last byte that end a response without a terminator
MIN_QUIET, MAX_QUIET = 0.005, 2.0
DEFAULT_RECV_BUFFER = 1024  # rawtcp: upstream's recv_buffer_size, the largest answer accepted


@dataclass(frozen=True, slots=True)
class RawSerialField:
    name: str
    query: bytes
    pos: int  # 0-based
    length: int
    parse_as: str
    spec: codec.ValueSpec
    template: re.Pattern[bytes] | None = None
    termination: bytes | None = None
    quiet: float = DEFAULT_QUIET
    unit: str | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceArg:
    """A request component taken from the device's address (rendered when the device is set up)."""

    key: str
    num_bytes: int
    byteorder: str
    default: int | None


CRC16 = "crc16"  # the request component: Modbus CRC-16 over the bytes before it
Component = bytes | DeviceArg | str


@dataclass(frozen=True, slots=True)
class RawTcpField:
    name: str
    sequence: tuple[Component, ...]
    check_crc: bool
    pos: int  # 1-based, as upstream
    length: int
    parse_as: str
    spec: codec.ValueSpec
    unit: str | None = None
    description: str | None = None


def text_bytes(value: Any, path: str, warnings: list[Problem] | None = None) -> bytes:
    """Upstream's get_bytes: '0x' and hex digits are those bytes, anything else its UTF-8 text (a '0x'
    string that is not hex is taken literally, with a warning, as upstream)."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(path, f"{value!r} is not a non-empty string ('0x' hex bytes or text)")
    if value.startswith("0x"):
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            if warnings is not None:
                warnings.append(Problem(path, f"{value!r} starts with 0x but is not hex; sent as text", "warning"))
    return value.encode("utf-8")


def _whole(value: Any, path: str, lo: int, hi: int) -> int:
    if value is None:
        raise InvalidInput(path, "missing")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(path, f"{value!r} is not an integer")
    if not lo <= value <= hi:
        raise InvalidInput(path, f"{value} is outside {lo}..{hi}")
    return value


def _parse_as(opts: dict, path: str) -> str:
    parse_as = opts.get("parse_as", "bytes")
    if parse_as not in codec.RAW_PARSE_AS:
        raise InvalidInput(join_path(path, "parse_as"), f"{parse_as!r} is not one of {', '.join(codec.RAW_PARSE_AS)}")
    return parse_as


def _check_value(opts: dict, path: str, parse_as: str, length: int | None, spec: codec.ValueSpec) -> None:
    """The value's bytes must fit its datatype (known length) and text needs a numeric typecast to scale."""
    if parse_as == "str":
        if (spec.multiplier is not None or spec.offset is not None) and spec.typecast not in ("int", "float"):
            raise InvalidInput(
                join_path(path, "typecast"), "parse_as str with multiplier or offset needs typecast int or float"
            )
        return
    if length is None:
        return
    if parse_as == "hex":
        if length % 2:
            raise InvalidInput(join_path(path, "length"), f"{length} hex digits do not make whole bytes")
        length //= 2
    if spec.datatype is None or codec.is_text(spec.datatype):
        if spec.datatype is None and length not in codec.INFERRED_TYPES:
            raise InvalidInput(
                join_path(path, "datatype"), f"missing, and {length} bytes do not imply one (1, 2, 4 or 8 do)"
            )
        return
    size = codec.NUMERIC_TYPES[spec.datatype][1]
    if size != length:
        raise InvalidInput(join_path(path, "length"), f"{length} bytes do not hold a {spec.datatype} ({size} needed)")


def compile_rawserial_field(
    name: str, opts: dict, path: str, spec: codec.ValueSpec, warnings: list[Problem]
) -> RawSerialField:
    query = text_bytes(opts.get("query"), join_path(path, "query"), warnings)
    pos = _whole(opts.get("pos"), join_path(path, "pos"), 0, MAX_RESPONSE - 1)
    length = _whole(opts.get("length"), join_path(path, "length"), 1, MAX_RESPONSE - pos)
    parse_as = _parse_as(opts, path)
    _check_value(opts, path, parse_as, length, spec)
    template = None
    if opts.get("resp_template") is not None:
        text = opts["resp_template"]
        if not isinstance(text, str):
            raise InvalidInput(join_path(path, "resp_template"), "must be a regular expression (a string)")
        try:  # DOTALL: upstream's '.' did not match a CRC byte 0x0a, and dropped a good answer
            template = re.compile(text.encode("utf-8"), re.DOTALL)
        except re.error as exc:
            raise InvalidInput(join_path(path, "resp_template"), f"not a regular expression: {exc}") from None
    termination = None
    if opts.get("resp_termination") is not None:
        termination = text_bytes(opts["resp_termination"], join_path(path, "resp_termination"), warnings)
    quiet = opts.get("resp_quiet", DEFAULT_QUIET)
    if isinstance(quiet, bool) or not isinstance(quiet, (int, float)) or not math.isfinite(quiet):
        raise InvalidInput(join_path(path, "resp_quiet"), f"{quiet!r} is not a number of seconds")
    if not MIN_QUIET <= quiet <= MAX_QUIET:
        raise InvalidInput(join_path(path, "resp_quiet"), f"{quiet} s is outside {MIN_QUIET}..{MAX_QUIET} s")
    return RawSerialField(
        name,
        query,
        pos,
        length,
        parse_as,
        spec,
        template,
        termination,
        float(quiet),
        opts.get("unit"),
        opts.get("description"),
    )


def _byteorder(c: dict, path: str) -> str:
    order = c.get("byte_order", "msb")
    if order in ("msb", "big"):
        return "big"
    if order in ("lsb", "little"):
        return "little"
    raise InvalidInput(join_path(path, "byte_order"), f"{order!r} is not msb (big) or lsb (little)")


def _uint(value: Any, num_bytes: int, path: str, what: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(path, f"{what} {value!r} is not an integer")
    if not 0 <= value < 1 << (8 * num_bytes):
        raise InvalidInput(path, f"{what} {value} does not fit in {num_bytes} unsigned byte(s)")
    return value


def _sequence(request: Any, opts: dict, path: str, warnings: list[Problem]) -> tuple[Component, ...]:
    if not isinstance(request, dict) or not isinstance(request.get("sequence"), list) or not request["sequence"]:
        raise InvalidInput(join_path(path, "sequence"), "must be a non-empty list of request components")
    out: list[Component] = []
    for i, c in enumerate(request["sequence"]):
        cpath = join_path(path, "sequence", i)
        if not isinstance(c, dict):
            raise InvalidInput(cpath, "a request component must be an object")
        kind = c.get("type")
        if kind in ("input", "device_arg"):
            if c.get("input_datatype", "uint") != "uint":
                raise InvalidInput(join_path(cpath, "input_datatype"), f"{c.get('input_datatype')!r} is not uint")
            num = _whole(c.get("num_bytes"), join_path(cpath, "num_bytes"), 1, 8)
            order = _byteorder(c, cpath)
            key = c.get("input_field")
            if not isinstance(key, str) or not key:
                raise InvalidInput(join_path(cpath, "input_field"), "missing")
            default = c.get("default_value")
            if default is not None:
                default = _uint(default, num, join_path(cpath, "default_value"), "default_value")
            if kind == "device_arg":
                out.append(DeviceArg(key, num, order, default))
                continue
            value = opts.get(key, default)
            if value is None:
                raise InvalidInput(cpath, f"input {key!r} is not set by the field (and has no default_value)")
            out.append(_uint(value, num, cpath, f"input {key}").to_bytes(num, order))  # type: ignore[arg-type]
        elif kind == "const":
            out.append(text_bytes(c.get("value"), join_path(cpath, "value"), warnings))
        elif kind == "crc":
            if c.get("num_bytes", 2) != 2:
                raise InvalidInput(join_path(cpath, "num_bytes"), "only a 2-byte CRC (Modbus CRC-16) is known")
            out.append(CRC16)  # always low byte first, as upstream (its byte_order is not used)
        else:
            raise InvalidInput(join_path(cpath, "type"), f"{kind!r} is not input, device_arg, const or crc")
    return tuple(out)


def _response_number(spec: Any, opts: dict, path: str, lo: int) -> int:
    if not isinstance(spec, dict):
        raise InvalidInput(path, "must be {type: const, value} or {type: from_input, input_field}")
    if spec.get("type") == "const":
        return _whole(spec.get("value"), join_path(path, "value"), lo, MAX_RESPONSE)
    if spec.get("type") == "from_input":
        key = spec.get("input_field")
        value = opts.get(key) if isinstance(key, str) else None
        if value is None:
            raise InvalidInput(join_path(path, "input_field"), f"input {key!r} is not set by the field")
        number = _whole(value, join_path(path, "input_field"), 0, MAX_RESPONSE)
        mult, offset = spec.get("multiplier", 1), spec.get("offset", 0)
        for k, v in (("multiplier", mult), ("offset", offset)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise InvalidInput(join_path(path, k), f"{v!r} is not a number")
        return _whole(number * mult + offset, path, lo, MAX_RESPONSE)
    raise InvalidInput(join_path(path, "type"), f"{spec.get('type')!r} is not const or from_input")


def compile_rawtcp_field(
    name: str, opts: dict, path: str, spec: codec.ValueSpec, warnings: list[Problem]
) -> RawTcpField:
    schema = opts.get("schema")
    spath = join_path(path, "schema")
    if not isinstance(schema, dict):
        raise InvalidInput(spath, "must be an object with request and response")
    sequence = _sequence(schema.get("request"), opts, join_path(spath, "request"), warnings)
    response = schema.get("response")
    rpath = join_path(spath, "response")
    if not isinstance(response, dict):
        raise InvalidInput(rpath, "must be an object with pos and length")
    check_crc = response.get("check_crc16", False)
    if not isinstance(check_crc, bool):
        raise InvalidInput(join_path(rpath, "check_crc16"), "must be true or false")
    pos = _response_number(response.get("pos"), opts, join_path(rpath, "pos"), 1)
    length = _response_number(response.get("length"), opts, join_path(rpath, "length"), 1)
    parse_as = _parse_as(opts, path)
    _check_value(opts, path, parse_as, length, spec)
    return RawTcpField(
        name, sequence, check_crc, pos, length, parse_as, spec, opts.get("unit"), opts.get("description")
    )
