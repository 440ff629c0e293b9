"""The CLI as a user runs it: validate, read, bus, simulate, kvs (real processes, simulated devices)."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from ammp_edge.delivery.outbox import Outbox
from helpers.brokers import wait_until
from helpers.common import AMMP_EDGE, UPSTREAM_CONFIGS, UPSTREAM_DRIVERS, free_port, write_json


def run(*args, timeout=60, **kw):
    return subprocess.run([*AMMP_EDGE, *args], capture_output=True, text=True, timeout=timeout, **kw)


def sma_device(port, unit=3, **extra):
    return {
        "driver": "sma_stp25000",
        "reading_type": "modbustcp",
        "vendor_id": f"inv-{unit}",
        "timeout": 1,
        "address": {"host": "127.0.0.1", "port": port, "unit_id": unit},
        **extra,
    }


# -- validate ---------------------------------------------------------------------------------


def test_validate_accepts_upstream_drivers_and_configs():
    files = sorted(str(p) for p in UPSTREAM_DRIVERS.glob("*.json")) + [
        str(UPSTREAM_CONFIGS / "default-provisioning-config.json")
    ]
    r = run("validate", *files)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count(": ok\n") + r.stdout.count("warning:") >= len(files)


def test_validate_names_file_path_and_problem(tmp_path):
    cfgfile = write_json(
        tmp_path / "site.json",
        {
            "devices": {
                "inv": {
                    "driver": "sma_stp25000",
                    "reading_type": "modbustcp",
                    "vendor_id": "i",
                    "address": {"host": "10.0.0.2", "port": "abc"},
                },
                "m": {
                    "driver": "mine",
                    "reading_type": "modbusrtu",
                    "vendor_id": "m",
                    "address": {"device": "/dev/ttyUSB0", "baudrate": 9600},
                },
            },
            "readings": {"p": {"device": "inv", "var": "P_total"}, "q": {"device": "m", "var": "x"}},
            "drivers": {"mine": {"fields": {"x": {"register": 1, "datatype": "int33"}}}},
            "output": [{"field": "o", "source": "inv[var = ", "typecast": "float"}],
        },
    )
    drvfile = write_json(
        tmp_path / "drv.json", {"fields": {"a": {"register": 70000}, "b": {"register": 1, "order": "XYZW"}}}
    )
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    r = run("validate", str(cfgfile), str(drvfile), str(garbage), str(tmp_path / "missing.json"))
    assert r.returncode == 1
    out = r.stdout
    assert f"{cfgfile}: devices.inv.address.port: 'abc' is not an integer" in out
    assert f"{cfgfile}: drivers.mine.fields.x.datatype: 'int33' is not one of" in out
    assert f"{cfgfile}: output[0].source: not a valid JSONata expression" in out
    assert f"{drvfile}: fields.a.register: 70000 is outside 0..65535" in out
    assert f"{drvfile}: fields.b.order: 'XYZW' is not one of" in out
    assert f"{garbage}: $: file is not valid JSON" in out
    assert f"{tmp_path / 'missing.json'}: $: cannot read" in out


def test_validate_exit_zero_for_a_good_file(tmp_path):
    f = write_json(
        tmp_path / "ok.json", {"devices": {"i": sma_device(502)}, "readings": {"p": {"device": "i", "var": "P_total"}}}
    )
    r = run("validate", str(f))
    assert r.returncode == 0 and r.stdout.strip() == f"{f}: ok"


# -- read -------------------------------------------------------------------------------------


def test_read_json_is_the_upstream_readout(tmp_path, simulator, builtin_drivers):
    sim = simulator(
        {3: builtin_drivers["sma_stp25000"], 4: builtin_drivers["sma_stp25000"]},
        values={3: {"P_total": 1000.0, "status": 307}, 4: {"P_total": 2000.0}},
    )
    f = write_json(
        tmp_path / "c.json",
        {
            "devices": {
                "a": sma_device(sim.port, 3),
                "b": sma_device(sim.port, 4),
                "dead": sma_device(free_port(), 5),
                "lg": {"driver": "sys_generic", "reading_type": "sys", "vendor_id": "lg"},
            },
            "readings": {
                "1": {"device": "a", "var": "P_total"},
                "2": {"device": "a", "var": "status"},
                "3": {"device": "b", "var": "P_total"},
                "4": {"device": "dead", "var": "P_total"},
                "5": {"device": "lg", "var": "memory_usage"},
            },
            "output": [
                {"field": "P_sum", "source": 'a[var="P_total"].value + b[var="P_total"].value', "typecast": "float"},
                {"field": "P_a2", "source": 'a[var="P_total"].value * 2', "device": "a"},
            ],
            "calc_vendor_id": "calc-9",
        },
    )
    before = int(time.time())
    r = run("read", "--config", str(f), "--json")
    assert r.returncode == 0, r.stderr
    msg = json.loads(r.stdout)
    assert set(msg) == {"t", "r", "m"} and before <= msg["t"] <= time.time()
    recs = {rec["_d"]: rec for rec in msg["r"]}
    assert recs["a"] == {"_d": "a", "_vid": "inv-3", "P_total": 1000.0, "status": 307, "P_a2": 2000}
    assert recs["b"] == {"_d": "b", "_vid": "inv-4", "P_total": 2000.0}
    assert recs["dead"] == {"_d": "dead", "_vid": "inv-5"}
    assert recs["_calc"] == {"_d": "_calc", "_vid": "calc-9", "P_sum": 3000.0}
    assert 0 <= recs["lg"]["memory_usage"] <= 100
    assert "dead:" in r.stderr  # the failed device is named on stderr
    assert ", " not in r.stdout and "NaN" not in r.stdout  # compact JSON, NaN as null


def test_read_table_and_device_filter(tmp_path, simulator, builtin_drivers):
    sim = simulator({3: builtin_drivers["sma_stp25000"]}, values={3: {"P_total": 4321.0}})
    f = write_json(
        tmp_path / "c.json",
        {
            "devices": {
                "a": sma_device(sim.port),
                "lg": {"driver": "sys_generic", "reading_type": "sys", "vendor_id": "lg"},
            },
            "readings": {"1": {"device": "a", "var": "P_total"}, "2": {"device": "lg", "var": "cpu_load"}},
        },
    )
    r = run("read", "--config", str(f), "--device", "a")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["device", "field", "value", "unit"]
    assert any(line.split() == ["a", "P_total", "4321", "W"] for line in lines)
    assert "cpu_load" not in r.stdout
    assert run("read", "--config", str(f), "--device", "nope").returncode == 2


@pytest.mark.parametrize(
    "content,fragment",
    [
        ("{broken", "not valid JSON"),
        (json.dumps({"devices": {}}), "readings: missing"),
        (
            json.dumps(
                {
                    "devices": {"x": {"driver": "nope", "reading_type": "sys", "vendor_id": "x"}},
                    "readings": {"r": {"device": "x", "var": "y"}},
                }
            ),
            "no device can be read",
        ),
    ],
)
def test_read_exits_2_on_an_unusable_config(tmp_path, content, fragment):
    f = tmp_path / "bad.json"
    f.write_text(content)
    r = run("read", "--config", str(f))
    assert r.returncode == 2 and fragment in r.stderr, r.stderr


def test_read_missing_file_exits_2(tmp_path):
    r = run("read", "--config", str(tmp_path / "nope.json"))
    assert r.returncode == 2 and "cannot read" in r.stderr


# -- bus --------------------------------------------------------------------------------------


def test_bus_process_polls_on_the_grid_commits_readouts_and_reloads_config(
    tmp_path, simulator, builtin_drivers, isolated_dirs
):
    data, _ = isolated_dirs
    sim = simulator({3: builtin_drivers["sma_stp25000"]}, values={3: {"P_total": 111.0}})
    bus_id = f"tcp_127.0.0.1_{sim.port}"
    conf = {
        "devices": {"a": sma_device(sim.port)},
        "readings": {"1": {"device": "a", "var": "P_total"}},
        "read_interval": 1,
        "read_roundtime": True,
    }
    f = write_json(tmp_path / "c.json", conf)
    proc = subprocess.Popen(
        [*AMMP_EDGE, "bus", bus_id, "--config", str(f)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        time.sleep(3.5)
        conf["readings"]["2"] = {"device": "a", "var": "status"}  # a config change between cycles
        write_json(f, conf)
        time.sleep(2.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    box = Outbox(data / "outbox")
    records = [r for _, r in box.pending(1000)]
    box.close()
    assert len(records) >= 4, err
    ts = [r["t"] for r in records]
    assert ts == sorted(ts) and len(set(ts)) == len(ts)
    assert all(b - a == 1 for a, b in zip(ts, ts[1:])), ts  # a fixed 1 s grid, no drift, no gaps
    assert all(r["bus"] == bus_id and r["devices"][0]["P_total"] == 111.0 for r in records)
    assert "status" not in records[0]["devices"][0] and "status" in records[-1]["devices"][0]
    assert all(r["start_delay"] < 0.5 for r in records)


def test_bus_keeps_the_previous_config_when_the_new_one_is_unusable(
    tmp_path, simulator, builtin_drivers, isolated_dirs
):
    data, _ = isolated_dirs
    sim = simulator({3: builtin_drivers["sma_stp25000"]}, values={3: {"P_total": 5.0}})
    conf = {
        "devices": {"a": sma_device(sim.port)},
        "readings": {"1": {"device": "a", "var": "P_total"}},
        "read_interval": 1,
    }
    f = write_json(tmp_path / "c.json", conf)
    errlog = tmp_path / "bus.err"

    def committed() -> list[dict]:
        box = Outbox(data / "outbox")
        try:
            return [r for _, r in box.pending(1000)]
        finally:
            box.close()

    with open(errlog, "w") as err_fh:
        proc = subprocess.Popen(
            [*AMMP_EDGE, "bus", f"tcp_127.0.0.1_{sim.port}", "--config", str(f)],
            stdout=subprocess.DEVNULL,
            stderr=err_fh,
            text=True,
        )
    try:
        wait_until(lambda: committed(), timeout=60, what="the bus's first readout")
        f.write_text("{ this is not json")
        wait_until(
            lambda: "config cannot be used, keeping the previous one" in errlog.read_text(),
            timeout=60,
            what="the bus noticing the unusable config",
        )
        noticed = max(r["t"] for r in committed())
        # two more cycles after the bus saw the bad file: it kept reading with the previous config
        late = wait_until(
            lambda: [r for r in committed() if r["t"] >= noticed + 2], timeout=60, what="cycles after the bad config"
        )
        assert proc.poll() is None, "the bus must keep running"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert all(r["devices"][0]["P_total"] == 5.0 for r in late)


def test_bus_exits_when_its_bus_leaves_the_config(tmp_path, builtin_drivers):
    f = write_json(tmp_path / "c.json", {"devices": {}, "readings": {}, "read_interval": 1})
    r = run("bus", "tcp_127.0.0.1_1", "--config", str(f), timeout=20)
    assert r.returncode == 0 and "no devices on this bus" in r.stderr


# -- simulate and kvs -------------------------------------------------------------------------


def test_simulate_serves_unit_0_and_leaves_other_units_silent(tmp_path):
    """Unit 0 is a real unit id (Huawei's EMMA answers on it); an id not served still never answers."""
    port = free_port()
    values = write_json(tmp_path / "v.json", {"V_L1": 229.79, "freq": 50.01})
    proc = subprocess.Popen(
        [*AMMP_EDGE, "simulate", "--driver", "eastron_sdm530", "--port", str(port), "--unit", "0", "--unit", "2"]
        + ["--values", str(values)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "unit(s) 0, 2" in proc.stdout.readline()
        devices = {
            f"m{u}": {
                "driver": "eastron_sdm530",
                "reading_type": "modbustcp",
                "vendor_id": f"m{u}",
                "timeout": 0.5,
                "address": {"host": "127.0.0.1", "port": port, "unit_id": u},
            }
            for u in (0, 5, 2)
        }
        readings = {f"{d}_{v}": {"device": d, "var": v} for d in devices for v in ("V_L1", "freq")}
        f = write_json(tmp_path / "c.json", {"devices": devices, "readings": readings})
        started = time.monotonic()
        r = run("read", "--config", str(f), "--json")
        took = time.monotonic() - started
        recs = {rec["_d"]: rec for rec in json.loads(r.stdout)["r"]}
        assert recs["m0"] == {"_d": "m0", "_vid": "m0", "V_L1": 229.79, "freq": 50.01}
        assert recs["m2"] == {"_d": "m2", "_vid": "m2", "V_L1": 229.79, "freq": 50.01}
        assert recs["m5"] == {"_d": "m5", "_vid": "m5"}  # not served: no answer at all, not an exception
        assert "m5: no answer from unit 5 within 0.5 s" in r.stderr, r.stderr
        assert took >= 0.5, "unit 5 cost its timeout: it stayed silent"
    finally:
        proc.terminate()
        proc.wait(10)


def test_simulate_refuses_a_unit_id_out_of_range():
    r = run("simulate", "--driver", "eastron_sdm530", "--port", str(free_port()), "--unit", "256", timeout=30)
    assert r.returncode != 0 and "unit ids must be 0..255, got [256]" in r.stderr


def test_simulate_cli_serves_values_from_a_file(tmp_path):
    port = free_port()
    values = write_json(tmp_path / "v.json", {"V_L1": 231.5, "freq": 49.98})
    proc = subprocess.Popen(
        [
            *AMMP_EDGE,
            "simulate",
            "--driver",
            "eastron_sdm530",
            "--port",
            str(port),
            "--unit",
            "2",
            "--values",
            str(values),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "simulating eastron_sdm530" in proc.stdout.readline()
        f = write_json(
            tmp_path / "c.json",
            {
                "devices": {
                    "m": {
                        "driver": "eastron_sdm530",
                        "reading_type": "modbustcp",
                        "vendor_id": "m",
                        "address": {"host": "127.0.0.1", "port": port, "unit_id": 2},
                    }
                },
                "readings": {"1": {"device": "m", "var": "V_L1"}, "2": {"device": "m", "var": "freq"}},
            },
        )
        out = run("read", "--config", str(f), "--json").stdout
        msg = json.loads(out)
        assert msg["r"][0]["V_L1"] == 231.5 and msg["r"][0]["freq"] == 49.98
        assert '"freq":49.98' in out  # the float32 49.97999954223633 published as the device meant it
    finally:
        proc.terminate()
        proc.wait(10)


def test_simulate_rejects_a_bad_values_file(tmp_path):
    bad = tmp_path / "v.json"
    bad.write_text("[1, 2]")
    r = run("simulate", "--driver", "eastron_sdm530", "--port", str(free_port()), "--values", str(bad))
    assert r.returncode != 0 and "must be a JSON object" in r.stderr
    r = run("simulate", "--driver", "no_such_driver", "--port", str(free_port()))
    assert r.returncode != 0 and "no driver 'no_such_driver'" in r.stderr


def test_kvs_get_set_as_upstream():
    assert run("kvs", "set", "mqtt_bridge_stage", "true").returncode == 0
    assert run("kvs", "set", "node_id", "b827eb123456").returncode == 0
    assert run("kvs", "get", "mqtt_bridge_stage").stdout.strip() == "true"
    assert run("kvs", "get", "node_id").stdout.strip() == "b827eb123456"
    r = run("kvs", "get", "missing")
    assert r.returncode == 1 and "Error: No value set for key 'missing'" in r.stderr


def test_every_subcommand_has_help():
    for cmd in ("read", "validate", "bus", "simulate", "kvs", "up", "node", "publisher", "bridge-config", "broker"):
        r = run(cmd, "--help")
        assert r.returncode == 0 and "usage: ammp-edge" in r.stdout
