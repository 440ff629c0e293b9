"""Numbers in configs and drivers: NaN and infinities refused everywhere with their JSON path (Python's
json accepts NaN, Infinity and 1e999); device seconds bounded (timeout 0.05..60, deadline timeout..600,
frame_gap 0..1; a larger value is used as the bound, with a warning)."""

from __future__ import annotations

import json
import math
import subprocess

import pytest

from ammp_edge.core import config as cfg, drivers, watchdog
from helpers.common import AMMP_EDGE, REPO, child_env

DRIVER = {
    "fields": {
        "a": {"register": 0, "datatype": "uint16"},
        "b": {"register": 1, "datatype": "uint16", "multiplier": 0.1},
    },
    "status_info": {"alarm": {"content": "Alarm", "register": 9, "status_level_value_map": [[1, 3]]}},
}


def site(**device) -> dict:
    dev = {
        "driver": "t16",
        "reading_type": "modbustcp",
        "vendor_id": "v",
        "address": {"host": "127.0.0.1", "port": 1502},
        **device,
    }
    return {
        "drivers": {"t16": json.loads(json.dumps(DRIVER))},
        "devices": {"d": dev},
        "readings": {"ra": {"device": "d", "var": "a"}, "rb": {"device": "d", "var": "b"}},
        "status_readings": [{"d": "d", "r": "alarm"}],
        "read_interval": 60,
    }


def problems(config: cfg.Config) -> dict[str, str]:
    return {p.path: f"{p.severity}: {p.message}" for p in config.problems}


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("key", ["timeout", "deadline", "min_read_interval"])
def test_non_finite_device_seconds_refuse_the_device(key, number):
    config = cfg.load(site(**{key: number}), {})
    assert "d" not in config.devices
    assert problems(config)[f"devices.d.{key}"].startswith(f"error: {number!r} is not a finite number")


ADDRESS = '"address": {"host": "127.0.0.1", "port": 1502}'


@pytest.mark.parametrize(
    "fragment, path",
    [
        (f'{ADDRESS}, "timeout": NaN', "devices.d.timeout"),
        (f'{ADDRESS}, "timeout": Infinity', "devices.d.timeout"),
        (f'{ADDRESS}, "timeout": 1e999', "devices.d.timeout"),
        (f'{ADDRESS}, "deadline": -Infinity', "devices.d.deadline"),
        ('"address": {"host": "127.0.0.1", "port": NaN}', "devices.d.address.port"),
        ('"address": {"host": "127.0.0.1", "unit_id": Infinity}', "devices.d.address.unit_id"),
        ('"address": {"host": "127.0.0.1", "max_gap": NaN}', "devices.d.address.max_gap"),
        (f'{ADDRESS}, "comment": [1, NaN]', "devices.d.comment[1]"),
    ],
)
def test_non_finite_numbers_in_the_json_text_are_named_by_path(fragment, path):
    raw = site()
    raw["devices"]["d"] = "DEVICE"
    device = '{"driver": "t16", "reading_type": "modbustcp", "vendor_id": "v", ' + fragment + "}"
    config = cfg.load(cfg.parse_json(json.dumps(raw).replace('"DEVICE"', device)), {})
    assert "d" not in config.devices
    assert "is not a finite number" in problems(config)[path]


@pytest.mark.parametrize(
    "where, path",
    [
        (lambda r: r["drivers"]["t16"]["fields"]["b"].update(multiplier=math.nan), "drivers.t16.fields.b.multiplier"),
        (lambda r: r["drivers"]["t16"]["fields"]["b"].update(offset=math.inf), "drivers.t16.fields.b.offset"),
        (
            lambda r: r["drivers"]["t16"]["fields"]["b"].update(valuemap={"0xffff": math.nan}),
            "drivers.t16.fields.b.valuemap.0xffff",
        ),
        (lambda r: r["drivers"]["t16"]["fields"]["b"].update(register=math.nan), "drivers.t16.fields.b.register"),
    ],
)
def test_non_finite_driver_numbers_refuse_that_field_only(where, path):
    raw = site()
    where(raw)
    config = cfg.load(raw, {})
    assert list(config.devices["d"].fields) == ["a"]  # the rest of the device and driver is used
    assert "is not a finite number" in problems(config)[path]


def test_non_finite_numbers_in_status_items_readings_and_outputs():
    raw = site()
    raw["drivers"]["t16"]["status_info"]["alarm"]["status_level_value_map"] = [[math.inf, 3]]
    raw["readings"]["ra"]["scale"] = math.nan
    raw["output"] = [{"source": "$sum(1)", "field": "x", "offset": math.nan}, {"source": "1", "field": "y"}]
    raw["calc_vendor_id"] = math.nan
    config = cfg.load(raw, {})
    found = problems(config)
    assert "is not a finite number" in found["drivers.t16.status_info.alarm.status_level_value_map[0][0]"]
    assert "is not a finite number" in found["readings.ra.scale"]
    assert "is not a finite number" in found["output[0].offset"]
    assert config.devices["d"].status == [] and list(config.devices["d"].fields) == ["b"]
    assert config.outputs == [{"source": "1", "field": "y"}]
    assert config.calc_vendor_id == "" and "is not a finite number" in found["calc_vendor_id"]


def test_driver_file_with_nan_is_reported_by_validate(tmp_path):
    driver = json.loads(json.dumps(DRIVER))
    f = tmp_path / "my_driver.json"
    f.write_text(json.dumps(driver).replace('"multiplier": 0.1', '"multiplier": NaN'))
    assert [str(p) for p in drivers.check_driver(json.loads(f.read_text()), "my_driver")] == [
        "my_driver.fields.b.multiplier: nan is not a finite number (NaN and Infinity are not JSON numbers)"
    ]
    conf = tmp_path / "site.json"
    conf.write_text(json.dumps(site()).replace('"port": 1502}', '"port": 1502}, "timeout": Infinity'))
    r = subprocess.run(
        [*AMMP_EDGE, "validate", str(f), str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(AE_ROOT_DIR=REPO),
    )
    assert r.returncode == 1
    assert "my_driver.json: fields.b.multiplier: nan is not a finite number" in r.stdout + r.stderr
    assert "site.json: devices.d.timeout: inf is not a finite number" in r.stdout + r.stderr


@pytest.mark.parametrize(
    "device, timeout, deadline, warned",
    [
        ({}, 5.0, 10.0, []),
        ({"timeout": 0}, 5.0, 10.0, []),  # 0 (and null): the default, as before
        ({"timeout": 100000}, 60.0, 120.0, ["timeout"]),
        ({"timeout": 1e9, "deadline": 1e9}, 60.0, 600.0, ["timeout", "deadline"]),
        ({"timeout": 0.001}, 0.05, 0.1, ["timeout"]),
        ({"timeout": 3, "deadline": 1}, 3.0, 3.0, ["deadline"]),  # at least one timeout
        ({"timeout": 2, "deadline": 600}, 2.0, 600.0, []),
    ],
)
def test_device_seconds_are_bounded(device, timeout, deadline, warned):
    config = cfg.load(site(**device), {})
    dev = config.devices["d"]
    assert (dev.timeout, dev.deadline) == (timeout, deadline)
    assert [p.path for p in config.problems] == [f"devices.d.{k}" for k in warned]
    assert all(p.severity == "warning" for p in config.problems)


def test_bad_device_seconds_are_errors():
    for value in ("5", True, -1, [5]):
        config = cfg.load(site(timeout=value), {})
        assert "d" not in config.devices
        assert "is not a finite, non-negative number of seconds" in problems(config)["devices.d.timeout"]


def test_frame_gap_is_bounded(tmp_path):
    def rtu(gap):
        raw = site()
        raw["devices"]["d"].update(reading_type="modbusrtu", address={"device": "/dev/ttyUSB0", "frame_gap": gap})
        return cfg.load(raw, {})

    assert rtu(0.02).devices["d"].address["frame_gap"] == 0.02
    big = rtu(30)
    assert big.devices["d"].address["frame_gap"] == 1.0
    assert problems(big)["devices.d.address.frame_gap"].startswith("warning:")
    assert "d" not in rtu(math.nan).devices
    assert "d" not in rtu(-1).devices


def test_watchdog_limit_is_finite_whatever_the_config_says():
    raw = site(timeout=math.inf)
    raw["devices"]["e"] = dict(raw["devices"]["d"], timeout=1e300, deadline=1e300)
    raw["readings"]["re"] = {"device": "e", "var": "a"}
    config = cfg.load(raw, {})
    assert list(config.devices) == ["e"]
    assert watchdog.bus_max_silence(config, config.devices["e"].bus_id) == 3 * 60 + 2 * 600
