"""`scale_factor` in the driver format: a field takes its power of ten from another field of the same
device (SunSpec's *_SF registers). validate names every problem with its JSON path; the planner reads a
field and its scale factor in one request wherever they fit; the reader never publishes an unscaled
value; upstream drivers plan and decode exactly as before."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ammp_edge.core import codec, config, drivers
from ammp_edge.readers import planner, transports

REPO = Path(__file__).resolve().parent.parent

DRIVER = {
    "common": {"fncode": 3},
    "fields": {
        "P_total": {"register": 100, "datatype": "int16", "scale_factor": "W_SF", "unit": "W"},
        "V_L1": {"register": 101, "datatype": "uint16", "scale_factor": "V_SF", "valuemap": {"0xffff": None}},
        "E_total": {"register": 102, "datatype": "uint32", "scale_factor": "WH_SF", "multiplier": 0.001},
        "W_SF": {"register": 104, "datatype": "int16", "valuemap": {"0x8000": None}},
        "V_SF": {"register": 105, "datatype": "int16"},
        "WH_SF": {"register": 106, "datatype": "int16"},
        # a scale factor 60 registers away: more than the RTU max_gap, still one request
        "far": {"register": 200, "datatype": "uint16", "scale_factor": "far_SF"},
        "far_SF": {"register": 260, "datatype": "int16"},
    },
}


def problems_of(fields: dict) -> list[str]:
    return [str(p) for p in drivers.check_driver({"fields": fields}, "drivers.d")]


INTEGER = "a scale factor is an integer (int16, as SunSpec's sunssf)"


def test_validate_names_every_scale_factor_problem_with_its_path():
    assert problems_of(DRIVER["fields"]) == []
    got = problems_of(
        {
            "a": {"register": 1, "scale_factor": "nope"},
            "b": {"register": 2, "scale_factor": "c"},
            "c": {"register": 3, "scale_factor": "b"},
            "d": {"register": 4, "scale_factor": "f"},
            "e": {"register": 5, "scale_factor": "t"},
            "f": {"register": 6, "datatype": "float"},
            "t": {"register": 7, "datatype": "str4"},
            "g": {"register": 8, "scale_factor": 3},
            "h": {"register": 9, "scale_factor": "h"},
            "i": {"register": 10, "scale_factor": "m"},
            "m": {"register": 11, "multiplier": 0.5},
            "s": {"module": "os", "method": "getloadavg", "scale_factor": "f"},
            "x": {"register": 12, "scale_factor": "y"},
            "y": {"register": 13, "scale_factor": "z"},
            "z": {"register": 14, "scale_factor": "x"},
        }
    )
    assert got == [
        "drivers.d.fields.a.scale_factor: no field 'nope' in this driver",
        "drivers.d.fields.b.scale_factor: a cycle of scale factors: b -> c -> b",
        "drivers.d.fields.c.scale_factor: a cycle of scale factors: c -> b -> c",
        "drivers.d.fields.d.scale_factor: field 'f' is float; " + INTEGER,
        "drivers.d.fields.e.scale_factor: field 't' is str4; " + INTEGER,
        "drivers.d.fields.g.scale_factor: 3 is not the name of a field of this driver",
        "drivers.d.fields.h.scale_factor: a cycle of scale factors: h -> h",
        "drivers.d.fields.i.scale_factor: field 'm' is scaled or cast to a non-integer; a scale factor is an integer",
        "drivers.d.fields.s.scale_factor: only a Modbus register field can have a scale factor",
        "drivers.d.fields.x.scale_factor: a cycle of scale factors: x -> y -> z -> x",
        "drivers.d.fields.y.scale_factor: a cycle of scale factors: y -> z -> x -> y",
        "drivers.d.fields.z.scale_factor: a cycle of scale factors: z -> x -> y -> z",
    ]


def test_validate_command_reports_them_per_file(tmp_path):
    path = tmp_path / "sf.json"
    path.write_text(json.dumps({"fields": {"P": {"register": 1, "datatype": "int16", "scale_factor": "nope"}}}))
    out = subprocess.run(
        [sys.executable, "-m", "ammp_edge", "validate", str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1
    assert out.stdout.strip() == f"{path}: fields.P.scale_factor: no field 'nope' in this driver"
    cfg_path = tmp_path / "site.json"
    cfg_path.write_text(
        json.dumps(
            {
                "devices": {
                    "m": {"reading_type": "modbustcp", "driver": "sf", "vendor_id": "1", "address": {"host": "h"}}
                },
                "drivers": {
                    "sf": {
                        "fields": {
                            "P": {"register": 1, "scale_factor": "Q"},
                            "Q": {"register": 2, "datatype": "double"},
                        }
                    }
                },
                "readings": {"p": {"device": "m", "var": "P"}},
            }
        )
    )
    out = subprocess.run(
        [sys.executable, "-m", "ammp_edge", "validate", str(cfg_path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1
    expected = "drivers.sf.fields.P.scale_factor: field 'Q' is double; a scale factor is an integer"
    assert out.stdout.count(expected) == 1, out.stdout  # once, though both the reading and the driver name it


def test_codec_scales_by_the_power_in_decimal():
    spec = codec.ValueSpec("int16")
    assert codec.decode_registers([2301], spec, -1) == 230.1
    assert codec.decode_registers([2301], spec, 0) == 2301
    assert codec.decode_registers([2301], spec, 2) == 230100 and type(codec.decode_registers([2301], spec, 2)) is int
    milli = codec.ValueSpec("uint32", multiplier=0.001)
    assert codec.decode_registers([0x0001, 0xE240], milli, 3) == 123456.0  # 123456 x 10**3 Wh -> kWh
    assert codec.encode_registers(230.1, spec, 1, None, -1) == [2301]
    with pytest.raises(codec.DecodeError, match="scale factor 11 is outside -10..10"):
        codec.check_power(11)


def test_planner_reads_a_field_and_its_scale_factor_in_one_request_whatever_the_gap():
    items = [planner.Item("far", 3, 200, 1), planner.Item("_sf/far_SF", 3, 260, 1), planner.Item("x", 3, 230, 1)]
    untied = planner.plan(items, 125, 8)
    assert [(b.address, b.count) for b in untied] == [(200, 1), (230, 1), (260, 1)]
    tied = planner.plan(items, 125, 8, {"far": "_sf/far_SF"})
    assert [(b.address, b.count, [i.key for i in b.items]) for b in tied] == [(200, 61, ["far", "_sf/far_SF", "x"])]
    assert not tied[0].gapless  # it spans gaps: a refusal splits it into its runs
    assert [(b.address, b.count) for b in planner.split(tied[0])] == [(200, 1), (230, 1), (260, 1)]
    # too far apart for one request: each alone, as without the tie
    far = [planner.Item("a", 3, 0, 1), planner.Item("b", 3, 300, 1)]
    assert [(b.address, b.count) for b in planner.plan(far, 125, 8, {"a": "b"})] == [(0, 1), (300, 1)]


def test_every_builtin_driver_plans_as_before_without_scale_factors():
    """No tie, no change: the plan of every built-in driver's fields is what the planner made before
    scale factors existed (the old merge rule, written out here)."""

    def old_plan(items, max_registers, max_gap):
        blocks = []
        for fc in sorted({i.fncode for i in items}):
            cur = None
            for it in sorted([i for i in items if i.fncode == fc], key=lambda i: (i.address, -i.words)):
                if cur is not None:
                    gap, end = it.address - cur[1] - cur[2], max(cur[1] + cur[2], it.end)
                    if gap <= max_gap and not it.barrier and end - cur[1] <= max_registers:
                        cur[2] = end - cur[1]
                        continue
                cur = [fc, it.address, it.words]
                blocks.append(cur)
        return [tuple(b) for b in blocks]

    for name, doc in drivers.load_builtin_drivers(REPO / "drivers").items():
        items = []
        for f in doc.get("fields", {}):
            try:
                c = drivers.compile_field(doc, f, f, [])
            except ValueError:
                continue
            if isinstance(c, drivers.ModbusField):
                assert c.scale_factor is None
                items.append(planner.Item(f, c.fncode, c.register, c.words, c.barrier))
        for gap in (0, 8, 32):
            new = [(b.fncode, b.address, b.count) for b in planner.plan(items, 125, gap)]
            assert new == old_plan(items, 125, gap), name


def read_device(simulator, driver: dict, registers: dict[int, int], fields: list[str], **address):
    sim = simulator({1: {"fields": {}}}, registers={1: {3: registers}}, strict=address.pop("strict", False))
    cfg = {
        "devices": {
            "d": {
                "reading_type": "modbustcp",
                "driver": "sf",
                "vendor_id": "1",
                "address": {"host": "127.0.0.1", "port": sim.port, **address},
            }
        },
        "drivers": {"sf": driver},
        "readings": {f: {"device": "d", "var": f} for f in fields},
    }
    loaded = config.load(cfg, {})
    assert loaded.errors == []
    dev = loaded.devices["d"]
    transport = transports.make_transport(dev)
    try:
        reader = transports.make_reader(dev, transport)
        return reader, reader.read(time.monotonic() + 30), sim
    finally:
        transport.close()


def regs(**by_register) -> dict[int, int]:
    return {int(k[1:]): v & 0xFFFF for k, v in by_register.items()}


def test_values_are_scaled_by_the_scale_factor_read_with_them(simulator):
    image = regs(r100=-1500, r101=2301, r102=0x0001, r103=0xE240, r104=1, r105=-1, r106=3, r200=42, r260=-2)
    fields = ["P_total", "V_L1", "E_total", "far"]
    reader, res, sim = read_device(simulator, DRIVER, image, fields, max_gap=8)
    assert res.values == {"P_total": -15000, "V_L1": 230.1, "E_total": 123456.0, "far": 0.42}
    assert res.errors == [] and res.item_errors == {}
    # the far field and its scale factor in one request (max_gap 8 would not merge 200 and 260)
    assert sorted((b.address, b.count) for b in reader.blocks) == [(100, 7), (200, 61)]
    assert res.requests == 2 and len(sim.seen) == 2
    assert "W_SF" not in res.values  # read, not published


def test_a_scale_factor_that_is_also_a_reading_is_published_as_read(simulator):
    image = regs(r100=-1500, r104=1)
    _, res, _ = read_device(simulator, DRIVER, image, ["P_total", "W_SF"])
    assert res.values == {"P_total": -15000, "W_SF": 1}


def test_not_implemented_and_impossible_scale_factors_never_give_an_unscaled_value(simulator):
    # W_SF 0x8000 ("not implemented"): P_total null; V_SF 11: outside -10..10, an error, no value;
    # V_L1 0xFFFF is itself "not implemented"
    image = regs(r100=-1500, r101=0xFFFF, r102=0, r103=5, r104=0x8000, r105=11, r106=0)
    reader, res, _ = read_device(simulator, DRIVER, image, ["P_total", "V_L1", "E_total"])
    assert res.values == {"P_total": None, "E_total": 0.005}
    assert res.item_errors == {"V_L1": "scale factor V_SF = 11 is outside -10..10"}
    assert "V_L1: scale factor V_SF = 11 is outside -10..10" in res.errors


def test_a_device_refusing_the_gap_still_gets_the_scale_factor_from_its_own_request(simulator):
    image = regs(r200=42, r260=-2)
    reader, res, sim = read_device(simulator, DRIVER, image, ["far"], strict=True)
    assert res.values == {"far": 0.42}
    assert sorted((b.address, b.count) for b in reader.blocks) == [(200, 1), (260, 1)]  # learned: split


def test_a_scale_factor_that_could_not_be_read_leaves_the_value_out_with_the_reason(simulator):
    driver = {"fields": {"P": {"register": 10, "scale_factor": "SF"}, "SF": {"register": 400, "datatype": "int16"}}}
    reader, res, _ = read_device(simulator, driver, regs(r10=5), ["P"], strict=True)
    assert "P" not in res.values and not res.failed
    assert res.item_errors == {"P": "scale factor SF not read"}
    assert "P: scale factor SF not read" in res.errors


from hypothesis import given, settings, strategies as st  # noqa: E402


@st.composite
def tied_items(draw):
    n = draw(st.integers(1, 30))
    items = [
        planner.Item(f"f{i}", draw(st.sampled_from([3, 4])), draw(st.integers(0, 600)), draw(st.integers(1, 4)))
        for i in range(n)
    ]
    ties = {}
    for i in range(n):
        if draw(st.booleans()):
            ties[f"f{i}"] = f"f{draw(st.integers(0, n - 1))}"
    ties = {a: b for a, b in ties.items() if a != b}
    return items, ties, draw(st.integers(1, 125)), draw(st.integers(0, 40))


@settings(max_examples=300, deadline=None)
@given(tied_items())
def test_plan_with_ties_covers_every_item_within_the_limits_and_keeps_fitting_pairs_together(case):
    items, ties, max_registers, max_gap = case
    blocks = planner.plan(items, max_registers, max_gap, ties)
    where = {}
    for b in blocks:
        assert b.count <= max(max_registers, max(i.words for i in b.items))
        for i in b.items:
            assert i.fncode == b.fncode and b.address <= i.address and i.end <= b.end
            where[i.key] = b
    assert set(where) == {i.key for i in items}
    # every group of tied items (a scale factor and all it scales) that has one function code and fits
    # in max_registers is read in one request
    group = {i.key: {i.key} for i in items}
    for a, b in ties.items():
        merged = group[a] | group[b]
        for k in merged:
            group[k] = merged
    by_key = {i.key: i for i in items}
    for members in {frozenset(g) for g in group.values() if len(g) > 1}:
        its = [by_key[k] for k in members]
        span = max(i.end for i in its) - min(i.address for i in its)
        if len({i.fncode for i in its}) == 1 and span <= max_registers:
            assert len({id(where[k]) for k in members}) == 1, (sorted(members), [(b.address, b.count) for b in blocks])
