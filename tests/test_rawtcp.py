"""The rawtcp reader against a scripted TCP responder on loopback (tests/helpers/raw_lines.py), with
the upstream `eastron_sdm_lora` driver (an Eastron SDM behind a LoRa gateway). Frames worked out by
hand: request = unit_id (4 bytes) 01 fncode register(2) words(2) CRC (low byte first); answer =
unit_id (4) 01 fncode byte-count value CRC, the value at 1-based byte 8.
"""

from __future__ import annotations

import json
import struct
import subprocess

import pytest

from ammp_edge.bus.poller import BusPoller
from ammp_edge.core import config as cfg
from helpers.common import AMMP_EDGE, REPO, UPSTREAM_DRIVERS, child_env, write_json
from helpers.raw_lines import RawTcpResponder
from helpers.serial_lines import crc16

T0 = 1_700_000_000
# the request for V_L1 (register 0, 2 words, fncode 4) of unit 7, by hand; CRC over the ten bytes before it
V_L1_REQUEST = bytes.fromhex("00000007 01 04 0000 0002") + crc16(bytes.fromhex("00000007010400000002"))
LORA_VALUES = {  # float32-exact values
    "V_L1": 230.5,
    "V_L2": 231.25,
    "I_L1": 10.5,
    "P_total": 7500.75,
    "freq": 50.0,
    "E_imported": 125500.0,  # 125.5 kWh x 1000
    "E_total": 127750.0,
}
REGISTERS = {0: 230.5, 2: 231.25, 6: 10.5, 52: 7500.75, 70: 50.0, 72: 125.5, 342: 127.75}


def answer_for(request: bytes, *, value: bytes | None = None) -> bytes:
    """unit(4) 01 fc bytecount value CRC for a request of the schema above."""
    unit, fc = request[:4], request[5]
    register, words = int.from_bytes(request[6:8], "big"), int.from_bytes(request[8:10], "big")
    data = value if value is not None else struct.pack(">f", REGISTERS.get(register, 0.0))
    assert value is not None or words == 2
    body = unit + b"\x01" + bytes([fc, len(data)]) + data
    return body + crc16(body)


def lora_config(port: int, vars_=LORA_VALUES, timeout: float = 1.0, **addr) -> dict:
    return {
        "devices": {
            "sdm": {
                "driver": "eastron_sdm_lora",
                "reading_type": "rawtcp",
                "vendor_id": "sdm-1",
                "timeout": timeout,
                "address": {"host": "127.0.0.1", "port": port, "unit_id": 7, **addr},
            }
        },
        "readings": {f"r_{v}": {"device": "sdm", "var": v} for v in vars_},
        "read_interval": 60,
    }


def poller_for(config: cfg.Config) -> BusPoller:
    ((bus_id, devices),) = config.buses().items()
    return BusPoller(bus_id, devices, config.read_interval)


def record(readout: dict) -> dict:
    return next(r for r in readout["devices"] if r["_d"] == "sdm")


def test_driver_is_upstreams():
    assert json.loads((REPO / "drivers" / "eastron_sdm_lora.json").read_text()) == json.loads(
        (UPSTREAM_DRIVERS / "eastron_sdm_lora.json").read_text()
    )


def test_eastron_sdm_lora_in_several_segments(builtin_drivers):
    """Every answer arrives in three TCP segments with pauses: reassembled by its CRC."""

    def script(request: bytes, i: int):
        a = answer_for(request)
        return [(0.0, a[:3]), (0.05, a[3:9]), (0.05, a[9:])]

    with RawTcpResponder(script) as dev:
        config = cfg.load(lora_config(dev.port), builtin_drivers)
        assert config.devices["sdm"].bus_id == f"tcp_127.0.0.1_{dev.port}"
        poller = poller_for(config)
        readout = poller.poll(T0)
        poller.close()
    assert {k: record(readout).get(k) for k in LORA_VALUES} == LORA_VALUES
    assert readout["errors"] == {} and readout["requests"] == len(LORA_VALUES)
    assert dev.requests[0] == V_L1_REQUEST  # the request as worked out by hand
    assert dev.connections == 1  # one connection for the cycle


def test_identical_requests_are_read_once_and_the_connection_is_kept(builtin_drivers):
    driver = json.loads((REPO / "drivers" / "eastron_sdm_lora.json").read_text())
    driver["fields"]["V_again"] = dict(driver["fields"]["V_L1"])
    doc = lora_config(0, ["V_L1", "V_again"])
    doc["drivers"] = {"lora": driver}
    doc["devices"]["sdm"]["driver"] = "lora"
    with RawTcpResponder(lambda r, i: answer_for(r)) as dev:
        doc["devices"]["sdm"]["address"]["port"] = dev.port
        poller = poller_for(cfg.load(doc, builtin_drivers))
        first = poller.poll(T0)
        second = poller.poll(T0 + 60)
        poller.close()
    assert record(first)["V_again"] == record(first)["V_L1"] == 230.5
    assert first["requests"] == second["requests"] == 1
    assert dev.connections == 1  # kept between cycles


BAD = [
    ("wrong CRC", lambda a: a[:-1] + bytes([a[-1] ^ 0xFF]), "no answer with a valid CRC within"),
    (
        "short",
        lambda a: (lambda b: b + crc16(b))(a[:9]),
        "short answer: 11 bytes with its CRC, the value is bytes 8..11",
    ),
    ("long, glued junk", lambda a: a + b"\x00\x01", "no answer with a valid CRC within"),
    ("too long", lambda a: bytes(2000), "answer longer than 1024 bytes"),
    ("closed", lambda a: "close", "connection closed by the device"),
    ("silent", lambda a: None, "no answer to the request within 0.5 s from 127.0.0.1"),
]


@pytest.mark.parametrize("what,mangle,error", BAD, ids=[b[0] for b in BAD])
def test_bad_bytes_give_an_error_never_a_value(builtin_drivers, what, mangle, error):
    """V_L1's answer is bad; the other fields' answers are good and still read; the next cycle too."""

    def script(request: bytes, i: int):
        a = answer_for(request)
        return mangle(a) if request == V_L1_REQUEST else a

    with RawTcpResponder(script) as dev:
        poller = poller_for(cfg.load(lora_config(dev.port, ["V_L1", "V_L2", "freq"], timeout=0.5), builtin_drivers))
        readout = poller.poll(T0)
        again = poller.poll(T0 + 60)
        poller.close()
    for r in (readout, again):
        rec = record(r)
        assert "V_L1" not in rec
        assert (rec["V_L2"], rec["freq"]) == (231.25, 50.0)
        assert error in " ".join(r["errors"]["sdm"]), r["errors"]


def test_silent_device_is_published_and_backed_off(builtin_drivers):
    with RawTcpResponder(lambda r, i: None) as dev:
        poller = poller_for(cfg.load(lora_config(dev.port, timeout=0.3), builtin_drivers))
        first = poller.poll(T0)
        second = poller.poll(T0 + 60)
        third = poller.poll(T0 + 120)
        poller.close()
    assert record(first) == {"_d": "sdm", "_vid": "sdm-1"}
    assert first["requests"] == 2  # two timeouts fill its deadline (2 x timeout), the rest not asked
    assert second["requests"] == 1  # found down: one request per attempt
    assert third["requests"] == 0 and "backed off" in third["errors"]["sdm"][0]


def test_no_listener_is_a_device_error(builtin_drivers):
    from helpers.common import free_port

    poller = poller_for(cfg.load(lora_config(free_port(), ["V_L1"], timeout=0.3), builtin_drivers))
    readout = poller.poll(T0)
    poller.close()
    assert record(readout) == {"_d": "sdm", "_vid": "sdm-1"}
    assert "cannot connect to 127.0.0.1" in readout["errors"]["sdm"][0]


def test_missing_device_arg_is_named(builtin_drivers):
    doc = lora_config(502, ["V_L1"])
    del doc["devices"]["sdm"]["address"]["unit_id"]
    poller = poller_for(cfg.load(doc, builtin_drivers))
    assert poller.setup_errors["sdm"] == (
        "devices.sdm.address.unit_id: None is not an integer, and field V_L1's request needs it"
    )
    readout = poller.poll(T0)
    assert record(readout) == {"_d": "sdm", "_vid": "sdm-1"}
    poller.close()


def test_schema_problems_have_json_paths(builtin_drivers):
    driver = json.loads((REPO / "drivers" / "eastron_sdm_lora.json").read_text())
    seq = driver["common"]["schema"]["request"]["sequence"]
    bad = json.loads(json.dumps(driver))
    bad["fields"] = {
        "a": {"register": 70000},
        "b": {"register": 0, "words": None},
        "c": {"register": "0x10"},
    }
    bad2 = json.loads(json.dumps(driver))
    bad2["common"]["schema"]["request"]["sequence"] = [*seq[:-1], {"type": "crc", "num_bytes": 4}]
    bad2["fields"] = {"d": {"register": 0}}
    doc = lora_config(502, ["a", "b", "c", "d"])
    doc["drivers"] = {"bad": bad, "bad2": bad2}
    doc["devices"]["sdm"]["driver"] = "bad"
    doc["devices"]["sdm2"] = {**doc["devices"]["sdm"], "driver": "bad2"}
    doc["readings"]["r_d"] = {"device": "sdm2", "var": "d"}
    got = {p.path: p.message for p in cfg.load(doc, builtin_drivers).errors}
    assert got == {
        "drivers.bad.fields.a.schema.request.sequence[3]": "input register 70000 does not fit in 2 unsigned byte(s)",
        "drivers.bad.fields.b.schema.request.sequence[4]": "input 'words' is not set by the field (and has no "
        "default_value)",
        "drivers.bad.fields.c.schema.request.sequence[3]": "input register '0x10' is not an integer",
        "drivers.bad2.fields.d.schema.request.sequence[5].num_bytes": "only a 2-byte CRC (Modbus CRC-16) is known",
    }


def test_ammp_edge_read_uses_the_same_reader(tmp_path):
    with RawTcpResponder(lambda r, i: answer_for(r)) as dev:
        path = write_json(tmp_path / "site.json", lora_config(dev.port, ["V_L1", "E_total"]))
        out = subprocess.run(
            [*AMMP_EDGE, "read", "--config", str(path), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            env=child_env(AE_TEMP_DIR=tmp_path / "tmp", AE_DATA_DIR=tmp_path / "data"),
        )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["r"] == [{"_d": "sdm", "_vid": "sdm-1", "V_L1": 230.5, "E_total": 127750.0}]


def test_web_ui_device_test_reads_with_the_same_reader(builtin_drivers):
    from ammp_edge.webui import probe

    def script(request: bytes, i: int):
        return answer_for(request) if request != V_L1_REQUEST else answer_for(request)[:-1] + b"\x00"

    with RawTcpResponder(script) as dev:
        doc = lora_config(dev.port, timeout=0.3)["devices"]["sdm"]
        result = probe.read_device(probe.build_device(doc, {}, builtin_drivers))
    rows = {r["name"]: r for r in result["fields"]}
    assert len(rows) == 26  # every field of the driver
    assert rows["V_L2"]["value"] == 231.25 and rows["V_L2"]["raw"] == ["43", "67", "40", "00"]
    assert rows["V_L1"]["value"] is None and "no answer with a valid CRC" in rows["V_L1"]["error"]
    assert result["answers"][0]["request"] == V_L1_REQUEST.hex(" ") and result["answers"][0]["answer"] is None


def test_a_stopping_bus_cuts_a_silent_request_short(builtin_drivers):
    import threading
    import time

    from ammp_edge.readers.modbus import STOP_GRACE

    with RawTcpResponder(lambda r, i: None) as dev:
        config = cfg.load(lora_config(dev.port, ["V_L1"], timeout=30), builtin_drivers)
        ((bus_id, devices),) = config.buses().items()
        stop = threading.Event()
        poller = BusPoller(bus_id, devices, 60, stop=stop)
        threading.Timer(0.3, stop.set).start()
        started = time.monotonic()
        readout = poller.poll(T0)
        took = time.monotonic() - started
        poller.close()
    assert 0.3 + STOP_GRACE - 0.1 < took < 0.3 + STOP_GRACE + 1.5
    assert readout["devices"] == [] and readout.get("stopped") is True
