"""YAML as well as JSON for drivers and site configs (core/yamltext): the same schema, comments allowed,
bounded like core/jsontext (size, depth, no anchors or aliases), read by validate, read, up --config,
the drivers directory and the web UI; what the cloud sends stays JSON, byte for byte."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
import time

import pytest

from ammp_edge.core import config as cfg, drivers, jsontext, keys, yamltext
from ammp_edge.core.kvs import KVStore
from ammp_edge.core.problems import ConfigUnusable
from ammp_edge.device import appliance
from ammp_edge.node import intake
from helpers.common import REPO
from test_webui import csrf_of, login, webui  # noqa: F401 - the web UI fixture (a real server in a thread)

DRIVER_YAML = b"""\
# my meter: the register map of the vendor's manual, section 4
common:
  fncode: 3
fields:
  P_total:                # W, signed
    register: 0x6A        # 106
    datatype: int16
    scale_factor: W_SF
    valuemap: {0x8000: null}   # the key as written: "0x8000"
    unit: W
  W_SF:
    register: 107
    datatype: int16
  model:
    register: 0
    datatype: str8
    valuemap:
      NO: null            # the text "NO", not false
"""
DRIVER_JSON = {
    "common": {"fncode": 3},
    "fields": {
        "P_total": {
            "register": 106,
            "datatype": "int16",
            "scale_factor": "W_SF",
            "valuemap": {"0x8000": None},
            "unit": "W",
        },
        "W_SF": {"register": 107, "datatype": "int16"},
        "model": {"register": 0, "datatype": "str8", "valuemap": {"NO": None}},
    },
}


def refused(text: bytes | str) -> str:
    with pytest.raises(ConfigUnusable) as exc:
        yamltext.parse(text, "driver")
    return str(exc.value)


def test_a_yaml_driver_is_the_same_document_as_its_json():
    assert yamltext.parse(DRIVER_YAML, "driver") == DRIVER_JSON
    assert yamltext.load(DRIVER_YAML, "driver", "m.yaml") == DRIVER_JSON
    assert drivers.check_driver(yamltext.parse(DRIVER_YAML), "m") == []


@pytest.mark.parametrize(
    "text,value",
    [
        (
            b"a: yes\nb: on\nc: no\nd: True\ne: ~\nf:\n",
            {"a": "yes", "b": "on", "c": "no", "d": True, "e": None, "f": None},
        ),
        (b"a: 012\nb: 0x1F\nc: 0o17\nd: -3\ne: 1_000\n", {"a": 12, "b": 31, "c": 15, "d": -3, "e": "1_000"}),
        (b"a: 1.5\nb: 2e3\nc: 2024-01-01\nd: 12:30\n", {"a": 1.5, "b": 2000.0, "c": "2024-01-01", "d": "12:30"}),
        (b"3: x\n0xffff: y\ntrue: z\n", {"3": "x", "0xffff": "y", "true": "z"}),
    ],
    ids=["booleans", "integers", "no-timestamps", "keys-as-written"],
)
def test_json_kinds_of_value_only_as_yaml_1_2_core_reads_them(text, value):
    assert yamltext.parse(text) == value


def test_anchors_aliases_tags_and_second_documents_are_refused_by_name():
    bomb = b'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    bomb += b"".join(b"%c: &%c [%s]\n" % (98 + i, 98 + i, b",".join([b"*%c" % (97 + i)] * 9)) for i in range(8))
    started = time.monotonic()
    assert "sets an anchor (&a) at line 1, column 4; anchors and aliases are not accepted" in refused(bomb)
    assert time.monotonic() - started < 5  # refused on the event stream, nothing expanded
    assert "uses an alias (*x)" in refused(b"a: *x\n")
    assert "has the tag tag:yaml.org,2002:binary at line 1, column 4" in refused(b"a: !!binary aGk=\n")
    assert "has the tag tag:yaml.org,2002:python/object/apply:os.system" in refused(
        b"a: !!python/object/apply:os.system ['true']\n"
    )
    assert "has a second document at line 2, column 1; one document per file" in refused(b"a: 1\n---\nb: 2\n")
    assert "key 'a' is given twice in one mapping" in refused(b"a: 1\na: 2\n")
    assert "is not valid YAML" in refused(b"a: [1, 2\n")
    assert "a key must be text, not a list or mapping" in refused(b"? [1]\n: 2\n")


def test_the_limits_of_jsontext_apply():
    assert refused(b"a:" + b" [" * 65 + b" ]" * 65) == (
        "$: driver nests lists and mappings more than 64 levels deep (at line 1, column 130); the limit is 64 levels"
    )
    assert yamltext.parse(b"a:" + b" [" * 63 + b" ]" * 63)["a"] is not None
    # block style nests as deep as flow style
    deep = "".join("  " * i + f"k{i}:\n" for i in range(65)) + "  " * 65 + "v: 1\n"
    assert "more than 64 levels deep" in refused(deep)
    big = b"a: '" + b"x" * jsontext.MAX_BYTES + b"'\n"
    assert refused(big) == f"$: driver is {len(big):,} bytes; the limit is 4,194,304 bytes (4 MiB)"
    assert "is not UTF-8 text" in refused(b"a: \xff\n")


def test_validate_and_read_take_yaml_files(tmp_path, simulator):
    (tmp_path / "m.yaml").write_bytes(DRIVER_YAML)
    bad = DRIVER_YAML.replace(b"scale_factor: W_SF", b"scale_factor: X_SF")
    (tmp_path / "bad.yml").write_bytes(bad)
    out = subprocess.run(
        [sys.executable, "-m", "ammp_edge", "validate", str(tmp_path / "m.yaml"), str(tmp_path / "bad.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert out.stdout.splitlines() == [
        f"{tmp_path / 'm.yaml'}: ok",
        f"{tmp_path / 'bad.yml'}: fields.P_total.scale_factor: no field 'X_SF' in this driver",
    ]
    sim = simulator({1: DRIVER_JSON}, values={1: {"P_total": -1500, "W_SF": 1, "model": "M-1"}})
    site = f"""\
# a site in YAML
devices:
  meter:
    reading_type: modbustcp
    driver: m
    vendor_id: m-1
    address: {{host: 127.0.0.1, port: {sim.port}, unit_id: 1}}
drivers:
  m: {json.dumps(DRIVER_JSON)}
readings:
  p: {{device: meter, var: P_total}}
  model: {{device: meter, var: model}}
read_interval: 60
"""
    (tmp_path / "site.yaml").write_text(site)
    out = subprocess.run(
        [sys.executable, "-m", "ammp_edge", "read", "--config", str(tmp_path / "site.yaml"), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    [record] = json.loads(out.stdout)["r"]
    assert record["P_total"] == -1500 and record["model"] == "M-1"  # simulate encodes -150 x 10**1


def test_the_drivers_directory_takes_yaml_and_a_name_twice_is_one_driver(tmp_path, caplog):
    (tmp_path / "m.yaml").write_bytes(DRIVER_YAML)
    (tmp_path / "n.json").write_text(json.dumps(DRIVER_JSON))
    (tmp_path / "n.yml").write_bytes(DRIVER_YAML.replace(b"0x6A", b"7"))
    (tmp_path / "broken.yaml").write_bytes(b"fields: [\n")
    loaded = drivers.load_builtin_drivers(tmp_path)
    assert loaded == {"m": DRIVER_JSON, "n": DRIVER_JSON}
    assert "a driver named n is already loaded" in caplog.text and "broken.yaml cannot be loaded" in caplog.text


def site_doc(port: int = 5020) -> dict:
    return {
        "devices": {
            "meter": {
                "reading_type": "modbustcp",
                "driver": "eastron_sdm",
                "vendor_id": "m-1",
                "address": {"host": "127.0.0.1", "port": port},
            }
        },
        "readings": {"p": {"device": "meter", "var": "P_total"}},
        "read_interval": 60,
    }


SITE_YAML = b"""\
# the site, with comments
devices:
  meter:
    reading_type: modbustcp
    driver: eastron_sdm
    vendor_id: m-1
    address: {host: 127.0.0.1, port: 5020}
readings:
  p: {device: meter, var: P_total}
read_interval: 60
"""


def test_up_config_yaml_stores_the_json_of_its_value_and_names_a_broken_one(tmp_path):
    store = KVStore(tmp_path / "a" / "kvstore.db")
    verdict = appliance.store_config(store, SITE_YAML, False, "site.yaml")
    assert verdict.accepted
    assert json.loads(store.get_raw(keys.CONFIG)) == site_doc()
    store2 = KVStore(tmp_path / "b" / "kvstore.db")
    with pytest.raises(appliance.ConfigRefused) as exc:
        appliance.store_config(store2, b"devices: &d {}\n", False, "site.yaml")
    assert exc.value.verdict.message == (
        "config from up --config site.yaml refused, the previous config keeps running: "
        "$: config sets an anchor (&d) at line 1, column 10; anchors and aliases are not accepted"
    )
    assert store2.get_raw(keys.CONFIG) is None


class Said(list):
    def __call__(self, topic, text):
        self.append(text)


def test_what_the_cloud_sends_stays_json_byte_for_byte(tmp_path):
    builtin = drivers.load_builtin_drivers(REPO / "drivers")
    raw = b'{"devices": {"meter": {"reading_type": "modbustcp",  "driver": "eastron_sdm", "vendor_id": "m-1",\n'
    raw += (
        b' "address": {"host": "127.0.0.1", "port": 5020}}}, "readings": {"p": {"device": "meter", "var": "P_total"}}}'
    )
    store = KVStore(tmp_path / "c" / "kvstore.db")
    intake.Intake(store, builtin, Said()).offer(raw, "d/config")
    assert store.get_raw(keys.CONFIG) == raw  # unchanged: not parsed and dumped again
    said = Said()
    store = KVStore(tmp_path / "d" / "kvstore.db")
    intake.Intake(store, builtin, said).offer(SITE_YAML, "d/config")
    assert store.get_raw(keys.CONFIG) is None  # the cloud's door takes JSON only
    assert said[0].startswith("config from d/config refused") and "is not valid JSON" in said[0]


def test_the_web_ui_takes_a_yaml_upload_and_a_paste_marked_yaml(webui):  # noqa: F811
    s = login(webui)
    token = csrf_of(s, webui, "/config")
    r = s.post(webui + "/config", data={"csrf": token}, files={"file": ("site.yaml", SITE_YAML)})
    assert r.status_code == 200 and "Config applied" in html.unescape(re.sub(r"<[^>]+>", "", r.text))
    assert json.loads(KVStore().get_raw(keys.CONFIG)) == site_doc()
    pasted = SITE_YAML.replace(b"5020", b"5021").decode()
    r = s.post(webui + "/config", data={"csrf": token, "text": pasted, "format": "yaml"})
    assert r.status_code == 200
    assert json.loads(KVStore().get_raw(keys.CONFIG)) == site_doc(5021)
    # the same text marked JSON is what it is: not JSON
    r = s.post(webui + "/config", data={"csrf": token, "text": pasted, "format": "json"})
    assert r.status_code == 400 and "is not valid JSON" in html.unescape(r.text)
    r = s.post(webui + "/config", data={"csrf": token, "text": "devices: *x\n", "format": "yaml"})
    assert r.status_code == 400
    assert "uses an alias (*x)" in html.unescape(r.text)
    assert json.loads(KVStore().get_raw(keys.CONFIG)) == site_doc(5021)  # the previous config keeps running


def test_a_yaml_config_loads_like_its_json():
    builtin = drivers.load_builtin_drivers(REPO / "drivers")
    a = cfg.load(yamltext.parse(SITE_YAML), builtin)
    b = cfg.load(site_doc(), builtin)
    assert a.config_id == b.config_id and list(a.devices) == list(b.devices) and a.problems == b.problems
    assert os.environ.get("AE_TEMP_DIR")  # the suite's sandbox (conftest)
