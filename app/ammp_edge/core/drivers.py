"""Driver JSON: loading (built-in files and config drivers), `common` merging, and compiling fields.

A driver says *what* to read (registers, types, scaling); the site config says *where* (address).
Upstream driver files load unchanged: hex-string registers, `str*` text datatypes, keys only one
upstream reader knew. Problems are reported per field with their JSON path; a bad field is skipped,
the rest of the driver is used.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import codec, rawfields, yamltext
from .problems import InvalidInput, Problem, join_path, refuse_nonfinite

log = logging.getLogger(__name__)

MODBUS_FNCODES = (3, 4)
MAX_BLOCK_REGISTERS = 125

# sys fields: the calls a driver may make (upstream imported any module; a config could run anything)
SYS_CALLS = {
    ("psutil", "disk_usage"),
    ("psutil", "virtual_memory"),
    ("psutil", "swap_memory"),
    ("psutil", "sensors_temperatures"),
    ("psutil", "sensors_battery"),
    ("psutil", "boot_time"),
    ("psutil", "cpu_percent"),
    ("psutil", "cpu_count"),
    ("psutil", "cpu_freq"),
    ("psutil", "net_io_counters"),
    ("psutil", "disk_io_counters"),
    ("os", "getloadavg"),
    ("time", "time"),
}


# Drivers built into the code, as upstream's Rust had them (a config's `drivers` may still override one).
# sma_hycon_csv: the HyCon's CSV3 columns (kW) as upstream's fields (W).
CODE_DRIVERS: dict[str, dict] = {
    "sma_hycon_csv": {
        "common": {"multiplier": 1000, "typecast": "float", "unit": "W"},
        "fields": {
            "grid_out_P": {"column": "LoadPwrAtTot", "description": "Load power"},
            "genset_P": {"column": "GenPwrAtTot", "description": "Genset power"},
            "pvinv_P_total": {"column": "PvPwrAtTot", "description": "PV power"},
            "grid_in_P": {"column": "GridPwrAtTot", "description": "Grid power"},
        },
    }
}


@dataclass(frozen=True, slots=True)
class ModbusField:
    name: str
    register: int  # before the device's register_offset
    words: int
    fncode: int
    spec: codec.ValueSpec
    barrier: bool = False
    unit: str | None = None
    description: str | None = None
    # the field of the same driver whose value is this field's power of ten (SunSpec's *_SF), compiled
    scale_factor: ModbusField | None = None
    # the driver's `expect`: (field, the value it must read) before anything of the device is published
    expects: tuple[tuple[ModbusField, Any], ...] = ()

    def scale_chain(self) -> list[ModbusField]:
        """The scale factor fields this field needs, nearest first (a chain, never a cycle)."""
        out: list[ModbusField] = []
        sf = self.scale_factor
        while sf is not None:
            out.append(sf)
            sf = sf.scale_factor
        return out


@dataclass(frozen=True, slots=True)
class SysField:
    name: str
    module: str
    method: str
    args: dict
    keypath: tuple
    spec: codec.ValueSpec
    unit: str | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class MqttField:
    """A value from the last message on an MQTT topic (reading_type mqtt)."""

    name: str
    topic: str
    parse_as: str  # bytes, str, hex or json
    keypath: tuple  # json: the keys and indexes down to the value
    spec: codec.ValueSpec
    unit: str | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class CsvField:
    """A column of a CSV file (reading_type sma_hycon_csv): the number in it, scaled."""

    name: str
    column: str
    spec: codec.ValueSpec
    unit: str | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class OtherField:
    """A field of a reader this version does not implement (kept so the driver still loads)."""

    name: str
    kind: str
    options: dict = field(default_factory=dict)
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class StatusItem:
    key: str
    register: int
    words: int
    fncode: int
    spec: codec.StatusSpec


def field_kind(opts: dict) -> str:
    """Which reader a merged field belongs to, from the keys it carries."""
    if "schema" in opts:
        return "rawtcp"
    if "oid" in opts:
        return "snmp"
    if "obis_channel" in opts:
        return "sma_speedwire"
    if "query" in opts:
        return "rawserial"
    if "topic" in opts:
        return "mqtt"
    if "column" in opts:
        return "csv"
    if "method" in opts:
        return "sys"
    if "register" in opts:
        return "modbus"
    return "unknown"


def merge_field(driver: dict, name: str) -> dict:
    """`common` under the field's own keys (a field's empty valuemap keeps the common one)."""
    common = driver.get("common") or {}
    own = (driver.get("fields") or {}).get(name) or {}
    own = own if isinstance(own, dict) else {}  # a non-object field is reported by compile_field
    merged = {**common, **own} if isinstance(common, dict) else dict(own)
    if isinstance(common, dict) and own.get("valuemap") == {} and common.get("valuemap"):
        merged["valuemap"] = common["valuemap"]
    return merged


# ---------------------------------------------------------------------------------------------
# Field attribute parsing; each raises InvalidInput naming the attribute path


def _number(opts: dict, key: str, path: str) -> float | int | None:
    value = opts.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInput(join_path(path, key), f"{value!r} is not a number")
    return value


def _int(opts: dict, key: str, path: str, lo: int, hi: int, default: int | None = None) -> int | None:
    value = opts.get(key, default)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(join_path(path, key), f"{value!r} is not an integer")
    if not lo <= value <= hi:
        raise InvalidInput(join_path(path, key), f"{value} is outside {lo}..{hi}")
    return value


def _int_or(opts: dict, key: str, path: str, lo: int, hi: int, default: int) -> int:
    """_int with a default: always an int."""
    value = _int(opts, key, path, lo, hi, default)
    return default if value is None else value


def parse_register(value: Any, path: str) -> int:
    """An int, or upstream's hex string ('0x6A' or '6A', always base 16)."""
    if isinstance(value, str):
        text = value.strip().lower()
        text = text[2:] if text.startswith("0x") else text
        try:
            value = int(text, 16)
        except ValueError:
            raise InvalidInput(path, f"{value!r} is neither an integer nor a hex string") from None
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(path, f"{value!r} is not a register address")
    if not 0 <= value <= 0xFFFF:
        raise InvalidInput(path, f"{value} is outside 0..65535")
    return value


def _valuemap(opts: dict, path: str) -> codec.ValueMap | None:
    vm = opts.get("valuemap")
    if vm is None or vm == {}:
        return None
    if not isinstance(vm, dict):
        raise InvalidInput(join_path(path, "valuemap"), "must be an object of raw hex -> value")
    return codec.ValueMap(vm)


def _value_spec(
    opts: dict,
    path: str,
    datatype: str | None,
    text_bytes: int | None = None,
    order: str = "ABCD",
    bits: codec.BitField | None = None,
) -> codec.ValueSpec:
    typecast = opts.get("typecast")
    if typecast is not None and typecast not in codec.TYPECASTS:
        raise InvalidInput(join_path(path, "typecast"), f"{typecast!r} is not one of {', '.join(codec.TYPECASTS)}")
    return codec.ValueSpec(
        datatype=datatype,
        order=order,
        valuemap=_valuemap(opts, path),
        bits=bits,
        multiplier=_number(opts, "multiplier", path),
        offset=_number(opts, "offset", path),
        typecast=typecast,
        text_bytes=text_bytes,
    )


def _datatype(opts: dict, path: str, words: int | None) -> tuple[str | None, int | None]:
    """(canonical datatype, text byte length). Fixes upstream's non-schema 'int' by width."""
    dt = opts.get("datatype")
    if dt is None:
        return None, None
    if not isinstance(dt, str):
        raise InvalidInput(join_path(path, "datatype"), f"{dt!r} is not a datatype name")
    name = dt.strip().lower()
    if name == "int":  # upstream libratum_ur5i: not a schema type; the signed int of the field's width
        return {1: "int16", 2: "int32", 4: "int64"}.get(words or 1, "int32"), None
    if name in codec.NUMERIC_TYPES:
        return name, None
    if codec.is_text(name):
        return name, codec.text_length(name)
    raise InvalidInput(
        join_path(path, "datatype"),
        f"{dt!r} is not one of {', '.join(codec.NUMERIC_TYPES)}, str, strN",
    )


def _bits(opts: dict, path: str, warnings: list[Problem] | None = None) -> codec.BitField | None:
    if opts.get("start_bit") is None:
        return None
    start = _int_or(opts, "start_bit", path, 0, 15, 0)
    length = _int_or(opts, "length_bits", path, 1, 16, 1)
    order = opts.get("bit_order", "lsb")
    if order not in codec.BIT_ORDERS:
        raise InvalidInput(join_path(path, "bit_order"), f"{order!r} is not one of {', '.join(codec.BIT_ORDERS)}")
    if start + length > 16:
        raise InvalidInput(
            join_path(path, "length_bits"), f"bits {start}..{start + length - 1} do not fit in one register"
        )
    if order == "msb" and length > 1 and warnings is not None:
        warnings.append(
            Problem(
                join_path(path, "bit_order"),
                "msb (as upstream) returns a multi-bit field bit-reversed "
                "(0xB200, start 4, length 4 -> 4); bit_order msb_natural reads it in natural order (-> 2)",
                "warning",
            )
        )
    return codec.BitField(start, length, order)


def _order(opts: dict, path: str) -> str:
    try:
        return codec.normalize_order(opts.get("order"))
    except ValueError:
        raise InvalidInput(
            join_path(path, "order"), f"{opts.get('order')!r} is not one of msr, lsr, {', '.join(codec.ORDERS)}"
        ) from None


def compile_modbus_field(name: str, opts: dict, path: str, warnings: list[Problem]) -> ModbusField:
    if "register" not in opts:
        raise InvalidInput(join_path(path, "register"), "missing")
    register = parse_register(opts["register"], join_path(path, "register"))
    fncode = _int(opts, "fncode", path, 0, 255, default=3)
    if fncode not in MODBUS_FNCODES:
        raise InvalidInput(join_path(path, "fncode"), f"{fncode} is not supported (3 holding, 4 input registers)")
    words = _int(opts, "words", path, 1, MAX_BLOCK_REGISTERS)
    datatype, text_bytes = _datatype(opts, path, words)
    bits = _bits(opts, path, warnings)
    if bits is not None:
        if words not in (None, 1):
            raise InvalidInput(join_path(path, "words"), "a bit field (start_bit) reads exactly one register")
        words = 1
    elif text_bytes is not None:
        needed = (text_bytes + 1) // 2
        if words is not None and words != needed and "words" in opts:
            warnings.append(
                Problem(
                    join_path(path, "words"),
                    f"{words} does not fit datatype {datatype}; reading {needed} registers",
                    "warning",
                )
            )
        words = needed
    elif datatype is not None and codec.is_text(datatype):
        if words is None:
            raise InvalidInput(join_path(path, "words"), f"datatype {datatype} needs 'words' (or use strN)")
    elif datatype is not None:
        size = codec.NUMERIC_TYPES[datatype][1]
        needed = max(1, size // 2)
        if words is None:
            words = needed
        elif words != needed:
            raise InvalidInput(
                join_path(path, "words"), f"{words} registers do not hold a {datatype} ({needed} needed)"
            )
    else:
        words = words or 1
        if words == 3:
            raise InvalidInput(join_path(path, "datatype"), "missing, and 3 registers do not imply one")
    if register + words - 1 > 0xFFFF:
        raise InvalidInput(join_path(path, "register"), f"{register} + {words} registers runs past 65535")
    barrier = opts.get("barrier", False)
    if not isinstance(barrier, bool):
        raise InvalidInput(join_path(path, "barrier"), "must be true or false")
    spec = _value_spec(opts, path, datatype, text_bytes, _order(opts, path), bits)
    return ModbusField(name, register, words, fncode, spec, barrier, opts.get("unit"), opts.get("description"))


def compile_sys_field(name: str, opts: dict, path: str) -> SysField:
    module = opts.get("module", "psutil")
    method = opts.get("method")
    if (module, method) not in SYS_CALLS:
        allowed = ", ".join(sorted(f"{m}.{f}" for m, f in SYS_CALLS))
        raise InvalidInput(join_path(path, "method"), f"{module}.{method} is not an allowed system call ({allowed})")
    args = opts.get("args") or {}
    if not isinstance(args, dict):
        raise InvalidInput(join_path(path, "args"), "must be an object")
    keypath = opts.get("keypath") or []
    if not isinstance(keypath, list) or not all(isinstance(k, (str, int)) and not isinstance(k, bool) for k in keypath):
        raise InvalidInput(join_path(path, "keypath"), "must be a list of keys and indexes")
    return SysField(
        name,
        str(module),
        str(method),
        args,
        tuple(keypath),
        _value_spec(opts, path, None),
        opts.get("unit"),
        opts.get("description"),
    )


def _keypath(opts: dict, path: str) -> tuple:
    keypath = opts.get("keypath") or []
    if isinstance(keypath, (str, int)) and not isinstance(keypath, bool):
        keypath = [keypath]  # one key
    if not isinstance(keypath, list) or not all(isinstance(k, (str, int)) and not isinstance(k, bool) for k in keypath):
        raise InvalidInput(join_path(path, "keypath"), "must be a list of keys and indexes")
    return tuple(keypath)


def compile_mqtt_field(name: str, opts: dict, path: str) -> MqttField:
    topic = opts.get("topic")
    if not isinstance(topic, str) or not topic or "\x00" in topic or len(topic.encode()) > 0xFFFF:
        raise InvalidInput(join_path(path, "topic"), f"{topic!r} is not an MQTT topic name")
    if "+" in topic or "#" in topic:
        raise InvalidInput(join_path(path, "topic"), f"{topic!r} has a wildcard: a field reads one topic")
    keypath = _keypath(opts, path)
    parse_as = opts.get("parse_as", "json" if keypath else "bytes")
    if parse_as not in codec.PARSE_AS:
        raise InvalidInput(join_path(path, "parse_as"), f"{parse_as!r} is not one of {', '.join(codec.PARSE_AS)}")
    if keypath and parse_as != "json":
        raise InvalidInput(join_path(path, "keypath"), f"a key path needs parse_as json, not {parse_as}")
    datatype, text_bytes = _datatype(opts, path, None)
    spec = _value_spec(opts, path, datatype, text_bytes, _order(opts, path))
    return MqttField(name, topic, str(parse_as), keypath, spec, opts.get("unit"), opts.get("description"))


def compile_csv_field(name: str, opts: dict, path: str) -> CsvField:
    column = opts.get("column")
    if not isinstance(column, str) or not column:
        raise InvalidInput(join_path(path, "column"), f"{column!r} is not a column name")
    return CsvField(name, column, _value_spec(opts, path, None), opts.get("unit"), opts.get("description"))


def compile_other_field(name: str, kind: str, opts: dict, path: str) -> OtherField:
    """Check what every reader shares (datatype, scaling, valuemap) so a driver error is still named."""
    datatype, _ = _datatype(opts, path, opts.get("words") if isinstance(opts.get("words"), int) else None)
    _value_spec(opts, path, datatype)
    return OtherField(name, kind, dict(opts), opts.get("unit"))


def compile_raw_field(
    name: str, kind: str, opts: dict, path: str, warnings: list[Problem]
) -> rawfields.RawSerialField | rawfields.RawTcpField:
    """A rawserial or rawtcp field (core.rawfields), with the value spec every reader shares."""
    datatype, text_bytes = _datatype(opts, path, None)
    spec = _value_spec(opts, path, datatype, text_bytes)
    if kind == "rawserial":
        return rawfields.compile_rawserial_field(name, opts, path, spec, warnings)
    return rawfields.compile_rawtcp_field(name, opts, path, spec, warnings)


INTEGER_TYPES = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64")


def _sibling_path(path: str, name: str, other: str) -> str:
    """The path of field `other` next to field `name` at `path` ('d.fields.W' -> 'd.fields.W_SF')."""
    own = join_path("", name)
    if path.endswith("." + own):
        return join_path(path[: -len(own) - 1], other)
    return join_path("fields", other)


def _scale_factor(
    driver: dict, name: str, opts: dict, path: str, warnings: list[Problem], chain: tuple[str, ...]
) -> ModbusField | None:
    """The compiled field `scale_factor` names (its value is this field's power of ten, as SunSpec's
    *_SF registers): a Modbus field of the same driver with an integer type, not part of a cycle."""
    ref = opts.get("scale_factor")
    if ref is None:
        return None
    where = join_path(path, "scale_factor")
    if not isinstance(ref, str) or not ref:
        raise InvalidInput(where, f"{ref!r} is not the name of a field of this driver")
    if ref not in (driver.get("fields") or {}):
        raise InvalidInput(where, f"no field {ref!r} in this driver")
    if ref in chain:
        raise InvalidInput(where, "a cycle of scale factors: " + " -> ".join((*chain, ref)))
    nested: list[Problem] = []
    try:
        target = compile_field(driver, ref, _sibling_path(path, name, ref), nested, (*chain, ref))
        warnings.extend(w for w in nested if w not in warnings)
    except InvalidInput as exc:
        if exc.problem.message.startswith("a cycle of scale factors"):
            raise InvalidInput(where, exc.problem.message) from None
        raise InvalidInput(where, f"field {ref!r} cannot be read ({exc.problem})") from None
    if not isinstance(target, ModbusField):
        raise InvalidInput(where, f"field {ref!r} is not a Modbus register field")
    spec = target.spec
    datatype = spec.datatype or codec.INFERRED_TYPES.get(2 * target.words)
    if spec.bits is None and datatype not in INTEGER_TYPES:
        raise InvalidInput(
            where, f"field {ref!r} is {datatype or 'text'}; a scale factor is an integer (int16, as SunSpec's sunssf)"
        )
    if spec.typecast in ("float", "str", "bool") or any(isinstance(v, float) for v in (spec.multiplier, spec.offset)):
        raise InvalidInput(where, f"field {ref!r} is scaled or cast to a non-integer; a scale factor is an integer")
    return target


def _expects(driver: dict, name: str, path: str, warnings: list[Problem]) -> tuple[tuple[ModbusField, Any], ...]:
    """The driver's `expect` ({field: value}): Modbus fields that must read exactly these values, or
    nothing of the device is published (a generated SunSpec driver checks its model headers so)."""
    expect = driver.get("expect")
    if expect is None:
        return ()
    own = ".fields." + join_path("", name)
    where = join_path(path[: -len(own)], "expect") if path.endswith(own) else "expect"
    if not isinstance(expect, dict) or not expect:
        raise InvalidInput(where, "must be an object of field name -> the value it must read")
    out = []
    for ref, value in expect.items():
        at = join_path(where, ref)
        if ref not in (driver.get("fields") or {}):
            raise InvalidInput(at, f"no field {ref!r} in this driver")
        if isinstance(value, (dict, list, bool)) or value is None:
            raise InvalidInput(at, f"{value!r} is not a number or a text")
        nested: list[Problem] = []
        try:
            target = compile_field(driver, ref, _sibling_path(path, name, ref), nested, _expect=False)
        except InvalidInput as exc:
            raise InvalidInput(at, f"field {ref!r} cannot be read ({exc.problem})") from None
        warnings.extend(w for w in nested if w not in warnings)
        if not isinstance(target, ModbusField):
            raise InvalidInput(at, f"field {ref!r} is not a Modbus register field")
        out.append((target, value))
    return tuple(out)


def compile_field(
    driver: dict,
    name: str,
    path: str,
    warnings: list[Problem],
    _chain: tuple[str, ...] = (),
    _expect: bool = True,
) -> Any:
    """Compile one field of a driver (path names the field, e.g. 'drivers.ems.fields.P_L1')."""
    opts = merge_field(driver, name)
    if not isinstance((driver.get("fields") or {}).get(name), dict):
        raise InvalidInput(path, "a field must be an object")
    refuse_nonfinite(opts, path)
    kind = field_kind(opts)
    if kind == "modbus":
        fld = compile_modbus_field(name, opts, path, warnings)
        if "scale_factor" in opts:
            sf = _scale_factor(driver, name, opts, path, warnings, _chain or (name,))
            fld = replace(fld, scale_factor=sf)
        if _expect and not _chain and "expect" in driver:
            fld = replace(fld, expects=_expects(driver, name, path, warnings))
        return fld
    if opts.get("scale_factor") is not None:
        raise InvalidInput(join_path(path, "scale_factor"), "only a Modbus register field can have a scale factor")
    if kind == "sys":
        return compile_sys_field(name, opts, path)
    if kind in ("rawserial", "rawtcp"):
        return compile_raw_field(name, kind, opts, path, warnings)
    if kind in ("sma_speedwire", "snmp"):
        from . import netfields  # compiled beside their address checks

        if kind == "snmp":
            return netfields.compile_snmp_field(name, opts, path)
        return netfields.compile_speedwire_field(name, opts, path)
    if kind == "mqtt":
        return compile_mqtt_field(name, opts, path)
    if kind == "csv":
        return compile_csv_field(name, opts, path)
    if kind == "unknown":
        raise InvalidInput(
            path, "no register, method, oid, obis_channel, query, topic, column or schema: nothing to read"
        )
    return compile_other_field(name, kind, opts, path)


def compile_status_item(driver: dict, key: str, path: str, warnings: list[Problem] | None = None) -> StatusItem:
    common = driver.get("status_info_common") or {}
    own = (driver.get("status_info") or {}).get(key)
    if not isinstance(own, dict):
        raise InvalidInput(path, "a status item must be an object")
    opts = {**common, **own} if isinstance(common, dict) else dict(own)
    refuse_nonfinite(opts, path)
    content = opts.get("content")
    if not isinstance(content, str) or not content:
        raise InvalidInput(join_path(path, "content"), "missing: the status message text is required")
    if "register" not in opts:
        raise InvalidInput(join_path(path, "register"), "missing")
    register = parse_register(opts["register"], join_path(path, "register"))
    fncode = _int_or(opts, "fncode", path, 0, 255, 3)
    if fncode not in MODBUS_FNCODES:
        raise InvalidInput(join_path(path, "fncode"), f"{fncode} is not supported (3 or 4)")
    words = _int_or(opts, "words", path, 1, 4, 1)
    bits = _bits(opts, path, warnings)
    if bits is not None and words != 1:
        raise InvalidInput(join_path(path, "words"), "status bits read exactly one register")
    level_map = opts.get("status_level_value_map") or []
    if not isinstance(level_map, list) or not all(
        isinstance(p, list) and len(p) == 2 and type(p[1]) is int and 0 <= p[1] <= 4 for p in level_map
    ):
        raise InvalidInput(join_path(path, "status_level_value_map"), "must be a list of [value, level 0..4] pairs")
    spec = codec.StatusSpec(content, bits, _order(opts, path), tuple((v, lvl) for v, lvl in level_map))
    return StatusItem(key, register, words, fncode, spec)


def check_driver(driver: Any, path: str) -> list[Problem]:
    """Every problem of a driver document (for `validate` and the web UI)."""
    if not isinstance(driver, dict):
        return [Problem(path, "a driver must be a JSON object")]
    problems: list[Problem] = []
    fields = driver.get("fields")
    if not isinstance(fields, dict) or not fields:
        problems.append(Problem(join_path(path, "fields"), "missing or empty: a driver needs fields"))
        fields = {}
    for key in ("common", "status_info", "status_info_common"):
        if key in driver and not isinstance(driver[key], dict):
            problems.append(Problem(join_path(path, key), "must be an object"))
    if not all(isinstance(driver.get(k, {}), dict) for k in ("common", "status_info_common")):
        return problems
    for name in fields:
        try:
            compile_field(driver, name, join_path(path, "fields", name), problems)
        except InvalidInput as exc:
            if exc.problem not in problems:  # a bad `expect` is every Modbus field's problem: named once
                problems.append(exc.problem)
    if isinstance(driver.get("status_info"), dict):
        for key in driver["status_info"]:
            try:
                compile_status_item(driver, key, join_path(path, "status_info", key), problems)
            except InvalidInput as exc:
                problems.append(exc.problem)
    return problems


DRIVER_SUFFIXES = (".json", ".yaml", ".yml")


def load_driver_file(path: Path) -> dict:
    """A driver file, JSON or YAML (by its name; core.jsontext and core.yamltext: the same size and
    depth limits as configs); OSError, or ConfigUnusable (a ValueError) naming the problem."""
    return yamltext.load(Path(path).read_bytes(), "driver", Path(path).name)


def load_builtin_drivers(directory: Path) -> dict[str, dict]:
    """All `<name>.json`, `<name>.yaml` and `<name>.yml` under directory; an unreadable file is logged
    and skipped, and so is a second file for a name (the .json one wins)."""
    drivers: dict[str, dict] = {}
    if not directory.is_dir():
        log.warning("drivers directory %s does not exist", directory)
        return drivers
    files = sorted(f for f in directory.iterdir() if f.suffix in DRIVER_SUFFIXES and f.is_file())
    for file in sorted(files, key=lambda f: (f.stem, DRIVER_SUFFIXES.index(f.suffix))):
        if file.stem in drivers:
            log.error("driver %s ignored: a driver named %s is already loaded", file, file.stem)
            continue
        try:
            drivers[file.stem] = load_driver_file(file)
        except (OSError, ValueError) as exc:
            log.error("driver %s cannot be loaded: %s", file, exc)
    return drivers
