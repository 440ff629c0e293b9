"""The rawserial reader on real serial lines: a socat pty pair with a scripted responder on one end
(tests/helpers/raw_lines.py), our BusPoller on the other, with the upstream Steca, Pylontech and
Holykell drivers. Every answer frame below is written out by hand and every expected value read off
it by hand (the positions are the drivers' 0-based `pos`).
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from ammp_edge.bus.poller import BusPoller
from ammp_edge.core import config as cfg
from helpers.common import AMMP_EDGE, REPO, UPSTREAM_DRIVERS, child_env, write_json
from helpers.raw_lines import RawSerialResponder, answer_queries
from helpers.serial_lines import pty_pair, read_response

T0 = 1_700_000_000

# -- Steca Solarix PLI (Voltronic protocol) -----------------------------------------------------------
QPIGS = b"QPIGS\xb7\xa9\r"  # the driver's query 0x5150494753B7A90D: QPIGS, its CRC, CR
QMOD = b"QMOD\x49\xc1\r"
# (BBB.B CC.C DDD.D EE.E FFFF GGGG HHH III JJ.JJ KKK OOO TTTT EEEE UUU.U WW.WW PPPPP b7..b0 QQ VV MMMMM b10b9b8
# then two CRC bytes (here 0a 35: a 0x0a, which upstream's template '.' did not match) and CR
QPIGS_ANSWER = (
    b"(230.1 50.0 229.9 50.0 0459 0403 009 405 26.90 012 087 0035 0012 097.2 26.92 00000 00110110 00 00 00336 010"
    b"\x0a\x35\r"
)
QMOD_ANSWER = b"(B\x3d\x7c\r"
STECA_VALUES = {
    "grid_in_V": 230.1,  # pos 1, 5 chars: "230.1"
    "grid_in_freq": 50.0,  # pos 7: "50.0"
    "binv_V": 229.9,  # pos 12: "229.9"
    "binv_freq": 50.0,  # pos 18: "50.0"
    "binv_S": 459.0,  # pos 23: "0459"
    "binv_P": 403.0,  # pos 28: "0403"
    "batt_V": 26.9,  # pos 41: "26.90"
    "batt_I_chg": 12.0,  # pos 47: "012"
    "batt_soc": 87.0,  # pos 51: "087"
    "binv_temp": 35.0,  # pos 55: "0035"
    "pv_I": 12.0,  # pos 60: "0012"
    "pv_V": 97.2,  # pos 65: "097.2"
    "batt_I_dischg": 0.0,  # pos 77: "00000"
    "state_sbu_priority": 0,  # pos 83: b7 of "00110110"
    "state_load": 1,  # pos 86: b4
    "state_charging": 1,  # pos 88: b2
    "state_charging_pv": 1,  # pos 89: b1
    "state_charging_grid": 1,  # pos 89 too (an upstream driver defect, drivers/README.md)
    "pv_Pdc": 336.0,  # pos 98: "00336"
    "state_charging_float": 0,  # pos 104: b10 of "010"
    "state_on": 1,  # pos 105: b9
    "mode": "B",  # QMOD answer "(B" + CRC + CR, pos 1
}

# -- Pylontech (RS-485 ASCII protocol), module 1 at address 02 ---------------------------------------
PYLON_Q1 = b"~20024642E00202FD33\r"
PYLON_INFO = (
    b"11"  # 13-14 data flag
    b"02"  # 15-16 pack address
    b"0F"  # 17-18 cells: 15
    b"0CE50CE60CE70CE80CE90CEA0CEB0CEC0CED0CEE0CEF0CF00CF10CF20CF3"  # 19-78: 3301 .. 3315 mV
    b"05"  # 79-80 temperatures: 5
    b"0BA50BAF0BB90BC30BCD"  # 81-100: 2981 2991 3001 3011 3021 (0.1 K)
    b"FFF6"  # 101-104 current int16 -10 (0.1 A)
    b"BF68"  # 105-108 voltage 49000 mV
    b"9C40"  # 109-112 remaining capacity 40000 mAh
    b"02"  # 113-114 user defined
    b"C350"  # 115-118 total capacity 50000 mAh
    b"0023"  # 119-122 cycles 35
)


def pylontech_frame(adr: bytes, info: bytes) -> bytes:
    """~ VER ADR CID1 RTN LENGTH INFO CHKSUM CR, with the protocol's length and frame checksums."""
    lenid = len(info)
    lchk = (-(sum(int(d, 16) for d in f"{lenid:03X}")) % 16) & 0xF
    body = b"20" + adr + b"46" + b"00" + f"{lchk:X}{lenid:03X}".encode() + info
    chk = (-sum(body)) % 0x10000
    return b"~" + body + f"{chk:04X}".encode() + b"\r"


PYLON_ANSWER = pylontech_frame(b"02", PYLON_INFO)
PYLON_VALUES = {
    "M1_V1": 3.301,
    "M1_V2": 3.302,
    "M1_V15": 3.315,
    "M1_temp1": 25.0,  # 2981 x 0.1 - 273.1
    "M1_temp2": 26.0,
    "M1_temp5": 29.0,
    "M1_I": -1.0,  # int16 0xFFF6 = -10, x 0.1
    "M1_V": 49.0,
    "M1_capacity_remaining": 40.0,
    "M1_capacity_total": 50.0,
    "M1_cycle_number": 35,
}

# -- Holykell UE3003 ultrasonic level: the distance as text at pos 10, 5 characters (the rest of the
# frame is not in the upstream driver; this one puts a 10-byte head and a unit after it)
HK_Q1, HK_Q2 = bytes.fromhex("F00601010179"), bytes.fromhex("F0060102017A")
HK_A1, HK_A2 = b"\xf0\x06\x01\x01HKL-D=" + b"01234" + b"mm\r\n", b"\xf0\x06\x01\x02HKL-D=" + b"00987" + b"mm\r\n"


@pytest.fixture
def line(tmp_path):
    with pty_pair(tmp_path) as ends:
        yield ends


def raw_config(port: str, driver: str, vars_, timeout: float = 1.0, drivers: dict | None = None, **addr) -> dict:
    return {
        "devices": {
            "dev": {
                "driver": driver,
                "reading_type": "rawserial",
                "vendor_id": "v-1",
                "timeout": timeout,
                "address": {"device": port, "baudrate": 9600, **addr},
            }
        },
        "readings": {f"dev_{v}": {"device": "dev", "var": v} for v in vars_},
        "drivers": drivers or {},
        "read_interval": 60,
    }


def load(doc: dict, builtin_drivers) -> cfg.Config:
    return cfg.load(doc, builtin_drivers)


def poll(config: cfg.Config, t: int = T0, poller: BusPoller | None = None) -> tuple[dict, BusPoller]:
    ((bus_id, devices),) = config.buses().items()
    poller = poller or BusPoller(bus_id, devices, config.read_interval)
    return poller.poll(t), poller


def record(readout: dict, key: str = "dev") -> dict:
    return next(r for r in readout["devices"] if r["_d"] == key)


def test_upstream_drivers_are_the_built_in_ones():
    for name in ("steca_solarix_pli", "pylontech_rs485", "holykell_ue3003"):
        assert json.loads((REPO / "drivers" / f"{name}.json").read_text()) == json.loads(
            (UPSTREAM_DRIVERS / f"{name}.json").read_text()
        )


def test_steca_two_queries_for_22_fields(line, builtin_drivers):
    config = load(raw_config(line[0], "steca_solarix_pli", STECA_VALUES), builtin_drivers)
    assert not config.errors, config.problems
    with RawSerialResponder(line[1], answer_queries({QPIGS: QPIGS_ANSWER, QMOD: QMOD_ANSWER})) as dev:
        readout, poller = poll(config)
        poller.close()
    rec = record(readout)
    assert {k: rec.get(k) for k in STECA_VALUES} == STECA_VALUES
    assert readout["errors"] == {}
    assert readout["requests"] == 2  # one per distinct query, cached for the other fields
    assert [q for _, q, _, _ in dev.log] == [QPIGS, QMOD]
    # the answer ends 0.1 s after its last byte, not after upstream's blind second per query
    assert readout["duration"] < 2 * 1.0


def test_pylontech_hex_fields(line, builtin_drivers):
    config = load(raw_config(line[0], "pylontech_rs485", PYLON_VALUES), builtin_drivers)
    with RawSerialResponder(line[1], answer_queries({PYLON_Q1: PYLON_ANSWER})):
        readout, poller = poll(config)
        poller.close()
    rec = record(readout)
    assert {k: rec.get(k) for k in PYLON_VALUES} == PYLON_VALUES
    assert readout["requests"] == 1 and readout["errors"] == {}


def test_holykell_text_fields_and_the_answer_in_parts(line, builtin_drivers):
    """An answer in three parts with pauses shorter than the quiet period is one answer."""
    config = load(raw_config(line[0], "holykell_ue3003", ["dist_1", "dist_2"]), builtin_drivers)
    parts = [(0.0, HK_A1[:6]), (0.03, HK_A1[6:13]), (0.03, HK_A1[13:])]
    with RawSerialResponder(line[1], answer_queries({HK_Q1: parts, HK_Q2: HK_A2})) as dev:
        readout, poller = poll(config)
        poller.close()
    rec = record(readout)
    assert (rec["dist_1"], rec["dist_2"]) == (1234.0, 987.0)
    assert readout["errors"] == {}
    # each query waited for the previous answer to end: no request was sent while one was answered
    for (_, _, _, done), (_, _, got, _) in zip(dev.log, dev.log[1:]):
        assert got >= done


def test_quiet_period_is_measured_from_the_last_byte(line, builtin_drivers):
    """A device that pauses 0.3 s inside its answer is cut there with the default 0.1 s quiet (the
    value then lies beyond the short answer: an error, not a wrong value); with resp_quiet 0.5 the
    whole answer is read."""
    driver = json.loads((REPO / "drivers" / "holykell_ue3003.json").read_text())
    parts = [(0.0, HK_A1[:8]), (0.3, HK_A1[8:])]
    config = load(raw_config(line[0], "holykell_ue3003", ["dist_1"]), builtin_drivers)
    with RawSerialResponder(line[1], answer_queries({HK_Q1: parts})):
        readout, poller = poll(config)
        poller.close()
    assert "dist_1" not in record(readout)
    assert "short answer: 8 bytes, the value is bytes 10..14" in " ".join(readout["errors"]["dev"])

    slow = {**driver, "common": {**driver["common"], "resp_quiet": 0.5}}
    config = load(raw_config(line[0], "hk", ["dist_1"], drivers={"hk": slow}), builtin_drivers)
    with RawSerialResponder(line[1], answer_queries({HK_Q1: parts})):
        readout, poller = poll(config)
        poller.close()
    assert record(readout)["dist_1"] == 1234.0


def with_common(name: str, **common) -> dict:
    driver = json.loads((REPO / "drivers" / f"{name}.json").read_text())
    return {**driver, "common": {**driver["common"], **common}}


BAD_ANSWERS = [
    # (what, driver override, answer, the error expected)
    ("short", {}, HK_A1[:12], "short answer: 12 bytes, the value is bytes 10..14"),
    ("not a number", {}, HK_A1[:10] + b"01x34mm\r\n", "'01x34' is not a number"),
    ("nan is no number", {}, HK_A1[:10] + b"  nanmm\r\n", "'  nan' is not a number"),
    ("invalid UTF-8", {}, HK_A1[:10] + b"01\xff34mm\r\n", "is not UTF-8 text"),
    ("too long", {}, HK_A1 + b"x" * 5000, "answer longer than 4096 bytes"),
    ("no terminator", {"resp_termination": "\r\n"}, HK_A1[:-2], "no terminator b'\\r\\n' within"),
    ("after the terminator", {"resp_termination": "\r"}, HK_A1, "1 byte(s) followed the terminator"),
    (
        "template",
        {"resp_template": "\\xf0\\x06\\x01.HKL-D=\\d{5}mm"},
        HK_A1[:10] + b"0123Amm\r\n",
        "answer does not match resp_template",
    ),
]


@pytest.mark.parametrize("what,common,answer,error", BAD_ANSWERS, ids=[b[0] for b in BAD_ANSWERS])
def test_bad_bytes_give_an_error_never_a_value(line, builtin_drivers, what, common, answer, error):
    drivers = {"hk": with_common("holykell_ue3003", **common)}
    config = load(raw_config(line[0], "hk", ["dist_1", "dist_2"], drivers=drivers), builtin_drivers)
    good = HK_A2[:-1] if common.get("resp_termination") == "\r" else HK_A2  # ends at the terminator
    with RawSerialResponder(line[1], answer_queries({HK_Q1: answer, HK_Q2: good})):
        readout, poller = poll(config)
        assert "dist_1" not in record(readout)
        assert error in " ".join(readout["errors"]["dev"]), readout["errors"]
        assert record(readout)["dist_2"] == 987.0  # the other query of the device is read all the same
        # the bus keeps running: the next cycle reads again (and the line was drained)
        readout2, _ = poll(config, T0 + 60, poller)
        poller.close()
    assert record(readout2)["dist_2"] == 987.0


def test_template_with_a_good_answer_and_dotall(line, builtin_drivers):
    """The Steca template matches an answer whose CRC holds 0x0a (upstream's '.' did not), and the
    same template rejects an answer with a letter where a digit belongs: every field of that query fails."""
    config = load(raw_config(line[0], "steca_solarix_pli", ["grid_in_V", "batt_soc", "mode"]), builtin_drivers)
    bad = QPIGS_ANSWER.replace(b"26.90", b"26.9O")
    with RawSerialResponder(line[1], answer_queries({QPIGS: bad, QMOD: QMOD_ANSWER})):
        readout, poller = poll(config)
        poller.close()
    rec = record(readout)
    assert "grid_in_V" not in rec and "batt_soc" not in rec and rec["mode"] == "B"
    errors = readout["errors"]["dev"]
    assert sum("does not match resp_template" in e for e in errors) == 1  # said once for the query


def test_silent_device_costs_one_timeout_per_attempt_and_backs_off(line, builtin_drivers):
    config = load(raw_config(line[0], "steca_solarix_pli", STECA_VALUES, timeout=0.3), builtin_drivers)
    with RawSerialResponder(line[1], answer_queries({})) as dev:
        ((bus_id, devices),) = config.buses().items()
        poller = BusPoller(bus_id, devices, 60)
        first = poller.poll(T0)
        assert record(first) == {"_d": "dev", "_vid": "v-1"}  # still published, without values
        assert first["requests"] == 2  # both queries tried, each its own timeout (within the deadline)
        assert first["errors"]["dev"] == [  # the late-answer watch after QPIGS took the rest of the deadline
            f"request {QPIGS!r}: no answer to the query within 0.3 s on {line[0]}",
            f"request {QMOD!r}: the deadline passed while {line[0]} settled; not sent",
        ]
        assert poller.health["dev"].failures == 1
        started = time.monotonic()
        second = poller.poll(T0 + 60)  # found down: its first query only
        took = time.monotonic() - started
        assert second["requests"] == 1 and took < 0.3 + 1.0
        assert "not asked: the device is not answering" in " ".join(second["errors"]["dev"])
        third = poller.poll(T0 + 120)  # backed off (0, 1, 3 ... cycles): not asked at all
        assert third["requests"] == 0 and "backed off" in third["errors"]["dev"][0]
        assert record(third) == {"_d": "dev", "_vid": "v-1"}
        dev.script = answer_queries({QPIGS: QPIGS_ANSWER, QMOD: QMOD_ANSWER})
        fourth = poller.poll(T0 + 180)
        poller.close()
    assert record(fourth)["grid_in_V"] == 230.1 and poller.health["dev"].failures == 0
    assert fourth["requests"] == 2 and fourth["errors"] == {}


def test_shares_the_port_with_modbus_rtu(line, builtin_drivers):
    """A Modbus RTU meter and a Pylontech on one port: one bus, one transaction at a time, both read."""
    doc = raw_config(line[0], "pylontech_rs485", ["M1_V1", "M1_I"])
    doc["devices"]["meter"] = {
        "driver": "eastron_sdm530",
        "reading_type": "modbusrtu",
        "vendor_id": "m-1",
        "timeout": 1,
        "address": {"device": line[0], "slaveaddr": 3, "baudrate": 9600},
    }
    doc["readings"]["m_v"] = {"device": "meter", "var": "V_L1"}
    config = load(doc, builtin_drivers)
    assert list(config.buses()) == ["serial_" + line[0].strip("/").replace("/", "_")]

    def rtu(req):
        unit, fncode, address, count = req
        return read_response(unit, fncode, [0x4366, 0x8000] + [0] * (count - 2)) if unit == 3 else None

    with RawSerialResponder(line[1], answer_queries({PYLON_Q1: PYLON_ANSWER}), rtu=rtu) as dev:
        readout, poller = poll(config)
        readout2, _ = poll(config, T0 + 60, poller)
        poller.close()
    for r in (readout, readout2):
        assert record(r)["M1_V1"] == 3.301 and record(r)["M1_I"] == -1.0
        assert record(r, "meter")["V_L1"] == 230.5
        assert r["errors"] == {}
    assert sorted(kind for kind, *_ in dev.log) == ["raw", "raw", "rtu", "rtu"]
    for (_, _, _, done), (_, _, got, _) in zip(dev.log, dev.log[1:]):
        assert got >= done  # never a request while the line carried an answer


def test_other_line_settings_on_the_same_port_are_an_error(line, builtin_drivers):
    doc = raw_config(line[0], "pylontech_rs485", ["M1_V1"], baudrate=115200)
    doc["devices"]["meter"] = {
        "driver": "eastron_sdm530",
        "reading_type": "modbusrtu",
        "vendor_id": "m-1",
        "address": {"device": line[0], "slaveaddr": 3, "baudrate": 9600},
    }
    doc["readings"]["m_v"] = {"device": "meter", "var": "V_L1"}
    doc["devices"] = {"meter": doc["devices"]["meter"], "dev": doc["devices"]["dev"]}
    config = load(doc, builtin_drivers)
    ((bus_id, devices),) = config.buses().items()
    poller = BusPoller(bus_id, devices, 60)
    assert "line settings (115200, 8, 'n', 1.0) differ" in poller.setup_errors["dev"]
    poller.close()


def test_driver_problems_have_json_paths(builtin_drivers):
    bad = {
        "fields": {
            "a": {"query": "0x0102", "pos": -1, "length": 2},
            "b": {"query": "0x0102", "pos": 0, "length": 3, "datatype": "uint16"},
            "c": {"query": "0x0102", "pos": 0, "length": 3, "parse_as": "hex"},
            "d": {"query": "0x0102", "pos": 0, "length": 2, "resp_template": "("},
            "e": {"query": "0x0102", "pos": 0, "length": 2, "parse_as": "str", "multiplier": 2},
            "f": {"query": "", "pos": 0, "length": 2},
            "g": {"query": "0x0102", "pos": 0, "length": 3},
        }
    }
    doc = raw_config("/dev/ttyX", "bad", list(bad["fields"]), drivers={"bad": bad})
    config = load(doc, builtin_drivers)
    got = {p.path: p.message for p in config.errors}
    assert got == {
        "drivers.bad.fields.a.pos": "-1 is outside 0..4095",
        "drivers.bad.fields.b.length": "3 bytes do not hold a uint16 (2 needed)",
        "drivers.bad.fields.c.length": "3 hex digits do not make whole bytes",
        "drivers.bad.fields.d.resp_template": "not a regular expression: missing ), unterminated subpattern at "
        "position 0",
        "drivers.bad.fields.e.typecast": "parse_as str with multiplier or offset needs typecast int or float",
        "drivers.bad.fields.f.query": "'' is not a non-empty string ('0x' hex bytes or text)",
        "drivers.bad.fields.g.datatype": "missing, and 3 bytes do not imply one (1, 2, 4 or 8 do)",
    }
    assert "dev" not in config.devices  # nothing left to read


def test_ammp_edge_read_uses_the_same_reader(line, tmp_path):
    path = write_json(tmp_path / "site.json", raw_config(line[0], "pylontech_rs485", ["M1_V1", "M1_temp1"]))
    with RawSerialResponder(line[1], answer_queries({PYLON_Q1: PYLON_ANSWER})):
        out = subprocess.run(
            [*AMMP_EDGE, "read", "--config", str(path), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            env=child_env(AE_TEMP_DIR=tmp_path / "tmp", AE_DATA_DIR=tmp_path / "data"),
        )
    assert out.returncode == 0, out.stderr
    msg = json.loads(out.stdout)
    assert msg["r"] == [{"_d": "dev", "_vid": "v-1", "M1_V1": 3.301, "M1_temp1": 25.0}]


def test_web_ui_device_test_reads_with_the_same_reader(line, builtin_drivers):
    from ammp_edge.webui import probe

    doc = raw_config(line[0], "steca_solarix_pli", [])["devices"]["dev"]
    with RawSerialResponder(line[1], answer_queries({QPIGS: QPIGS_ANSWER, QMOD: QMOD_ANSWER})):
        result = probe.read_device(probe.build_device(doc, {}, builtin_drivers))
    rows = {r["name"]: r for r in result["fields"]}
    assert {n: r["value"] for n, r in rows.items()} == STECA_VALUES  # every field of the driver
    assert rows["grid_in_V"]["raw"] == ["32", "33", "30", "2e", "31"] and rows["grid_in_V"]["where"] == "byte 1+5"
    assert [a["request"] for a in result["answers"]] == [QPIGS.hex(" "), QMOD.hex(" ")]
    assert result["answers"][0]["answer"] == QPIGS_ANSWER.hex(" ") and result["answers"][0]["error"] is None


def test_environment_scan_probes_rawserial_devices_with_the_same_reader(line):
    """The serial scan runs upstream's Modbus signatures, then a Pylontech and a Holykell UE3003 query
    through the rawserial reader, on the same line."""
    from ammp_edge.node.scan import serial as serial_probe

    with RawSerialResponder(line[1], answer_queries({PYLON_Q1: PYLON_ANSWER}), rtu=lambda req: None):
        result = serial_probe.serial_scan(line[0], timeout=0.1)
    assert len(result) == len(serial_probe.SIGNATURES) + 2
    assert all(text.startswith("Error: no answer") for _, text in result[:-2])
    assert result[-2] == [
        "Testing Pylontech battery (module 1) (pylontech_rs485 M1_V) at baud rate 9600",
        "Got test response for total voltage (V) = 49.0 ==> SUCCESS: Device Pylontech battery (module 1) present "
        "at baud rate = 9600",
    ]
    test, text = result[-1]
    assert test == "Testing Holykell UE3003 ultrasonic sensor (holykell_ue3003 dist_1) at baud rate 9600"
    assert text.startswith("Error: no answer to the query within 0.1 s") and "SUCCESS" not in text


def test_a_stopping_bus_cuts_a_silent_query_short(line, builtin_drivers):
    """SIGTERM (the bus's stop event) ends a wait on a silent device within its grace and a slice,
    whatever the timeout; the device is left out of the cycle, not counted as down."""
    import threading

    from ammp_edge.readers.modbus import STOP_GRACE

    config = load(raw_config(line[0], "steca_solarix_pli", ["grid_in_V"], timeout=30), builtin_drivers)
    ((bus_id, devices),) = config.buses().items()
    stop = threading.Event()
    poller = BusPoller(bus_id, devices, 60, stop=stop)
    with RawSerialResponder(line[1], answer_queries({})):
        threading.Timer(0.3, stop.set).start()
        started = time.monotonic()
        readout = poller.poll(T0)
        took = time.monotonic() - started
        poller.close()
    assert 0.3 + STOP_GRACE - 0.1 < took < 0.3 + STOP_GRACE + 1.5
    assert readout["devices"] == [] and readout.get("stopped") is True
    assert poller.health["dev"].failures == 0


def test_the_bus_process_reads_modbus_and_rawserial_on_one_port(line, tmp_path, isolated_dirs):
    """`ammp-edge bus` for the serial port: both devices in every readout committed to the outbox."""
    import signal

    from ammp_edge.delivery.outbox import Outbox
    from helpers.brokers import wait_until

    data, _ = isolated_dirs
    doc = raw_config(line[0], "pylontech_rs485", ["M1_V1"])
    doc["devices"]["meter"] = {
        "driver": "eastron_sdm530",
        "reading_type": "modbusrtu",
        "vendor_id": "m-1",
        "timeout": 1,
        "address": {"device": line[0], "slaveaddr": 3},
    }
    doc["readings"]["m_v"] = {"device": "meter", "var": "V_L1"}
    doc["read_interval"] = 1
    f = write_json(tmp_path / "c.json", doc)

    def rtu(req):
        return read_response(req[0], req[1], [0x4366, 0x8000] + [0] * (req[3] - 2)) if req[0] == 3 else None

    from ammp_edge.core import drivers

    config = cfg.load(doc, drivers.load_builtin_drivers(REPO / "drivers"))
    (bus_id,) = config.buses()
    with RawSerialResponder(line[1], answer_queries({PYLON_Q1: PYLON_ANSWER}), rtu=rtu):
        proc = subprocess.Popen([*AMMP_EDGE, "bus", bus_id, "--config", str(f)], stderr=subprocess.PIPE, text=True)
        try:
            box = Outbox(data / "outbox")
            assert wait_until(lambda: len(list(box.pending(100))) >= 2, 60)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=20)
    records = [r for _, r in box.pending(100)]
    box.close()
    assert proc.returncode == 0, err
    for r in records[:2]:
        assert r["bus"] == bus_id and r["errors"] == {}
        assert {d["_d"]: d for d in r["devices"]} == {
            "dev": {"_d": "dev", "_vid": "v-1", "M1_V1": 3.301},
            "meter": {"_d": "meter", "_vid": "m-1", "V_L1": 230.5},
        }
