"""A device of a reading type this version cannot read yet is never dropped silently: the config
names it as a problem with its JSON path (said on u/log/msg by node and shown in the web UI with
every config problem), its bus publishes it as {_d, _vid} every cycle with the reason as its error,
and `ammp-edge read` and the web UI's device test say why. Parametrised over whatever reading types
are still not implemented, so it keeps holding while readers are added."""

from __future__ import annotations

import json
import subprocess

import pytest

from ammp_edge.bus.poller import BusPoller
from ammp_edge.core import config as cfg
from ammp_edge.webui import probe
from helpers.common import AMMP_EDGE, child_env, write_json

T0 = 1_700_000_000
NOT_YET = [rt for rt in cfg.READING_TYPES if rt not in cfg.IMPLEMENTED]
FIELD_FOR = {  # a field of each reader's kind (drivers.field_kind)
    "mqtt": {"topic": "site/meter/power"},
    "snmp": {"oid": ".1.3.6.1.2.1.1.3.0", "datatype": "int32"},
    "sma_speedwire": {"obis_channel": 1, "obis_type": 4, "datatype": "uint32"},
}


def site(rt: str) -> dict:
    doc: dict = {
        "devices": {
            "odd": {"driver": "drv", "reading_type": rt, "vendor_id": "odd-1", "address": {"host": "127.0.0.1"}},
            "logger": {"driver": "sys_generic", "reading_type": "sys", "vendor_id": "lg-1"},
        },
        "readings": {"lg_load": {"device": "logger", "var": "cpu_load"}},
        "drivers": {},
        "read_interval": 60,
    }
    if rt in FIELD_FOR:
        doc["drivers"]["drv"] = {"fields": {"x": FIELD_FOR[rt]}}
        doc["readings"]["odd_x"] = {"device": "odd", "var": "x"}
    else:  # e.g. sma_hycon_csv: a built-in driver upstream, no readings
        doc["devices"]["odd"]["driver"] = rt
    return doc


@pytest.mark.skipif(not NOT_YET, reason="every reading type is implemented")
@pytest.mark.parametrize("rt", NOT_YET)
def test_published_as_d_vid_with_its_problem(rt, builtin_drivers):
    config = cfg.load(site(rt), builtin_drivers)
    problems = [p for p in config.errors if p.path == "devices.odd.reading_type"]
    assert len(problems) == 1 and "not supported by this version yet" in problems[0].message
    assert "published without values" in problems[0].message
    dev = config.devices["odd"]  # kept, on its own bus
    poller = BusPoller(dev.bus_id, config.buses()[dev.bus_id], 60)
    for t in (T0, T0 + 60):  # every cycle, not backed off out of the readout
        readout = poller.poll(t)
        assert readout["devices"] == [{"_d": "odd", "_vid": "odd-1"}]
        assert readout["errors"]["odd"] == [f"reading type {rt!r} is not supported by this version yet"]
    poller.close()
    with pytest.raises(probe.ProbeError, match="not supported by this version yet"):
        probe.read_device(probe.build_device(site(rt)["devices"]["odd"], site(rt)["drivers"], builtin_drivers))


@pytest.mark.skipif(not NOT_YET, reason="every reading type is implemented")
def test_ammp_edge_read_shows_it(tmp_path):
    rt = NOT_YET[0]
    path = write_json(tmp_path / "site.json", site(rt))
    out = subprocess.run(
        [*AMMP_EDGE, "read", "--config", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(AE_TEMP_DIR=tmp_path / "tmp", AE_DATA_DIR=tmp_path / "data"),
    )
    assert out.returncode == 0, out.stderr
    records = {r["_d"]: r for r in json.loads(out.stdout)["r"]}
    assert records["odd"] == {"_d": "odd", "_vid": "odd-1"}
    assert "cpu_load" in records["logger"]
    assert "devices.odd.reading_type" in out.stderr and "not supported by this version yet" in out.stderr


@pytest.mark.skipif(not NOT_YET, reason="every reading type is implemented")
def test_said_on_u_log_msg_when_the_config_runs(builtin_drivers):
    """node says this on u/log/msg (configdoor.announcement) when the config starts to run."""
    import json as json_

    from ammp_edge.core import configdoor
    from ammp_edge.core.kvs import KVStore
    from ammp_edge.delivery.outputcheck import output_problems

    rt = NOT_YET[0]
    store = KVStore()
    verdict = configdoor.submit(store, json_.dumps(site(rt)), "d/config", builtin_drivers, output_problems)
    assert verdict.config is not None
    text = configdoor.announcement(store, verdict.config)
    assert f"devices.odd.reading_type: {rt!r} is not supported by this version yet" in text
    assert "2 device(s)" in text  # the device is kept (published as {_d, _vid}), not dropped
