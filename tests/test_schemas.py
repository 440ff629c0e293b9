"""The shipped JSON Schemas (for editors and the web UI) agree with the Python compiler of record:
upstream documents pass both, and each bad document is rejected by both."""

from __future__ import annotations

import copy
import json
import re

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from ammp_edge.core import config, drivers, paths
from ammp_edge.core.problems import ConfigUnusable
from helpers.common import REPO, UPSTREAM_CONFIGS, UPSTREAM_DRIVERS

SCHEMAS = paths.schemas_dir()
CONFIG_SCHEMA = json.loads((SCHEMAS / "config.schema.json").read_text())
DRIVER_SCHEMA = json.loads((SCHEMAS / "driver.schema.json").read_text())
REGISTRY = Registry().with_resources([(s["$id"], Resource.from_contents(s)) for s in (CONFIG_SCHEMA, DRIVER_SCHEMA)])
CONFIG_VALIDATOR = Draft202012Validator(CONFIG_SCHEMA, registry=REGISTRY)
DRIVER_VALIDATOR = Draft202012Validator(DRIVER_SCHEMA, registry=REGISTRY)

DRIVER_FILES = sorted(UPSTREAM_DRIVERS.glob("*.json")) + sorted((REPO / "drivers").glob("*.json"))
CONFIG_FILES = sorted(UPSTREAM_CONFIGS.glob("*.json"))


def schema_errors(validator, doc) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def python_config_errors(doc, builtin) -> list:
    try:
        return config.load(doc, builtin).errors
    except ConfigUnusable as exc:
        return exc.problems


def python_driver_errors(doc) -> list:
    return [p for p in drivers.check_driver(doc, "driver") if p.severity == "error"]


# ---------------------------------------------------------------------------------------------
# the schemas themselves and the documents that must pass


@pytest.mark.parametrize("schema", [CONFIG_SCHEMA, DRIVER_SCHEMA], ids=["config", "driver"])
def test_schema_is_a_valid_2020_12_schema(schema):
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_schemas_are_package_data():
    assert SCHEMAS == REPO / "app" / "ammp_edge" / "schemas"


@pytest.mark.parametrize("path", DRIVER_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_driver_file_validates(path):
    assert schema_errors(DRIVER_VALIDATOR, json.loads(path.read_text())) == []


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.stem)
def test_upstream_config_validates(path):
    assert schema_errors(CONFIG_VALIDATOR, json.loads(path.read_text())) == []


def test_upstream_configs_present():
    assert {p.name for p in CONFIG_FILES} == {"default-provisioning-config.json", "docker-test-config.json"}


# ---------------------------------------------------------------------------------------------
# a good config, and bad variants of it that both validators reject

EMS = {
    "common": {"order": "lsr", "words": 2, "fncode": 3, "datatype": "float"},
    "status_info_common": {
        "fncode": 3,
        "words": 1,
        "bit_order": "lsb",
        "length_bits": 1,
        "status_level_value_map": [[0, 0], [1, 3]],
    },
    "fields": {
        "P_L1": {"unit": "W", "register": 122},
        "relay_status": {"words": 1, "register": 200, "start_bit": 2},
        "alert_state": {"words": 1, "register": 201, "start_bit": 2, "length_bits": 4, "bit_order": "msb"},
    },
    "status_info": {"relay_fault": {"content": "Relay Fault Detected", "register": 200, "start_bit": 2}},
}

GOOD_CONFIG = {
    "name": "test site",
    "devices": {
        "logger": {"driver": "sys_generic", "reading_type": "sys", "vendor_id": "strato-1"},
        "inv": {
            "driver": "sma_stp25000",
            "reading_type": "modbustcp",
            "vendor_id": "3010482707",
            "address": {"host": "192.168.1.111", "port": 502, "unit_id": 3},
            "timeout": 5,
        },
        "meter": {
            "driver": "eastron_sdm",
            "reading_type": "modbusrtu",
            "vendor_id": "sdm-1",
            "address": {
                "device": "/dev/ttyUSB0",
                "slaveaddr": 2,
                "baudrate": 19200,
                "parity": "even",
                "stopbits": 1,
                "bytesize": 8,
            },
        },
        "ems": {
            "driver": "ems",
            "reading_type": "modbustcp",
            "vendor_id": "ems-1",
            "address": {"host": "10.0.0.5", "unit_id": 1},
        },
    },
    "readings": {
        "cpu": {"device": "logger", "var": "cpu_load"},
        "p": {"device": "inv", "var": "P_total"},
        "v": {"device": "meter", "var": "V_L1"},
        "ems_p": {"device": "ems", "var": "P_L1"},
        "ems_relay": {"device": "ems", "var": "relay_status"},
    },
    "drivers": {"ems": EMS},
    "status_readings": [{"d": "ems", "r": "relay_fault"}],
    "output": [{"field": "P_double", "source": 'inv[var = "P_total"].value * 2', "typecast": "float"}],
    "read_interval": 60,
    "read_roundtime": True,
    "calc_vendor_id": "calc-1",
    "timestamp": "2024-01-01T00:00:00Z",
    "some_future_key": {"kept": True},
}

DELETE = object()


def mutated(base: dict, path: str, value) -> dict:
    """A deep copy of base with the value at a dotted path replaced (or deleted with DELETE)."""
    doc = copy.deepcopy(base)
    keys = path.split(".")
    target = doc
    for k in keys[:-1]:
        target = target[int(k)] if isinstance(target, list) else target[k]
    if value is DELETE:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return doc


BAD_CONFIGS = [
    ("devices missing", "devices", DELETE),
    ("readings not an object", "readings", []),
    ("read_interval a string", "read_interval", "60"),
    ("read_interval zero", "read_interval", 0),
    ("read_roundtime not a bool", "read_roundtime", "yes"),
    ("output not a list", "output", {}),
    ("status_readings not a list", "status_readings", {}),
    ("bad reading_type", "devices.inv.reading_type", "modbus"),
    ("vendor_id missing", "devices.inv.vendor_id", DELETE),
    ("driver missing", "devices.inv.driver", DELETE),
    ("enabled not a bool", "devices.inv.enabled", "yes"),
    ("timeout negative", "devices.inv.timeout", -1),
    ("tcp port out of range", "devices.inv.address.port", 70000),
    ("tcp unit_id out of range", "devices.inv.address.unit_id", 256),
    ("tcp host missing", "devices.inv.address", {"unit_id": 3}),
    ("tcp host not a string", "devices.inv.address.host", 192),
    ("tcp address missing", "devices.inv.address", DELETE),
    ("rtu port missing", "devices.meter.address.device", DELETE),
    ("baudrate zero", "devices.meter.address.baudrate", 0),
    ("baudrate negative", "devices.meter.address.baudrate", -9600),
    ("slaveaddr out of range", "devices.meter.address.slaveaddr", 300),
    ("stopbits 3", "devices.meter.address.stopbits", 3),
    ("parity unknown", "devices.meter.address.parity", "purple"),
    ("bytesize 9", "devices.meter.address.bytesize", 9),
    ("reading var missing", "readings.p.var", DELETE),
    ("reading device missing", "readings.p.device", DELETE),
    ("status reading without r", "status_readings", [{"d": "ems"}]),
    ("config driver without fields", "drivers.ems", {"common": {"fncode": 3}}),
    ("config driver bad datatype", "drivers.ems.fields.P_L1.datatype", "int17"),
    ("config driver typecast not allowed", "drivers.ems.fields.P_L1.typecast", "double"),
    ("config driver register out of range", "drivers.ems.fields.P_L1.register", 70000),
    ("config driver bad order", "drivers.ems.fields.P_L1.order", "big"),
    ("config driver field reads nothing", "drivers.ems.fields.P_L1", {"unit": "W"}),
    ("config driver bit field of two words", "drivers.ems.fields.relay_status.words", 2),
    ("config driver status item without content", "drivers.ems.status_info.relay_fault.content", DELETE),
    ("config driver status level 5", "drivers.ems.status_info_common.status_level_value_map", [[0, 0], [1, 5]]),
]


def test_good_config_passes_both(builtin_drivers):
    assert schema_errors(CONFIG_VALIDATOR, GOOD_CONFIG) == []
    assert python_config_errors(GOOD_CONFIG, builtin_drivers) == []


def test_at_least_ten_bad_documents_of_each_kind():
    assert len(BAD_CONFIGS) >= 10 and len(BAD_DRIVERS) >= 10


@pytest.mark.parametrize("name, path, value", BAD_CONFIGS, ids=[b[0] for b in BAD_CONFIGS])
def test_bad_config_rejected_by_schema_and_loader(builtin_drivers, name, path, value):
    doc = mutated(GOOD_CONFIG, path, value)
    assert schema_errors(CONFIG_VALIDATOR, doc), f"schema accepts: {name}"
    assert python_config_errors(doc, builtin_drivers), f"loader accepts: {name}"


# ---------------------------------------------------------------------------------------------
# a good driver, and bad variants of it that both validators reject

GOOD_DRIVER = {
    "common": {"fncode": 3, "typecast": "float"},
    "fields": {
        "P": {"register": 30775, "datatype": "int32", "unit": "W", "valuemap": {"0x80000000": None}},
        "E": {"register": "0x7741", "datatype": "uint64", "order": "DCBA", "multiplier": 0.001, "offset": 5},
        "relay": {"register": 200, "start_bit": 2, "length_bits": 3, "bit_order": "msb_natural", "typecast": "int"},
        "model": {"register": 40, "datatype": "str16", "typecast": "str", "barrier": True},
    },
    "status_info_common": {"status_level_value_map": [[0, 0], [1, 3]]},
    "status_info": {"fault": {"register": 200, "start_bit": 3, "content": "Fault"}},
}

SYS_DRIVER = {
    "type": "sys",
    "common": {"module": "psutil", "args": {}},
    "fields": {"mem": {"method": "virtual_memory", "keypath": [2]}},
}

BAD_DRIVERS = [
    ("not an object", None, [], None),
    ("fields missing", "fields", DELETE, None),
    ("fields empty", "fields", {}, None),
    ("fields not an object", "fields", [], None),
    ("common not an object", "common", [], None),
    ("field not an object", "fields.P", 5, None),
    ("field reads nothing", "fields.P", {"unit": "W"}, None),
    ("register negative", "fields.P.register", -1, None),
    ("register too large", "fields.P.register", 65536, None),
    ("hex register too large", "fields.E.register", "0x10000", None),
    ("register bad hex", "fields.E.register", "0xZZ", None),
    ("register a bool", "fields.P.register", True, None),
    ("words zero", "fields.P.words", 0, None),
    ("fncode 6", "fields.P.fncode", 6, None),
    ("unknown datatype", "fields.P.datatype", "int17", None),
    ("datatype a number", "fields.P.datatype", 16, None),
    ("bad order", "fields.P.order", "big", None),
    ("typecast not allowed", "fields.P.typecast", "double", None),
    ("common typecast not allowed", "common.typecast", "integer", None),
    ("multiplier a string", "fields.E.multiplier", "10", None),
    ("offset a string", "fields.E.offset", "5", None),
    ("valuemap a list", "fields.P.valuemap", [["0x80000000", None]], None),
    ("start_bit 16", "fields.relay.start_bit", 16, None),
    ("length_bits 0", "fields.relay.length_bits", 0, None),
    ("bad bit_order", "fields.relay.bit_order", "middle", None),
    ("bit field of two words", "fields.relay.words", 2, None),
    ("barrier not a bool", "fields.model.barrier", "yes", None),
    ("status_info not an object", "status_info", [], None),
    ("status item without content", "status_info.fault.content", DELETE, None),
    ("status item without register", "status_info.fault.register", DELETE, None),
    ("status words 5", "status_info.fault.words", 5, None),
    ("status level 5", "status_info_common.status_level_value_map", [[0, 0], [1, 5]], None),
    ("status map not pairs", "status_info_common.status_level_value_map", [[0]], None),
    ("sys call not allowed", "fields.mem.method", "system", "sys"),
    ("sys keypath not a list", "fields.mem.keypath", "2", "sys"),
    ("sys args not an object", "fields.mem.args", ["/"], "sys"),
]


@pytest.mark.parametrize("doc", [GOOD_DRIVER, SYS_DRIVER], ids=["modbus", "sys"])
def test_good_driver_passes_both(doc):
    assert schema_errors(DRIVER_VALIDATOR, doc) == []
    assert drivers.check_driver(doc, "driver") == []


@pytest.mark.parametrize("name, path, value, base", BAD_DRIVERS, ids=[b[0] for b in BAD_DRIVERS])
def test_bad_driver_rejected_by_schema_and_compiler(name, path, value, base):
    doc = value if path is None else mutated(SYS_DRIVER if base == "sys" else GOOD_DRIVER, path, value)
    assert schema_errors(DRIVER_VALIDATOR, doc), f"schema accepts: {name}"
    assert python_driver_errors(doc), f"compiler accepts: {name}"


def test_readme_examples_pass_both(builtin_drivers):
    """The driver and config examples in drivers/README.md are valid for both validators."""
    text = (REPO / "drivers" / "README.md").read_text(encoding="utf-8")
    driver_doc, config_doc = (json.loads(b) for b in re.findall(r"```json\n(.*?)```", text, re.S))
    assert schema_errors(DRIVER_VALIDATOR, driver_doc) == [] and drivers.check_driver(driver_doc, "example") == []
    assert schema_errors(CONFIG_VALIDATOR, config_doc) == []
    assert python_config_errors(config_doc, builtin_drivers) == []
