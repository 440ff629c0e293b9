"""One door for configs (core/configdoor.py): every door hands the same bytes to the same rules and gets
the same answer (the same stored bytes, the same problems, the same refusal in the same words), nothing
else writes the KV key `config`, and the cloud-managed / kept-local rules.

The doors here are the real entry points: node's intake (d/config, the AMMP API's answer, the
provisioning file), the web UI over HTTP (cheroot, a file upload), `up --config` (the CLI for a refusal,
device.appliance.store_config for an accepted config: `up` would then start the appliance; the end to
end tests start it), `kvs set config` (the CLI) and the legacy config.db import.
"""

from __future__ import annotations

import html
import json
import re
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from ammp_edge.core import config as cfg, configdoor, jsontext, keys
from ammp_edge.core.kvs import KVStore
from ammp_edge.device import appliance
from ammp_edge.node import intake, provision
from ammp_edge.node.cloudapi import Api
from helpers.common import AMMP_EDGE, REPO
from helpers.fake_cloud import FakeCloud
from test_webui import csrf_of, login, webui  # noqa: F401 - the web UI fixture (a real server in a thread)

SYS = {"lg": {"driver": "sys_generic", "reading_type": "sys", "vendor_id": "lg"}}


def doc(**extra) -> dict:
    return {
        "devices": dict(SYS),
        "readings": {"mem": {"device": "lg", "var": "memory_usage"}},
        "read_interval": 30,
        **extra,
    }


BAD_DEVICE = doc()
BAD_DEVICE["devices"]["bad"] = {
    "driver": "sma_stp25000",
    "reading_type": "modbustcp",
    "vendor_id": "b",
    "address": {"host": "h", "port": "abc"},
}
BAD_DEVICE["readings"]["p"] = {"device": "bad", "var": "P_total"}
NON_STANDARD_BAUD = doc()
NON_STANDARD_BAUD["devices"]["m"] = {
    "driver": "eastron_sdm120",
    "reading_type": "modbusrtu",
    "vendor_id": "m",
    "address": {"device": "/dev/ttyUSB9", "slaveaddr": 2, "baudrate": 19201},
}
NON_STANDARD_BAUD["readings"]["v"] = {"device": "m", "var": "V_L1"}

# (name, the bytes every door gets, what is stored or None when refused, problem texts expected)
CASES = [
    (
        "good, config_id cut out, nothing else touched",
        b'{"read_interval": 30,  "config_id": "abc1234",\n "devices": {"lg": {"driver": "sys_generic", '
        b'"reading_type": "sys", "vendor_id": "lg"}}, "readings": {"mem": {"device": "lg", "var": "memory_usage"}}}',
        b'{"read_interval": 30,  "devices": {"lg": {"driver": "sys_generic", '
        b'"reading_type": "sys", "vendor_id": "lg"}}, "readings": {"mem": {"device": "lg", "var": "memory_usage"}}}',
        [],
    ),
    (
        "a byte order mark is dropped",
        b"\xef\xbb\xbf" + json.dumps(doc(read_interval=31)).encode(),
        json.dumps(doc(read_interval=31)).encode(),
        [],
    ),
    (
        "one bad device: stored, the problem reported",
        json.dumps(BAD_DEVICE).encode(),
        json.dumps(BAD_DEVICE).encode(),
        ["devices.bad.address.port: 'abc' is not an integer"],
    ),
    (
        "a bad JSONata output: stored, the problem reported",
        json.dumps(doc(output=[{"field": "x", "source": "$sum(("}])).encode(),
        json.dumps(doc(output=[{"field": "x", "source": "$sum(("}])).encode(),
        ["output[0].source"],
    ),
    (
        "a non-standard baud rate: a warning at every door",
        json.dumps(NON_STANDARD_BAUD).encode(),
        json.dumps(NON_STANDARD_BAUD).encode(),
        ["devices.m.address.baudrate: warning: 19201 is not a standard baud rate"],
    ),
    ("unusable: refused", b'{"devices": [], "readings": {}}', None, ["devices: missing or not an object"]),
    ("not JSON: refused", b"{ this is not json", None, ["$: config is not valid JSON"]),
    (
        "over the depth limit: refused naming the limit",
        ('{"devices": {}, "readings": {}, "x": ' + "[" * 5000 + "]" * 5000 + "}").encode(),
        None,
        ["$: config nests arrays and objects more than 64 levels deep (at line 1, column 101); the limit is 64 levels"],
    ),
    (
        "over the size limit: refused naming the limit",
        b'{"devices": {}, "readings": {}' + b" " * jsontext.MAX_BYTES + b"}",
        None,
        ["$: config is 4,194,335 bytes; the limit is 4,194,304 bytes (4 MiB)"],
    ),
]
IDS = [c[0] for c in CASES]


class Said(list):
    def __call__(self, topic, text):
        self.append(text)


def via_intake(raw: bytes, source: str) -> tuple[bytes | None, list[str], list[str]]:
    """(stored bytes, problem texts the door recorded, what node said)"""
    store = KVStore()
    said = Said()
    it = intake.Intake(store, configdoor_builtin(), said)
    it.offer(raw, source)
    return store.get_raw(keys.CONFIG), recorded(store), said


_BUILTIN: dict = {}


def configdoor_builtin() -> dict:
    if not _BUILTIN:
        from ammp_edge.core import drivers

        _BUILTIN.update(drivers.load_builtin_drivers(REPO / "drivers"))
    return _BUILTIN


def recorded(store) -> list[str]:
    origin = store.get(keys.CONFIG_ORIGIN) or {}
    return origin.get("problems", [])


def fresh_store(tmp_path: Path, name: str) -> KVStore:
    return KVStore(tmp_path / name / "kvstore.db")


@pytest.mark.parametrize("name, raw, stored, problems", CASES, ids=IDS)
def test_every_door_gives_the_same_answer_for_the_same_bytes(tmp_path, monkeypatch, name, raw, stored, problems):
    results: dict[str, tuple] = {}
    messages: dict[str, str] = {}
    builtin = configdoor_builtin()
    # node: d/config and the AMMP API (offer) and the provisioning file
    for source in ("d/config", "api"):
        store = fresh_store(tmp_path, source.replace("/", "_"))
        said = Said()
        intake.Intake(store, builtin, said).offer(raw, source)
        results[source] = (store.get_raw(keys.CONFIG), recorded(store))
        messages[source] = said[0] if said else ""
    prov = tmp_path / "provisioning.json"
    prov.write_bytes(raw)
    store = fresh_store(tmp_path, "prov")
    said = Said()
    intake.Intake(store, builtin, said).provision(prov)
    results["provisioning"] = (store.get_raw(keys.CONFIG), recorded(store))
    messages["provisioning"] = said[0] if said else ""
    # up --config (what `up` calls before it starts anything)
    store = fresh_store(tmp_path, "up")
    try:
        appliance.store_config(store, raw, False, "x.json")
        messages["up"] = ""
    except appliance.ConfigRefused as exc:
        messages["up"] = exc.verdict.message
    results["up"] = (store.get_raw(keys.CONFIG), recorded(store))
    # the legacy config.db (copied only when usable)
    legacy = tmp_path / "config.db"
    db = sqlite3.connect(legacy)
    db.execute("CREATE TABLE nodeconfig (node_id TEXT, access_key TEXT, config BLOB)")
    db.execute("INSERT INTO nodeconfig VALUES ('b827eb000001', 'k', ?)", (raw,))
    db.commit()
    db.close()
    store = fresh_store(tmp_path, "legacy")
    provision.import_legacy(store, legacy)
    results["legacy"] = (store.get_raw(keys.CONFIG), recorded(store))

    for door, (got, recorded_problems) in results.items():
        assert got == stored, f"{door}: stored bytes"
        if stored is not None:
            for p in problems:
                assert any(r.startswith(p) for r in recorded_problems), f"{door}: {p} not in {recorded_problems}"
            assert len(recorded_problems) == len(results["d/config"][1]), door
    if stored is None:  # the same refusal in the same words, each naming its door
        texts = {d: re.sub(r"^config from (.*?) refused", "config from X refused", m) for d, m in messages.items()}
        assert len(set(texts.values())) == 1, texts
        assert all(p in texts["d/config"] for p in problems)
        assert messages["d/config"].startswith("config from d/config refused, the previous config keeps running: ")
        assert messages["api"].startswith("config from the cloud API refused")
        assert messages["up"].startswith("config from up --config x.json refused")


@pytest.mark.parametrize("name, raw, stored, problems", CASES, ids=IDS)
def test_the_web_ui_door_gives_the_same_answer(webui, name, raw, stored, problems):  # noqa: F811
    s = login(webui)
    token = csrf_of(s, webui, "/config")
    r = s.post(webui + "/config", data={"csrf": token, "anyway": "on"}, files={"file": ("c.json", raw)})
    page = html.unescape(re.sub(r"<[^>]+>", "", r.text))
    assert KVStore().get_raw(keys.CONFIG) == stored
    if stored is None:
        assert r.status_code == 400 and "Not applied" in page
        verdict = html.unescape(re.search(r'id="config-verdict">(.*?)</p>', r.text, re.S).group(1))
        said = Said()
        intake.Intake(KVStore(fresh_kv()), configdoor_builtin(), said).offer(raw, "d/config")
        assert verdict == said[0].replace("from d/config", "from the web UI")
    else:
        assert r.status_code == 200 and "Config applied" in page
        assert recorded(KVStore()) == via_intake(raw, "d/config")[1]
        for p in problems:
            assert p in page


_fresh = [0]


def fresh_kv() -> Path:
    import os

    _fresh[0] += 1
    return Path(os.environ["AE_TEMP_DIR"]) / f"door{_fresh[0]}" / "kvstore.db"


def test_kvs_set_config_and_up_refusal_on_the_command_line(tmp_path):
    good = json.dumps(BAD_DEVICE)
    r = subprocess.run([*AMMP_EDGE, "kvs", "set", "config", good], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "config: devices.bad.address.port: 'abc' is not an integer" in r.stderr
    assert KVStore().get_raw(keys.CONFIG) == good.encode(), "stored as given, not re-serialised"
    assert KVStore().get(keys.CONFIG_ORIGIN)["source"] == "kvs"
    deep = '{"devices": {}, "readings": {}, "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    f = tmp_path / "deep.json"
    f.write_text(deep)
    r = subprocess.run([*AMMP_EDGE, "up", "--config", str(f)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert f"{f}: $: config nests arrays and objects more than 64 levels deep" in r.stderr
    r = subprocess.run(
        [*AMMP_EDGE, "kvs", "set", "config", '{"devices": []}'], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2 and "config from kvs set refused, the previous config keeps running" in r.stderr
    assert KVStore().get_raw(keys.CONFIG) == good.encode()


def test_nothing_but_the_door_writes_the_config_key():
    """A static check: the KV key `config` is written only in core/configdoor.py."""
    writes = re.compile(r"\.(set_raw|set|delete)\(\s*(keys\.CONFIG|\"config\")\s*[,)]")
    offenders = []
    for f in (REPO / "app" / "ammp_edge").rglob("*.py"):
        for n, line in enumerate(f.read_text().splitlines(), 1):
            if writes.search(line) and f.name != "configdoor.py":
                offenders.append(f"{f.relative_to(REPO)}:{n}: {line.strip()}")
    assert offenders == []


# -- the door's own rules ------------------------------------------------------------------------


def submit(store, raw, source, **kw):
    return configdoor.submit(store, raw, source, configdoor_builtin(), lambda c: [], **kw)


def test_the_replaced_config_and_the_origin_are_kept_whatever_the_door():
    store = KVStore()
    a, b = json.dumps(doc(read_interval=10)).encode(), json.dumps(doc(read_interval=20)).encode()
    v = submit(store, a, "d/config")
    assert v.outcome == configdoor.STORED and store.get_raw(keys.WEBUI_PREVIOUS_CONFIG) is None
    assert submit(store, a, "webui").outcome == configdoor.CURRENT
    v = submit(store, b, "up", detail="/x/c.json")
    assert v.outcome == configdoor.STORED and store.get_raw(keys.WEBUI_PREVIOUS_CONFIG) == a
    origin = store.get(keys.CONFIG_ORIGIN)
    assert origin["source"] == "up" and origin["label"] == "up --config /x/c.json"
    assert origin["config_id"] == cfg.digest(json.loads(b)) and re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", origin["at"]
    )
    text = configdoor.announcement(store, cfg.load(json.loads(b), configdoor_builtin()))
    assert text.startswith(f"config {origin['config_id']} running, from up --config /x/c.json at {origin['at']}: ")
    raw_direct = json.dumps(doc(read_interval=40)).encode()
    store.set_raw("config", raw_direct)  # what no door did (an older version, sqlite3 by hand)
    assert "from a direct write to the KV store" in configdoor.announcement(
        store, cfg.load(json.loads(raw_direct), configdoor_builtin())
    )


def test_the_web_ui_asks_before_storing_errors_and_stores_what_every_door_does_when_told():
    store = KVStore()
    raw = json.dumps(BAD_DEVICE).encode()
    v = submit(store, raw, "webui", confirm_errors=True)
    assert v.outcome == configdoor.UNCONFIRMED and store.get_raw(keys.CONFIG) is None
    assert v.problems == submit(KVStore(fresh_kv()), raw, "d/config").problems
    assert submit(store, raw, "webui").outcome == configdoor.STORED and store.get_raw(keys.CONFIG) == raw


def managed_store(monkeypatch) -> KVStore:
    monkeypatch.setenv("AE_OFFLINE", "0")
    store = KVStore()
    store.set(keys.NODE_ID, "0123456789ab")
    store.set(keys.ACCESS_KEY, "k")
    return store


def test_a_kept_local_config_survives_the_cloud_config_it_replaced_but_not_a_new_one(monkeypatch):
    store = managed_store(monkeypatch)
    x, local, y = (json.dumps(doc(read_interval=n)).encode() for n in (10, 20, 30))
    x_id, y_id = (cfg.digest(json.loads(r)) for r in (x, y))
    assert submit(store, x, "api").outcome == configdoor.STORED
    configdoor.record_cloud(store, x_id)
    v = submit(store, local, "webui", keep_local=True)
    assert v.outcome == configdoor.STORED and v.message.endswith("kept until the AMMP cloud sends a new config")
    keep = configdoor.keep_local(store)
    assert keep["replaced"] == x_id and keep["cloud_known"] and keep["by"] == "the web UI"
    assert configdoor.holds(store, x_id) and not configdoor.holds(store, y_id)
    said: list[str] = []
    v = submit(store, x, "d/config", say=said.append)  # the cloud pushes the config the edit replaced
    assert v.outcome == configdoor.HELD and store.get_raw(keys.CONFIG) == local
    assert said == [v.message] and f"config {x_id} from d/config not applied: the local config" in v.message
    v = submit(store, y, "api")  # a new one
    assert v.outcome == configdoor.STORED and store.get_raw(keys.CONFIG) == y
    assert "it ends the keeping of the local config" in v.message and configdoor.keep_local(store) is None
    origin = store.get(keys.CONFIG_ORIGIN)
    assert origin["source"] == "api" and origin["replaced"]["source"] == "webui"
    assert origin["replaced"]["config_id"] == cfg.digest(json.loads(local))
    st = configdoor.state(store, y_id)
    assert st["managed"] and st["label"] == "the cloud API" and st["replaced"]["label"] == "the web UI"


def test_a_local_edit_not_kept_is_replaced_and_one_kept_before_any_check_adopts_the_first_cloud_id(monkeypatch):
    store = managed_store(monkeypatch)
    local, x = json.dumps(doc(read_interval=20)).encode(), json.dumps(doc(read_interval=10)).encode()
    x_id = cfg.digest(json.loads(x))
    submit(store, local, "webui", keep_local=True)
    keep = configdoor.keep_local(store)
    assert keep["cloud_known"] is False and not configdoor.holds(store, x_id)
    configdoor.record_cloud(store, x_id)  # the first check: the cloud's config then is the one replaced
    assert configdoor.holds(store, x_id)
    submit(store, json.dumps(doc(read_interval=21)).encode(), "webui")  # saved without keeping
    assert configdoor.keep_local(store) is None and not configdoor.holds(store, x_id)
    assert submit(store, x, "api").outcome == configdoor.STORED


def test_handing_control_back_ends_the_keeping_and_asks_for_a_check(monkeypatch):
    store = managed_store(monkeypatch)
    submit(store, json.dumps(doc()).encode(), "webui", keep_local=True)
    assert configdoor.hand_back(store) is True and configdoor.keep_local(store) is None
    assert configdoor.take_check_request(store) is True
    assert configdoor.take_check_request(store) is False, "once"
    monkeypatch.setenv("AE_OFFLINE", "1")
    assert configdoor.state(store, None)["managed"] is False
    assert configdoor.state(store, None)["local_because"].startswith("AE_OFFLINE")


def test_the_hourly_check_leaves_a_kept_config_alone_and_a_hand_back_checks_at_once(monkeypatch):
    store = managed_store(monkeypatch)
    it = intake.Intake(store, configdoor_builtin(), Said())
    with FakeCloud(access_key="k") as api:
        api.keys["0123456789ab"] = "k"
        watch = intake.HttpWatch(it, lambda: Api(api.base_url, 2), "0123456789ab", "k", 3600)
        x = json.dumps(doc(read_interval=10)).encode()
        api.set_config(x)
        assert "stored" in watch.check()
        assert store.get(keys.CONFIG_ORIGIN)["source"] == "api"
        local = json.dumps(doc(read_interval=20)).encode()
        submit(store, local, "webui", keep_local=True)
        fetched = api.calls("GET", "config")
        for _ in range(3):
            assert (
                watch.check()
                == f"the local config is kept: the cloud's config {api.config_id()} is the one it replaced"
            )
        assert store.get_raw(keys.CONFIG) == local and api.calls("GET", "config") == fetched, "not even fetched"
        assert store.get(keys.CONFIG_CLOUD)["config_id"] == api.config_id()

        stop = threading.Event()
        waited: list[float] = []

        def wait() -> None:
            t0 = time.monotonic()
            watch._wait(stop, 3600)
            waited.append(time.monotonic() - t0)

        th = threading.Thread(target=wait)
        th.start()
        time.sleep(0.2)
        asked = time.monotonic()
        configdoor.hand_back(store)
        th.join(30)
        assert waited and time.monotonic() - asked < intake.REQUEST_POLL_S + 5, (
            "the check comes at once, not in an hour"
        )
        assert "stored" in watch.check() and store.get_raw(keys.CONFIG) == x
        assert store.get(keys.CONFIG_ORIGIN)["replaced"]["source"] == "webui"


def test_an_api_answer_over_the_limits_is_refused_once_and_not_retried_as_an_api_error(monkeypatch):
    store = managed_store(monkeypatch)
    said = Said()
    it = intake.Intake(store, configdoor_builtin(), said)
    good = json.dumps(doc()).encode()
    it.offer(good, "d/config")
    with FakeCloud(access_key="k") as api:
        api.keys["0123456789ab"] = "k"
        watch = intake.HttpWatch(it, lambda: Api(api.base_url, 5), "0123456789ab", "k", 3600)
        for deep in (5000, 100_000):
            api.set_config(('{"devices": {}, "readings": {}, "x": ' + "[" * deep + "]" * deep + "}").encode())
            assert watch.check() == f"config {api.config_id()} refused"
            assert watch.check() == f"config {api.config_id()} refused"
        api.set_config(b'{"devices": {}, "readings": {}, "pad": "' + b"x" * (jsontext.MAX_BYTES + 70_000) + b'"}')
        assert watch.check().endswith("refused")
    assert store.get_raw(keys.CONFIG) == good
    assert len(said) == 3, "each config said once, the hourly repeats quiet"
    assert all(
        t.startswith("config from the cloud API refused, the previous config keeps running: $: config") for t in said
    )
    assert "more than 64 levels deep" in said[0] and "more than 64 levels deep" in said[1]
    assert "bytes with its envelope; the limit is 4,194,304 bytes" in said[2]


def test_a_body_over_the_web_ui_request_limit_is_refused_before_parsing_naming_the_limits(webui):  # noqa: F811
    s = login(webui)
    token = csrf_of(s, webui, "/config")
    r = s.post(webui + "/config", data={"csrf": token}, files={"file": ("c.json", b" " * (6 * 1024 * 1024))})
    assert r.status_code == 413
    assert r.text == "request too large: the limit is 5,242,880 bytes (a config at most 4,194,304)"
    assert s.get(webui + "/config").status_code == 200
