"""The one parser (core/jsontext.py): its depth scan agrees with the JSON it measures, the size and depth
limits hold at the limit and refuse one over it, and the refusal works in any process whatever its
recursion limit (the buses keep the default, JSONata raises it, 100,000 levels overflowed the C stack)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from ammp_edge.core import config as cfg, drivers, jsontext
from ammp_edge.core.problems import ConfigUnusable


def depth_of(value) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


def nested(depth: int) -> str:
    """A usable config (depth 2 of its own) with an unused member nesting `depth` levels in all."""
    return '{"devices": {}, "readings": {}, "notes": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


@pytest.mark.parametrize(
    "text, depth",
    [
        ("1", 0),
        ("[]", 1),
        ('{"a": {"b": [1, {"c": []}]}}', 5),
        ('{"a": "[[[[{{{{"}', 1),  # brackets in strings do not count
        (r'{"a": "\"[[[", "b": "\\", "c": [[]]}', 3),  # escaped quotes and backslashes
        (r'["\u005b\u005b", "]]]]", [[[]]]]', 4),
        ('{"a": "x}}}}"}', 1),
        ("  [ [ ] ,\n [ [ ] ] ]  ", 3),
    ],
)
def test_the_depth_scan_counts_brackets_outside_strings_only(text, depth):
    assert jsontext.nesting_depth(text) == depth == depth_of(json.loads(text))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ ab\n\u00e9'),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(alphabet='[]{}"\\ab'), inner, max_size=4),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(json_values, st.booleans())
def test_the_depth_scan_agrees_with_json_on_any_value(value, pretty):
    text = json.dumps(value, indent=2 if pretty else None, ensure_ascii=bool(pretty))
    assert jsontext.nesting_depth(text) == depth_of(value)


def test_at_the_depth_limit_accepted_one_over_refused_naming_the_limit():
    assert depth_of(jsontext.parse(nested(jsontext.MAX_DEPTH))) == jsontext.MAX_DEPTH
    with pytest.raises(jsontext.OverLimit) as exc:
        jsontext.parse(nested(jsontext.MAX_DEPTH + 1))
    assert str(exc.value) == (
        "$: config nests arrays and objects more than 64 levels deep (at line 1, column 105); the limit is 64 levels"
    )


def test_at_the_size_limit_accepted_one_byte_over_refused_naming_the_limit():
    base = b'{"devices": {}, "readings": {}}'
    at = base[:-1] + b" " * (jsontext.MAX_BYTES - len(base)) + b"}"
    assert len(at) == jsontext.MAX_BYTES and jsontext.parse(at) == {"devices": {}, "readings": {}}
    with pytest.raises(jsontext.OverLimit, match=r"config is 4,194,305 bytes; the limit is 4,194,304 bytes \(4 MiB\)"):
        jsontext.parse(at + b" ")


@pytest.mark.parametrize(
    "raw, says",
    [
        (b"\xff{}", "is not UTF-8 text"),
        (b'{"a": 1,}', "is not valid JSON"),
        (b"{" * 10, "is not valid JSON"),
        (b'{"n": ' + b"1" * 5000 + b"}", "is not valid JSON"),  # Python's int digit limit, a ValueError
    ],
)
def test_other_bad_text_is_refused_with_the_reason(raw, says):
    with pytest.raises(ConfigUnusable, match=says) as exc:
        jsontext.parse(raw)
    assert not isinstance(exc.value, jsontext.OverLimit)


def test_a_byte_order_mark_is_dropped():
    assert jsontext.parse(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}
    assert jsontext.parse_text('\ufeff{"a": 1}')[1] == '{"a": 1}'


REFUSE_DEEP = """
import sys
limit = int(sys.argv[1])
if sys.argv[2] == "jsonata":
    import jsonata  # raises the recursion limit to 10,000 as it does in the publisher and the web UI
elif limit:
    sys.setrecursionlimit(limit)
from ammp_edge.core import jsontext
from ammp_edge.core.problems import ConfigUnusable
for depth in (1000, 5000, 100_000, 1_000_000):
    try:
        jsontext.parse("[" * depth + "]" * depth)
    except jsontext.OverLimit as exc:
        assert "more than 64 levels" in str(exc), exc
    else:
        raise SystemExit(f"{depth} levels accepted")
print("refused", sys.getrecursionlimit())
"""


@pytest.mark.parametrize("limit, mode", [(0, "default"), (120, "low"), (0, "jsonata")])
def test_deep_nesting_is_refused_in_any_process_whatever_its_recursion_limit(limit, mode):
    r = subprocess.run(
        [sys.executable, "-c", REFUSE_DEEP, str(limit), mode], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["refused", {"default": "1000", "low": "120", "jsonata": "10000"}[mode]]


def test_every_config_reader_uses_the_one_parser(tmp_path, builtin_drivers):
    """config.parse_json (ConfigSource: the buses, the publisher, node; the web UI; validate and read) and
    driver files go through jsontext, so they refuse what the door refuses, with the same words."""
    deep = nested(jsontext.MAX_DEPTH + 1)
    with pytest.raises(jsontext.OverLimit) as a:
        cfg.parse_json(deep)
    with pytest.raises(jsontext.OverLimit) as b:
        jsontext.parse(deep)
    assert str(a.value) == str(b.value)
    f = tmp_path / "deep_driver.json"
    f.write_text('{"fields": {"x": {"register": 1}}, "notes": ' + "[" * 70 + "]" * 70 + "}")
    with pytest.raises(jsontext.OverLimit, match="driver nests arrays and objects more than 64 levels"):
        drivers.load_driver_file(f)
    (tmp_path / "ok.json").write_text(json.dumps(builtin_drivers["sma_stp25000"]))
    loaded = drivers.load_builtin_drivers(tmp_path)
    assert set(loaded) == {"ok"}, "the deep driver is logged and skipped, the others load"
