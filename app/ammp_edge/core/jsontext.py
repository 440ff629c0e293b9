"""JSON from outside: the one parser for configs and drivers, with one size and one depth limit.

Every door a config or driver comes through (web UI, d/config, the AMMP API, the provisioning file,
`up --config`, `validate`, `read`, the KV store key `config` as every program loads it, driver files)
parses it here, so a config one door accepts loads in every process.

The limits (README "Configuration" says why these values):
  MAX_BYTES   4 MiB: the biggest realistic config (scripts/bench_config.py builds it: 250 inverters and
              20 meters with every field read, every built-in driver embedded, pretty printed) is
              1.5 MB; a bus process loading a config at the limit peaks about 30 MB above an empty one.
  MAX_DEPTH   64 levels of arrays and objects: that config nests 8 deep (a driver embedded in a
              config), an upstream config 7.

Python's json decoder recurses once per level, and the recursion limit differs between processes
(JSONata raises it to 10,000 in the processes that load it, the buses keep the default 1000; 100,000
levels overflow the C stack even then). So the depth is measured first by an iterative scan of the
text (a regular expression over strings and brackets, no recursion), and json.loads sees only text
within the limit. Over a limit the text is refused with a Problem naming the limit.

Also the exact text of a JSON object's members (`members`, `member_text`, `without_member`): configs
are stored as the bytes received, with only a top-level `config_id` cut out, so nothing is
re-serialised.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

from .problems import ConfigUnusable, Problem

MAX_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 64

# a JSON string, unrolled and possessive: linear time on any input, no backtracking
_STRING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]++")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_SCAN = re.compile(_STRING.pattern + r"|([\[{])|[\]}]", re.S)
_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
_BOM = "\ufeff"


class OverLimit(ConfigUnusable):
    """Text over the size or the depth limit (refused before any JSON is decoded)."""


def _refuse(what: str, message: str, over: bool = False) -> ConfigUnusable:
    return (OverLimit if over else ConfigUnusable)([Problem("$", f"{what} {message}")])


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in `text`, brackets inside strings not counted;
    iterative: the strings and everything but brackets are cut out, then the brackets are summed."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _first_over(text: str, limit: int) -> int:
    """The offset of the first bracket that opens level limit + 1 (the text is known to have one)."""
    depth = 0
    for m in _SCAN.finditer(text):
        if m.group(1) is not None:
            depth += 1
            if depth > limit:
                return m.start()
        elif text[m.start()] != '"':
            depth -= 1
    return 0


def _position(text: str, offset: int) -> str:
    line_start = text.rfind("\n", 0, offset) + 1
    return f"line {text.count(chr(10), 0, offset) + 1}, column {offset - line_start + 1}"


def decode(data: bytes | str, what: str = "config", max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> str:
    """The text of `data` checked against the limits: UTF-8 (a leading byte order mark dropped), at
    most max_bytes bytes, arrays and objects nested at most max_depth deep. ConfigUnusable otherwise."""
    size = len(data.encode("utf-8", "surrogatepass")) if isinstance(data, str) else len(data)
    if size > max_bytes:
        raise _refuse(what, f"is {size:,} bytes; the limit is {max_bytes:,} bytes ({max_bytes / 1048576:g} MiB)", True)
    if isinstance(data, str):
        text = data
    else:
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _refuse(what, f"is not UTF-8 text ({exc})") from None
    if text.startswith(_BOM):
        text = text[1:]
    if nesting_depth(text) > max_depth:
        where = _position(text, _first_over(text, max_depth))
        raise _refuse(
            what,
            f"nests arrays and objects more than {max_depth} levels deep (at {where}); the limit is {max_depth} levels",
            True,
        )
    return text


def parse(data: bytes | str, what: str = "config", max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value of `data` within the limits; ConfigUnusable naming the problem otherwise."""
    return parse_text(data, what, max_bytes, max_depth)[0]


def parse_text(
    data: bytes | str, what: str = "config", max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH
) -> tuple[Any, str]:
    """(value, text): as `parse`, with the checked text (for cutting members out of it)."""
    text = decode(data, what, max_bytes, max_depth)
    try:
        return json.loads(text), text
    except ValueError as exc:
        raise _refuse(what, f"is not valid JSON: {exc}") from None


# ---------------------------------------------------------------------------------------------
# the exact text of a JSON object's members


def _skip_ws(text: str, i: int) -> int:
    m = _WS.match(text, i)  # always matches (possibly nothing)
    return m.end() if m else i


def members(text: str) -> list[tuple[str, int, int, int]]:
    """(key, key start, value start, value end) of each member of the JSON object `text`, in order.
    `text` must be valid JSON within the limits (check with `parse` first)."""
    i = _skip_ws(text, 0)
    if text[i : i + 1] != "{":
        raise ValueError("not a JSON object")
    i = _skip_ws(text, i + 1)
    out: list[tuple[str, int, int, int]] = []
    if text[i : i + 1] == "}":
        return out
    while True:
        key_start = i
        key, i = _DECODER.raw_decode(text, i)
        i = _skip_ws(text, i)
        if not isinstance(key, str) or text[i : i + 1] != ":":
            raise ValueError(f"malformed object member at {key_start}")
        value_start = _skip_ws(text, i + 1)
        _, i = _DECODER.raw_decode(text, value_start)
        out.append((key, key_start, value_start, i))
        i = _skip_ws(text, i)
        if text[i : i + 1] == ",":
            i = _skip_ws(text, i + 1)
        elif text[i : i + 1] == "}":
            return out
        else:
            raise ValueError(f"malformed object at {i}")


def member_text(text: str, key: str) -> str | None:
    """The exact text of the value of `key` (the last one, as json.loads takes), or None."""
    found = [m for m in members(text) if m[0] == key]
    return text[found[-1][2] : found[-1][3]] if found else None


def without_member(text: str, key: str) -> str:
    """`text` with every `key` member cut out (with its comma); everything else byte for byte."""
    while True:
        ms = members(text)
        idx = next((n for n, m in enumerate(ms) if m[0] == key), None)
        if idx is None:
            return text
        if idx + 1 < len(ms):
            start, end = ms[idx][1], ms[idx + 1][1]
        elif idx > 0:
            start, end = ms[idx - 1][3], ms[idx][3]
        else:
            start, end = ms[idx][1], ms[idx][3]
        text = text[:start] + text[end:]
