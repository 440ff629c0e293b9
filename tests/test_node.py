"""Node management and the AMMP cloud link: identity and activation, config intake (HTTP watch,
d/config push, provisioning file), metadata, the clock; unit tests against a fake AMMP API
(tests/fake_cloud.py) and a real mosquitto, and end to end with `ammp-edge up` from an empty data dir."""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from ammp_edge import __version__
from ammp_edge.core import clock, config as cfg, configdoor, jsontext, keys
from ammp_edge.core.kvs import KVStore
from ammp_edge.node import intake, meta, provision
from ammp_edge.node.cloudapi import Api, ApiError, Retry
from helpers.brokers import Mosquitto, Recorder, publish, wait_until
from helpers.common import AMMP_EDGE
from helpers.fake_cloud import FakeCloud

LOCAL_BROKER = "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {dir}/\n"


def sys_config(**extra) -> dict:
    return {
        "devices": {"lg": {"driver": "sys_generic", "reading_type": "sys", "vendor_id": "lg"}},
        "readings": {"mem": {"device": "lg", "var": "memory_usage"}},
        "read_interval": 5,
        **extra,
    }


# -- node id ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "macs, expected",
    [
        ({"lo": "00:00:00:00:00:00", "wlan0": "aa:bb:cc:00:00:01", "eth0": "B8:27:EB:12:34:56"}, "b827eb123456"),
        ({"eth1": "02:00:00:00:00:02", "en0": "02:00:00:00:00:01"}, "020000000001"),
        ({"wlan1": "02:00:00:00:00:09", "eth1": "02:00:00:00:00:02"}, "020000000002"),
        ({"lo": "00:00:00:00:00:00", "docker0": "02-42-AC-11-00-02", "veth1": "0a:00:00:00:00:01"}, "0242ac110002"),
        ({"eth0": "00:00:00:00:00:00", "enp3s0": "d8:3a:dd:01:02:03"}, "d83add010203"),  # eth0 all zero: skipped
        ({"lo": "00:00:00:00:00:00"}, "ff0123456789"),
        ({}, "ff0123456789"),
        ({"ib0": "80:00:02:08:fe:80:00:00:00:00", "eth0": "junk"}, "ff0123456789"),  # not 6-byte MACs
    ],
)
def test_node_id_from_the_primary_interface(macs, expected):
    assert provision.node_id_from(macs, random_hex=lambda: "0123456789") == expected


def test_node_id_fallback_is_random_and_well_formed():
    ids = {provision.node_id_from({}) for _ in range(5)}
    assert len(ids) == 5 and all(len(i) == 12 and i.startswith("ff") and int(i, 16) for i in ids)
    assert len(provision.generate_node_id()) == 12


# -- digest and the exact bytes ------------------------------------------------------------------


def test_digest_is_upstreams_sha1_of_sort_keys_json_without_config_id():
    doc = {"readings": {"b": 1, "a": "é"}, "devices": {}, "config_id": "abcdef0", "read_interval": 60.0}
    upstream = hashlib.sha1(json.dumps({k: v for k, v in doc.items() if k != "config_id"}, sort_keys=True).encode())
    assert cfg.digest(doc) == upstream.hexdigest()[:7]
    # default separators and ASCII escapes, as Python's json.dumps: a compact dump would differ
    assert (
        cfg.digest(doc) != hashlib.sha1(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:7]
    )


ODD = b'{ "b" : [1, 2.50, {"x": "\\u00e9"}],\n\t"config_id":"1234567" ,"a": "\xc3\xa9", "n": null }'


def test_the_config_is_cut_out_of_the_envelope_byte_for_byte():
    body = b'{"config_id": "x", "config" :\n ' + ODD + b' , "other": [1, {"config": 2}]}'
    assert intake.config_from_envelope(body) == ODD
    dup = b'{"config": {"old": 1}, "config": ' + ODD + b"}"  # duplicate key: the last, as json.loads
    assert intake.config_from_envelope(dup) == ODD
    for bad in (b"\x00\xffgarbage", b'{"config": {}}', b'{"config": [1]}', b"[1]", b'{"config": '):
        with pytest.raises(ApiError):
            intake.config_from_envelope(bad)


@pytest.mark.parametrize(
    "text, expected",
    [
        (ODD.decode(), '{ "b" : [1, 2.50, {"x": "\\u00e9"}],\n\t"a": "é", "n": null }'),
        ('{"config_id": "a"}', "{}"),
        ('{"config_id": "a", "x": 1}', '{"x": 1}'),
        ('{"x": 1, "config_id": "a"}', '{"x": 1}'),
        ('{"x": {"config_id": 1}}', '{"x": {"config_id": 1}}'),  # only the top level
        ('{"config_id": 1, "x": 2, "config_id": 3}', '{"x": 2}'),
    ],
)
def test_config_id_is_cut_out_and_nothing_else_changes(text, expected):
    out = jsontext.without_member(text, "config_id")
    assert out == expected
    assert json.loads(out) == {k: v for k, v in json.loads(text).items() if k != "config_id"}


# -- legacy data directory ------------------------------------------------------------------------


def legacy_db(path: Path, rows) -> Path:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE nodeconfig (node_id TEXT, access_key TEXT, config TEXT)")
    db.executemany("INSERT INTO nodeconfig VALUES (?, ?, ?)", rows)
    db.commit()
    db.close()
    return path


def test_legacy_config_db_first_row_is_taken_over(isolated_dirs):
    data, _ = isolated_dirs
    conf = json.dumps(sys_config())
    legacy_db(data / "config.db", [("b827eb000001", "legacy-key", conf), ("b827eb000002", "other", None)])
    store = KVStore()
    ident = provision.ensure_identity(store, threading.Event(), api_for=_no_api)
    assert ident == ("b827eb000001", "legacy-key")
    assert store.get_raw("config") == conf.encode()
    assert store.get("activated") is None  # not ours to invent


def test_an_existing_identity_is_kept_and_legacy_ignored(isolated_dirs):
    data, _ = isolated_dirs
    legacy_db(data / "config.db", [("b827eb000001", "legacy-key", None)])
    store = KVStore()
    store.set("node_id", "0123456789ab")
    store.set("access_key", "k")
    assert provision.ensure_identity(store, threading.Event(), api_for=_no_api) == ("0123456789ab", "k")


def test_a_broken_legacy_db_means_activation(isolated_dirs):
    data, _ = isolated_dirs
    (data / "config.db").write_bytes(b"not a database at all" * 100)
    with FakeCloud(access_key="fresh") as api:
        store = KVStore()
        ident = provision.ensure_identity(
            store, threading.Event(), lambda: Api(api.base_url, 2), node_id=lambda: "d83add010203", retry_first=0.01
        )
    assert ident == ("d83add010203", "fresh")


def _no_api():
    raise AssertionError("no HTTP call expected")


# -- activation against the fake API ---------------------------------------------------------------


@pytest.mark.parametrize(
    "route, faults",
    [
        ("GET activate", ["500"]),
        ("GET activate", ["slow"]),
        ("GET activate", ["garbage", "invalid_json", "drop"]),
        ("POST activate", ["500", "garbage"]),
        ("POST activate", ["slow", "invalid_json"]),
    ],
)
def test_activation_retries_until_it_works(route, faults, caplog):
    caplog.set_level(logging.DEBUG)
    with FakeCloud(access_key="s3cr3t-key-value", slow_s=1.0) as api:
        api.fail(route, *faults)
        store = KVStore()
        started = time.monotonic()
        ident = provision.ensure_identity(
            store,
            threading.Event(),
            lambda: Api(api.base_url, timeout=0.5),
            node_id=lambda: "b827eb123456",
            retry_first=0.05,
        )
        assert ident == ("b827eb123456", "s3cr3t-key-value")
        assert api.activated == {"b827eb123456"}
        assert api.calls(route.split()[0], "activate") >= len(faults) + 1
    assert time.monotonic() - started < 10
    assert store.get("node_id") == "b827eb123456" and store.get("access_key") == "s3cr3t-key-value"
    assert time.time() - time.mktime(time.strptime(store.get("activated"), "%Y-%m-%dT%H:%M:%SZ")) + time.timezone < 60
    auths = [a for m, p, a in api.requests if m == "POST"]
    assert auths and set(auths) == {"s3cr3t-key-value"}  # the raw key, no scheme
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, "one warning per episode of failures"
    assert "works again" in caplog.text
    assert "s3cr3t-key-value" not in caplog.text


def test_activation_uses_the_base_url_from_the_kv_store_and_stops_on_request():
    store = KVStore()
    with FakeCloud(access_key="k") as api:
        store.set("http_api_base_url", api.base_url)
        api.fail("GET activate", *["500"] * 100)
        stop = threading.Event()
        result = {}
        th = threading.Thread(
            target=lambda: result.update(
                ident=provision.ensure_identity(store, stop, node_id=lambda: "020000000001", retry_first=0.05)
            )
        )
        th.start()
        wait_until(lambda: api.calls("GET", "activate") >= 3, 5)
        stop.set()
        th.join(5)
    assert not th.is_alive() and result["ident"] is None and store.get("node_id") is None


def test_retry_backs_off_exponentially_up_to_the_cap():
    r = Retry("x", first=5, cap=300)
    assert [r.failed("e") for _ in range(9)] == [5, 10, 20, 40, 80, 160, 300, 300, 300]
    r.succeeded()
    assert r.failed("e") == 5


# -- config intake -------------------------------------------------------------------------------


class Published(list):
    def __call__(self, topic, text):
        self.append((topic, text))


@pytest.fixture
def intake_(builtin_drivers):
    store = KVStore()
    pub = Published()
    return intake.Intake(store, builtin_drivers, pub), store, pub


def test_a_usable_config_is_stored_raw_without_config_id(intake_):
    it, store, pub = intake_
    raw = (
        b'{"read_interval": 5,  "config_id": "abc1234",\n "devices": {"lg": {"driver": "sys_generic", '
        b'"reading_type": "sys", "vendor_id": "lg"}}, "readings": {"mem": {"device": "lg", "var": "memory_usage"}}}'
    )
    assert it.offer(raw, "d/config")
    assert store.get_raw("config") == raw.replace(b'"config_id": "abc1234",\n ', b"")
    assert pub == []
    assert it.stored_digest() == cfg.digest(json.loads(raw))


@pytest.mark.parametrize(
    "raw, says",
    [
        (b"{ this is not json", "not valid JSON"),
        (b'{"devices": [], "readings": {}}', "devices: missing or not an object"),
        (b'{"devices": {}, "readings": {}, "read_interval": 0}', "read_interval"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[]", "a config must be a JSON object"),
    ],
)
def test_an_unusable_config_is_refused_and_said_on_u_log_msg(intake_, raw, says):
    it, store, pub = intake_
    good = json.dumps(sys_config()).encode()
    assert it.offer(good, "d/config")
    assert not it.offer(raw, "d/config")
    assert store.get_raw("config") == good
    ((topic, text),) = pub
    assert topic == "u/log/msg" and "refused, the previous config keeps running" in text and says in text
    assert not it.offer(raw, "api", quiet_repeat=True) and len(pub) == 1, "the hourly watch says it once"
    assert not it.offer(raw, "d/config") and len(pub) == 2, "a push is always answered"


def test_a_config_with_one_bad_device_is_stored_and_the_problem_published(intake_):
    it, store, pub = intake_
    doc = sys_config()
    doc["devices"]["bad"] = {
        "driver": "sma_stp25000",
        "reading_type": "modbustcp",
        "vendor_id": "b",
        "address": {"host": "h", "port": "abc"},
    }
    doc["readings"]["p"] = {"device": "bad", "var": "P_total"}
    assert it.offer(json.dumps(doc).encode(), "d/config")
    assert json.loads(store.get_raw("config")) == doc
    assert pub == [], "node says it when the config starts to run (whichever door stored it)"
    text = configdoor.announcement(store, cfg.load(doc, it.builtin))
    assert text.startswith(f"config {cfg.digest(doc)} running, from d/config at ")
    assert "devices.bad.address.port" in text and "the rest runs" in text


def test_the_provisioning_file_is_the_initial_config_only(intake_, tmp_path):
    it, store, pub = intake_
    f = tmp_path / "provisioning" / "config.json"
    assert not it.provision(f)
    f.parent.mkdir()
    f.write_bytes(json.dumps(sys_config(read_interval=7)).encode())
    assert it.provision(f) and json.loads(store.get_raw("config"))["read_interval"] == 7
    f.write_bytes(json.dumps(sys_config(read_interval=9)).encode())
    assert not it.provision(f) and json.loads(store.get_raw("config"))["read_interval"] == 7


def test_http_watch_downloads_only_when_the_config_id_differs(intake_):
    it, store, pub = intake_
    with FakeCloud(access_key="k") as api:
        api.keys["0123456789ab"] = "k"
        watch = intake.HttpWatch(it, lambda: Api(api.base_url, 2), "0123456789ab", "k", 3600)
        assert watch.check() == "the cloud has no config for this node"
        raw = (
            b'{"devices": {"lg": {"driver": "sys_generic", "reading_type": "sys", "vendor_id": "lg"}},'
            b' "config_id": "zzz",'
            b' "readings": {"m": {"device": "lg", "var": "memory_usage"}}, "read_interval": 30}'
        )
        api.set_config(raw)
        assert "stored" in watch.check()
        assert store.get_raw("config") == raw.replace(b' "config_id": "zzz",', b"")
        assert it.stored_digest() == api.config_id()
        assert watch.check() == f"config {api.config_id()} is current"
        assert api.calls("GET", "config") == 1
        api.fail("GET node", "500")
        with pytest.raises(ApiError, match="HTTP 500"):
            watch.check()
        api.set_config(json.dumps(sys_config(read_interval=11)).encode())
        api.fail("GET config", "garbage")
        with pytest.raises(ApiError, match="not JSON"):
            watch.check()
        assert "stored" in watch.check() and json.loads(store.get_raw("config"))["read_interval"] == 11
        wrong = intake.HttpWatch(it, lambda: Api(api.base_url, 2), "0123456789ab", "wrong-key", 3600)
        with pytest.raises(ApiError, match="HTTP 401"):
            wrong.check()
        assert (
            Api(api.base_url, 2).request("POST", "nodes/0123456789ab/env_scan", "k", {"time": "x"}).status_code == 204
        )
        assert json.loads(api.env_scans[0]) == {"time": "x"}


# -- clock ---------------------------------------------------------------------------------------


def test_clock_trusted_when_ntp_synchronised_or_the_rtc_runs():
    assert clock.status(lambda: {"NTPSynchronized": "yes"}, sleep=lambda s: None) == (True, "NTP synchronised")
    rtc = iter(["Thu 2026-11-26 10:00:00", "Thu 2026-11-26 10:00:01"])
    assert clock.status(lambda: {"NTPSynchronized": "no", "RTCTimeUSec": next(rtc)}, sleep=lambda s: None)[0]
    stuck = lambda: {"NTPSynchronized": "no", "RTCTimeUSec": "Thu 1970-01-01 00:00:00"}
    assert not clock.status(stuck, sleep=lambda s: None)[0]
    assert not clock.status(lambda: {"NTPSynchronized": "no", "RTCTimeUSec": "n/a"}, sleep=lambda s: None)[0]


def test_clock_wait_says_so_on_u_log_msg_with_backoff_then_trusts():
    pub = Published()
    answers = [(False, "NTP is not synchronised")] * 12 + [(True, "NTP synchronised")]
    checks = iter(answers)
    assert clock.wait_until_trusted(
        threading.Event(), pub, check=lambda: next(checks), container=False, check_every=0.01, first_gap=0.03
    )
    assert 2 <= len(pub) <= 4, "not at every check"
    assert all(t == "u/log/msg" and "waiting for a trustworthy clock" in x for t, x in pub)


def test_clock_without_timedatectl_or_systemd_or_in_a_container_is_trusted():
    pub = Published()

    def missing():
        raise FileNotFoundError("timedatectl")

    def no_systemd():
        raise clock.ClockUnknown("System has not been booted with systemd")

    assert clock.wait_until_trusted(threading.Event(), pub, check=missing, container=False) and pub == []
    assert clock.wait_until_trusted(threading.Event(), pub, check=no_systemd, container=False)
    assert len(pub) == 1 and "System has not been booted with systemd" in pub[0][1]
    assert clock.wait_until_trusted(threading.Event(), pub, check=_no_api, container=True)
    with pytest.raises(FileNotFoundError):
        clock.timedatectl_show("/nonexistent/timedatectl")


def test_a_bus_under_supervisord_waits_for_the_clock(monkeypatch):
    from ammp_edge.core.kvs import cache

    monkeypatch.setenv("SUPERVISOR_ENABLED", "1")
    stop = threading.Event()
    done = []
    th = threading.Thread(target=lambda: done.append(clock.wait_for_trust(stop, "sys", poll=0.05)))
    th.start()
    time.sleep(0.3)
    assert not done
    clock.mark_trusted(cache())
    th.join(2)
    assert done == [True]
    monkeypatch.delenv("SUPERVISOR_ENABLED")
    cache().delete(keys.CLOCK_TRUSTED)
    assert clock.wait_for_trust(stop, "sys")  # not under supervisord: no wait


# -- metadata ------------------------------------------------------------------------------------


def test_ssh_fingerprint_is_ssh_keygens_without_prefix(tmp_path):
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", str(tmp_path / "ssh_host_ecdsa_key")],
        check=True,
        timeout=30,
    )
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(tmp_path / "ssh_host_ecdsa_key.pub")],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.split()[1]
    assert out.startswith("SHA256:") and meta.ssh_fingerprint(tmp_path) == out[len("SHA256:") :]
    assert meta.ssh_fingerprint(tmp_path / "none") is None
    vals = meta.values(1_700_000_000, tmp_path)
    assert vals["ssh_fingerprint"] == out[7:] and vals["start_time"] == "1700000000"
    assert len(vals["arch"].split()) >= 4 and int(vals["boot_time"]) < time.time()
    assert vals["snap_rev"] == vals["version"] == __version__


def test_ssh_fingerprint_needs_no_ssh_keygen_and_is_empty_without_a_host_key(tmp_path, monkeypatch):
    """In a container there is neither ssh-keygen nor a host key: the value is computed without any
    program, and without a key it is published empty (what upstream's script prints then)."""
    # a real key and what `ssh-keygen -lf` printed for it: SHA256:4cy2H8dI79Q4JnF99v5NjnU8DZ43I2oXSf0Yi/wBADY
    key = (
        "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBCJ8qzwc4J4OzwOS1kNTI8dVCrF6HrM3WgnqlAbuqdnEAdUIF8OE"
        "Rgihim5rdkiCQdXK1CNmVMcZCRdLOu9dcEc="
    )
    (tmp_path / "ssh_host_ecdsa_key.pub").write_text(f"ecdsa-sha2-nistp256 {key} root@host\n")
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no ssh-keygen, no program at all
    assert meta.values(0, tmp_path)["ssh_fingerprint"] == "4cy2H8dI79Q4JnF99v5NjnU8DZ43I2oXSf0Yi/wBADY"
    assert meta.values(0, tmp_path / "none")["ssh_fingerprint"] == ""
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "ssh_host_ecdsa_key.pub").write_text("ecdsa-sha2-nistp256 not*base64\n")
    assert meta.values(0, tmp_path / "bad")["ssh_fingerprint"] == ""


def test_meta_clears_the_retained_values_then_publishes(tmp_path, monkeypatch):
    from ammp_edge.delivery.mqtt import MqttLink

    with Mosquitto.from_text(tmp_path / "b", LOCAL_BROKER) as broker:
        publish(broker.port, "u/meta/arch", "old", retain=True)
        monkeypatch.setenv("MQTT_BRIDGE_PORT", str(broker.port))
        with Recorder(broker.port, "u/meta/#") as rec:
            rec.wait_for(lambda m: m.retain and m.payload == b"old")
            link = MqttLink("t-meta")
            link.start()
            try:
                assert meta.publish_meta(
                    link, {"arch": "Linux x", "ssh_fingerprint": "", "version": "9"}, threading.Event(), within=10
                )
            finally:
                link.stop()
            rec.wait_for(lambda m: m.topic == "u/meta/version" and m.payload == b"9")
            seq = [(m.topic, m.payload, m.retain) for m in rec.messages if m.payload != b"old"]
            assert seq.index(("u/meta/arch", b"", False)) < seq.index(("u/meta/arch", b"Linux x", False))
            # no host key: the clear, then the (empty) value; the topic is not left out
            assert seq.count(("u/meta/ssh_fingerprint", b"", False)) == 2, seq
        from helpers.brokers import retained

        assert retained(broker.port, "u/meta/arch") is None, "the old retained value is gone, no new one"
        assert meta.wait_for_bridges([], threading.Event())


# -- the node's MQTT session --------------------------------------------------------------------


def test_a_push_sent_while_node_is_down_is_applied_when_it_comes_back(tmp_path, monkeypatch):
    from ammp_edge.node.program import Node

    with Mosquitto.from_text(tmp_path / "b", LOCAL_BROKER) as broker:
        monkeypatch.setenv("MQTT_BRIDGE_PORT", str(broker.port))
        store = KVStore()
        with Recorder(broker.port, "u/#") as rec:
            node = Node(threading.Event(), store, offline=True)
            node.start()
            wait_until(node.link.connected.is_set, 10)
            time.sleep(0.3)  # subscribed
            publish(broker.port, "d/config", json.dumps(sys_config(read_interval=3)), qos=2)
            wait_until(lambda: store.get("config", {}).get("read_interval") == 3, 10, what="the pushed config")
            publish(broker.port, "d/config", b"{ broken", qos=2)
            msg = rec.wait_for(lambda m: m.topic == "u/log/msg")
            assert "refused" in msg.text and "not valid JSON" in msg.text
            assert store.get("config")["read_interval"] == 3
            publish(broker.port, "d/command", b'["no_such_command"]', qos=2)
            rec.wait_for(lambda m: m.topic == "u/command_response")
            node.stop.set()
            node.link.stop()

            publish(broker.port, "d/config", json.dumps(sys_config(read_interval=4)), qos=2)  # node is down
            time.sleep(0.5)
            assert store.get("config")["read_interval"] == 3
            again = Node(threading.Event(), store, offline=True)
            again.start()
            try:
                wait_until(lambda: store.get("config", {}).get("read_interval") == 4, 10, what="the queued push")
            finally:
                again.stop.set()
                again.link.stop()


def test_upstream_update_commands_through_the_running_node(tmp_path, monkeypatch):
    """snap_refresh and snap_proxy_on as the AMMP cloud sends them, to the node's own MQTT session: the
    installation's update hook runs (as image_update's) and the proxy app updates use is set."""
    from ammp_edge.node.program import Node

    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    marker = tmp_path / "updated"
    hook = root / "bin" / "update"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\necho 'installed version 9.9.9 (was 0.1.0)'\n")
    hook.chmod(0o755)
    monkeypatch.setenv("AE_ROOT_DIR", str(root))
    with Mosquitto.from_text(tmp_path / "b", LOCAL_BROKER) as broker:
        monkeypatch.setenv("MQTT_BRIDGE_PORT", str(broker.port))
        store = KVStore()
        with Recorder(broker.port, "u/command_response") as rec:
            node = Node(threading.Event(), store, offline=True)
            node.start()
            try:
                wait_until(node.link.connected.is_set, 10)
                wait_until(lambda: node.commands is not None, 10, what="the command service")
                time.sleep(0.3)  # subscribed
                publish(broker.port, "d/command", b'["snap_refresh", "snap_proxy_on"]', qos=2)
                first = rec.wait_for(lambda m: m.topic == "u/command_response", 20)
                assert first.text == (
                    "Command: snap_refresh\nexit status: 0\nstdout: snap_refresh: this appliance is not a snap; "
                    "updating the app as image_update does (the app bundle at the KV key image_update_url)\n"
                    "installed version 9.9.9 (was 0.1.0)\nstderr: "
                )
                assert marker.exists()
                wait_until(lambda: len(rec.on("u/command_response")) == 2, 20, what="the second answer")
                assert rec.on("u/command_response")[1].text.startswith("Command: snap_proxy_on\nexit status: 0\n")
                assert store.get("image_update_proxy") == "http://10.255.255.254:8888"
            finally:
                node.stop.set()
                node.link.stop()


# -- end to end: `ammp-edge up` from an empty data dir ---------------------------------------------


class FreshAppliance:
    """appliance_harness.Appliance without a node id: the node generates it and activates itself
    against the fake API, whose activation registers the node's credentials on the cloud broker (as
    the AMMP cloud does), so the bridge logs in with what the node was handed."""

    def __new__(cls, root: Path, api: FakeCloud, cloud, **env):
        from helpers.appliance import Appliance

        app = Appliance(root, {}, cloud, **env)
        kv = app.kv()
        kv.delete("node_id")
        kv.delete("access_key")
        kv.set("http_api_base_url", api.base_url)
        kv.close()
        app.env.pop("AE_OFFLINE", None)
        app.node_id = None
        return app


def e2e_config(*ports, interval=2, extra=()) -> dict:
    doc = {
        "devices": {"lg": {"driver": "sys_generic", "reading_type": "sys", "vendor_id": "lg"}},
        "readings": {"mem": {"device": "lg", "var": "memory_usage"}},
        "read_interval": interval,
        "read_roundtime": True,
    }
    for p in ports:
        doc["devices"][f"inv{p}"] = {
            "driver": "sma_stp25000",
            "reading_type": "modbustcp",
            "vendor_id": f"v{p}",
            "timeout": 1,
            "address": {"host": "127.0.0.1", "port": p, "unit_id": 3},
        }
        doc["readings"][f"p{p}"] = {"device": f"inv{p}", "var": "P_total"}
    for dev, var in extra:
        doc["readings"][f"{dev}_{var}"] = {"device": dev, "var": var}
    return doc


def bus_pids(app) -> dict[str, int]:
    return {n: p["pid"] for n, p in app.programs().items() if n.startswith("bus-") and p["statename"] == "RUNNING"}


@pytest.mark.slow
def test_up_from_an_empty_data_dir_activates_fetches_and_follows_the_cloud(tmp_path, simulator, builtin_drivers):
    from helpers.brokers import MOSQUITTO_PASSWD, cloud_broker

    drv = builtin_drivers["sma_stp25000"]
    a, b, c = (simulator({3: drv}).port for _ in range(3))
    cloud = cloud_broker(tmp_path, node_user="placeholder", node_password="placeholder")

    def register(node_id: str, access_key: str) -> None:
        subprocess.run(
            [MOSQUITTO_PASSWD, "-b", str(cloud.broker.conf.parent / "passwords"), node_id, access_key],
            check=True,
            capture_output=True,
            timeout=30,
        )
        cloud.broker.proc.send_signal(__import__("signal").SIGHUP)  # mosquitto rereads its password file

    api = FakeCloud(on_activate=register, slow_s=4).start()
    rec = Recorder(cloud.admin_port, "a/#", **cloud.admin_auth).start()
    app = FreshAppliance(tmp_path / "app", api, cloud, AE_HTTP_TIMEOUT=2)
    try:
        first = e2e_config(a, b)
        api.set_config(first)
        api.fail("GET activate", "500")
        api.fail("POST activate", "invalid_json")
        api.fail("GET node", "slow")
        api.fail("GET config", "garbage")
        app.start(with_config=False)
        node_pid = app.programs()["node"]["pid"]

        node_id = wait_until(lambda: app.kv().get("node_id"), 60, 0.5, what="activation")
        app.node_id = node_id
        assert node_id == provision.generate_node_id() and api.activated == {node_id}
        assert app.kv().get("access_key") == api.keys[node_id] and app.kv().get("activated")
        wait_until(lambda: app.kv().get_raw("config") == api.config_raw, 60, 0.5, what="the config from the API")
        data = f"a/{node_id}/u/data"
        rec.wait_for(
            lambda m: m.topic == data and {r["_d"] for r in json.loads(m.payload)["r"]} == {"lg", f"inv{a}", f"inv{b}"},
            60,
            "a full cycle at the cloud",
        )
        for topic in ("boot_time", "start_time", "arch", "version", "snap_rev"):
            rec.wait_for(
                lambda m, topic=topic: m.topic == f"a/{node_id}/u/meta/{topic}" and m.payload, 30, f"meta {topic}"
            )
        # as upstream: an empty retained message clears the topic, then the value, not retained
        snap_rev = [(m.payload, m.retain) for m in rec.on(f"a/{node_id}/u/meta/snap_rev")]
        assert snap_rev[-1] == (__version__.encode(), False) and (b"", False) in snap_rev[:-1], snap_rev
        assert app.programs()["node"]["pid"] == node_pid, "API faults retried without a crash"
        assert "works again" in app.logs("node")

        # a push at the cloud: a new bus starts within a cycle, a changed bus reloads, the others untouched
        pids = bus_pids(app)
        second = e2e_config(a, b, c, extra=[(f"inv{a}", "total_yield")])
        api.set_config(second)  # the cloud's config_id follows what it pushes
        pushed = time.monotonic()
        publish(cloud.admin_port, f"a/{node_id}/d/config", json.dumps(second), **cloud.admin_auth)
        wait_until(lambda: f"bus-tcp_127.0.0.1_{c}" in bus_pids(app), 15, 0.2, what="the new bus")
        assert time.monotonic() - pushed < 10, "within a cycle or two (2 s cycles, 2 s node rounds, 1 s startsecs)"
        assert {n: p for n, p in bus_pids(app).items() if n in pids} == pids
        rec.wait_for(
            lambda m: (
                m.topic == data
                and any(r.get("total_yield") is not None for r in json.loads(m.payload)["r"])
                and any(r["_d"] == f"inv{c}" and "P_total" in r for r in json.loads(m.payload)["r"])
            ),
            20,
            "the reloaded and the new bus",
        )

        # one bad device: the others run, the problem is said at the cloud
        pids = bus_pids(app)
        third = json.loads(json.dumps(second))
        third["devices"]["bad"] = {
            "driver": "sma_stp25000",
            "reading_type": "modbustcp",
            "vendor_id": "x",
            "address": {"host": "127.0.0.1", "port": "abc"},
        }
        third["readings"]["bad_p"] = {"device": "bad", "var": "P_total"}
        api.set_config(third)
        publish(cloud.admin_port, f"a/{node_id}/d/config", json.dumps(third), **cloud.admin_auth)
        msg = rec.wait_for(lambda m: m.topic == f"a/{node_id}/u/log/msg" and b"devices.bad" in m.payload, 15)
        assert "the rest runs" in msg.text
        wait_until(lambda: json.loads(app.kv().get_raw("config")) == third, 10)
        time.sleep(3)
        assert bus_pids(app) == pids

        # a config that cannot be used: refused, said at the cloud, the previous one keeps running
        publish(cloud.admin_port, f"a/{node_id}/d/config", b'{"devices": [], "readings": {}}', **cloud.admin_auth)
        msg = rec.wait_for(lambda m: m.topic == f"a/{node_id}/u/log/msg" and b"refused" in m.payload, 15)
        assert "devices: missing or not an object" in msg.text
        time.sleep(3)
        assert json.loads(app.kv().get_raw("config")) == third and bus_pids(app) == pids

        # a push while node is stopped is applied when it is back
        app.stop_program("node")
        fourth = e2e_config(a, c)
        api.set_config(fourth)
        publish(cloud.admin_port, f"a/{node_id}/d/config", json.dumps(fourth), **cloud.admin_auth)
        time.sleep(3)
        assert f"bus-tcp_127.0.0.1_{b}" in bus_pids(app)
        app.start_program("node")
        wait_until(lambda: f"bus-tcp_127.0.0.1_{b}" not in bus_pids(app), 20, 0.2, what="the queued push applied")
        assert app.kv().get_raw("config") == json.dumps(fourth).encode()

        assert app.stop() == 0
        logs = (
            "".join(p.read_text(errors="replace") for p in (app.temp / "logs").glob("*.log*")) + app.up_log.read_text()
        )
        assert api.keys[node_id] not in logs, "the access key is never logged"
        assert "Traceback" not in app.logs("node")
    finally:
        if app.proc is not None:
            app.kill_everything()
        rec.stop()
        api.stop()
        cloud.stop()


@pytest.mark.slow
def test_up_demo_reaches_no_cloud(tmp_path):
    from helpers.appliance import Appliance

    with FakeCloud(access_key="k") as api:
        app = Appliance(tmp_path / "demo", {}, None)
        kv = app.kv()
        kv.delete("node_id")
        kv.delete("access_key")
        kv.delete("mqtt_bridge_prod")
        kv.set("http_api_base_url", api.base_url)  # were anything asked, the fake API would see it
        kv.close()
        app.env.pop("AE_OFFLINE", None)
        app.proc = subprocess.Popen(
            [*AMMP_EDGE, "up", "--demo"],
            env=app.env,
            stdout=open(app.up_log, "a"),
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(lambda: "AE_OFFLINE" in app.logs("node"), 30, 0.2, what="node started offline")
            wait_until(lambda: "metadata published" in app.logs("node"), 30, 0.2, what="node running")
            time.sleep(2)
            assert api.requests == [] and app.kv().get("node_id") is None
            assert app.stop() == 0
        finally:
            if app.proc is not None:
                app.kill_everything()
