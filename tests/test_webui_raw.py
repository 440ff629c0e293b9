"""The web UI's device test over HTTP for byte-stream devices: a configured rawserial device on a pty
and a rawtcp one entered in the form, read by the buses' readers, requests and answers shown."""

from __future__ import annotations

from ammp_edge.core.kvs import KVStore
from ammp_edge.simulate_raw import RawSimulator
from helpers.raw_lines import RawSerialResponder, answer_queries
from helpers.serial_lines import pty_pair
from test_rawserial import PYLON_ANSWER, PYLON_Q1
from test_unsupported_types import NOT_YET
from test_webui import csrf_of, login, webui  # noqa: F401 (the fixture)


def test_device_test_of_rawserial_and_rawtcp(webui, tmp_path, builtin_drivers):  # noqa: F811
    sim = RawSimulator(builtin_drivers["eastron_sdm_lora"], {"V_L1": 231.5}, port=0, device_args={"unit_id": 4})
    sim.start()
    with pty_pair(tmp_path) as (a, b), RawSerialResponder(b, answer_queries({PYLON_Q1: PYLON_ANSWER})):
        config = {
            "devices": {
                "bms": {
                    "driver": "pylontech_rs485",
                    "reading_type": "rawserial",
                    "vendor_id": "b",
                    "timeout": 0.3,
                    "address": {"device": a},
                },
                "off": {"driver": "snmp_demo", "reading_type": NOT_YET[0] if NOT_YET else "sys", "vendor_id": "o"},
            },
            "readings": {"v": {"device": "bms", "var": "M1_V1"}},
        }
        KVStore().set("config", config)
        s = login(webui)
        token = csrf_of(s, webui, "/test")
        r = s.post(webui + "/api/test/read", json={"device": "bms"}, headers={"X-CSRF-Token": token}).json()
        rows = {f["name"]: f for f in r["fields"]}
        assert rows["M1_V1"]["value"] == 3.301 and rows["M1_V1"]["raw"] == ["30", "43", "45", "35"]  # "0CE5"
        assert rows["M1_V1"]["where"] == "byte 19+4" and rows["M1_V1"]["error"] is None
        assert rows["M2_V1"]["value"] is None and "no answer to the query" in rows["M2_V1"]["error"]
        answers = {a["request"]: a for a in r["answers"]}
        assert answers[PYLON_Q1.hex(" ")]["answer"] == PYLON_ANSWER.hex(" ")
        r = s.post(
            webui + "/api/test/register",
            json={"device": "bms", "register": 1, "fncode": 3},
            headers={"X-CSRF-Token": token},
        )
        assert r.status_code == 400 and r.json()["error"] == "a rawserial device has no registers"
    manual = {
        "driver": "eastron_sdm_lora",
        "reading_type": "rawtcp",
        "host": "127.0.0.1",
        "port": str(sim.port),
        "unit_id": "4",
    }
    r = s.post(webui + "/api/test/read", json=manual, headers={"X-CSRF-Token": token}).json()
    sim.stop()
    values = {f["name"]: f["value"] for f in r["fields"]}
    assert values["V_L1"] == 231.5 and values["freq"] == 50.0 and len(values) == 26
    if NOT_YET:  # a reading type not supported yet is refused by name
        r = s.post(webui + "/api/test/read", json={"device": "off"}, headers={"X-CSRF-Token": token})
        assert r.status_code == 400 and f"{NOT_YET[0]!r} is not supported by this version yet" in r.json()["error"]
