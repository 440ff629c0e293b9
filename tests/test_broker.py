"""Local broker and bridges: rendering from the KV store, and the rendered config run by a real mosquitto.

Bridge state, as observed with Debian's mosquitto 2.0.11 (`notifications true`), and checked in
test_custom_bridge_end_to_end:
- when the broker starts, it publishes a retained "0" on the local notification topic (so a stale "1"
  restored from persistence never survives a restart);
- a retained "1" when the bridge connects (also on the remote broker);
- a retained "0" locally as soon as the connection drops, whether the remote broker is stopped or killed;
  the remote broker gets "0" as the bridge's will;
- reconnecting waits restart_timeout: "10 120" means about 10 s after the first drop and then backs off
  (about 10, 22, 49 s ... while the remote stays down). A refused connection is logged as
  "Error creating bridge: Protocol error.", a wrong password as "Connection Refused: Not authorized."
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
import xmlrpc.client
from pathlib import Path

import pytest

from ammp_edge.bridge import model as broker, plan as bridge_plan
from ammp_edge.bridge.model import Layout
from ammp_edge.bridge.persistence import check_persistence
from ammp_edge.bridge.plan import configured_bridges, plan
from ammp_edge.bridge.render import render, write_if_changed
from ammp_edge.core import paths, supervisor
from ammp_edge.core.kvs import KVStore
from helpers.brokers import Mosquitto, Recorder, cloud_broker, free_port, local_auth, publish, retained, wait_until
from helpers.common import AMMP_EDGE, REPO


@pytest.fixture(autouse=True)
def online(monkeypatch):
    """These tests render and run the AMMP bridges (against local brokers only)."""
    monkeypatch.delenv("AE_OFFLINE", raising=False)


def test_offline_renders_no_ammp_bridge_but_a_custom_one(monkeypatch, layout):
    monkeypatch.setenv("AE_OFFLINE", "1")  # `up --demo` on a data dir that was activated before
    kv = {
        "node_id": NODE,
        "access_key": KEY,
        "mqtt_bridge_stage": True,
        "mqtt_bridge_custom": {"host": "10.1.2.3", "tls": False},
    }
    assert [b.name for b in plan(kv, layout).bridges] == ["custom"]


NODE = "0123456789ab"
KEY = "AK-very-secret-access-key"
PW = "PW-very-secret-password"
CERTS = REPO / "conf" / "certs"


@pytest.fixture
def layout(tmp_path) -> Layout:
    return Layout(
        conf_dir=tmp_path / "rendered",
        persistence_dir=tmp_path / "persist",
        templates_dir=REPO / "conf",
        port=18830,
        as_root=False,
        hostname="gw-1",
    )


def rendered(kv, layout, problems=None):
    report = (lambda level, msg: problems.append((level, msg))) if problems is not None else None
    return render(kv, layout, report=report)


def lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def ammp(**extra):
    return {"node_id": NODE, "access_key": KEY, **extra}


# ---------------------------------------------------------------------------------------------
# rendering


def test_prod_bridge_on_by_default_exactly_as_upstream(layout):
    files = rendered(ammp(), layout)
    assert set(files) == {"mosquitto.conf", "passwd", "acl", "conf.d/bridge-prod.conf"}
    assert lines(files["conf.d/bridge-prod.conf"]) == [
        f"connection {NODE}-brg",
        "address mqtt.ammp.io:8883",
        f"remote_clientid {NODE}-brg",
        f"bridge_cafile {CERTS / 'ammp-ca.crt'}",
        "bridge_insecure false",
        "bridge_protocol_version mqttv50",
        f"remote_username {NODE}",
        f"remote_password {KEY}",
        f'topic d/# in 1 "" a/{NODE}/',
        f'topic u/# out 1 "" a/{NODE}/',
        "cleansession false",
        "start_type automatic",
        "restart_timeout 10 120",
        "keepalive_interval 90",
        "notifications true",
        f"notification_topic a/{NODE}/bridge_state",
    ]
    assert f"include_dir {layout.conf_dir / 'conf.d'}" in lines(files["mosquitto.conf"])
    assert [b.state_topic for b in plan(ammp(), layout).bridges] == [f"a/{NODE}/bridge_state"]


def test_main_conf_settings(layout):
    conf = lines(rendered({}, layout)["mosquitto.conf"])
    for line in (
        "listener 18830 127.0.0.1",
        "allow_anonymous true",
        f"password_file {layout.conf_dir / 'passwd'}",
        f"acl_file {layout.conf_dir / 'acl'}",
        "persistence true",
        f"persistence_location {layout.persistence_dir}/",
        "autosave_interval 60",
        "autosave_on_changes false",
        "max_inflight_messages 20",
        "max_queued_messages 1000",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
    ):
        assert line in conf
    assert not any(ln.startswith(("user", "include_dir", "connection")) for ln in conf)
    root = Layout(**{**layout.__dict__, "as_root": True})
    assert "user root" in lines(rendered({}, root)["mosquitto.conf"])


@pytest.mark.parametrize(
    "value,on",
    [(True, True), ("true", True), (False, False), ("false", False), (None, False), (1, False), ("yes", False)],
)
def test_stage_only_when_literally_true(layout, value, on):
    kv = ammp(mqtt_bridge_stage=value) if value is not None else ammp()
    files = rendered(kv, layout)
    assert ("conf.d/bridge-stage.conf" in files) is on
    assert "conf.d/bridge-prod.conf" in files
    if on:
        stage = lines(files["conf.d/bridge-stage.conf"])
        assert f"connection {NODE}-brg-stage" in stage and f"remote_clientid {NODE}-brg-stage" in stage
        assert "address mqtt.stage.ammp.io:8883" in stage
        assert f"bridge_cafile {CERTS / 'ammp-ca-stage.crt'}" in stage
        # both up at once: each bridge gets its own local state topic
        assert [(b.name, b.state_topic) for b in plan(kv, layout).bridges] == [
            ("prod", f"a/{NODE}/bridge_state"),
            ("stage", f"a/{NODE}/bridge_state_stage"),
        ]


@pytest.mark.parametrize(
    "value,on", [(False, False), ("false", False), (True, True), (0, True), (None, True), ("no", True), ({}, True)]
)
def test_prod_off_only_when_literally_false(layout, value, on):
    kv = ammp(mqtt_bridge_prod=value)
    assert ("conf.d/bridge-prod.conf" in rendered(kv, layout)) is on


def test_stage_alone_keeps_upstream_state_topic(layout):
    kv = ammp(mqtt_bridge_prod=False, mqtt_bridge_stage=True)
    files = rendered(kv, layout)
    assert set(files) == {"mosquitto.conf", "passwd", "acl", "conf.d/bridge-stage.conf"}
    assert f"notification_topic a/{NODE}/bridge_state" in lines(files["conf.d/bridge-stage.conf"])


@pytest.mark.parametrize(
    "kv,missing",
    [
        ({}, "node_id and access_key"),
        ({"node_id": NODE}, "access_key"),
        ({"access_key": KEY, "mqtt_bridge_stage": True}, "node_id"),
    ],
)
def test_no_ammp_bridge_without_credentials(layout, kv, missing):
    problems = []
    files = rendered(kv, layout, problems)
    assert set(files) == {"mosquitto.conf", "passwd", "acl"}
    assert "include_dir" not in "\n".join(lines(files["mosquitto.conf"]))
    assert any(f"{missing} not set" in msg for _, msg in problems), problems


def test_node_id_that_would_break_the_config_is_refused(layout):
    problems = []
    files = rendered({"node_id": "ab\nlistener 1883 0.0.0.0", "access_key": KEY}, layout, problems)
    assert set(files) == {"mosquitto.conf", "passwd", "acl"}
    assert "0.0.0.0" not in files["mosquitto.conf"]
    problems = []
    files = rendered({"node_id": NODE, "access_key": "x\nlistener 1883 0.0.0.0"}, layout, problems)
    assert set(files) == {"mosquitto.conf", "passwd", "acl"}
    assert any(msg.startswith("access_key: must be") for _, msg in problems)


def test_numeric_node_id_as_upstream_kvs_set_stores_it(layout):
    files = rendered({"node_id": 112233445566, "access_key": KEY}, layout)
    assert "connection 112233445566-brg" in lines(files["conf.d/bridge-prod.conf"])


def test_prod_override_for_tests_and_private_deployments(layout, tmp_path):
    ca = tmp_path / "my-ca.crt"
    ca.write_text("x")
    files = rendered(ammp(mqtt_bridge_prod_address="broker.example.org:18883", mqtt_bridge_prod_cafile=str(ca)), layout)
    prod = lines(files["conf.d/bridge-prod.conf"])
    assert "address broker.example.org:18883" in prod and f"bridge_cafile {ca}" in prod
    for bad, why in (("nohost", 'is not "host:port"'), ("h:99999", "outside 1..65535"), ("a b:1", "not a host")):
        problems = []
        files = rendered(ammp(mqtt_bridge_prod_address=bad), layout, problems)
        assert "conf.d/bridge-prod.conf" not in files
        assert any("mqtt_bridge_prod_address" in m and why in m for _, m in problems), problems
    problems = []
    files = rendered(ammp(mqtt_bridge_prod_cafile=str(tmp_path / "nope.crt")), layout, problems)
    assert "conf.d/bridge-prod.conf" not in files
    assert any("mqtt_bridge_prod_cafile" in m and "no such file" in m for _, m in problems)


# -- the custom bridge --


def test_custom_bridge_defaults(layout):
    kv = ammp(mqtt_bridge_prod=False, mqtt_bridge_custom={"host": "broker.example.com"})
    files = rendered(kv, layout)
    assert set(files) == {"mosquitto.conf", "passwd", "acl", "conf.d/bridge-custom.conf"}
    custom = lines(files["conf.d/bridge-custom.conf"])
    assert "address broker.example.com:8883" in custom
    assert f"connection {NODE}-brg-custom" in custom and f"remote_clientid {NODE}-brg-custom" in custom
    assert "bridge_capath /etc/ssl/certs" in custom and "bridge_insecure false" in custom
    assert "bridge_protocol_version mqttv50" in custom
    assert f'topic u/# out 1 "" a/{NODE}/' in custom and f'topic d/# in 1 "" a/{NODE}/' in custom
    assert not any(ln.startswith(("remote_username", "remote_password")) for ln in custom)
    # its state topic would equal the prod one: kept apart
    assert f"notification_topic a/{NODE}/bridge_state_custom" in custom
    assert [b.state_topic for b in plan(kv, layout).bridges] == [f"a/{NODE}/bridge_state_custom"]


def test_custom_bridge_without_node_id(layout):
    files = rendered(
        {"mqtt_bridge_custom": {"host": "10.1.2.3", "tls": False, "username": "u", "password": PW}}, layout
    )
    custom = lines(files["conf.d/bridge-custom.conf"])
    assert "address 10.1.2.3:1883" in custom
    assert "connection gw-1-brg-custom" in custom and "remote_clientid gw-1-brg-custom" in custom
    assert 'topic u/# out 1 "" ""' in custom and "notification_topic bridge_state" in custom
    assert not any(ln.startswith("bridge_") and "protocol" not in ln for ln in custom)
    assert "remote_username u" in custom and f"remote_password {PW}" in custom


def test_custom_bridge_all_options(layout, tmp_path):
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
    kv = ammp(
        mqtt_bridge_custom={
            "host": "mqtt.example.net",
            "port": 8884,
            "tls": True,
            "ca_cert": pem,
            "username": "site7",
            "password": PW,
            "topic_prefix": "sites/7/",
            "client_id": "site7-logger",
            "protocol": "mqttv311",
            "insecure": True,
        }
    )
    files = rendered(kv, layout)
    assert files["certs/custom-ca.crt"] == pem + "\n"
    custom = lines(files["conf.d/bridge-custom.conf"])
    for line in (
        "address mqtt.example.net:8884",
        f"bridge_cafile {layout.conf_dir / 'certs' / 'custom-ca.crt'}",
        "bridge_insecure true",
        "bridge_protocol_version mqttv311",
        "remote_clientid site7-logger",
        "remote_username site7",
        f"remote_password {PW}",
        'topic u/# out 1 "" sites/7/',
        "notification_topic sites/7/bridge_state",
    ):
        assert line in custom
    # prod (on by default) and custom side by side
    assert [(b.name, b.state_topic) for b in plan(kv, layout).bridges] == [
        ("prod", f"a/{NODE}/bridge_state"),
        ("custom", "sites/7/bridge_state"),
    ]
    ca = tmp_path / "ca.pem"
    ca.write_text(pem)
    files = rendered(ammp(mqtt_bridge_custom={"host": "h", "ca_file": str(ca), "port": "9000"}), layout)
    assert f"bridge_cafile {ca}" in lines(files["conf.d/bridge-custom.conf"])
    assert "address h:9000" in lines(files["conf.d/bridge-custom.conf"])
    assert "certs/custom-ca.crt" not in files


@pytest.mark.parametrize(
    "custom,message",
    [
        ({"host": "h", "port": 70000}, "mqtt_bridge_custom.port: 70000 is outside 1..65535"),
        ({"host": "h", "port": "abc"}, 'mqtt_bridge_custom.port: must be an integer, got "abc"'),
        ({"port": 8883}, "mqtt_bridge_custom.host: required"),
        ({"host": "::1"}, "IPv6 literals are not supported"),
        ({"host": "h", "tls": "yes"}, 'mqtt_bridge_custom.tls: must be true or false, got "yes"'),
        (
            {"host": "h", "protocol": "mqttv5"},
            'mqtt_bridge_custom.protocol: "mqttv5" is not one of mqttv50, mqttv311, mqttv31',
        ),
        (
            {"host": "h", "ca_file": "/nonexistent/ca.crt"},
            "mqtt_bridge_custom.ca_file: /nonexistent/ca.crt: no such file",
        ),
        ({"host": "h", "ca_file": "ca.crt"}, "must be an absolute path"),
        ({"host": "h", "ca_cert": "not a pem"}, "mqtt_bridge_custom.ca_cert: must be PEM text"),
        (
            {"host": "h", "ca_cert": "-----BEGIN CERTIFICATE-----x-----END CERTIFICATE-----", "ca_file": "/etc/hosts"},
            "give ca_file or ca_cert, not both",
        ),
        ({"host": "h", "topic_prefix": "a/b"}, "mqtt_bridge_custom.topic_prefix: 'a/b' must be empty or end with '/'"),
        ({"host": "h", "topic_prefix": "a/#/"}, "mqtt_bridge_custom.topic_prefix"),
        ({"host": "h", "client_id": "has space"}, "mqtt_bridge_custom.client_id"),
        ({"host": "h", "password": PW}, "mqtt_bridge_custom.password: given without mqtt_bridge_custom.username"),
        (
            {"host": "h", "username": "u", "password": PW + "\nlistener 1 0.0.0.0"},
            "mqtt_bridge_custom.password: must be",
        ),
        ("broker.example.com", "mqtt_bridge_custom: must be an object"),
    ],
)
def test_invalid_custom_bridge_left_out_rest_rendered(layout, custom, message):
    problems = []
    files = rendered(ammp(mqtt_bridge_custom=custom), layout, problems)
    assert set(files) == {"mosquitto.conf", "passwd", "acl", "conf.d/bridge-prod.conf"}
    errors = [m for level, m in problems if level == logging.ERROR]
    assert any(message in m for m in errors), errors
    assert all(m.startswith("custom bridge left out: ") for m in errors)
    assert not any(PW in m for _, m in problems)


def test_unknown_custom_key_is_a_warning_only(layout):
    problems = []
    files = rendered({"mqtt_bridge_custom": {"host": "h", "tsl": False}}, layout, problems)
    assert "conf.d/bridge-custom.conf" in files
    assert (
        logging.WARNING,
        "mqtt_bridge_custom.tsl: unknown key, ignored (known: host, port, tls, ca_file, ca_cert, "
        "username, password, topic_prefix, client_id, protocol, insecure)",
    ) in problems


KV_VARIANTS = [
    {},
    ammp(),
    ammp(mqtt_bridge_stage=True),
    ammp(mqtt_bridge_prod=False),
    ammp(mqtt_bridge_custom={"host": "0.0.0.0", "tls": False}),
    {"mqtt_bridge_custom": {"host": "h", "port": 1883, "tls": False}},
    ammp(mqtt_bridge_prod_address="0.0.0.0:1883", mqtt_bridge_stage=True, mqtt_bridge_custom={"host": "h"}),
]


@pytest.mark.parametrize("kv", KV_VARIANTS)
def test_listener_only_on_loopback(layout, kv):
    files = rendered(kv, layout)
    everything = [ln for text in files.values() for ln in lines(text)]
    listeners = [ln for ln in everything if ln.split()[0] in ("listener", "port", "bind_address", "bind_interface")]
    assert listeners == ["listener 18830 127.0.0.1"]


def test_configured_bridges_reads_the_kv_store(layout):
    store = KVStore()
    assert configured_bridges(store, layout) == []
    store.set("node_id", NODE)
    store.set("access_key", KEY)
    store.set("mqtt_bridge_stage", True)
    store.set("mqtt_bridge_custom", {"host": "h", "topic_prefix": "x/"})
    bridges = configured_bridges(store, layout)
    assert [(b.name, b.state_topic) for b in bridges] == [
        ("prod", f"a/{NODE}/bridge_state"),
        ("stage", f"a/{NODE}/bridge_state_stage"),
        ("custom", "x/bridge_state"),
    ]
    assert KEY not in repr(bridges)
    store.set_raw("mqtt_bridge_custom", b"{not json")
    problems = []
    rendered(bridge_plan.read_kv(store), layout, problems)
    assert (logging.ERROR, "custom bridge left out: mqtt_bridge_custom: the stored value is not valid JSON") in problems
    assert [b.name for b in configured_bridges(store, layout)] == ["prod", "stage"]


def test_write_if_changed(tmp_path):
    d = tmp_path / "out"
    files = {"mosquitto.conf": "a\n", "conf.d/bridge-prod.conf": "p\n", "conf.d/bridge-custom.conf": "c\n"}
    assert write_if_changed(d, files) is True
    assert (d / "conf.d" / "bridge-prod.conf").read_text() == "p\n"
    assert oct((d / "conf.d" / "bridge-prod.conf").stat().st_mode & 0o777) == "0o600"
    mtime = (d / "mosquitto.conf").stat().st_mtime_ns
    assert write_if_changed(d, files) is False
    assert (d / "mosquitto.conf").stat().st_mtime_ns == mtime
    assert write_if_changed(d, {**files, "mosquitto.conf": "b\n"}) is True
    del files["conf.d/bridge-custom.conf"]
    assert write_if_changed(d, files) is True  # the stale bridge file goes
    assert not (d / "conf.d" / "bridge-custom.conf").exists()
    assert sorted(p.name for p in d.rglob("*") if p.is_file()) == ["bridge-prod.conf", "mosquitto.conf"]
    with pytest.raises(ValueError):
        write_if_changed(d, {"../x": ""})


def test_interrupted_save_moved_aside_never_deleted(tmp_path):
    d = tmp_path / "persist"
    d.mkdir()
    assert check_persistence(d) == []
    (d / "mosquitto.db").write_bytes(b"old snapshot")
    assert check_persistence(d) == []  # no .new: nothing to do
    (d / "mosquitto.db.new").write_bytes(b"partial")
    moved = check_persistence(d)
    assert sorted(p.name for p in moved) == ["mosquitto.db", "mosquitto.db.new"]
    assert {p.name: p.read_bytes() for p in moved} == {"mosquitto.db": b"old snapshot", "mosquitto.db.new": b"partial"}
    assert moved[0].parent.parent == d / "aside"
    assert not (d / "mosquitto.db").exists() and not (d / "mosquitto.db.new").exists()
    (d / "mosquitto.db.new").write_bytes(b"again")  # a second time in the same second: its own folder
    assert len(set(p.parent for p in moved) | {check_persistence(d)[0].parent}) == 2


def test_once_renders_checks_persistence_and_keeps_secrets_out_of_the_log(isolated_dirs, monkeypatch):
    data, temp = isolated_dirs
    monkeypatch.setenv("MQTT_BRIDGE_PORT", str(free_port()))
    store = KVStore()
    store.set("node_id", NODE)
    store.set("access_key", KEY)
    store.set("mqtt_bridge_stage", True)
    store.set("mqtt_bridge_stage_cafile", "/nonexistent")  # stage left out, with its reason
    store.set("mqtt_bridge_custom", {"host": "h", "username": "u", "password": PW + "\n", "port": 0})
    store.close()
    (data / "mosquitto").mkdir()
    (data / "mosquitto" / "mosquitto.db.new").write_bytes(b"partial")
    r = subprocess.run(
        [*AMMP_EDGE, "--log-level", "debug", "bridge-config", "--once"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert KEY not in r.stderr and PW not in r.stderr and KEY not in r.stdout
    assert "stage bridge left out: mqtt_bridge_stage_cafile: /nonexistent: no such file" in r.stderr
    assert "mqtt_bridge_custom.port: 0 is outside 1..65535" in r.stderr
    assert "mqtt_bridge_custom.password: must be" in r.stderr
    assert "moved mosquitto.db.new to" in r.stderr
    assert list((data / "mosquitto" / "aside").glob("*/mosquitto.db.new"))
    conf_d = temp / "mosquitto" / "conf.d"
    assert sorted(p.name for p in conf_d.iterdir()) == ["bridge-prod.conf"]
    assert KEY in (conf_d / "bridge-prod.conf").read_text()
    # an existing data directory without a local broker password gets one (owner-only), never logged
    password = (data / "broker-password").read_text().strip()
    assert len(password) >= 24 and (data / "broker-password").stat().st_mode & 0o777 == 0o600
    assert password not in r.stderr + r.stdout
    assert password not in "".join(f.read_text() for f in (temp / "mosquitto").rglob("*") if f.is_file())
    assert (temp / "mosquitto" / "passwd").read_text().startswith("ammp-edge:$7$101$")
    assert (temp / "mosquitto" / "passwd").stat().st_mode & 0o777 == 0o600


def test_the_password_file_changes_only_with_the_password(layout):
    first = render({}, layout, password="a" * 32)
    assert render({}, layout, password="a" * 32) == first, "the same text every time: no broker restart"
    other = render({}, layout, password="b" * 32)
    assert other["passwd"] != first["passwd"] and other["mosquitto.conf"] == first["mosquitto.conf"]
    assert "a" * 32 not in "".join(first.values())


@pytest.mark.parametrize("topic", ["d/command", "d/config", "u/data", "a/0123456789ab/bridge_state"])
def test_a_local_client_without_the_password_cannot_publish(local_port, topic):
    """What a client without the password publishes is acknowledged (MQTT 3.1.1 has no refusal) and
    dropped: the appliance's programs never see it, retained or not."""
    local, _ = start_local({})
    try:
        with Recorder(local_port, "#", **local_auth()) as appliance:
            publish(local_port, topic, b'["sys_reboot"]')
            publish(local_port, topic, b'["sys_reboot"]', retain=True)
            publish(local_port, "u/mark", b"after", **local_auth())  # the broker handles them in turn
            appliance.wait_for(lambda m: m.topic == "u/mark")
            assert [m for m in appliance.messages if m.topic == topic] == []
        assert retained(local_port, topic, **local_auth()) is None
    finally:
        local.stop()


def test_a_local_client_without_the_password_reads_u_and_nothing_else(local_port):
    local, _ = start_local({})
    try:
        with Recorder(local_port, "#", "$SYS/#") as anyone, Recorder(local_port, "d/#", **local_auth()) as node:
            for topic in ("d/config", "d/command", "u/data", "u/meta/version", "a/x/bridge_state"):
                publish(local_port, topic, topic.encode(), **local_auth())
            publish(local_port, "u/mark", b"last", **local_auth())
            anyone.wait_for(lambda m: m.topic == "u/mark")
            node.wait_for(lambda m: m.topic == "d/command")
        assert [m.topic for m in anyone.messages] == ["u/data", "u/meta/version", "u/mark"]
        assert retained(local_port, "d/config") is None  # nor as a new subscriber
    finally:
        local.stop()


def test_a_wrong_broker_password_is_refused(local_port):
    local, _ = start_local({})
    try:
        for user, password in (("ammp-edge", "wrong"), ("someone", local_auth()["password"])):
            r = subprocess.run(
                ["mosquitto_pub", "-p", str(local_port), "-u", user, "-P", password, "-t", "u/x", "-m", "x"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert r.returncode != 0 and "not authorised" in r.stderr.lower(), (user, r.stderr)
    finally:
        local.stop()


# ---------------------------------------------------------------------------------------------
# the rendered config run by a real mosquitto


@pytest.fixture
def local_port(monkeypatch) -> int:
    port = free_port()
    monkeypatch.setenv("MQTT_BRIDGE_PORT", str(port))
    return port


def start_local(kv: dict) -> tuple[Mosquitto, list[broker.Bridge]]:
    """Render `kv` as bridge-config does and start mosquitto on the result."""
    layout = Layout.default()
    layout.persistence_dir.mkdir(parents=True, exist_ok=True)
    write_if_changed(layout.conf_dir, render(kv, layout))
    local = Mosquitto(layout.conf_dir / "mosquitto.conf", layout.port, layout.conf_dir.parent / "local-mosquitto.log")
    return local.start(), plan(kv, layout).bridges


def test_every_kind_of_rendered_config_is_accepted_by_mosquitto(tmp_path, local_port):
    """Real mosquitto parses each variant and listens (all remote addresses are a closed local port)."""
    closed = free_port()
    ca = tmp_path / "ca.pem"
    ca.write_text((CERTS / "ammp-ca.crt").read_text())
    variants = [
        {},
        ammp(
            mqtt_bridge_prod_address=f"127.0.0.1:{closed}",
            mqtt_bridge_stage=True,
            mqtt_bridge_stage_address=f"127.0.0.1:{closed}",
        ),
        ammp(mqtt_bridge_prod=False, mqtt_bridge_custom={"host": "127.0.0.1", "port": closed}),  # system CAs
        {"mqtt_bridge_custom": {"host": "127.0.0.1", "port": closed, "tls": False, "topic_prefix": ""}},
        ammp(
            mqtt_bridge_prod=False,
            mqtt_bridge_custom={
                "host": "localhost",
                "port": closed,
                "ca_cert": ca.read_text(),
                "username": "u",
                "password": "p w",
                "protocol": "mqttv311",
                "insecure": True,
                "client_id": "x.y:z",
                "topic_prefix": "site/7/",
            },
        ),
        ammp(
            mqtt_bridge_prod=False,
            mqtt_bridge_custom={"host": "127.0.0.1", "port": closed, "ca_file": str(ca), "protocol": "mqttv31"},
        ),
    ]
    for kv in variants:
        local, bridges = start_local(kv)
        try:
            time.sleep(0.3)
            assert local.running, local.log
            for b in bridges:
                local.wait_for_log(
                    f"Connecting bridge (step 1) {b.connection} (127.0.0.1:{closed})"
                    if b.address.startswith("127.")
                    else f"Connecting bridge (step 1) {b.connection}"
                )
            for b in bridges:
                assert retained(local_port, b.state_topic, **local_auth()) == b"0"
        finally:
            local.stop()


def push_until_received(cloud, topic: str, payload: bytes, rec: Recorder, local_topic: str, timeout=15.0):
    """Publish at the cloud until the local recorder has it (the bridge subscribes just after connecting)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        publish(cloud.admin_port, topic, payload, **cloud.admin_auth)
        try:
            return rec.wait_for(lambda m: m.topic == local_topic and m.payload == payload, 1.0)
        except AssertionError:
            continue
    raise AssertionError(f"{topic} never arrived locally as {local_topic}")


@pytest.mark.slow
def test_custom_bridge_end_to_end(tmp_path, local_port):
    cloud = cloud_broker(tmp_path, node_user=NODE, node_password=PW)
    local = None
    try:
        local, bridges = start_local(
            {
                "node_id": NODE,
                "mqtt_bridge_prod": False,
                "mqtt_bridge_custom": {
                    "host": "127.0.0.1",
                    "port": cloud.tls_port,
                    "ca_file": str(cloud.ca.ca_crt),
                    "username": NODE,
                    "password": PW,
                    "topic_prefix": f"a/{NODE}/",
                },
            }
        )
        state = f"a/{NODE}/bridge_state_custom"
        assert [b.state_topic for b in bridges] == [state]
        with (
            Recorder(local_port, state, "d/#", **local_auth()) as here,
            Recorder(cloud.admin_port, f"a/{NODE}/#", **cloud.admin_auth) as there,
        ):
            here.wait_for_last(state, "1", timeout=15)
            assert retained(local_port, state, **local_auth()) == b"1"
            there.wait_for(lambda m: m.topic == state and m.payload == b"1", what="remote state 1")

            publish(local_port, "u/data", b'{"t":1}', **local_auth())
            got = there.wait_for(lambda m: m.topic == f"a/{NODE}/u/data", what="u/data at the cloud")
            assert got.payload == b'{"t":1}'

            push_until_received(cloud, f"a/{NODE}/d/config", b'{"devices":{}}', here, "d/config")

            cloud.stop()  # the uplink goes away: a retained 0 locally, at once
            here.wait_for_last(state, "0", timeout=10)
            assert retained(local_port, state, **local_auth()) == b"0"
            cloud.start()  # back: the bridge retries after restart_timeout (10 s after the first drop)
            here.wait_for_last(state, "1", timeout=45)
            assert retained(local_port, state, **local_auth()) == b"1"

            publish(local_port, "u/data", b'{"t":2}', **local_auth())
            there.wait_for(lambda m: m.topic == f"a/{NODE}/u/data" and m.payload == b'{"t":2}', 15)
        assert PW not in local.log
    finally:
        if local:
            local.stop()
        cloud.stop()


@pytest.mark.slow
def test_stale_connected_state_does_not_survive_a_broker_restart(tmp_path, local_port):
    cloud = cloud_broker(tmp_path, node_user=NODE, node_password=PW)
    local = None
    try:
        local, bridges = start_local(
            {
                "node_id": NODE,
                "access_key": PW,
                "mqtt_bridge_prod_address": f"127.0.0.1:{cloud.tls_port}",
                "mqtt_bridge_prod_cafile": str(cloud.ca.ca_crt),
            }
        )
        state = bridges[0].state_topic
        wait_until(lambda: retained(local_port, state, 0.5, **local_auth()) == b"1", 15, what="bridge up")
        cloud.stop()
        local.stop()  # saves its persistence, with the retained state in it
        local.start()  # remote still down
        assert retained(local_port, state, **local_auth()) == b"0"
    finally:
        if local:
            local.stop()
        cloud.stop()


@pytest.mark.slow
def test_wrong_password_never_connects(tmp_path, local_port):
    cloud = cloud_broker(tmp_path, node_user=NODE, node_password=PW)
    local = None
    try:
        local, bridges = start_local(
            {
                "node_id": NODE,
                "mqtt_bridge_prod": False,
                "mqtt_bridge_custom": {
                    "host": "127.0.0.1",
                    "port": cloud.tls_port,
                    "ca_file": str(cloud.ca.ca_crt),
                    "username": NODE,
                    "password": "wrong-password",
                },
            }
        )
        state = bridges[0].state_topic
        with Recorder(local_port, state, **local_auth()) as here:
            local.wait_for_log("Connection Refused: Not authorized")
            time.sleep(1.0)
            assert {m.payload for m in here.on(state)} == {b"0"}
        assert retained(local_port, state, **local_auth()) == b"0"
        assert "wrong-password" not in local.log
    finally:
        if local:
            local.stop()
        cloud.stop()


@pytest.mark.slow
def test_prod_override_end_to_end(tmp_path, local_port):
    cloud = cloud_broker(tmp_path, node_user=NODE, node_password=KEY)
    local = None
    try:
        local, bridges = start_local(
            ammp(mqtt_bridge_prod_address=f"127.0.0.1:{cloud.tls_port}", mqtt_bridge_prod_cafile=str(cloud.ca.ca_crt))
        )
        assert [(b.name, b.state_topic) for b in bridges] == [("prod", f"a/{NODE}/bridge_state")]
        with (
            Recorder(local_port, "d/#", f"a/{NODE}/bridge_state", **local_auth()) as here,
            Recorder(cloud.admin_port, f"a/{NODE}/#", **cloud.admin_auth) as there,
        ):
            here.wait_for_last(f"a/{NODE}/bridge_state", "1", timeout=15)
            there.wait_for(lambda m: m.topic == f"a/{NODE}/bridge_state" and m.payload == b"1")
            publish(local_port, "u/meta/arch", b"Linux 6.1 aarch64", **local_auth())
            assert there.wait_for(lambda m: m.topic == f"a/{NODE}/u/meta/arch").payload == b"Linux 6.1 aarch64"
            push_until_received(cloud, f"a/{NODE}/d/command", b'["env_scan"]', here, "d/command")
        assert KEY not in local.log
    finally:
        if local:
            local.stop()
        cloud.stop()


# ---------------------------------------------------------------------------------------------
# bridge-config under a real supervisord


SUPERVISORD_CONF = """\
[unix_http_server]
file={sock}
chmod=0700

[supervisord]
logfile={dir}/supervisord.log
pidfile={dir}/supervisord.pid
childlogdir={dir}
nodaemon=true

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[program:mosquitto]
command=/usr/sbin/mosquitto -c {rendered}/mosquitto.conf
startsecs=1
autorestart=true
redirect_stderr=true
stdout_logfile={dir}/mosquitto.log

[program:bridge-config]
command={python} -m ammp_edge bridge-config --interval 0.2
startsecs=0
autorestart=true
redirect_stderr=true
stdout_logfile={dir}/bridge-config.log
"""


class Supervisord:
    def __init__(self, tmp_path: Path):
        self.dir = tmp_path / "sv"
        self.dir.mkdir()
        self.sock = paths.supervisor_socket()
        conf = self.dir / "supervisord.conf"
        conf.write_text(
            SUPERVISORD_CONF.format(
                sock=self.sock, dir=self.dir, rendered=paths.mosquitto_rendered_dir(), python=sys.executable
            )
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def info(self, name: str) -> dict:
        # a fresh connection each time: a failed call (socket not there yet) spoils the transport
        return supervisor.connect(self.sock).supervisor.getProcessInfo(name)

    def running_pid(self, name: str) -> int | None:
        try:
            info = self.info(name)
        except (OSError, xmlrpc.client.Fault):
            return None
        return info["pid"] if info["statename"] == "RUNNING" else None

    def log(self, name: str) -> str:
        path = self.dir / f"{name}.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.mark.slow
def test_bridge_config_restarts_broker_exactly_when_rendered_text_changes(tmp_path, local_port):
    store = KVStore()
    store.set("node_id", NODE)
    store.set("access_key", KEY)
    # nothing leaves this host: both AMMP bridges point at a closed local port
    closed = free_port()
    store.set("mqtt_bridge_prod_address", f"127.0.0.1:{closed}")
    store.set("mqtt_bridge_stage_address", f"127.0.0.1:{closed}")
    assert subprocess.run([*AMMP_EDGE, "bridge-config", "--once"], timeout=60).returncode == 0
    conf_d = paths.mosquitto_rendered_dir() / "conf.d"
    assert sorted(p.name for p in conf_d.iterdir()) == ["bridge-prod.conf"]

    sv = Supervisord(tmp_path)
    try:
        pid = wait_until(lambda: sv.running_pid("mosquitto"), 20, what="mosquitto RUNNING")
        wait_until(lambda: "rendering" in sv.log("bridge-config"), 20, what="bridge-config started")

        def settles_with(expected_pid):
            time.sleep(1.5)  # several polls of bridge-config
            # a slow XML-RPC answer reads as None: ask again; a restart still shows as another pid
            now = wait_until(lambda: sv.running_pid("mosquitto"), 10, 0.2, what="mosquitto RUNNING")
            assert now == expected_pid, sv.log("bridge-config")

        def restarts_from(old_pid):
            new = wait_until(
                lambda: (p := sv.running_pid("mosquitto")) and p != old_pid and p, 20, what="mosquitto restarted"
            )
            settles_with(new)
            return new

        settles_with(pid)  # same text as --once rendered: no restart

        store.set("mqtt_bridge_stage", True)  # stage bridge added
        pid = restarts_from(pid)
        assert sorted(p.name for p in conf_d.iterdir()) == ["bridge-prod.conf", "bridge-stage.conf"]

        store.set("mqtt_bridge_stage", "true")  # a different KV value, the same rendered text
        store.set("config", {"devices": {}})  # a key the broker does not depend on
        settles_with(pid)

        custom = {"host": "127.0.0.1", "port": closed, "tls": False}
        store.set("mqtt_bridge_custom", custom)  # custom bridge added
        pid = restarts_from(pid)
        assert "bridge-custom.conf" in {p.name for p in conf_d.iterdir()}

        store.set("mqtt_bridge_custom", dict(reversed(custom.items())))  # same settings, other key order
        settles_with(pid)

        store.set("mqtt_bridge_custom", {**custom, "port": 70000})  # invalid: left out, so it changes
        pid = restarts_from(pid)
        assert "bridge-custom.conf" not in {p.name for p in conf_d.iterdir()}

        store.set("mqtt_bridge_stage", False)
        pid = restarts_from(pid)
        assert sorted(p.name for p in conf_d.iterdir()) == ["bridge-prod.conf"]

        log = sv.log("bridge-config")
        assert log.count("restarted with the new config") == 4, log
        assert log.count("mqtt_bridge_custom.port: 70000 is outside 1..65535") == 1, log  # said once, not every poll
        assert KEY not in log
        # the broker really runs what was rendered last
        last_run = sv.log("mosquitto").split("mosquitto version 2.0.11 starting")[-1]
        assert f"{NODE}-brg (" in last_run and f"{NODE}-brg-stage" not in last_run, last_run
    finally:
        sv.stop()
        store.close()
    assert "bridge-config stopping" in sv.log("bridge-config")  # SIGTERM from supervisord handled


def test_bridge_config_without_supervisord_keeps_running(local_port):
    store = KVStore()
    proc = subprocess.Popen([*AMMP_EDGE, "bridge-config", "--interval", "0.1"], stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (paths.mosquitto_rendered_dir() / "mosquitto.conf").exists(), 20, what="first render")
        store.set("mqtt_bridge_custom", {"host": "127.0.0.1", "tls": False})
        wait_until(
            lambda: (paths.mosquitto_rendered_dir() / "conf.d" / "bridge-custom.conf").exists(), 20, what="re-render"
        )
        time.sleep(1.0)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        store.close()
    assert proc.returncode == 0, err
    assert err.count("supervisord not reachable") == 1, err  # once, not every poll
    assert "bridge-config stopping" in err
