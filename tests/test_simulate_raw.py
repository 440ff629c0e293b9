"""`ammp-edge simulate` for byte-stream drivers: a rawtcp driver served on TCP, a rawserial one on a
pty, read back by the readers the buses use."""

from __future__ import annotations

import json
import subprocess

import pytest

from ammp_edge.bus.poller import BusPoller
from ammp_edge.core import config as cfg
from ammp_edge.simulate_raw import RawSimulator
from helpers.common import AMMP_EDGE, child_env, free_port, write_json
from helpers.serial_lines import pty_pair


def read_once(doc: dict, builtin) -> dict:
    config = cfg.load(doc, builtin)
    ((bus_id, devices),) = config.buses().items()
    poller = BusPoller(bus_id, devices, 60)
    try:
        return poller.poll(1_700_000_000)
    finally:
        poller.close()


def device(rt: str, driver: str, address: dict, fields) -> dict:
    return {
        "devices": {"d": {"driver": driver, "reading_type": rt, "vendor_id": "v", "timeout": 1, "address": address}},
        "readings": {f"r_{f}": {"device": "d", "var": f} for f in fields},
    }


def test_rawtcp_driver_on_tcp(builtin_drivers):
    sim = RawSimulator(builtin_drivers["eastron_sdm_lora"], {"V_L1": 230.5}, port=0, device_args={"unit_id": 7})
    sim.start()
    try:
        doc = device(
            "rawtcp",
            "eastron_sdm_lora",
            {"host": "127.0.0.1", "port": sim.port, "unit_id": 7},
            ["V_L1", "V_L2", "I_L1", "freq", "P_total"],
        )
        readout = read_once(doc, builtin_drivers)
    finally:
        sim.stop()
    assert readout["errors"] == {}
    rec = readout["devices"][0]
    assert (rec["V_L1"], rec["V_L2"], rec["I_L1"], rec["freq"], rec["P_total"]) == (230.5, 230.0, 10.0, 50.0, 1000.0)
    assert sim.requests == 5


def test_rawtcp_other_unit_gets_no_answer(builtin_drivers):
    sim = RawSimulator(builtin_drivers["eastron_sdm_lora"], port=0, device_args={"unit_id": 7}).start()
    try:
        doc = device("rawtcp", "eastron_sdm_lora", {"host": "127.0.0.1", "port": sim.port, "unit_id": 8}, ["V_L1"])
        doc["devices"]["d"]["timeout"] = 0.3
        readout = read_once(doc, builtin_drivers)
    finally:
        sim.stop()
    assert readout["devices"] == [{"_d": "d", "_vid": "v"}] and sim.requests == 0


def test_rawserial_driver_on_a_pty(tmp_path, builtin_drivers):
    fields = ["M1_V1", "M1_temp1", "M1_I", "M2_V"]
    with pty_pair(tmp_path) as (a, b):
        sim = RawSimulator(builtin_drivers["pylontech_rs485"], {"M1_V1": 3.301, "M1_I": -1.5}, serial_port=b).start()
        try:
            readout = read_once(device("rawserial", "pylontech_rs485", {"device": a}, fields), builtin_drivers)
        finally:
            sim.stop()
    assert readout["errors"] == {} and readout["requests"] == 2  # module 1 and module 2: two queries
    rec = readout["devices"][0]
    assert (rec["M1_V1"], rec["M1_temp1"], rec["M1_I"]) == (3.301, 25.0, -1.5)
    assert rec["M2_V"] == 1.0  # 230 V does not fit a uint16 of mV: a raw 1000, scaled


def test_a_driver_whose_template_cannot_be_met_says_so(builtin_drivers):
    with pytest.raises(ValueError, match="does not match the driver's resp_template; this driver cannot be simulated"):
        RawSimulator(builtin_drivers["steca_solarix_pli"], serial_port="/dev/null")


def test_cli_simulate_then_read(tmp_path):
    port = free_port()
    sim = subprocess.Popen(
        [*AMMP_EDGE, "simulate", "--driver", "eastron_sdm_lora", "--port", str(port), "--unit", "3"],
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(AE_TEMP_DIR=tmp_path / "tmp"),
    )
    try:
        assert sim.stdout is not None
        line = sim.stdout.readline()
        assert f"simulating eastron_sdm_lora (rawtcp) on 127.0.0.1:{port}" in line
        path = write_json(
            tmp_path / "site.json",
            device("rawtcp", "eastron_sdm_lora", {"host": "127.0.0.1", "port": port, "unit_id": 3}, ["V_L3", "freq"]),
        )
        out = subprocess.run(
            [*AMMP_EDGE, "read", "--config", str(path), "--json"], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["r"] == [{"_d": "d", "_vid": "v", "V_L3": 230.0, "freq": 50.0}]
    finally:
        sim.terminate()
        sim.wait(10)
