"""Driver test vectors: raw registers from the vendor's register map in, the values they must decode to out.

A driver that is not one of upstream's (tests/upstream/drivers) names its source and carries test
vectors, worked out by hand from that source (see drivers/README.md, "Test vectors"):

    "source": [{"title": "...", "version": "...", "url": "..."}],
    "test_vectors": [
        {"description": "...",
         "registers": {"3": {"32080": [0, 5000]}, "4": {...}},   # fncode -> start register -> words
         "expect": {"P_total": 5000, "status": null}}
    ]

Each vector is served by the simulator (the raw words laid over the register map) and read through a
real bus (`ammp-edge read --json` in its own process, Modbus TCP on loopback), so the planner's block
reads, the codec and the readout are all on the path. Every field of the driver must be expected by
at least one vector.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ammp_edge.core import drivers

REPO = Path(__file__).resolve().parent.parent
UPSTREAM = {p.stem for p in (REPO / "tests" / "upstream" / "drivers").glob("*.json")}
BUILTIN = sorted(p.stem for p in (REPO / "drivers").glob("*.json"))
NEW = [name for name in BUILTIN if name not in UPSTREAM]
VECTOR_KEYS = {"description", "registers", "expect", "unit"}


def _load(name: str) -> dict:
    return json.loads((REPO / "drivers" / f"{name}.json").read_text(encoding="utf-8"))


def _raw_registers(vector: dict, where: str) -> dict[int, dict[int, int]]:
    """{fncode: {register: word}} from the vector's {fncode: {start: [words]}}."""
    out: dict[int, dict[int, int]] = {}
    regs = vector.get("registers")
    assert isinstance(regs, dict) and regs, f"{where}.registers: must be a non-empty object"
    for fc, blocks in regs.items():
        assert fc in ("3", "4"), f'{where}.registers.{fc}: function code must be "3" or "4"'
        assert isinstance(blocks, dict) and blocks, f"{where}.registers.{fc}: must be a non-empty object"
        for start, words in blocks.items():
            assert start.isdigit(), f"{where}.registers.{fc}.{start}: start register must be a decimal number"
            assert isinstance(words, list) and words, f"{where}.registers.{fc}.{start}: must be a list of words"
            for i, w in enumerate(words):
                assert type(w) is int and 0 <= w <= 0xFFFF, f"{where}.registers.{fc}.{start}[{i}]: {w!r} is not a word"
                reg = int(start) + i
                assert reg not in out.get(int(fc), {}), f"{where}.registers.{fc}: register {reg} given twice"
                out.setdefault(int(fc), {})[reg] = w
    return out


def _same(expected, got) -> bool:
    if isinstance(expected, bool) or expected is None or isinstance(expected, str):
        return expected == got and type(expected) is type(got)
    if isinstance(expected, (int, float)) and isinstance(got, (int, float)) and not isinstance(got, bool):
        return math.isclose(expected, got, rel_tol=1e-6, abs_tol=1e-9)
    return False


@pytest.mark.parametrize("name", NEW)
def test_new_driver_names_its_source_and_validates(name):
    doc = _load(name)
    sources = doc.get("source")
    assert isinstance(sources, list) and sources, f"{name}: 'source' must list where the register facts were read"
    for i, s in enumerate(sources):
        assert isinstance(s, dict) and isinstance(s.get("title"), str) and s["title"].strip(), (
            f"{name}: source[{i}] needs a title"
        )
        assert any(isinstance(s.get(k), str) and s[k].strip() for k in ("url", "repo", "version", "document")), (
            f"{name}: source[{i}] needs a url, repo, version or document id"
        )
    problems = drivers.check_driver(doc, name)
    assert problems == [], f"{name}: " + "; ".join(str(p) for p in problems)
    out = subprocess.run(
        [sys.executable, "-m", "ammp_edge", "validate", str(REPO / "drivers" / f"{name}.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = out.stdout + out.stderr
    assert out.returncode == 0 and report.strip().endswith(": ok") and "warning" not in report.lower(), report


@pytest.mark.parametrize("name", NEW)
def test_every_field_of_a_new_driver_is_covered_by_a_vector(name):
    doc = _load(name)
    vectors = doc.get("test_vectors")
    assert isinstance(vectors, list) and vectors, f"{name}: needs test_vectors"
    fields = set(doc.get("fields") or {})
    covered: set[str] = set()
    for i, v in enumerate(vectors):
        where = f"{name}.test_vectors[{i}]"
        assert isinstance(v, dict), f"{where}: must be an object"
        assert set(v) <= VECTOR_KEYS, f"{where}: unknown keys {sorted(set(v) - VECTOR_KEYS)}"
        assert isinstance(v.get("description"), str) and v["description"].strip(), f"{where}: needs a description"
        _raw_registers(v, where)
        expect = v.get("expect")
        assert isinstance(expect, dict) and expect, f"{where}.expect: must be a non-empty object"
        unknown = set(expect) - fields
        assert not unknown, f"{where}.expect: not fields of the driver: {sorted(unknown)}"
        covered |= set(expect)
    assert fields - covered == set(), f"{name}: fields no vector expects: {sorted(fields - covered)}"


def _cases():
    for name in NEW:
        for i, v in enumerate(_load(name).get("test_vectors") or []):
            if isinstance(v, dict):
                yield pytest.param(name, i, id=f"{name}[{i}]")


@pytest.mark.parametrize("name,index", list(_cases()))
def test_vector_decodes_through_a_real_bus(name, index, simulator, tmp_path):
    doc = _load(name)
    vector = doc["test_vectors"][index]
    unit = int(vector.get("unit", 1))
    sim = simulator({unit: doc}, registers={unit: _raw_registers(vector, f"{name}.test_vectors[{index}]")})
    config = {
        "devices": {
            "dut": {
                "reading_type": "modbustcp",
                "driver": name,
                "vendor_id": "vec",
                "address": {"host": "127.0.0.1", "port": sim.port, "unit_id": unit},
                "timeout": 5,
            }
        },
        "readings": {f: {"device": "dut", "var": f} for f in vector["expect"]},
        "read_interval": 60,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    out = subprocess.run(
        [sys.executable, "-m", "ammp_edge", "read", "--config", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert out.returncode == 0, out.stderr
    records = [r for r in json.loads(out.stdout)["r"] if r.get("_d") == "dut"]
    assert len(records) == 1, out.stdout
    got = records[0]
    wrong = {
        f: (exp, got.get(f, "<missing>"))
        for f, exp in vector["expect"].items()
        if not _same(exp, got.get(f, "<missing>"))
    }
    assert not wrong, (
        f"{name}.test_vectors[{index}] ({vector['description']}): field: (expected, got): {wrong}\n{out.stderr}"
    )
