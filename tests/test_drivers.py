"""Built-in drivers: every upstream driver name is shipped with the same register facts, except the
defects fixed on purpose (the FIXES table, which drivers/README.md must list row for row)."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

from ammp_edge.core import codec, drivers
from helpers.common import REPO, UPSTREAM_DRIVERS

DRIVERS_DIR = REPO / "drivers"
README = DRIVERS_DIR / "README.md"
UPSTREAM_FILES = sorted(UPSTREAM_DRIVERS.glob("*.json"))
OUR_FILES = sorted(DRIVERS_DIR.glob("*.json"))

# (driver, field, key) -> (upstream effective value, our effective value), after merging `common`.
# Field "*" means every field of the driver (the fix is in `common`). drivers/README.md lists the same rows.
FIXES: dict[tuple[str, str, str], tuple[object, object]] = {
    # datatype "int" is not a type; our loader reads it as the signed int of the field's width (2 words)
    ("libratum_ur5i", "*", "datatype"): ("int", "int32"),
    ("snmp_demo", "*", "datatype"): ("int", "int32"),
    # valuemap keys are the full-width raw hex; "0x0" never matched upstream
    ("ingburo_ss_rad", "temp_ext", "valuemap"): ({"0x0": None}, {"0x0000": None}),
    # 32-bit sentinels on a 16-bit field never matched
    ("deepsea_dse855", "fuel_level_percent", "valuemap"): (
        {"0x7fffffff": None, "0xffffffff": None},
        {"0x7fff": None, "0xffff": None},
    ),
    # the common 32-bit NaN key never matches a 64-bit field; SMA's U64 NaN is all ones
    ("sma_data_manager", "E_total_in", "valuemap"): ({"0xffffffff": None}, {"0xffffffffffffffff": None}),
    # strN holds N bytes: words = ceil(N / 2)
    ("schneider_combox", "device_name", "words"): (1, 8),
    ("schneider_combox", "fga_number", "words"): (1, 8),
    ("schneider_combox", "firmware_version", "words"): (2, 10),
    ("schneider_combox", "hardware_serial_number", "words"): (1, 8),
}

# Upstream files that give registers as hex strings; ours give the same registers as integers.
HEX_REGISTER_FILES = {"circutor_cdp_duo", "schneider_combox"}

ABSENT = "<absent>"


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def effective_fields(driver: dict) -> dict[str, dict]:
    """Every field with `common` merged under it; registers as integers (upstream hex strings parsed base 16)."""
    out = {}
    for name in driver["fields"]:
        merged = drivers.merge_field(driver, name)
        if "register" in merged:
            merged["register"] = drivers.parse_register(merged["register"], name)
        out[name] = merged
    return out


def expected_differences(name: str, fields) -> dict[tuple[str, str], tuple[object, object]]:
    expected = {}
    for (drv, fld, key), values in FIXES.items():
        if drv != name:
            continue
        for f in fields if fld == "*" else [fld]:
            expected[(f, key)] = values
    return expected


def compiled(driver: dict, name: str) -> drivers.ModbusField:
    warnings: list = []
    fld = drivers.compile_field(driver, name, f"test.fields.{name}", warnings)
    assert warnings == []
    return fld


def text_registers(text: str, words: int) -> list[int]:
    raw = text.encode().ljust(2 * words, b"\x00")
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


# ---------------------------------------------------------------------------------------------
# (i) everything loads and compiles


def test_reference_driver_set_is_complete():
    assert len(UPSTREAM_FILES) == 47


@pytest.mark.parametrize("path", UPSTREAM_FILES, ids=lambda p: p.stem)
def test_upstream_driver_compiles_without_errors(path):
    problems = drivers.check_driver(load(path), path.stem)
    assert [p for p in problems if p.severity == "error"] == []


@pytest.mark.parametrize("path", OUR_FILES, ids=lambda p: p.stem)
def test_builtin_driver_compiles_without_errors_or_warnings(path):
    # our copies have their defects fixed, so not even a warning is left
    assert drivers.check_driver(load(path), path.stem) == []


def test_builtin_drivers_fixture_loads_every_file(builtin_drivers):
    assert set(builtin_drivers) == {p.stem for p in OUR_FILES}


def test_upstream_license_is_shipped():
    assert (DRIVERS_DIR / "LICENSE.upstream").read_text() == (UPSTREAM_DRIVERS / "LICENSE").read_text()


# ---------------------------------------------------------------------------------------------
# (ii) the same drivers, fields and register facts as upstream, except the FIXES


def test_every_upstream_driver_name_is_built_in():
    """Cloud configs name upstream drivers; each has a built-in file. New drivers beside them are
    checked by test_driver_vectors.py (source, validation, test vectors)."""
    missing = {p.stem for p in UPSTREAM_FILES} - {p.stem for p in OUR_FILES}
    assert missing == set(), f"upstream driver names without a built-in file: {sorted(missing)}"


@pytest.mark.parametrize("path", UPSTREAM_FILES, ids=lambda p: p.stem)
def test_same_fields_and_facts_as_upstream_except_fixes(path):
    name = path.stem
    upstream, ours = load(path), load(DRIVERS_DIR / path.name)
    assert ours.get("type") == upstream.get("type")
    assert list(ours["fields"]) == list(upstream["fields"]), "same field names, in the same order"
    up_fields, our_fields = effective_fields(upstream), effective_fields(ours)
    for key in ("status_info", "status_info_common"):
        assert ours.get(key) == upstream.get(key)

    differences = {}
    for field in up_fields:
        up, us = up_fields[field], our_fields[field]
        for key in sorted(set(up) | set(us)):
            a, b = up.get(key, ABSENT), us.get(key, ABSENT)
            if a != b or type(a) is not type(b):
                differences[(field, key)] = (a, b)
    assert differences == expected_differences(name, list(up_fields))


def test_every_fix_names_an_existing_driver_and_field():
    for drv, fld, _key in FIXES:
        upstream = load(UPSTREAM_DRIVERS / f"{drv}.json")
        assert fld == "*" or fld in upstream["fields"], (drv, fld)


def test_no_string_registers_left():
    for path in OUR_FILES:
        driver = load(path)
        for name, fld in driver["fields"].items():
            assert not isinstance(fld.get("register"), str), (path.stem, name)
        assert not isinstance((driver.get("common") or {}).get("register"), str)


def test_hex_register_files_are_the_upstream_ones():
    found = {
        p.stem for p in UPSTREAM_FILES if any(isinstance(f.get("register"), str) for f in load(p)["fields"].values())
    }
    assert found == HEX_REGISTER_FILES


# ---------------------------------------------------------------------------------------------
# drivers/README.md lists exactly the FIXES


def _readme_fix_rows() -> dict[tuple[str, str, str], tuple[object, object]]:
    text = README.read_text(encoding="utf-8")
    section = text.split("<!-- fixes-table:start -->", 1)[1].split("<!-- fixes-table:end -->", 1)[0]
    rows = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        first = [re.search(r"`([^`]*)`", c).group(1) for c in cells[:5]]
        drv, fld, key, before, after = first
        rows[(drv, fld, key)] = (json.loads(before), json.loads(after))
    return rows


def test_readme_fixes_table_matches_fixes():
    assert _readme_fix_rows() == FIXES


def test_readme_names_the_hex_register_files_and_kept_names():
    text = README.read_text(encoding="utf-8")
    for name in HEX_REGISTER_FILES:
        assert f"`{name}`" in text
    assert "`grid_in_P_total `" in text


def test_trailing_space_field_name_is_kept(builtin_drivers):
    # AMMP cloud configs may reference the exact upstream name, trailing space included
    fields = builtin_drivers["circutor_cdp_duo"]["fields"]
    assert "grid_in_P_total " in fields and "grid_in_P_total" not in fields
    assert compiled(builtin_drivers["circutor_cdp_duo"], "grid_in_P_total ").register == 0x6A


# ---------------------------------------------------------------------------------------------
# (iii) each fixed defect decodes right


def test_hex_registers_kept_their_values(builtin_drivers):
    for name in HEX_REGISTER_FILES:
        upstream = load(UPSTREAM_DRIVERS / f"{name}.json")
        for field, fld in upstream["fields"].items():
            ours = compiled(builtin_drivers[name], field)
            assert ours.register == int(fld["register"], 16), (name, field)
    assert compiled(builtin_drivers["circutor_cdp_duo"], "grid_in_P_total ").register == 106
    assert compiled(builtin_drivers["schneider_combox"], "pv_total_energy_lifetime").register == 0x041C


def test_ingburo_temp_ext_zero_is_no_data(builtin_drivers):
    fld = compiled(builtin_drivers["ingburo_ss_rad"], "temp_ext")
    assert fld.spec.valuemap.exact == {"0000": None}
    assert codec.decode_registers([0x0000], fld.spec) is None
    assert codec.decode_registers([300], fld.spec) == pytest.approx(5.0)  # 300 * 0.1 - 25
    assert codec.decode_registers([1], fld.spec) == pytest.approx(-24.9)


def test_dse855_fuel_level_sentinels_match(builtin_drivers):
    ours = compiled(builtin_drivers["deepsea_dse855"], "fuel_level_percent")
    assert ours.words == 1
    assert codec.decode_registers([0x7FFF], ours.spec) is None
    assert codec.decode_registers([0xFFFF], ours.spec) is None
    assert codec.decode_registers([55], ours.spec) == 55.0
    # the upstream keys are 32 bits wide and never match a one-register value
    upstream = compiled(load(UPSTREAM_DRIVERS / "deepsea_dse855.json"), "fuel_level_percent")
    assert codec.decode_registers([0xFFFF], upstream.spec) == -1.0


def test_sma_data_manager_u64_nan_is_no_data(builtin_drivers):
    ours = compiled(builtin_drivers["sma_data_manager"], "E_total_in")
    assert ours.words == 4
    assert codec.decode_registers([0xFFFF] * 4, ours.spec) is None
    assert codec.decode_registers([0, 0, 0x0001, 0x86A0], ours.spec) == 100000.0
    upstream = compiled(load(UPSTREAM_DRIVERS / "sma_data_manager.json"), "E_total_in")
    assert codec.decode_registers([0xFFFF] * 4, upstream.spec) == float(2**64 - 1)
    # the 32-bit fields keep the common sentinel
    p = compiled(builtin_drivers["sma_data_manager"], "P_total_in")
    assert codec.decode_registers([0xFFFF, 0xFFFF], p.spec) is None


@pytest.mark.parametrize(
    "field, text",
    [
        ("device_name", "Conext ComBox 16"),  # str16: 16 characters, 8 registers
        ("fga_number", "865-1058-01 ABCD"[:15]),  # str15: 15 characters in 8 registers
        ("firmware_version", "V3.03 BN 5 2019-12-1"),  # str20: 20 characters, 10 registers
        ("hardware_serial_number", "ZW1234567890123"),
    ],
)
def test_combox_text_fields_decode_the_whole_string(builtin_drivers, field, text):
    driver = builtin_drivers["schneider_combox"]
    n = int(drivers.merge_field(driver, field)["datatype"][3:])
    fld = compiled(driver, field)
    assert fld.words == (n + 1) // 2
    assert fld.spec.text_bytes == n
    assert codec.decode_registers(text_registers(text, fld.words), fld.spec) == text
    # shorter text is NUL-padded on the device
    assert codec.decode_registers(text_registers("XW+", fld.words), fld.spec) == "XW+"


def test_combox_upstream_text_words_were_too_short():
    upstream = load(UPSTREAM_DRIVERS / "schneider_combox.json")
    problems = drivers.check_driver(upstream, "schneider_combox")
    warned = {p.path.split(".")[2] for p in problems if p.severity == "warning" and p.path.endswith(".words")}
    assert warned == {f for (d, f, k) in FIXES if d == "schneider_combox" and k == "words"}


def test_combox_numeric_fields_still_read_two_registers_lsr(builtin_drivers):
    fld = compiled(builtin_drivers["schneider_combox"], "pv_harvest_power")
    assert (fld.register, fld.words, fld.spec.datatype, fld.spec.order) == (0x44, 2, "uint32", "CDAB")
    assert codec.decode_registers([0x86A0, 0x0001], fld.spec) == 100000.0


@pytest.mark.parametrize("name", ["libratum_ur5i", "snmp_demo"])
def test_int_datatype_is_int32(builtin_drivers, name):
    driver = builtin_drivers[name]
    for field in driver["fields"]:
        opts = drivers.merge_field(driver, field)
        assert opts["datatype"] == "int32" and opts["words"] == 2
        assert drivers.field_kind(opts) == "snmp"
        # what our loader makes of upstream's "int" is exactly what we now write
        up = drivers.merge_field(load(UPSTREAM_DRIVERS / f"{name}.json"), field)
        assert drivers._datatype(up, field, up["words"]) == drivers._datatype(opts, field, opts["words"])
    spec = codec.ValueSpec(datatype="int32")
    assert codec.decode_bytes(struct.pack(">i", -70), spec) == -70
