"""SunSpec, generically: a pymodbus-served device with the chain common + 103 + 160 + 203 + end at each
base address, discovered by the scan (model walk), configured by node.configgen, and read by a real
Modbus TCP reader through the generated driver.

The register images below are laid out by hand from the SunSpec model definitions (offsets counted
from each model's ID register, as in the pysunspec2 JSON), and every expected value is worked out by
hand: raw x 10**SF, "not implemented" values as null, power factor in percent -> per unit.
"""

from __future__ import annotations

import re
import time

import pytest

from ammp_edge.core import config, sunspec
from ammp_edge.node import configgen
from ammp_edge.node.scan import modbus as scan_modbus
from ammp_edge.readers import transports
from ammp_edge.readers.modbus_tcp import TcpTransport

NA16, NAI16 = 0xFFFF, 0x8000


def s16(v: int) -> int:
    return v & 0xFFFF


def text(value: str, words: int) -> list[int]:
    raw = value.encode().ljust(2 * words, b"\0")
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, 2 * words, 2)]


def common(mn="Fronius", md="Symo 10.0-3-M", vr="1.2.3", sn="33344455") -> list[int]:
    # ID, L, Mn[16] @2, Md[16] @18, Opt[8] @34, Vr[8] @42, SN[16] @50, DA @66, Pad @67
    regs = [1, 66] + text(mn, 16) + text(md, 16) + text("", 8) + text(vr, 8) + text(sn, 16) + [1, 0x8000]
    assert len(regs) == 68
    return regs


def inverter_103() -> list[int]:
    r = [0] * 52
    r[0], r[1] = 103, 50
    r[2:7] = [3012, 1004, 1004, NA16, s16(-2)]  # A, AphA, AphB, AphC (not impl.), A_SF = -2
    r[7:14] = [4000, NA16, 4001, 2301, 2299, 2310, s16(-1)]  # PPVphAB, BC (n/i), CA, PhVphA..C, V_SF = -1
    r[14:16] = [2500, 1]  # W, W_SF = 1 -> 25000 W
    r[16:18] = [5002, s16(-2)]  # Hz -> 50.02
    r[18:20] = [2510, 1]  # VA -> 25100
    r[20:22] = [s16(-120), 0]  # VAr -> -120
    r[22:24] = [s16(-985), s16(-1)]  # PF -98.5 % -> -0.985
    r[24:27] = [0x0001, 0xE240, 3]  # WH 123456 x 10**3 = 123456000 Wh
    r[27:29] = [NA16, s16(-2)]  # DCA not implemented
    r[29:31] = [6500, NAI16]  # DCV with DCV_SF not implemented -> null
    r[31:33] = [2600, 1]  # DCW -> 26000
    r[33:38] = [452, NAI16, s16(-50), NAI16, s16(-1)]  # TmpCab 45.2, TmpSnk n/i, TmpTrns -5.0, TmpOt n/i
    r[38:40] = [4, NA16]  # St = 4 (MPPT), StVnd not implemented
    r[40:42] = [0, 0]  # Evt1
    return r


def mppt_160() -> list[int]:
    # fixed part: ID, L, DCA_SF @2, DCV_SF @3, DCW_SF @4, DCWH_SF @5, Evt[2] @6, N @8, TmsPer @9
    r = [160, 48, s16(-2), s16(-1), 0, 2, 0, 0, 2, NA16]
    # module (20 registers): ID, IDStr[8], DCA, DCV, DCW, DCWH[2], Tms[2], Tmp, DCSt, DCEvt[2]
    r += [1, *text("String 1", 8), 850, 6123, 5204, 0x0000, 0x3039, 0, 0, NAI16, 4, 0, 0]
    r += [2, *text("String 2", 8), NA16, 6100, NA16, 0, 0, 0, 0, 250, 4, 0, 0]
    assert len(r) == 50
    return r


def meter_203() -> list[int]:
    r = [0] * 107
    r[0], r[1] = 203, 105
    r[2:7] = [1500, 500, NAI16, 1000, s16(-2)]  # A 15.0, AphA 5.0, AphB n/i, AphC 10.0
    r[7:16] = [2300, 2301, 2302, 2303, 3990, 3991, 3992, 3993, s16(-1)]  # PhV.. PPV.. V_SF -1
    r[16:18] = [4999, s16(-2)]  # Hz 49.99
    r[18:23] = [s16(-1500), s16(-500), s16(-500), s16(-500), 0]  # W, WphA..C, W_SF 0
    r[23:28] = [1600, 530, 530, 540, 0]  # VA
    r[28:33] = [s16(-300), s16(-100), s16(-100), s16(-100), 0]  # VAR
    r[33:38] = [NAI16, 9900, 9800, 9700, s16(-2)]  # PF n/i, PFphA..C 99.00 % -> 0.99 ...
    r[38:46] = [0, 0, 0, 0, 0, 0, 0, 0]  # TotWhExp (+ phases): acc32 0 = not accumulated -> null
    r[46:54] = [0x0012, 0xD687, 0x8000, 0x0000, 0, 1000, 0, 2000]  # TotWhImp 1234567, PhA n/i, PhB, PhC
    r[54] = 0  # TotWh_SF
    return r


END = [0xFFFF, 0]
CHAIN = [*common(), *inverter_103(), *mppt_160(), *meter_203(), *END]

EXPECTED = {
    "manufacturer": "Fronius",
    "model": "Symo 10.0-3-M",
    "firmware_version": "1.2.3",
    "serial": "33344455",
    "I_total": 30.12,
    "I_L1": 10.04,
    "I_L2": 10.04,
    "I_L3": None,
    "V_L1_L2": 400.0,
    "V_L2_L3": None,
    "V_L3_L1": 400.1,
    "V_L1": 230.1,
    "V_L2": 229.9,
    "V_L3": 231.0,
    "P_total": 25000,
    "freq": 50.02,
    "S_total": 25100,
    "Q_total": -120,
    "pf_total": -0.985,
    "E_total": 123456000,
    "dc_in_I": None,
    "dc_in_V": None,
    "dc_in_P": 26000,
    "temp_internal": 45.2,
    "temp_heatsink": None,
    "temp_transformer": -5.0,
    "temp_other": None,
    "status": 4,
    "status_vendor": None,
    "events": 0,
    "dc_in_I1": 8.5,
    "dc_in_V1": 612.3,
    "dc_in_P1": 5204,
    "dc_in_E1": 1234500,
    "dc_in_temp1": None,
    "dc_in_I2": None,
    "dc_in_V2": 610.0,
    "dc_in_P2": None,
    "dc_in_E2": None,
    "dc_in_temp2": 250,
    "grid_I_total": 15.0,
    "grid_I_L1": 5.0,
    "grid_I_L2": None,
    "grid_I_L3": 10.0,
    "grid_V_avg": 230.0,
    "grid_V_L1": 230.1,
    "grid_V_L2": 230.2,
    "grid_V_L3": 230.3,
    "grid_V_LL_avg": 399.0,
    "grid_V_L1_L2": 399.1,
    "grid_V_L2_L3": 399.2,
    "grid_V_L3_L1": 399.3,
    "grid_freq": 49.99,
    "grid_P_total": -1500,
    "grid_P_L1": -500,
    "grid_P_L2": -500,
    "grid_P_L3": -500,
    "grid_S_total": 1600,
    "grid_S_L1": 530,
    "grid_S_L2": 530,
    "grid_S_L3": 540,
    "grid_Q_total": -300,
    "grid_Q_L1": -100,
    "grid_Q_L2": -100,
    "grid_Q_L3": -100,
    "grid_pf_total": None,
    "grid_pf_L1": 0.99,
    "grid_pf_L2": 0.98,
    "grid_pf_L3": 0.97,
    "grid_E_exported": None,
    "grid_E_exported_L1": None,
    "grid_E_exported_L2": None,
    "grid_E_exported_L3": None,
    "grid_E_imported": 1234567,
    "grid_E_imported_L1": None,
    "grid_E_imported_L2": 1000,
    "grid_E_imported_L3": 2000,
    "grid_events": 0,
}


def image(base: int, chain: list[int] = CHAIN) -> dict[int, int]:
    return {base + i: w for i, w in enumerate([0x5375, 0x6E53, *chain])}


def serve(simulator, regs: dict[int, int], unit: int = 1):
    # a device with no driver fields: only the hand-made register image, nothing else answers
    return simulator({unit: {"fields": {}}}, registers={unit: {3: regs}})


def probe(port: int) -> dict:
    host = {"ipv4": "127.0.0.1", "ports": [str(port)]}
    scan_modbus.probe_host(host, port, timeout=5.0)
    return host


def read_config(cfg: dict):
    loaded = config.load(cfg, {})
    assert loaded.errors == [], [str(p) for p in loaded.errors]
    out = {}
    for key, dev in loaded.devices.items():
        transport = transports.make_transport(dev)
        try:
            reader = transports.make_reader(dev, transport)
            import time

            out[key] = (reader, reader.read(time.monotonic() + 30))
        finally:
            transport.close()
    return loaded, out


@pytest.mark.parametrize("base", [40000, 0, 50000])
def test_scan_walks_the_chain_and_the_generated_config_reads_every_value(simulator, base):
    sim = serve(simulator, image(base))
    host = probe(sim.port)
    [entry] = host["modbustcp"]
    assert entry["sunspec_base"] == base
    a = base + 2
    assert entry["sunspec_models"] == [[1, a, 66], [103, a + 68, 50], [160, a + 120, 48], [203, a + 170, 105]]
    assert entry["sunspec_manufacturer"] == "Fronius" and entry["sunspec_serial"] == "33344455"
    assert "sunspec_problem" not in entry

    cfg, problems = configgen.sunspec_config({"network_scan": [{"hosts": [host]}]})
    assert problems == []
    assert list(cfg["devices"]) == ["sunspec_127_0_0_1_1"]
    device = cfg["devices"]["sunspec_127_0_0_1_1"]
    assert device["vendor_id"] == "fronius_33344455"
    assert device["address"] == {"host": "127.0.0.1", "port": sim.port, "unit_id": 1}
    driver = cfg["drivers"][device["driver"]]
    published = set(sunspec.published(driver))
    assert set(driver["fields"]) - published == {k for k in driver["fields"] if k.startswith(("sf_", "chk_"))}
    assert driver["expect"] == {
        f"chk_{base}": 0x53756E53,
        f"chk_{a}": 0x10042,
        f"chk_{a + 68}": (103 << 16) | 50,
        f"chk_{a + 120}": (160 << 16) | 48,
        f"chk_{a + 170}": (203 << 16) | 105,
    }
    assert sorted(published - set(EXPECTED)) == [] and sorted(set(EXPECTED) - published) == []
    assert driver["fields"]["P_total"]["register"] == a + 68 + 14
    assert driver["fields"]["P_total"]["scale_factor"] == "sf_103_W_SF"
    assert driver["fields"]["sf_103_W_SF"]["register"] == a + 68 + 15

    _, results = read_config(cfg)
    reader, res = results["sunspec_127_0_0_1_1"]
    assert not res.failed, res.errors
    wrong = {k: (v, res.values.get(k, "<missing>")) for k, v in EXPECTED.items() if res.values.get(k, "<x>") != v}
    assert wrong == {}
    assert set(res.values) == set(EXPECTED)  # no scale factor is published
    # types as the device meant them: an integer stays an integer (SF >= 0), a scaled one is a decimal
    assert type(res.values["P_total"]) is int and type(res.values["V_L1"]) is float
    # the whole model walk's fields in a few block reads, scale factors in the same requests
    assert res.requests <= 3, reader.plan_summary()
    for blk in reader.blocks:
        keys = {i.key for i in blk.items}
        for item in blk.items:
            sf = reader.scaled_by.get(item.key)
            assert sf is None or sf in keys, f"{item.key} and {sf} are not read in one request"


def test_two_logical_devices_inverter_and_its_meter_each_with_a_common_model(simulator):
    chain = [*common(), *inverter_103(), *common(md="Smart Meter TS 65A-3", sn="M1"), *meter_203(), *END]
    sim = serve(simulator, image(40000, chain))
    host = probe(sim.port)
    [entry] = host["modbustcp"]
    assert [m[0] for m in entry["sunspec_models"]] == [1, 103, 1, 203]
    cfg, problems = configgen.sunspec_config({"hosts": [host]})
    assert problems == [] and len(cfg["devices"]) == 2
    _, results = read_config(cfg)
    inv = results["sunspec_127_0_0_1_1"][1].values
    meter = results["sunspec_127_0_0_1_1_2"][1].values
    assert inv["P_total"] == 25000 and "grid_P_total" not in inv
    assert meter["P_total"] == -1500 and meter["E_imported"] == 1234567 and meter["serial"] == "M1"
    assert meter["model"] == "Smart Meter TS 65A-3"


def walk_image(simulator, regs: dict[int, int], base: int = 40000):
    sim = serve(simulator, regs)
    transport = TcpTransport("127.0.0.1", sim.port)
    try:
        read = scan_modbus._reader(transport, 1, 5.0)
        found = sunspec.find_base(read)
        if found is None:
            return None
        return sunspec.walk(read, found)
    finally:
        transport.close()


def test_a_bad_marker_is_no_sunspec_device(simulator):
    regs = image(40000)
    regs[40001] = 0x6E54  # "SunT"
    assert walk_image(simulator, regs) is None
    sim = serve(simulator, regs)
    host = probe(sim.port)
    assert host["modbustcp"] == []  # nothing claimed, nothing configured


@pytest.mark.parametrize(
    "chain,message",
    [
        ([*common(), 103, 40, *([0] * 40), *END], "model 103 (inverter_three_phase) at register 40070 has length 40"),
        ([*common(), 64001, 30000, *END], "past register 65535"),
        ([*common(), *([64100, 0] * 70)], "more than 64 models"),
        ([*common(), 0, 0, *END], "model id 0 is not a SunSpec model"),
        ([103, 50, *inverter_103()[2:], *END], "the first model is 103"),
        ([*common(), 160, 48, *mppt_160()[2:8], 3, *mppt_160()[9:], *END], "N says 3 modules"),
        ([*common(), 160, 30, *([0] * 30), *END], "model 160 (mppt) at register 40070 has length 30"),
    ],
    ids=["wrong-length", "past-the-end", "loop", "id-0", "no-common", "mppt-count", "mppt-length"],
)
def test_a_broken_chain_is_a_clear_problem_and_no_config(simulator, chain, message):
    with pytest.raises(sunspec.SunSpecError, match=re.escape(message)):
        walk_image(simulator, image(40000, chain))
    sim = serve(simulator, image(40000, chain))
    host = probe(sim.port)
    [entry] = host["modbustcp"]
    assert message in entry["sunspec_problem"] and "sunspec_models" not in entry
    cfg, problems = configgen.sunspec_config({"hosts": [host]})
    assert cfg["devices"] == {} and cfg["readings"] == {}
    assert len(problems) == 1 and message in problems[0].message and problems[0].path == "127.0.0.1 unit 1"


def test_a_chain_without_end_model_that_refuses_after_the_last_model_is_used_with_a_note(simulator):
    chain = walk_image(simulator, image(40000, [*common(), *inverter_103()]))
    assert chain is not None and [m.id for m in chain.models] == [1, 103]
    assert "no end model" in chain.notes[0]


def test_a_tampered_scan_layout_is_refused_by_configgen():
    host = {
        "ipv4": "10.0.0.9",
        "modbustcp": [{"unit_id": 1, "sunspec_base": 40000, "sunspec_models": [[1, 40002, 66], [103, 40080, 50]]}],
    }
    cfg, problems = configgen.sunspec_config({"hosts": [host]})
    assert cfg["devices"] == {} and "does not follow the model before it" in problems[0].message


def test_every_supported_model_definition_loads_and_makes_a_valid_driver():
    from ammp_edge.core import drivers

    address = 40002
    layout = []
    for model_id in sunspec.SUPPORTED:
        d = sunspec.model(model_id)
        length = d.length + (2 * d.group_length if d.group_length else 0)
        layout.append([model_id, address, length])
        address += 2 + length
    chain = sunspec.from_layout(40000, layout, [{"Mn": "X", "Md": "Y", "SN": "1"}])
    [gen] = sunspec.drivers_for(chain)
    assert drivers.check_driver(gen.driver, gen.name) == []
    import json as _json

    import jsonschema

    from helpers.common import REPO

    schema = _json.loads((REPO / "app" / "ammp_edge" / "schemas" / "driver.schema.json").read_text())
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(gen.driver)) == []
    fields = gen.driver["fields"]
    for name, fld in fields.items():
        if "scale_factor" in fld:
            assert fields[fld["scale_factor"]]["datatype"] == "int16", name


def mppt_3_modules() -> list[int]:
    r = mppt_160()
    r[1], r[8] = 68, 3
    return r + [3, *text("String 3", 8), 800, 6000, 4800, 0, 100, 0, 0, 250, 4, 0, 0]


def test_a_device_whose_chain_changed_since_its_driver_was_made_publishes_nothing(simulator):
    """A firmware update adds an MPPT module: the meter moves 20 registers on. The generated driver's
    `expect` (marker and every model header) catches it; no value comes from the wrong registers."""
    sim = serve(simulator, image(40000))
    cfg, _ = configgen.sunspec_config({"hosts": [probe(sim.port)]})
    changed = serve(simulator, image(40000, [*common(), *inverter_103(), *mppt_3_modules(), *meter_203(), *END]))
    cfg["devices"]["sunspec_127_0_0_1_1"]["address"]["port"] = changed.port
    started = time.monotonic()
    _, results = read_config(cfg)
    _, res = results["sunspec_127_0_0_1_1"]
    assert res.failed and res.values == {}
    assert time.monotonic() - started < 10  # decided from the answers, no timeout involved
    [why] = [e for e in res.errors if e.startswith("not the device this driver was made for")]
    assert f"chk_40122 (register 40122) reads {(160 << 16) | 68}, the driver expects {(160 << 16) | 48}" in why
    assert "chk_40172 (register 40172) reads" in why and why.endswith("nothing of it is published")
    assert set(res.item_errors) == set(EXPECTED)  # every field says why it has no value
    # the same driver on the device it was made for reads every value
    _, again = read_config(
        {**cfg, "devices": {k: {**d, "address": {**d["address"], "port": sim.port}} for k, d in cfg["devices"].items()}}
    )
    assert again["sunspec_127_0_0_1_1"][1].values == EXPECTED


def test_validate_checks_expect():
    from ammp_edge.core import drivers

    base = {
        "P": {"register": 1, "datatype": "int16"},
        "ID": {"register": 0},
        "s": {"module": "os", "method": "getloadavg"},
    }
    check = lambda expect: [str(p) for p in drivers.check_driver({"fields": base, "expect": expect}, "drivers.d")]
    assert check({"ID": 103}) == []
    assert check({"nope": 1}) == ["drivers.d.expect.nope: no field 'nope' in this driver"]
    assert check({"ID": [1]}) == ["drivers.d.expect.ID: [1] is not a number or a text"]
    assert check({"ID": True}) == ["drivers.d.expect.ID: True is not a number or a text"]
    assert check({"s": 1}) == ["drivers.d.expect.s: field 's' is not a Modbus register field"]
    assert check([]) == ["drivers.d.expect: must be an object of field name -> the value it must read"]


def test_the_model_definitions_are_vendored_with_their_licence_and_version():
    import json as _json
    import tomllib

    from ammp_edge.core import paths
    from helpers.common import REPO

    folder = paths.sunspec_models_dir()
    assert (folder / "LICENSE").read_text().lstrip().startswith("Apache License")
    notes = (folder / "README.md").read_text()
    assert sunspec.DEFINITIONS_VERSION == "pysunspec2 1.3.7" and "pysunspec2 1.3.7" in notes
    for model_id in sunspec.SUPPORTED:
        doc = _json.loads((folder / f"model_{model_id}.json").read_text())
        assert doc["id"] == model_id and doc["group"]["points"][0]["name"] == "ID"
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "sunspec_models/*" in package_data["ammp_edge"]  # shipped in the wheel (the images install it)
