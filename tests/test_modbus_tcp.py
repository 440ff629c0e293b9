"""Modbus TCP against real pymodbus servers (and a raw socket device for garbage) on loopback."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from ammp_edge.bus.poller import BusPoller
from ammp_edge.core import config as cfg

SMA_VALUES = {
    "P_total": 12345.0,
    "P_L1": 4115.0,
    "P_L2": 4115.0,
    "P_L3": 4115.0,
    "total_yield": 123 * 65536 + 45678.0,
    "V_L1": 230.12,
    "freq": 50.01,
    "temp_internal": 41.5,
    "dc_in_I1": -0.5,
    "status": 295,
    "condition": 307,
    "Q_total": None,
}


def sma_config(port: int, units=(3,), timeout=1.0, vars_=None, **addr) -> dict:
    vars_ = vars_ or list(SMA_VALUES)
    devices = {
        f"inv{u}": {
            "driver": "sma_stp25000",
            "reading_type": "modbustcp",
            "vendor_id": f"v{u}",
            "timeout": timeout,
            "address": {"host": "127.0.0.1", "port": port, "unit_id": u, **addr},
        }
        for u in units
    }
    readings = {f"{d}_{v}": {"device": d, "var": v} for d in devices for v in vars_}
    return {"devices": devices, "readings": readings, "read_interval": 10}


def poll_once(raw: dict, drivers: dict, t: int = 1_700_000_000) -> tuple[dict, BusPoller]:
    config = cfg.load(raw, drivers)
    assert not config.errors, config.errors
    ((bus_id, devices),) = config.buses().items()
    poller = BusPoller(bus_id, devices, config.read_interval)
    return poller.poll(t), poller


def by_device(readout: dict) -> dict:
    return {r["_d"]: r for r in readout["devices"]}


def test_sma_stp25000_values_and_block_plan(simulator, builtin_drivers):
    driver = builtin_drivers["sma_stp25000"]
    sim = simulator({3: driver}, values={3: SMA_VALUES})
    readout, poller = poll_once(sma_config(sim.port, vars_=list(driver["fields"])), builtin_drivers)
    rec = by_device(readout)["inv3"]
    for k, v in SMA_VALUES.items():
        assert rec[k] == pytest.approx(v) if v is not None else rec[k] is None, k
    assert isinstance(rec["status"], int)
    assert readout["errors"] == {}
    # 31 fields in 5 clusters of registers: 5 requests instead of 31
    assert readout["requests"] == 5
    assert sim.requests == 5
    poller.close()


def test_one_request_per_field_when_merge_is_off(simulator, builtin_drivers):
    driver = builtin_drivers["sma_stp25000"]
    sim = simulator({3: driver}, values={3: SMA_VALUES})
    readout, poller = poll_once(sma_config(sim.port, vars_=list(driver["fields"]), merge=False), builtin_drivers)
    assert readout["requests"] == len(driver["fields"])
    assert by_device(readout)["inv3"]["P_total"] == 12345.0
    poller.close()


def test_gateway_with_a_unit_that_never_answers(simulator, builtin_drivers):
    driver = builtin_drivers["sma_stp25000"]
    sim = simulator({1: driver, 2: driver}, values={1: SMA_VALUES, 2: {**SMA_VALUES, "P_total": 777.0}})
    raw = sma_config(sim.port, units=(1, 9, 2), timeout=0.5, vars_=["P_total", "status"])
    started = time.monotonic()
    readout, poller = poll_once(raw, builtin_drivers)
    took = time.monotonic() - started
    recs = by_device(readout)
    assert recs["inv1"]["P_total"] == 12345.0
    assert recs["inv2"]["P_total"] == 777.0  # read after the silent unit, on the same connection
    assert recs["inv9"] == {"_d": "inv9", "_vid": "v9"}  # published empty, as upstream
    assert "inv9" in readout["errors"]
    assert 0.4 < took < 2.0  # the silent unit cost its own timeout, once
    # next cycle: the silent unit is retried once more, then backed off
    poller.poll(1_700_000_010)
    started = time.monotonic()
    r3 = poller.poll(1_700_000_020)
    assert time.monotonic() - started < 0.3, "a failing unit must be skipped while backed off"
    assert "backed off" in r3["errors"]["inv9"][0]
    assert by_device(r3)["inv2"]["P_total"] == 777.0
    poller.close()


def test_merged_block_refused_is_split_and_plan_remembered(simulator, builtin_drivers):
    driver = builtin_drivers["sma_stp25000"]
    sim = simulator({3: driver}, values={3: SMA_VALUES}, strict=True)  # gaps between fields: illegal address
    raw = sma_config(sim.port, vars_=list(driver["fields"]))
    readout, poller = poll_once(raw, builtin_drivers)
    rec = by_device(readout)["inv3"]
    assert rec["P_total"] == 12345.0 and rec["V_L1"] == pytest.approx(230.12)
    assert len(rec) - 2 == len(driver["fields"])
    first = readout["requests"]  # refused requests never reach the simulator's counter
    assert first > sim.requests > 5  # refused blocks were retried in parts
    plan = poller.readers["inv3"].plan_summary()
    sim.requests = 0
    r2 = poller.poll(1_700_000_010)
    assert sim.requests == len(plan) == r2["requests"]
    assert sim.requests < first, "the second cycle must use the remembered working plan"
    assert len(plan) < len(driver["fields"]), "contiguous fields stay merged"
    poller.close()


def test_slow_device_costs_only_its_own_deadline(simulator, builtin_drivers):
    driver = builtin_drivers["sma_stp25000"]
    slow = simulator({3: driver}, values={3: SMA_VALUES}, delay=0.3)
    raw = sma_config(slow.port, timeout=1.0, vars_=["P_total", "V_L1", "status"])
    readout, poller = poll_once(raw, builtin_drivers)
    assert by_device(readout)["inv3"]["P_total"] == 12345.0  # slow but within its timeout
    poller.close()
    too_slow = simulator({3: driver}, values={3: SMA_VALUES}, delay=1.5)
    raw = sma_config(too_slow.port, timeout=0.4, vars_=["P_total", "status"])
    started = time.monotonic()
    readout, poller = poll_once(raw, builtin_drivers)
    assert time.monotonic() - started < 1.2
    assert by_device(readout)["inv3"] == {"_d": "inv3", "_vid": "v3"}
    assert "no answer" in readout["errors"]["inv3"][0]
    poller.close()


class RawDevice:
    """A TCP 'device' that answers every request with whatever `respond(request)` returns."""

    def __init__(self, respond):
        self.respond = respond
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.port = self.sock.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._conn, args=(conn,), daemon=True).start()

    def _conn(self, conn):
        with conn:
            while True:
                try:
                    req = conn.recv(260)
                except OSError:
                    return
                if not req:
                    return
                out = self.respond(req)
                if out is None:
                    conn.close()
                    return
                conn.sendall(out)

    def close(self):
        self.stopped = True
        self.sock.close()


def _mbap(req: bytes, pdu: bytes) -> bytes:
    return req[:2] + b"\x00\x00" + (len(pdu) + 1).to_bytes(2, "big") + req[6:7] + pdu


def _good(req: bytes) -> bytes:
    count = int.from_bytes(req[10:12], "big")
    return _mbap(req, bytes([req[7], 2 * count]) + b"\x00\x2a" * count)


@pytest.mark.parametrize(
    "name,respond",
    [
        ("garbage", lambda req: b"\xde\xad\xbe\xef" * 5),
        ("truncated", lambda req: _good(req)[:-3]),
        ("wrong byte count", lambda req: _mbap(req, bytes([req[7], 200]) + b"\x00\x01")),
        ("wrong function", lambda req: _mbap(req, bytes([0x10]) + b"\x00\x00\x00\x01")),
        ("closes connection", lambda req: None),
    ],
)
def test_garbage_answers_are_reported_and_the_bus_recovers(name, respond, builtin_drivers):
    mode = {"bad": True}
    dev = RawDevice(lambda req: respond(req) if mode["bad"] else _good(req))
    raw = {
        "devices": {
            "m": {
                "driver": "sma_stp25000",
                "reading_type": "modbustcp",
                "vendor_id": "m",
                "timeout": 0.5,
                "address": {"host": "127.0.0.1", "port": dev.port, "unit_id": 3},
            }
        },
        "readings": {"a": {"device": "m", "var": "status"}},
    }
    try:
        readout, poller = poll_once(raw, builtin_drivers)
        assert by_device(readout)["m"] == {"_d": "m", "_vid": "m"}, name
        assert readout["errors"]["m"], name
        mode["bad"] = False
        for i in range(1, 4):  # after its backoff the device is read again
            r = poller.poll(1_700_000_000 + 10 * i)
            if "status" in by_device(r)["m"]:
                break
        assert by_device(r)["m"]["status"] == 0x002A002A, name
        poller.close()
    finally:
        dev.close()


def test_connection_refused_then_device_appears(builtin_drivers, simulator, caplog):
    from helpers.common import free_port

    port = free_port()
    raw = sma_config(port, timeout=0.5, vars_=["P_total"])
    readout, poller = poll_once(raw, builtin_drivers)
    assert "cannot connect" in readout["errors"]["inv3"][0]
    simulator({3: builtin_drivers["sma_stp25000"]}, values={3: SMA_VALUES}, port=port)
    for i in range(1, 5):
        r = poller.poll(1_700_000_000 + 10 * i)
        if "P_total" in by_device(r)["inv3"]:
            break
    assert by_device(r)["inv3"]["P_total"] == 12345.0
    messages = [rec.getMessage() for rec in caplog.records]
    assert sum("not answering" in m for m in messages) == 1, "logged once when it fails"
    assert sum("answering again" in m for m in messages) == 1, "and once when it comes back"
    poller.close()


def test_upstream_docker_test_config_against_its_mock_registers(tmp_path, simulator, builtin_drivers):
    """The upstream end-to-end fixture: the EMS LSR floats and status bits, the SMA stubs, a unit that never
    answers (sma_stp_2, unit 100) and JSONata output P_double placed into _calc."""
    import json
    import subprocess

    from helpers.common import AMMP_EDGE, UPSTREAM_CONFIGS

    raw = json.loads((UPSTREAM_CONFIGS / "docker-test-config.json").read_text())
    ems_regs = {
        122: 0xCC5A,
        123: 0x489E,
        124: 0xF330,
        125: 0x48AA,
        126: 0xE441,
        127: 0x489F,
        200: 0b0000000000000100,
        201: 0b1011001000000000,
        202: 0b1111001000000101,
    }
    sma_regs = {
        30051: 0,
        30052: 8081,
        30053: 0,
        30054: 9197,
        30057: 18838,
        30058: 722,
        30529: 123,
        30530: 45678,
        30775: 0,
        30776: 12345,
    }
    sim = simulator(
        {1: raw["drivers"]["ems"], 3: builtin_drivers["sma_stp25000"]},
        registers={1: {3: ems_regs, 4: ems_regs}, 3: {3: sma_regs, 4: sma_regs}},
    )
    for dev in raw["devices"].values():
        if dev["reading_type"] == "modbustcp":
            dev["address"].update(host="127.0.0.1", port=sim.port)
            dev["timeout"] = 1
    f = tmp_path / "config.json"
    f.write_text(json.dumps(raw))
    r = subprocess.run([*AMMP_EDGE, "read", "--config", str(f), "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    msg = json.loads(r.stdout)
    recs = {rec["_d"]: rec for rec in msg["r"]}
    ems = recs["ems"]
    # the float32 325218.8125 (upstream publishes it so) as the shortest decimal that reads back as it
    assert ems["P_L1"] == 325218.8 and '"P_L1":325218.8,' in r.stdout
    assert ems["relay_status"] == 1
    assert ems["alert_state"] == 3  # upstream msb: bits 2..5 of 1011 0010 ... (1100) read reversed
    assert sorted(ems["_s"], key=lambda s: s["c"]) == [
        {"c": "High Temperature Warning", "l": 2},
        {"c": "Relay Fault Detected", "l": 3},
        {"c": "System Alarm", "l": 4},  # exactly as upstream's status_info_e2e; "unavailable" (15) is dropped
    ]
    assert recs["sma_stp_1"]["total_yield"] == 123 * 65536 + 45678 and recs["sma_stp_1"]["P_total"] == 12345
    assert recs["sma_stp_2"] == {"_d": "sma_stp_2", "_vid": "000"}
    assert recs["_calc"] == {"_d": "_calc", "_vid": "calc-1", "P_double": 24690.0}
    assert "sma_hycon_csv: sma_hycon_csv is a daily backfill" in r.stderr


def test_a_device_known_only_by_its_mac(simulator, builtin_drivers):
    """Resolved through the ARP table, then the scan cache (here), then a rate-limited scan."""
    from ammp_edge.core.kvs import cache
    from ammp_edge.node.scan import macs

    sim = simulator({3: builtin_drivers["sma_stp25000"]}, values={3: SMA_VALUES})
    kv = cache()
    kv.set(macs.LOCK_KEY, time.time() + 3600)  # no background network sweep from a test
    raw = sma_config(sim.port, vars_=["P_total"])
    del raw["devices"]["inv3"]["address"]["host"]
    raw["devices"]["inv3"]["address"]["mac"] = "02:00:5E:10:00:01"
    readout, poller = poll_once(raw, builtin_drivers)
    assert "no IP address known" in readout["errors"]["inv3"][0]
    kv.set("env/net/mac/02:00:5e:10:00:01", {"ipv4": "127.0.0.1", "mac": "02:00:5e:10:00:01"})
    for i in range(1, 4):
        r = poller.poll(1_700_000_000 + 10 * i)
        if "P_total" in by_device(r)["inv3"]:
            break
    assert by_device(r)["inv3"]["P_total"] == 12345.0
    assert readout["bus"] == f"tcp_02005e100001_{sim.port}"
    poller.close()
    bad = sma_config(sim.port)
    del bad["devices"]["inv3"]["address"]["host"]
    bad["devices"]["inv3"]["address"]["mac"] = "not-a-mac"
    config = cfg.load(bad, builtin_drivers)
    assert config.errors[0].path == "devices.inv3.address.mac"
