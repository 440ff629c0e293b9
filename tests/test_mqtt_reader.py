"""The `mqtt` reader against a real mosquitto on loopback (and a hostile fake broker for bad packets)."""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
import time

import pytest

from ammp_edge.bus.poller import BusPoller
from ammp_edge.core import codec, config as cfg, drivers as drv
from ammp_edge.readers import mqtt as mqtt_reader
from ammp_edge.readers.mqtt.client import Subscriber
from ammp_edge.readers.mqtt.packets import connect_packet, packet, subscribe_packet
from helpers.brokers import Mosquitto, cloud_broker, publish, wait_until
from helpers.common import free_port

PLAIN = "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\nlog_type all\n"

DRIVER = {
    "fields": {
        "P": {"topic": "site/meter/P", "parse_as": "str", "typecast": "float", "unit": "W"},
        "E": {"topic": "site/meter/E", "parse_as": "str", "multiplier": 0.001, "unit": "kWh"},
        "T": {"topic": "site/meter/json", "keypath": ["sensors", 0, "temp"], "multiplier": 0.1},
        "state": {"topic": "site/meter/json", "keypath": ["state"], "typecast": "str"},
        "raw16": {"topic": "site/meter/raw", "datatype": "int16"},
        "hexv": {"topic": "site/meter/hex", "parse_as": "hex", "datatype": "uint16"},
    }
}


def make_config(port: int, max_age: float | None = None, fields=None, **address) -> cfg.Config:
    addr = {"host": "127.0.0.1", "port": port, **address}
    if max_age is not None:
        addr["max_age"] = max_age
    fields = fields or list(DRIVER["fields"])
    raw = {
        "devices": {"m1": {"driver": "mq", "reading_type": "mqtt", "vendor_id": "m-1", "address": addr, "timeout": 5}},
        "drivers": {"mq": DRIVER},
        "readings": {f"r_{f}": {"device": "m1", "var": f} for f in fields},
    }
    c = cfg.load(raw, {})
    assert not c.errors, c.errors
    return c


def poller_for(c: cfg.Config) -> BusPoller:
    ((bus_id, devices),) = c.buses().items()
    assert bus_id.startswith("mqtt_127.0.0.1_")
    return BusPoller(bus_id, devices, c.read_interval)


@pytest.fixture
def broker(tmp_path):
    with Mosquitto.from_text(tmp_path / "b", PLAIN) as b:
        yield b


def test_first_cycle_has_the_retained_values(broker):
    for topic, payload in [
        ("site/meter/P", b"1234.5"),
        ("site/meter/E", b"123456"),
        ("site/meter/json", json.dumps({"sensors": [{"temp": 215}], "state": "ok"}).encode()),
        ("site/meter/raw", struct.pack(">h", -2)),
        ("site/meter/hex", b"0a12"),
    ]:
        publish(broker.port, topic, payload, retain=True)
    p = poller_for(make_config(broker.port))
    try:
        begun = time.monotonic()
        readout = p.poll(1000)
        took = time.monotonic() - begun
        rec = readout["devices"][0]
        assert rec == {
            "_d": "m1",
            "_vid": "m-1",
            "P": 1234.5,
            "E": 123.456,
            "T": 21.5,
            "state": "ok",
            "raw16": -2,
            "hexv": 2578,
        }, readout["errors"]
        assert readout["errors"] == {}
        assert took < 5, f"the first cycle waited {took:.1f} s for its retained values (timeout 5 s)"
        # live: a new message is the next cycle's value
        publish(broker.port, "site/meter/P", b"99")
        wait_until(lambda: p.poll(1010)["devices"][0]["P"] == 99.0, 10, what="the new P")
    finally:
        p.close()


def test_values_older_than_max_age_are_null_and_come_back(broker):
    publish(broker.port, "site/meter/P", b"7", retain=True)
    p = poller_for(make_config(broker.port, max_age=1.5, fields=["P"]))
    try:
        first = p.poll(1000)
        assert first["devices"][0]["P"] == 7.0
        received = time.monotonic()
        # not yet stale within max_age, stale (null, with a note) after it
        stale = wait_until(lambda: (r := p.poll(1001))["devices"][0]["P"] is None and r, 10, what="stale P")
        assert time.monotonic() - received >= 1.5
        assert "over max_age" in stale["errors"]["m1"][0]
        publish(broker.port, "site/meter/P", b"8")
        wait_until(lambda: p.poll(1002)["devices"][0]["P"] == 8.0, 10, what="fresh P again")
    finally:
        p.close()


@pytest.mark.parametrize(
    "field, payload, error",
    [
        ("P", b"\xff\xfe12", "not UTF-8 text (byte 0xff at 0"),
        ("P", b"12.5kW", "'12.5kW' is not a number"),
        ("E", b"   ", "'' is not a number"),  # (an empty retained message deletes it)
        ("T", b'{"sensors": [{"temp": 1}', "is not valid JSON"),
        ("T", b'{"sensors": []}', "has no index 0"),
        ("T", b'{"sensors": [{"hum": 3}]}', "has no key 'temp'"),
        ("T", b'{"sensors": [{"temp": {"v": 1}}]}', "an object, not a value"),
        ("raw16", b"\x01\x02\x03", "int16 needs 2 bytes, got 3"),
        ("raw16", b"\x01", "int16 needs 2 bytes, got 1"),
        ("hexv", b"0a1", "not an even number of hex digits"),
        ("hexv", b"0a1234", "uint16 needs 2 bytes, got 3"),
    ],
)
def test_bad_payloads_are_errors_for_their_field_never_values(broker, field, payload, error):
    topic = DRIVER["fields"][field]["topic"]
    publish(broker.port, topic, payload, retain=True)
    publish(broker.port, "site/meter/raw", b"\x00\x05", retain=True) if field != "raw16" else None
    fields = [field] if field == "raw16" else [field, "raw16"]
    p = poller_for(make_config(broker.port, fields=fields))
    try:
        readout = p.poll(1000)
        rec = readout["devices"][0]
        assert field not in rec, rec
        assert any(error in e for e in readout["errors"]["m1"]), readout["errors"]
        if field != "raw16":
            assert rec["raw16"] == 5  # the other field of the device is read
        assert not p.health["m1"].failures  # a bad payload is not a dead device
    finally:
        p.close()


def test_an_oversized_message_is_an_error_and_the_connection_stays_in_step(broker):
    publish(broker.port, "site/meter/raw", b"\x00" * (300 * 1024), retain=True)  # over the 256 KiB limit
    publish(broker.port, "site/meter/P", b"5", retain=True)
    p = poller_for(make_config(broker.port, fields=["raw16", "P"]))
    try:
        readout = p.poll(1000)
        assert readout["devices"][0] == {"_d": "m1", "_vid": "m-1", "P": 5.0}
        assert "over the 262144 limit" in readout["errors"]["m1"][0]
        publish(broker.port, "site/meter/raw", b"\x00\x09")  # the next message on that topic is used
        wait_until(lambda: p.poll(1001)["devices"][0].get("raw16") == 9, 10, what="raw16 after the big one")
        assert p.transport.subscriber.connects == 1
    finally:
        p.close()


def test_client_ids_are_stable_for_the_bus_and_never_collide(broker, monkeypatch):
    c = make_config(broker.port, fields=["P"])
    dev = c.devices["m1"]
    stable = mqtt_reader.client_id_for(dev.bus_id, dev.address, stable=True)
    assert stable == mqtt_reader.client_id_for(dev.bus_id, dev.address, stable=True)
    assert stable.startswith("ammp-edge-") and len(stable) == 22
    other_bus = mqtt_reader.client_id_for("mqtt_10.0.0.1_1883", dev.address, stable=True)
    assert other_bus != stable
    one_off = {mqtt_reader.client_id_for(dev.bus_id, dev.address) for _ in range(5)}
    assert len(one_off) == 5 and all(i.startswith(stable + "-") for i in one_off)
    # the bus program's session and two one-off reads (ammp-edge read, the web UI's device test) at once:
    # nobody is kicked off (upstream's fixed id `ammp-edge` made them disconnect each other)
    monkeypatch.setitem(mqtt_reader._STABLE, "on", True)
    bus = poller_for(c)
    monkeypatch.setitem(mqtt_reader._STABLE, "on", False)
    reads = [poller_for(c), poller_for(c)]
    try:
        for p in [bus, *reads]:
            p.poll(1000)
        assert bus.transport.subscriber.client_id == stable
        time.sleep(2)  # a kicked client would have reconnected by now
        assert [p.transport.subscriber.connects for p in [bus, *reads]] == [1, 1, 1]
        assert all(p.transport.subscriber.connected.is_set() for p in [bus, *reads])
    finally:
        for p in [bus, *reads]:
            p.close()


def test_broker_down_then_back(broker):
    publish(broker.port, "site/meter/P", b"1", retain=False)
    c = make_config(broker.port, fields=["P"], max_age=0)
    p = poller_for(c)
    try:
        p.poll(1000)  # subscribed, no message yet
        publish(broker.port, "site/meter/P", b"2")
        wait_until(lambda: p.poll(1001)["devices"][0].get("P") == 2.0, 10, what="P = 2")
        broker.stop()
        sub = p.transport.subscriber
        wait_until(lambda: not sub.connected.is_set(), 10, what="the connection noticed down")
        # the last value is kept with its age (max_age 0: no limit), and the bus says the broker is down
        r = p.poll(1002)
        assert r["devices"][0]["P"] == 2.0
        broker.start()
        down_at = time.monotonic()
        publish(broker.port, "site/meter/P", b"3", retain=True)
        wait_until(lambda: p.poll(1003)["devices"][0].get("P") == 3.0, 90, what="P = 3 after the restart")
        assert sub.connects == 2
        assert time.monotonic() - down_at < 70  # reconnect delays are capped at a minute
    finally:
        p.close()


def test_a_dead_broker_is_a_failed_device_with_backoff():
    c = make_config(free_port(), fields=["P"])
    p = poller_for(c)
    try:
        begun = time.monotonic()
        r = p.poll(1000)
        took = time.monotonic() - begun
        assert r["devices"][0] == {"_d": "m1", "_vid": "m-1"}
        assert "broker 127.0.0.1" in r["errors"]["m1"][0]
        assert p.health["m1"].failures == 1
        assert took < 5 + 2, f"a dead broker cost {took:.1f} s (timeout 5 s)"
    finally:
        p.close()


def test_tls_and_password(tmp_path):
    cloud = cloud_broker(tmp_path)
    try:
        publish(cloud.admin_port, "site/meter/P", b"42", retain=True, **cloud.admin_auth)
        ok = make_config(
            cloud.tls_port,
            fields=["P"],
            tls=True,
            ca_certs=str(cloud.ca.ca_crt),
            username=cloud.node_user,
            password=cloud.node_password,
        )
        p = poller_for(ok)
        try:
            assert p.poll(1000)["devices"][0]["P"] == 42.0
        finally:
            p.close()
        bad = make_config(
            cloud.tls_port,
            fields=["P"],
            tls=True,
            ca_certs=str(cloud.ca.ca_crt),
            username=cloud.node_user,
            password="wrong-secret",
        )
        p = poller_for(bad)
        try:
            r = p.poll(1000)
            assert "P" not in r["devices"][0]
            assert "refused the connection: not authorized" in " ".join(
                r["errors"]["m1"]
            ) or "bad user name or password" in " ".join(r["errors"]["m1"])
            assert "wrong-secret" not in json.dumps(r)
        finally:
            p.close()
        untrusted = make_config(
            cloud.tls_port, fields=["P"], tls=True, username=cloud.node_user, password=cloud.node_password
        )  # the system CAs do not know the test CA
        p = poller_for(untrusted)
        try:
            r = p.poll(1000)
            assert "CERTIFICATE_VERIFY_FAILED" in " ".join(r["errors"]["m1"]).upper().replace(" ", "_")
        finally:
            p.close()
    finally:
        cloud.stop()


# ---------------------------------------------------------------------------------------------
# a hostile broker: every packet is checked before anything of it is used


class FakeBroker:
    """Accepts connections and answers CONNECT and SUBSCRIBE with the bytes a test gives."""

    def __init__(self, script):
        self.script = script  # (conn, connect_bytes) -> None: speaks to one client
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.settimeout(5)
            try:
                first = conn.recv(65536)
                self.script(conn, first)
            except OSError:
                pass
            finally:
                time.sleep(0.1)
                conn.close()

    def close(self):
        self.stop.set()
        self.sock.close()


def _suback(pid: int, codes: bytes) -> bytes:
    return packet(9, 0, pid.to_bytes(2, "big") + codes)


def _publish(topic: bytes, payload: bytes, qos: int = 0, pid: int = 1, length_delta: int = 0) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic + (pid.to_bytes(2, "big") if qos else b"") + payload
    return bytes([0x30 | (qos << 1)]) + bytes([len(body) + length_delta]) + body


CONNACK_OK = b"\x20\x02\x00\x00"


@pytest.mark.parametrize(
    "answer, error",
    [
        (b"\x20\x03\x00\x00\x00", "expected CONNACK (type 2, length 2)"),
        (b"\x20\x02\x02\x00", "reserved bits"),
        (b"\x20\x02\x00\x05", "not authorized"),
        (b"\x90\x03\x00\x01\x00", "expected CONNACK"),
        (CONNACK_OK + b"\x30\xff\xff\xff\xff\x01", "remaining length longer than 4 bytes"),
        (CONNACK_OK + _suback(1, b"\x00\x01"), "2 return codes for 1 topics"),
        (CONNACK_OK + _suback(7, b"\x00"), "packet id 7, which was not asked for"),
        (CONNACK_OK + _suback(1, b"\x02"), "granted QoS 2"),
        (CONNACK_OK + _suback(1, b"\x00") + _publish(b"t/a", b"5", qos=2), "QoS 2"),
        (CONNACK_OK + _suback(1, b"\x00") + _publish(b"t/\xffa", b"5"), "topic is not UTF-8"),
        (CONNACK_OK + _suback(1, b"\x00") + _publish(b"t/#", b"5"), "invalid topic name"),
        (CONNACK_OK + _suback(1, b"\x00") + _publish(b"t/a", b"5", qos=1, pid=0), "packet id 0"),
        (CONNACK_OK + _suback(1, b"\x00") + b"\x30\x01\x00", "cannot hold its topic length"),
        (CONNACK_OK + _suback(1, b"\x00") + b"\x30\x04\x00\x09t/a", "topic of 9 bytes in a packet of 4"),
        (CONNACK_OK + _suback(1, b"\x00") + b"\xd0\x01\x00", "PINGRESP with flags 0 and length 1"),
        (CONNACK_OK + _suback(1, b"\x00") + b"\x40\x02\x00\x01", "unexpected packet type 4"),
        (CONNACK_OK + _suback(1, b"\x00") + b"\x30\x10\x00\x03t/a", "stopped in the middle of a packet"),
    ],
)
def test_bad_packets_reset_the_connection_and_give_no_value(answer, error, caplog):
    def script(conn, first):
        assert first.startswith(b"\x10")  # CONNECT
        conn.sendall(answer)
        time.sleep(12 if error.startswith("stopped") else 0.5)

    fake = FakeBroker(script)
    sub = Subscriber("127.0.0.1", fake.port, "test-client", connect_timeout=2, keepalive=30, label="fake")
    sub.add_topics(["t/a"])
    sub.start()
    try:
        wait_until(lambda: sub.error and error in sub.error, 30, what=f"error {error!r}, got {sub.error!r}")
        assert sub.last("t/a") is None  # nothing of a bad packet is used
        assert not sub.synced.is_set()
    finally:
        sub.stop()
        fake.close()


def test_qos1_messages_are_acknowledged_and_the_sync_waits_for_pingresp():
    seen: list[bytes] = []

    def script(conn, first):
        conn.sendall(CONNACK_OK)
        sub = conn.recv(65536)
        seen.append(sub)
        pid = int.from_bytes(sub[2:4], "big")
        conn.sendall(_suback(pid, b"\x01") + _publish(b"t/a", b"17", qos=1, pid=300))
        got = b""
        deadline = time.monotonic() + 5
        while (b"\x40\x02\x01\x2c" not in got or b"\xc0\x00" not in got) and time.monotonic() < deadline:
            got += conn.recv(65536)
        seen.append(got)
        time.sleep(0.5)  # synced only after the PINGRESP
        conn.sendall(b"\xd0\x00")
        time.sleep(3)

    fake = FakeBroker(script)
    sub = Subscriber("127.0.0.1", fake.port, "test-client", connect_timeout=2, label="fake")
    sub.add_topics(["t/a"])
    sub.start()
    try:
        wait_until(lambda: sub.last("t/a") is not None, 10, what="the message")
        assert not sub.synced.is_set()
        assert sub.wait_synced(time.monotonic() + 5)
        assert sub.last("t/a").payload == b"17"
        assert seen[0] == subscribe_packet(1, ["t/a"], 1)
        assert b"\x40\x02\x01\x2c" in seen[1]  # PUBACK for packet id 300
        assert b"\xc0\x00" in seen[1]  # PINGREQ
    finally:
        sub.stop()
        fake.close()


def test_connect_packet_layout():
    pkt = connect_packet("cid", 60, True, "u", "p")
    assert pkt == b"\x10\x15\x00\x04MQTT\x04\xc2\x00\x3c\x00\x03cid\x00\x01u\x00\x01p"
    assert packet(12, 0, b"") == b"\xc0\x00"
    assert packet(3, 0, b"x" * 200)[:3] == b"\x30\xc8\x01"


# ---------------------------------------------------------------------------------------------
# config: what a device and its fields may say


@pytest.mark.parametrize(
    "address, field, problem",
    [
        ({"port": "x"}, {}, "devices.m1.address.port: 'x' is not an integer"),
        ({"max_age": -1}, {}, "devices.m1.address.max_age: -1 is not a finite"),
        ({"tls": "yes"}, {}, "devices.m1.address.tls: must be true or false"),
        ({"password": 1234}, {}, "devices.m1.address.password: must be a string"),
        ({"transport": "websockets"}, {}, "devices.m1.address.transport: 'websockets' is not supported"),
        ({"qos": 2}, {}, "devices.m1.address.qos: 2 is outside 0..1"),
        ({}, {"topic": "a/+/b"}, "drivers.mq.fields.P.topic: 'a/+/b' has a wildcard"),
        ({}, {"topic": ""}, "drivers.mq.fields.P.topic: '' is not an MQTT topic name"),
        ({}, {"topic": "a", "parse_as": "base64"}, "parse_as: 'base64' is not one of bytes, str, hex, json"),
        ({}, {"topic": "a", "parse_as": "str", "keypath": ["x"]}, "a key path needs parse_as json"),
        ({}, {"topic": "a", "keypath": [True]}, "keypath: must be a list of keys and indexes"),
    ],
)
def test_config_problems_name_their_path(address, field, problem):
    raw = {
        "devices": {"m1": {"driver": "mq", "reading_type": "mqtt", "vendor_id": "v", "address": address}},
        "drivers": {"mq": {"fields": {"P": field or {"topic": "a/b"}}}},
        "readings": {"p": {"device": "m1", "var": "P"}},
    }
    c = cfg.load(raw, {})
    assert "m1" not in c.devices
    assert any(problem in str(p) for p in c.errors), [str(p) for p in c.errors]
    assert "1234" not in " ".join(str(p) for p in c.problems)  # a password is never shown


def test_mqtt_bus_id_and_defaults():
    raw = {
        "devices": {"m1": {"driver": "mq", "reading_type": "mqtt", "vendor_id": "v"}},
        "drivers": {"mq": {"fields": {"P": {"topic": "a/b"}}}},
        "readings": {"p": {"device": "m1", "var": "P"}},
    }
    c = cfg.load(raw, {})
    dev = c.devices["m1"]
    assert dev.bus_id == "mqtt_localhost_1883"
    assert dev.address["max_age"] == cfg.MQTT_DEFAULT_MAX_AGE
    f = dev.fields["P"]
    assert isinstance(f, drv.MqttField) and f.parse_as == "bytes"


@pytest.mark.parametrize(
    "parse_as, raw, opts, value",
    [
        ("str", b"230.1", {}, 230.1),
        ("str", b" 42 \r\n", {}, 42),
        ("str", b"2301", {"multiplier": 0.1}, 230.1),
        ("str", b"nan", {}, None),
        ("str", b"on", {"valuemap": {"on": 1, "off": 0}}, 1),
        ("str", b"hello", {"typecast": "str"}, "hello"),
        ("hex", b"4365CA3D", {"datatype": "float"}, 229.79),
        ("bytes", b"\xff\xff", {"datatype": "uint16", "valuemap": {"0xffff": None}}, None),
        ("bytes", b"\x00\x00\x01\x00", {}, 256),
    ],
)
def test_parse_as_table(parse_as, raw, opts, value):
    f = drv.compile_mqtt_field("x", {"topic": "t", "parse_as": parse_as, **opts}, "f")
    assert mqtt_reader.decode_message(raw, f) == value


def test_json_values_table():
    f = drv.compile_mqtt_field("x", {"topic": "t", "keypath": ["a", -1]}, "f")
    assert mqtt_reader.decode_message(b'{"a": [1, 2, 3]}', f) == 3
    assert mqtt_reader.decode_message(b'{"a": [1, "4.5"]}', f) == 4.5
    assert mqtt_reader.decode_message(b'{"a": [1, null]}', f) is None
    with pytest.raises(codec.DecodeError, match="nests arrays and objects more than 32"):
        mqtt_reader.decode_message(b'{"a": [' + b"[" * 40 + b"]" * 40 + b"]}", f)


def test_the_web_ui_device_test_reads_mqtt_without_disturbing_the_bus(broker, monkeypatch):
    from ammp_edge.webui import probe

    publish(broker.port, "site/meter/P", b"321.5", retain=True)
    publish(broker.port, "site/meter/json", b'{"sensors": [{"temp": "x"}], "state": "ok"}', retain=True)
    c = make_config(broker.port, fields=["P", "T"])
    monkeypatch.setitem(mqtt_reader._STABLE, "on", True)
    bus = poller_for(c)
    monkeypatch.setitem(mqtt_reader._STABLE, "on", False)
    try:
        assert bus.poll(1000)["devices"][0]["P"] == 321.5
        out = probe.read_device(c.devices["m1"])
        rows = {r["name"]: r for r in out["fields"]}
        assert rows["P"]["value"] == 321.5 and rows["P"]["error"] is None and rows["P"]["topic"] == "site/meter/P"
        assert rows["P"]["raw"] == [b"321.5".hex()]
        assert rows["T"]["value"] is None and "'x' is not a number" in rows["T"]["error"]
        assert bus.transport.subscriber.connects == 1 and bus.transport.subscriber.connected.is_set()
    finally:
        bus.close()


def test_an_mqtt_bus_loads_no_paho_openssl_or_hycon_code(broker):
    """The bus RSS: a plain mqtt bus polls without paho, OpenSSL (ssl, _hashlib) or the HyCon reader."""
    import subprocess
    import sys

    code = f"""
import sys, time
from ammp_edge.cli.programs import cmd_bus  # the bus program's own imports
from ammp_edge.readers import mqtt
from ammp_edge.core import config as cfg
from ammp_edge.bus.poller import BusPoller
raw = {{"devices": {{"m": {{"driver": "d", "reading_type": "mqtt", "vendor_id": "v",
        "address": {{"host": "127.0.0.1", "port": {broker.port}}}}}}},
       "drivers": {{"d": {{"fields": {{"P": {{"topic": "a/b", "parse_as": "str"}}}}}}}},
       "readings": {{"p": {{"device": "m", "var": "P"}}}}}}
c = cfg.load(raw, {{}})
(bus, devs), = c.buses().items()
p = BusPoller(bus, devs, 10)
p.poll(1)
p.close()
bad = [m for m in ("paho", "ssl", "_hashlib", "ammp_edge.readers.hycon_csv", "ftplib") if m in sys.modules]
print("LOADED", bad)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "LOADED []" in r.stdout, r.stdout


def test_the_appliance_publishes_mqtt_values_from_the_first_cycle(tmp_path, broker):
    """The whole appliance: the bus program `bus-mqtt_...` under supervisord, its stable client id, the
    retained values in its first u/data, a new value in a later one."""
    from helpers.appliance import Appliance
    from helpers.brokers import Recorder

    publish(broker.port, "site/meter/P", b"4321", retain=True)
    raw = {
        "devices": {
            "m1": {
                "driver": "mq",
                "reading_type": "mqtt",
                "vendor_id": "m-1",
                "address": {"host": "127.0.0.1", "port": broker.port},
            },
        },
        "drivers": {"mq": DRIVER},
        "readings": {"p": {"device": "m1", "var": "P"}},
        "read_interval": 2,
    }
    app = Appliance(tmp_path / "app", raw, None)
    try:
        app.start(timeout=90)
        with Recorder(app.port, "u/data") as rec:  # anonymous clients may read u/# on the local broker
            first = rec.wait_for(lambda m: b'"m1"' in m.payload, 60, what="a u/data with m1")
            msg = json.loads(first.payload)
            assert msg["r"] == [{"_d": "m1", "_vid": "m-1", "P": 4321.0}]
            sent = time.time()
            publish(broker.port, "site/meter/P", b"1234")
            new = rec.wait_for(lambda m: b'"P":1234.0' in m.payload, 30, what="the new value")
            # in the next cycle (every 2 s), or the one after on a loaded machine; never in an earlier one
            t_new = json.loads(new.payload)["t"]
            assert int(sent) - 1 <= t_new <= sent + 2 * raw["read_interval"] + 1, (sent, t_new)
            assert all(b'"P":' in m.payload for m in rec.on("u/data") if b'"m1"' in m.payload)
        # no cycle of the bus went without the value, its first one included
        bus_log = app.logs("bus-mqtt_127.0.0.1")
        assert "polling 1 device(s)" in bus_log and "committed t=" in bus_log
        assert "no message yet" not in bus_log and "not subscribed yet" not in bus_log, bus_log
        ids = set(re.findall(r"New client connected from \S+ as (ammp-edge-[0-9a-f-]+)", broker.log))
        assert len(ids) == 1 and len(next(iter(ids))) == 22, ids  # the bus's stable id, no random suffix
    finally:
        app.stop()


def test_ammp_edge_read_prints_the_retained_values(tmp_path, broker):
    import subprocess

    from helpers.common import AMMP_EDGE, child_env, write_json

    publish(broker.port, "site/meter/json", b'{"sensors": [{"temp": 199}], "state": "ok"}', retain=True)
    raw = {
        "devices": {
            "m1": {
                "driver": "mq",
                "reading_type": "mqtt",
                "vendor_id": "m-1",
                "address": {"host": "127.0.0.1", "port": broker.port},
            }
        },
        "drivers": {"mq": DRIVER},
        "readings": {"t": {"device": "m1", "var": "T"}, "s": {"device": "m1", "var": "state"}},
    }
    conf = write_json(tmp_path / "c.json", raw)
    r = subprocess.run(
        [*AMMP_EDGE, "read", "--config", str(conf), "--json"],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["r"] == [{"_d": "m1", "_vid": "m-1", "T": 19.9, "state": "ok"}]


def test_devices_on_one_broker_share_one_bus_and_one_connection(broker):
    publish(broker.port, "a/1", b"1", retain=True)
    publish(broker.port, "b/1", b"2", retain=True)
    raw = {
        "devices": {
            k: {
                "driver": k,
                "reading_type": "mqtt",
                "vendor_id": k,
                "address": {"host": "127.0.0.1", "port": broker.port},
            }
            for k in ("da", "db")
        },
        "drivers": {
            "da": {"fields": {"x": {"topic": "a/1", "parse_as": "str"}}},
            "db": {"fields": {"x": {"topic": "b/1", "parse_as": "str"}}},
        },
        "readings": {"ra": {"device": "da", "var": "x"}, "rb": {"device": "db", "var": "x"}},
    }
    c = cfg.load(raw, {})
    assert list(c.buses()) == [f"mqtt_127.0.0.1_{broker.port}"]
    p = poller_for(c)
    try:
        r = p.poll(1000)
        assert r["devices"] == [{"_d": "da", "_vid": "da", "x": 1}, {"_d": "db", "_vid": "db", "x": 2}]
        assert len(re.findall(r"New client connected from .* as ammp-edge-", broker.log)) == 1
    finally:
        p.close()


def test_devices_on_one_broker_with_different_logins_are_warned_about():
    raw = {
        "devices": {
            "da": {
                "driver": "d",
                "reading_type": "mqtt",
                "vendor_id": "a",
                "address": {"host": "h", "username": "u", "password": "secret-1"},
            },
            "db": {
                "driver": "d",
                "reading_type": "mqtt",
                "vendor_id": "b",
                "address": {"host": "h", "username": "u", "password": "secret-2"},
            },
        },
        "drivers": {"d": {"fields": {"x": {"topic": "a/1"}}}},
        "readings": {"ra": {"device": "da", "var": "x"}, "rb": {"device": "db", "var": "x"}},
    }
    c = cfg.load(raw, {})
    assert set(c.devices) == {"da", "db"} and not c.errors
    assert [str(p) for p in c.problems] == [
        "devices.db.address: warning: shares the connection of bus mqtt_h_1883 with 'da', which is made with "
        "'da''s password"
    ]
