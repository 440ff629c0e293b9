"""Config loading: upstream configs load unchanged; bad parts are reported by path and skipped."""

from __future__ import annotations

import json

import pytest

from ammp_edge.core import config as cfg
from ammp_edge.core.problems import ConfigUnusable
from helpers.common import UPSTREAM_CONFIGS


def load(raw, drivers):
    return cfg.load(raw, drivers)


def messages(config) -> list[str]:
    return [str(p) for p in config.problems]


def test_upstream_docker_config_loads_per_device(builtin_drivers):
    raw = json.loads((UPSTREAM_CONFIGS / "docker-test-config.json").read_text())
    config = load(raw, builtin_drivers)
    assert set(config.devices) == {"logger", "ems", "sma_stp_1", "sma_stp_2", "sma_hycon_csv"}
    assert config.errors == []
    # the HyCon backfill (no readings name it) publishes every column of its built-in driver
    assert set(config.devices["sma_hycon_csv"].fields) == {"grid_out_P", "genset_P", "pvinv_P_total", "grid_in_P"}
    assert [d.key for d in config.backfill_devices()] == ["sma_hycon_csv"]
    ems = config.devices["ems"]
    assert set(ems.fields) == {"P_L1", "P_L2", "P_L3", "relay_status", "alert_state"}
    assert [s.key for s in ems.status] == ["relay_fault", "high_temp_warning", "alarm_state", "unavailable"]
    assert config.devices["sma_stp_2"].min_read_interval == 30
    assert config.read_interval == 10 and config.read_roundtime is True
    assert config.calc_vendor_id == "calc-1"
    # the gateway host is one bus; its three unit ids share it
    buses = config.buses()
    assert sorted(buses) == ["sys", "tcp_mock-modbus-gateway_502"]  # the HyCon: its own daily program, no bus
    assert {d.key for d in buses["tcp_mock-modbus-gateway_502"]} == {"ems", "sma_stp_1", "sma_stp_2"}


def test_config_id_digest_matches_upstream_algorithm():
    raw = {"config_id": "zzz", "devices": {}, "readings": {}, "read_interval": 60}
    import hashlib

    expected = hashlib.sha1(
        json.dumps({"devices": {}, "readings": {}, "read_interval": 60}, sort_keys=True).encode()
    ).hexdigest()[:7]
    assert cfg.digest(raw) == expected


@pytest.mark.parametrize(
    "device,path,fragment",
    [
        (
            {"driver": "sma_stp25000", "reading_type": "modbus", "vendor_id": "x"},
            "devices.d.reading_type",
            "not one of",
        ),
        (
            {"driver": "nope", "reading_type": "modbustcp", "vendor_id": "x", "address": {"host": "h"}},
            "devices.d.driver",
            "no driver named 'nope'",
        ),
        (
            {"driver": "sma_stp25000", "reading_type": "modbustcp", "address": {"host": "h"}},
            "devices.d.vendor_id",
            "missing",
        ),
        (
            {"driver": "sma_stp25000", "reading_type": "modbustcp", "vendor_id": "x"},
            "devices.d.address",
            "needs 'host'",
        ),
        (
            {
                "driver": "sma_stp25000",
                "reading_type": "modbustcp",
                "vendor_id": "x",
                "address": {"host": "h", "port": 70000},
            },
            "devices.d.address.port",
            "outside",
        ),
        (
            {
                "driver": "sma_stp25000",
                "reading_type": "modbustcp",
                "vendor_id": "x",
                "address": {"host": "h", "unit_id": "three"},
            },
            "devices.d.address.unit_id",
            "not an integer",
        ),
        (
            {"driver": "eastron_sdm530", "reading_type": "modbusrtu", "vendor_id": "x", "address": {"slaveaddr": 1}},
            "devices.d.address.device",
            "serial port",
        ),
        (
            {
                "driver": "eastron_sdm530",
                "reading_type": "modbusrtu",
                "vendor_id": "x",
                "address": {"device": "/dev/ttyS0", "parity": "purple"},
            },
            "devices.d.address.parity",
            "none, even or odd",
        ),
        (
            {
                "driver": "eastron_sdm530",
                "reading_type": "modbusrtu",
                "vendor_id": "x",
                "address": {"device": "/dev/ttyS0", "stopbits": 3},
            },
            "devices.d.address.stopbits",
            "1, 1.5 or 2",
        ),
        (
            {
                "driver": "sma_stp25000",
                "reading_type": "modbustcp",
                "vendor_id": "x",
                "address": {"host": "h"},
                "timeout": -1,
            },
            "devices.d.timeout",
            "non-negative",
        ),
        (
            {
                "driver": "sma_stp25000",
                "reading_type": "modbustcp",
                "vendor_id": "x",
                "address": {"host": "h"},
                "enabled": "yes",
            },
            "devices.d.enabled",
            "true or false",
        ),
        ("not an object", "devices.d", "must be an object"),
    ],
)
def test_a_bad_device_is_reported_and_the_rest_runs(device, path, fragment, builtin_drivers):
    raw = {
        "devices": {"d": device, "lg": {"driver": "sys_generic", "reading_type": "sys", "vendor_id": "l"}},
        "readings": {"a": {"device": "d", "var": "P_total"}, "b": {"device": "lg", "var": "cpu_load"}},
    }
    config = load(raw, builtin_drivers)
    assert list(config.devices) == ["lg"]
    errors = [p for p in config.errors if p.path == path]
    assert errors and fragment in errors[0].message, messages(config)


def test_bad_fields_in_a_config_driver_skip_only_those_fields(builtin_drivers):
    raw = {
        "devices": {"m": {"driver": "mine", "reading_type": "modbustcp", "vendor_id": "m", "address": {"host": "h"}}},
        "readings": {k: {"device": "m", "var": k} for k in ("good", "badreg", "badtype", "badorder", "missing")},
        "drivers": {
            "mine": {
                "common": {"fncode": 3},
                "fields": {
                    "good": {"register": 10, "datatype": "int16"},
                    "badreg": {"register": "0xZZ"},
                    "badtype": {"register": 11, "datatype": "float128"},
                    "badorder": {"register": 12, "words": 2, "datatype": "int32", "order": "little"},
                },
            }
        },
    }
    config = load(raw, builtin_drivers)
    assert list(config.devices["m"].fields) == ["good"]
    paths = {p.path: p.message for p in config.errors}
    assert "neither an integer nor a hex string" in paths["drivers.mine.fields.badreg.register"]
    assert "float128" in paths["drivers.mine.fields.badtype.datatype"]
    assert "little" in paths["drivers.mine.fields.badorder.order"]
    assert "has no field 'missing'" in paths["readings.missing.var"]


def test_config_drivers_override_builtin_ones(builtin_drivers):
    raw = {
        "devices": {
            "i": {"driver": "sma_stp25000", "reading_type": "modbustcp", "vendor_id": "i", "address": {"host": "h"}}
        },
        "readings": {"p": {"device": "i", "var": "P_total"}},
        "drivers": {"sma_stp25000": {"fields": {"P_total": {"register": 7, "datatype": "uint16"}}}},
    }
    f = load(raw, builtin_drivers).devices["i"].fields["P_total"]
    assert (f.register, f.words, f.spec.datatype) == (7, 1, "uint16")


def test_disabled_devices_and_readings_are_skipped(builtin_drivers):
    raw = {
        "devices": {
            "a": {"driver": "sys_generic", "reading_type": "sys", "vendor_id": "a", "enabled": False},
            "b": {"driver": "sys_generic", "reading_type": "sys", "vendor_id": "b"},
        },
        "readings": {
            "1": {"device": "a", "var": "cpu_load"},
            "2": {"device": "b", "var": "cpu_load", "enabled": False},
            "3": {"device": "b", "var": "memory_usage"},
        },
    }
    config = load(raw, builtin_drivers)
    assert list(config.devices) == ["b"] and list(config.devices["b"].fields) == ["memory_usage"]
    assert not config.problems


def test_sys_drivers_cannot_call_arbitrary_functions(builtin_drivers):
    raw = {
        "devices": {"x": {"driver": "evil", "reading_type": "sys", "vendor_id": "x"}},
        "readings": {"r": {"device": "x", "var": "pwn"}},
        "drivers": {
            "evil": {"fields": {"pwn": {"module": "os", "method": "system", "args": {"command": "touch /tmp/pwned"}}}}
        },
    }
    config = load(raw, builtin_drivers)
    assert not config.devices
    assert "os.system is not an allowed system call" in config.errors[0].message


@pytest.mark.parametrize(
    "raw,path",
    [
        ([], "$"),
        ({"readings": {}}, "devices"),
        ({"devices": {}, "readings": []}, "readings"),
        ({"devices": {}, "readings": {}, "read_interval": 0}, "read_interval"),
        ({"devices": {}, "readings": {}, "read_interval": "60"}, "read_interval"),
        ({"devices": {}, "readings": {}, "read_roundtime": "yes"}, "read_roundtime"),
        ({"devices": {}, "readings": {}, "drivers": []}, "drivers"),
        ({"devices": {}, "readings": {}, "output": {}}, "output"),
    ],
)
def test_unusable_configs_are_refused_whole(raw, path, builtin_drivers):
    with pytest.raises(ConfigUnusable) as exc:
        load(raw, builtin_drivers)
    assert exc.value.problems[0].path == path


def test_bus_ids(builtin_drivers):
    assert cfg.bus_id_for("k", "modbusrtu", {"device": "/dev/ttyUSB0"}) == "serial_ttyUSB0"
    assert cfg.bus_id_for("k", "rawserial", {"device": "/dev/ttyUSB0"}) == "serial_ttyUSB0"
    assert cfg.bus_id_for("k", "modbustcp", {"host": "10.0.0.5"}) == "tcp_10.0.0.5_502"
    assert cfg.bus_id_for("k", "modbustcp", {"host": "10.0.0.5", "port": 1502}) == "tcp_10.0.0.5_1502"
    assert cfg.bus_id_for("k", "sys", {}) == "sys"
    assert (
        cfg.bus_id_for("k", "modbusrtu", {"device": "/dev/serial/by-id/usb-FTDI:x"}) == "serial_serial_by-id_usb-FTDI_x"
    )


def test_upstream_serial_alias_and_string_numbers(builtin_drivers):
    raw = {
        "devices": {
            "m": {
                "driver": "eastron_sdm530",
                "reading_type": "serial",
                "vendor_id": "m",
                "address": {"device": "/dev/ttyUSB0", "slaveaddr": "2", "baudrate": 19200, "parity": "even"},
            }
        },
        "readings": {"v": {"device": "m", "var": "V_L1"}},
    }
    config = load(raw, builtin_drivers)
    dev = config.devices["m"]
    assert dev.reading_type == "modbusrtu" and dev.unit_id == 2 and dev.bus_id == "serial_ttyUSB0"
