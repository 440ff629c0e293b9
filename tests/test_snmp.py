"""The snmp reader against Debian's real snmpd on a loopback port (v1, v2c, v3 with SHA/AES-128 and
SHA-256), and against a fake agent that answers with bad bytes: every answer is checked against its
request, a missing object is null with its reason, never a wrong value; the bus keeps running."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from ammp_edge.bus.poller import BusPoller
from ammp_edge.core import config as cfg, drivers, paths
from ammp_edge.readers.snmp import ber, message as msg
from helpers.snmp_agent import USERS, SnmpAgent, free_udp_port

UR5I = "1.3.6.1.4.1.30140"
SET = {
    f"{UR5I}.3.3.0": ("integer", 41),  # temp C
    f"{UR5I}.3.4.0": ("integer", 12345),  # input_V mV -> 12.345 V
    f"{UR5I}.4.5.0": ("string", -71),  # RSSI, given as text: typecast int makes it a number (as upstream)
    f"{UR5I}.5.1.1.0": ("counter", 4000000000),  # Rx_SIM1_today, Counter32
    f"{UR5I}.5.5.7.0": ("timeticks", 360000),  # t_SIM1_period x 0.01 s
}  # the other 11 fields of the driver are not set: noSuchInstance (v2c) / noSuchName (v1)


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    a = SnmpAgent(tmp_path_factory.mktemp("snmpd"))
    a.set(SET)
    a.start()
    yield a
    a.stop()


def load(devices: dict) -> cfg.Config:
    builtin = drivers.load_builtin_drivers(paths.drivers_dir())
    readings = {f"{k}_{f}": {"device": k, "var": f} for k, d in devices.items() for f in builtin[d["driver"]]["fields"]}
    return cfg.load({"devices": devices, "readings": readings}, builtin)


def dev(port, driver="libratum_ur5i", timeout=2, **address):
    return {"driver": driver, "reading_type": "snmp", "vendor_id": "ur5i", "timeout": timeout,
            "address": {"host": "127.0.0.1", "port": port, **address}}  # fmt: skip


def poll(devices: dict, t: int = 0, poller: BusPoller | None = None):
    c = load(devices)
    assert c.errors == []
    poller = poller or BusPoller("snmp", list(c.devices.values()), read_interval=10)
    started = time.monotonic()
    readout = poller.poll(t)
    return readout, time.monotonic() - started, poller


EXPECTED = {"temp": 41, "input_V": 12.345, "RSSI": -71, "Rx_SIM1_today": 4000000000, "t_SIM1_period": 3600.0}


@pytest.mark.parametrize(
    "address",
    [
        {"version": 2},
        {"version": "2c", "community": "public"},
        {"version": 3, "user": "authpriv", **USERS["authpriv"]},
        {"version": 3, "user": "authsha256", **USERS["authsha256"]},
    ],
    ids=["v2c", "v2c-named", "v3-sha-aes128", "v3-sha256"],
)
def test_values_from_snmpd_in_one_request(agent, address):
    readout, took, _ = poll({"r": dev(agent.port, **address)})
    (rec,) = readout["devices"]
    assert {k: rec[k] for k in EXPECTED} == EXPECTED
    assert rec["uptime"] > 0  # snmpd's own sysUpTime (TimeTicks) x 0.01 s
    missing = [k for k, v in rec.items() if v is None]
    assert len(missing) == 11 and "Rx_SIM2_today" in missing  # null, each with its reason
    assert any("noSuchInstance for 1.3.6.1.4.1.30140.5.1.2.0" in e for e in readout["errors"]["r"])
    assert readout["requests"] == 1  # 17 OIDs in one GET
    assert took < 10


def test_v1_no_such_name_nulls_that_field_and_asks_the_rest_again(agent):
    readout, _, _ = poll({"r": dev(agent.port, version=1)})
    (rec,) = readout["devices"]
    assert {k: rec[k] for k in EXPECTED} == EXPECTED
    assert sum(v is None for v in rec.values()) == 11
    assert readout["requests"] == 12  # one per missing OID (v1 fails the whole request for one)
    assert any("noSuchName" in e for e in readout["errors"]["r"])


def test_max_oids_batches_and_changed_values_next_cycle(agent):
    readout, _, poller = poll({"r": dev(agent.port, max_oids=5)})
    assert readout["requests"] == 4  # 17 OIDs, 5 per GET
    agent.set({**SET, f"{UR5I}.3.3.0": ("integer", -5)})
    readout, _, _ = poll({"r": dev(agent.port, max_oids=5)}, 10, poller)
    assert readout["devices"][0]["temp"] == -5
    agent.set(SET)


def test_snmp_demo_uptime_scales_without_a_typecast(agent):
    # upstream got a string from easysnmp and its multiplier failed without a typecast: no value at all
    readout, _, _ = poll({"d": dev(agent.port, driver="snmp_demo")})
    assert isinstance(readout["devices"][0]["uptime"], float) and readout["devices"][0]["uptime"] > 0


@pytest.mark.parametrize(
    "address,why",
    [
        ({"version": 3, "user": "authpriv", **USERS["authpriv"], "auth_password": "wrongpass1"}, "authentication"),
        ({"version": 3, "user": "nobody", **USERS["authsha256"]}, "unknown user name"),
        ({"version": 2, "community": "private"}, "no answer"),  # snmpd ignores a wrong community
    ],
)
def test_wrong_credentials_give_no_values_and_a_reason(agent, address, why):
    readout, _, poller = poll({"r": dev(agent.port, timeout=1, **address)})
    assert readout["devices"] == [{"_d": "r", "_vid": "ur5i"}]
    assert why in " ".join(readout["errors"]["r"])
    assert poller.health["r"].failures == 1


# -- a fake agent that answers with bad bytes -------------------------------------------------------


class FakeAgent:
    """Answers each GET with what `reply(request_pdu, community) -> list[bytes]` returns."""

    def __init__(self, reply):
        self.reply = reply
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", free_udp_port()))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.2)
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopped:
            try:
                data, peer = self.sock.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
            pdu = msg.decode_community(data, 2, "public")
            for out in self.reply(pdu):
                self.sock.sendto(out, peer)

    def close(self):
        self.stopped = True
        self.thread.join(2)
        self.sock.close()


def answer(rid, varbinds, status=0, index=0, version=2, community="public", kind=msg.RESPONSE):
    vbs = [ber.sequence(ber.oid(o), v) for o, v in varbinds]
    pdu = ber.sequence(ber.integer(rid), ber.integer(status), ber.integer(index), ber.sequence(*vbs), tag=kind)
    return msg.encode_community(version, community, pdu)


SEVEN = ber.integer(7)


def good(pdu, value=SEVEN):
    return answer(pdu.request_id, [(vb.oid, value) for vb in pdu.varbinds])


BAD = {
    "garbage": (lambda p: [b"\x30\x82\xff\xff junk"], "invalid BER"),
    "truncated": (lambda p: [good(p)[:-3]], "invalid BER"),
    "indefinite length": (lambda p: [b"\x30\x80" + good(p)[2:]], "indefinite length"),
    "wrong OID": (lambda p: [answer(p.request_id, [((1, 3, 6, 1, 9), ber.integer(7))])], "names 1.3.6.1.9"),
    "missing varbind": (lambda p: [answer(p.request_id, [])], "0 varbinds"),
    "wrong version": (lambda p: [answer(p.request_id, [], version=1)], "version 0"),
    "wrong community": (lambda p: [answer(p.request_id, [], community="x")], "community"),
    "not a Response": (lambda p: [good(p).replace(b"\xa2", b"\xa3", 1)], "SetRequest PDU"),
    "trailing bytes": (lambda p: [good(p) + b"\x00"], "left over"),
    "bad counter": (lambda p: [good(p, ber.tlv(ber.COUNTER32, b"\xff"))], "outside 0..2^32-1"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_answers_are_errors_never_values(case):
    reply, why = BAD[case]
    fake = FakeAgent(reply)
    try:
        readout, took, poller = poll({"d": dev(fake.port, driver="snmp_demo", timeout=1)})
        rec = readout["devices"][0]
        assert rec.get("uptime") is None
        assert why in " ".join(readout["errors"]["d"])
        # the bus goes on: a good answer next cycle is used
        fake.reply = lambda p: [good(p)]
        readout, _, _ = poll({"d": dev(fake.port, driver="snmp_demo", timeout=1)}, 10, poller)
        assert readout["devices"][0]["uptime"] == 0.07
    finally:
        fake.close()


def test_a_late_answer_to_another_request_is_dropped_and_the_right_one_used():
    def late(p):
        return [answer(p.request_id ^ 1, [(vb.oid, ber.integer(999)) for vb in p.varbinds]), good(p)]

    fake = FakeAgent(late)
    try:
        readout, _, poller = poll({"d": dev(fake.port, driver="snmp_demo", timeout=1)})
        assert readout["devices"][0]["uptime"] == 0.07 and readout["errors"] == {}
        assert poller.readers["d"].transport.strays == 1
    finally:
        fake.close()


def test_too_big_splits_the_request_and_the_device_keeps_the_smaller_size():
    def reply(p):
        if len(p.varbinds) > 4:
            return [answer(p.request_id, [(vb.oid, ber.tlv(ber.NULL, b"")) for vb in p.varbinds], status=1)]
        return [good(p)]

    fake = FakeAgent(reply)
    try:
        driver = {"fields": {f"f{i}": {"oid": f"1.3.6.1.4.1.99.{i}.0"} for i in range(10)}}
        devices = {"d": {**dev(fake.port), "driver": "many"}}
        readings = {f"f{i}": {"device": "d", "var": f"f{i}"} for i in range(10)}
        c = cfg.load({"devices": devices, "drivers": {"many": driver}, "readings": readings}, {})
        poller = BusPoller("snmp", list(c.devices.values()))
        first = poller.poll(0)
        assert first["devices"][0] == {"_d": "d", "_vid": "ur5i", **{f"f{i}": 7 for i in range(10)}}
        assert first["requests"] == 1 + 2 + 4  # 10 -> tooBig; 5 + 5 -> tooBig each; 3 + 2 + 3 + 2
        assert poller.poll(10)["requests"] == 4  # learned: 3 OIDs per request from now on (3 + 3 + 3 + 1)
    finally:
        fake.close()


def test_a_silent_agent_costs_one_timeout_then_backoff():
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", free_udp_port()))
    try:
        readout, took, poller = poll({"d": dev(silent.getsockname()[1], driver="libratum_ur5i", timeout=0.5)})
        assert readout["devices"] == [{"_d": "d", "_vid": "ur5i"}]
        assert "no answer" in readout["errors"]["d"][0]
        assert 0.45 <= took < 3  # one timeout for the device, not one per field
        poller.poll(10)
        assert poller.health["d"].failures == 2 and poller.health["d"].skip_cycles == 1  # 0, 1, 3, 7 ... skipped
    finally:
        silent.close()


def test_the_web_ui_device_test_reads_an_snmp_device(agent):
    from ammp_edge.webui import probe

    builtin = drivers.load_builtin_drivers(paths.drivers_dir())
    device = probe.build_device(dev(agent.port, version=3, user="authpriv", **USERS["authpriv"]), {}, builtin)
    out = probe.read_device(device)
    rows = {r["name"]: r for r in out["fields"]}
    assert out["bus"] == "snmp" and rows["temp"]["value"] == 41 and rows["temp"]["register"] == f"{UR5I}.3.3.0"
    assert rows["Rx_SIM2_today"]["value"] is None and "noSuchInstance" in rows["Rx_SIM2_today"]["error"]
