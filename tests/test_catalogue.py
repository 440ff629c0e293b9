"""The driver catalogue: `ammp-edge drivers` (list, search, show one) and the web UI's search when adding
a device; and the web UI adding the SunSpec devices a scan found (drivers made from the model chain)."""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
import time

from ammp_edge.core import catalogue, drivers, keys
from ammp_edge.core.kvs import KVStore
from ammp_edge.node import scan
from helpers.common import REPO
from test_sunspec import CHAIN, EXPECTED, image
from test_webui import csrf_of, login, webui  # noqa: F401 - the web UI fixture (a real server in a thread)

BUILTIN = sorted(p.stem for p in (REPO / "drivers").glob("*.json"))


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ammp_edge", "drivers", *args], capture_output=True, text=True, timeout=60
    )


def test_the_list_has_every_driver_with_device_source_fields_and_reading_type():
    out = run()
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["name", "device", "source", "fields", "reading", "type"]
    names = [line.split()[0] for line in lines[2:-1]]
    assert names == BUILTIN and lines[-1] == f"{len(BUILTIN)} driver(s)"
    huawei = next(line for line in lines if line.startswith("huawei_sun2000 "))
    assert "Huawei SUN2000 KTL-M0" in huawei and "huawei-solar-lib" in huawei and "modbustcp/modbusrtu" in huawei
    assert " 61 " in huawei  # its fields
    sysline = next(line for line in lines if line.startswith("sys_generic "))
    assert "upstream AMMP edge driver" in sysline and sysline.endswith(" sys")


def test_search_finds_by_manufacturer_model_and_field():
    out = run("--search", "huawei", "--json")
    got = json.loads(out.stdout)
    assert [e["name"] for e in got] == ["huawei_emma", "huawei_sun2000", "elum_huawei_smartlogger"]
    assert got[1]["fields"] == 61 and got[1]["vectors"] >= 1 and got[1]["reading_types"] == ["modbustcp/modbusrtu"]
    assert {e["name"] for e in json.loads(run("-s", "sunspec", "--json").stdout)} >= {"sma_stp_core2_sunspec"}
    by_field = {e["name"] for e in json.loads(run("-s", "batt_soc victron", "--json").stdout)}
    assert by_field and all("victron" in n for n in by_field)
    none = run("-s", "no such thing")
    assert none.returncode == 1 and none.stdout.strip().endswith("0 driver(s) matching 'no such thing'")


def test_show_one_says_what_every_field_reads():
    out = run("sma_stp_core2_sunspec")
    assert out.returncode == 0
    text = out.stdout
    assert text.startswith("sma_stp_core2_sunspec (built-in)\n")
    assert "source:        upstream AMMP edge driver" in text
    assert "P_total        fc3 40084 x1 uint16 x 10" in text
    rows = json.loads(run("huawei_sun2000", "--json").stdout)["field_rows"]
    assert len(rows) == 61 and all("register" in r for r in rows)
    missing = run("eastron")
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        "drivers: no driver 'eastron'; similar: eastron_sdm, eastron_sdm120, eastron_sdm530, eastron_sdm_lora"
    )


def test_a_config_driver_wins_and_a_scale_factor_is_shown(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text(
        "devices: {}\nreadings: {}\ndrivers:\n  eastron_sdm:\n    fields:\n"
        "      P: {register: 1, datatype: int16, scale_factor: P_SF}\n      P_SF: {register: 2, datatype: int16}\n"
    )
    out = run("--config", str(site), "eastron_sdm")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("eastron_sdm (config)\n")
    assert re.search(r"^P +fc3 1 x1 int16 x 10\^P_SF$", out.stdout, re.M), out.stdout
    assert "source:        not given (a driver of the site config)" in out.stdout


def test_every_builtin_driver_shows_what_each_field_reads():
    builtin = drivers.load_builtin_drivers(REPO / "drivers")
    for name in BUILTIN:
        rows = catalogue.field_rows(builtin[name])
        assert rows and all(r.keys() & {"register", "call", "oid", "obis_channel", "kind"} for r in rows), name
        assert not [r for r in rows if "problem" in r], name
    snmp = json.loads(run("akcp_sensorprobe", "--json").stdout)
    assert snmp["reading_types"] == ["snmp"] and all("oid" in r for r in snmp["field_rows"])


def test_catalogue_entries_of_every_builtin_driver():
    builtin = drivers.load_builtin_drivers(REPO / "drivers")
    entries = catalogue.catalogue(builtin)
    assert [e.name for e in entries] == BUILTIN
    for e in entries:
        assert e.fields == len(builtin[e.name]["fields"]) and e.reading_types and e.device and e.source
        assert "?" not in e.reading_types, e.name


def test_the_web_ui_searches_the_catalogue(webui):  # noqa: F811
    s = login(webui)
    r = s.get(webui + "/api/drivers", params={"q": "huawei"}).json()
    assert r["count"] == 3 and [d["name"] for d in r["drivers"]][0] == "huawei_emma"
    assert s.get(webui + "/api/drivers", params={"q": ""}).json()["count"] == len(BUILTIN)
    one = s.get(webui + "/api/drivers/eastron_sdm530").json()
    assert one["name"] == "eastron_sdm530" and one["field_rows"][0]["register"] is not None
    assert s.get(webui + "/api/drivers/nope").status_code == 404
    page = s.get(webui + "/config/add").text
    assert 'id="driver-search"' in page and 'id="driver-results"' in page
    import requests

    assert requests.get(webui + "/api/drivers", params={"q": "x"}, allow_redirects=False).status_code in (302, 303, 401)


def test_the_web_ui_adds_the_sunspec_devices_of_a_network_scan(webui, simulator, monkeypatch):  # noqa: F811
    sim = simulator({1: {"fields": {}}}, registers={1: {3: image(40000, CHAIN)}})
    # the web UI's network scan probes Modbus on 502; this device is on a free port
    monkeypatch.setattr(scan, "network_scan", functools.partial(scan.network_scan, modbus_ports=(sim.port,)))
    s = login(webui)
    token = csrf_of(s, webui, "/scans")
    headers = {"X-CSRF-Token": token}
    job = s.post(
        webui + "/api/scans", json={"kind": "network", "targets": "127.0.0.1", "ports": str(sim.port)}, headers=headers
    ).json()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        view = s.get(webui + f"/api/scans/{job['id']}").json()
        if view["state"] != "running":
            break
        time.sleep(0.5)
    assert view["state"] == "done", view
    shown = s.post(webui + f"/api/scans/{job['id']}/sunspec", json={"apply": False}, headers=headers).json()
    assert shown["ok"] and shown["devices"] == ["sunspec_127_0_0_1_1"] and shown["problems"] == []
    assert KVStore().get_raw(keys.CONFIG) is None  # only shown
    applied = s.post(webui + f"/api/scans/{job['id']}/sunspec", json={"apply": True}, headers=headers).json()
    assert applied["ok"], applied
    stored = json.loads(KVStore().get_raw(keys.CONFIG))
    device = stored["devices"]["sunspec_127_0_0_1_1"]
    assert device["address"]["port"] == sim.port
    fields = stored["drivers"][device["driver"]]["fields"]
    assert {k for k in fields if not k.startswith(("sf_", "chk_"))} == set(EXPECTED)
    assert len([r for r in stored["readings"].values() if r["device"] == "sunspec_127_0_0_1_1"]) == len(EXPECTED)


def test_the_worked_example_of_drivers_readme_validates_and_its_vectors_decode(simulator):
    from ammp_edge.core import config as cfg, yamltext
    from ammp_edge.readers import transports

    text = (REPO / "drivers" / "README.md").read_text(encoding="utf-8")
    [block] = re.findall(r"```yaml\n(.*?)```", text, re.S)
    doc = yamltext.parse(block, "driver")
    assert drivers.check_driver(doc, "example") == []
    fields = set(doc["fields"])
    assert fields == {k for v in doc["test_vectors"] for k in v["expect"]}  # every field expected
    for vector in doc["test_vectors"]:
        raw = {int(start) + i: w for start, words in vector["registers"]["3"].items() for i, w in enumerate(words)}
        sim = simulator({1: doc}, registers={1: {3: raw}})
        site = {
            "devices": {
                "inv": {
                    "reading_type": "modbustcp",
                    "driver": "example",
                    "vendor_id": "1",
                    "address": {"host": "127.0.0.1", "port": sim.port},
                }
            },
            "drivers": {"example": doc},
            "readings": {f: {"device": "inv", "var": f} for f in vector["expect"]},
        }
        loaded = cfg.load(site, {})
        assert loaded.errors == []
        dev = loaded.devices["inv"]
        transport = transports.make_transport(dev)
        try:
            res = transports.make_reader(dev, transport).read(time.monotonic() + 30)
        finally:
            transport.close()
        assert res.values == vector["expect"], vector["description"]
        assert res.requests == 1  # 40080..40108 with their scale factors: one block read
