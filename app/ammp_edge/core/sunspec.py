"""SunSpec, generically: the model chain of any SunSpec device, and a driver made from it.

A SunSpec device (Fronius, SolarEdge, SMA, Kostal, ABB/FIMER, Huawei with SunSpec on, Enphase
gateways ...) puts the marker "SunS" (0x5375 0x6E53) at a base register (40000, 0 or 50000), then a
chain of models, each `ID, L, L registers of points`, ended by ID 0xFFFF. `walk` follows that chain
through a `read(address, count)` callable (the caller's Modbus transport), checking every header
against the model definitions; `drivers_for` turns a walked chain into ordinary driver JSON (one
driver per logical device: a common model and the models after it), with

- registers at the addresses the walk found, types and units from the definitions,
- `scale_factor` naming the model's `*_SF` point (value x 10**SF, read in the same request),
- a valuemap publishing SunSpec's "not implemented" values as null (0x8000 int16 and sunssf, 0xFFFF
  uint16/enum16/bitfield16/count, 0x80000000 int32, 0xFFFFFFFF uint32/enum32/bitfield32, 0 acc16/32/64
  and also 0x80000000 for acc32, NaN float32, an empty string),
- AMMP's field names (P_total, E_total, V_L1, I_L1, freq, dc_in_V1 ...), as the upstream drivers use,
- `expect`: the marker and every model header (ID and length) as the walk found them, checked at
  every read, so a device whose chain changed (a firmware update) publishes nothing rather than
  values from the wrong registers.

The model definitions are pysunspec2's JSON, vendored in `app/ammp_edge/sunspec_models/` (its README
says which version); nothing is typed in here but the AMMP names. A chain that cannot be trusted (bad
marker, a model longer than the register space, a known model whose length does not match its
definition, no end, too many models) raises SunSpecError naming where: a driver is never made from
it, so a wrong layout cannot give wrong values.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from . import codec, paths

MARKER = (0x5375, 0x6E53)  # "SunS"
BASES = (40000, 0, 50000)
END_ID = 0xFFFF
MAX_MODELS = 64  # a chain with more models than this is taken for a device answering garbage (or a loop)
MAX_READ = 125
DEFINITIONS_VERSION = "pysunspec2 1.3.7"

INVERTERS = (101, 102, 103, 111, 112, 113)
METERS = (201, 202, 203, 204, 211, 212, 213, 214)
COMMON, NAMEPLATE, STORAGE, MPPT = 1, 120, 124, 160
SUPPORTED = (COMMON, *INVERTERS, NAMEPLATE, STORAGE, MPPT, *METERS)

_INVERTER_NAMES = {
    "A": "I_total",
    "AphA": "I_L1",
    "AphB": "I_L2",
    "AphC": "I_L3",
    "PPVphAB": "V_L1_L2",
    "PPVphBC": "V_L2_L3",
    "PPVphCA": "V_L3_L1",
    "PhVphA": "V_L1",
    "PhVphB": "V_L2",
    "PhVphC": "V_L3",
    "W": "P_total",
    "Hz": "freq",
    "VA": "S_total",
    "VAr": "Q_total",
    "PF": "pf_total",
    "WH": "E_total",
    "DCA": "dc_in_I",
    "DCV": "dc_in_V",
    "DCW": "dc_in_P",
    "TmpCab": "temp_internal",
    "TmpSnk": "temp_heatsink",
    "TmpTrns": "temp_transformer",
    "TmpOt": "temp_other",
    "St": "status",
    "StVnd": "status_vendor",
    "Evt1": "events",
}
_METER_NAMES = {
    "A": "I_total",
    "AphA": "I_L1",
    "AphB": "I_L2",
    "AphC": "I_L3",
    "PhV": "V_avg",
    "PhVphA": "V_L1",
    "PhVphB": "V_L2",
    "PhVphC": "V_L3",
    "PPV": "V_LL_avg",
    "PhVphAB": "V_L1_L2",
    "PhVphBC": "V_L2_L3",
    "PhVphCA": "V_L3_L1",
    "PPVphAB": "V_L1_L2",
    "PPVphBC": "V_L2_L3",
    "PPVphCA": "V_L3_L1",
    "Hz": "freq",
    "W": "P_total",
    "WphA": "P_L1",
    "WphB": "P_L2",
    "WphC": "P_L3",
    "VA": "S_total",
    "VAphA": "S_L1",
    "VAphB": "S_L2",
    "VAphC": "S_L3",
    "VAR": "Q_total",
    "VARphA": "Q_L1",
    "VARphB": "Q_L2",
    "VARphC": "Q_L3",
    "PF": "pf_total",
    "PFphA": "pf_L1",
    "PFphB": "pf_L2",
    "PFphC": "pf_L3",
    "TotWhExp": "E_exported",
    "TotWhExpPhA": "E_exported_L1",
    "TotWhExpPhB": "E_exported_L2",
    "TotWhExpPhC": "E_exported_L3",
    "TotWhImp": "E_imported",
    "TotWhImpPhA": "E_imported_L1",
    "TotWhImpPhB": "E_imported_L2",
    "TotWhImpPhC": "E_imported_L3",
    "Evt": "events",
}
# AMMP field names per model (points not named here are not read)
NAMES: dict[int, dict[str, str]] = {
    COMMON: {"Mn": "manufacturer", "Md": "model", "Vr": "firmware_version", "SN": "serial"},
    **{m: _INVERTER_NAMES for m in INVERTERS},
    NAMEPLATE: {
        "DERTyp": "dev_type",
        "WRtg": "P_rated",
        "VARtg": "S_rated",
        "ARtg": "I_rated",
        "WHRtg": "E_rated",
        "AhrRtg": "batt_ah_rated",
        "MaxChaRte": "batt_P_charge_rated",
        "MaxDisChaRte": "batt_P_discharge_rated",
    },
    STORAGE: {
        "WChaMax": "batt_P_charge_max",
        "ChaState": "batt_soc",
        "StorAval": "batt_ah_available",
        "InBatV": "batt_V",
        "ChaSt": "batt_state",
        "MinRsvPct": "batt_soc_reserve",
    },
    **{m: _METER_NAMES for m in METERS},
}
# the repeating module group of model 160: point -> name, module number appended (dc_in_V1, dc_in_V2 ...)
MPPT_MODULE_NAMES = {"DCA": "dc_in_I", "DCV": "dc_in_V", "DCW": "dc_in_P", "DCWH": "dc_in_E", "Tmp": "dc_in_temp"}
UNITS = {"var": "VAr", "Pct": "%", "AH": "Ah", "Secs": "s"}

# SunSpec type -> (driver datatype, "not implemented" raw values as valuemap keys)
TYPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "int16": ("int16", ("0x8000",)),
    "sunssf": ("int16", ("0x8000",)),
    "uint16": ("uint16", ("0xffff",)),
    "count": ("uint16", ("0xffff",)),
    "enum16": ("uint16", ("0xffff",)),
    "bitfield16": ("uint16", ("0xffff",)),
    "acc16": ("uint16", ("0x0000",)),
    "int32": ("int32", ("0x80000000",)),
    "uint32": ("uint32", ("0xffffffff",)),
    "enum32": ("uint32", ("0xffffffff",)),
    "bitfield32": ("uint32", ("0xffffffff",)),
    # SunSpec: an accumulator of 0 is "not accumulated"; 0x80000000 is also met as "not implemented"
    "acc32": ("uint32", ("0x00000000", "0x80000000")),
    "int64": ("int64", ("0x8000000000000000",)),
    "uint64": ("uint64", ("0xffffffffffffffff",)),
    "acc64": ("uint64", ("0x0000000000000000",)),
    "float32": ("float", ("0x7fc00000",)),  # and any other NaN (the codec publishes NaN as null)
    "float64": ("double", ("0x7ff8000000000000",)),
}


class SunSpecError(ValueError):
    """A SunSpec chain that cannot be used; the message says where and why."""


class ReadFailed(Exception):
    """What the `read` callable raises when registers cannot be read. `refused`: the device answered
    with an exception (illegal data address), i.e. it is there but has no such registers."""

    def __init__(self, message: str, refused: bool = False):
        super().__init__(message)
        self.refused = refused


Reader = Callable[[int, int], list[int]]


# ---------------------------------------------------------------------------------------------
# model definitions


@dataclass(frozen=True, slots=True)
class Point:
    name: str
    type: str
    offset: int  # registers from the model's ID register
    size: int
    sf: str | None = None
    units: str | None = None
    label: str | None = None


@dataclass(frozen=True, slots=True)
class ModelDef:
    id: int
    name: str
    label: str
    points: tuple[Point, ...]  # the fixed part, ID and L included
    length: int  # registers after ID and L in the fixed part
    group: tuple[Point, ...] = ()  # a repeating group (offsets from the group's start), e.g. 160's modules
    group_length: int = 0

    def point(self, name: str) -> Point | None:
        return next((p for p in self.points if p.name == name), None)


def _points(raw: list[dict], start: int) -> tuple[tuple[Point, ...], int]:
    out, offset = [], start
    for p in raw:
        size = int(p.get("size", 1))
        out.append(Point(p["name"], p["type"], offset, size, p.get("sf"), p.get("units"), p.get("label")))
        offset += size
    return tuple(out), offset - start


@cache
def model(model_id: int) -> ModelDef:
    """The definition of a supported model (KeyError for any other)."""
    if model_id not in SUPPORTED:
        raise KeyError(model_id)
    doc = json.loads((paths.sunspec_models_dir() / f"model_{model_id}.json").read_text(encoding="utf-8"))
    group = doc["group"]
    points, size = _points(group["points"], 0)
    groups = group.get("groups") or []
    rep: tuple[Point, ...] = ()
    rep_len = 0
    if groups:
        rep, rep_len = _points(groups[0]["points"], 0)
    return ModelDef(int(doc["id"]), group["name"], group.get("label", group["name"]), points, size - 2, rep, rep_len)


# ---------------------------------------------------------------------------------------------
# the chain


@dataclass(frozen=True, slots=True)
class ModelAt:
    id: int
    address: int  # of its ID register
    length: int  # L: registers after ID and L
    body: tuple[int, ...] = ()  # its registers after ID and L, where read (common model, 160)

    @property
    def known(self) -> bool:
        return self.id in SUPPORTED


@dataclass
class Chain:
    base: int
    models: list[ModelAt] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was odd but safe (e.g. no end model, refused instead)

    def layout(self) -> list[list[int]]:
        return [[m.id, m.address, m.length] for m in self.models]

    def identity(self) -> list[dict[str, str | None]]:
        """Mn, Md, Vr, SN of each common model, in chain order."""
        return [{p: text(m, p) for p in IDENTITY} for m in self.models if m.id == COMMON]


IDENTITY = ("Mn", "Md", "Vr", "SN")


def from_layout(base: int, layout: Any, identity: Any = None) -> Chain:
    """A chain as a scan result keeps it ([[id, address, length], ...] and the common models'
    identity), checked as `walk` checks a device's; SunSpecError when it does not hold together."""
    if not isinstance(layout, list) or not layout:
        raise SunSpecError("no model chain")
    chain = Chain(base)
    address = base + 2
    ids = list(identity) if isinstance(identity, list) else []
    for entry in layout:
        if not (isinstance(entry, list) and len(entry) == 3 and all(type(v) is int for v in entry)):
            raise SunSpecError(f"{entry!r} is not [model id, address, length]")
        model_id, at, length = entry
        if at != address or not 0 <= length <= 0xFFFF or at + 2 + length > 0x10000:
            raise SunSpecError(f"model {model_id} at {at} does not follow the model before it (expected {address})")
        m = ModelAt(model_id, at, length)
        if m.known:
            _check_length(m)
        if model_id == COMMON:
            who = ids.pop(0) if ids else {}
            body = [0] * length
            for p in model(COMMON).points:
                value = who.get(p.name) if isinstance(who, dict) else None
                if isinstance(value, str) and p.offset - 2 + p.size <= length:
                    body[p.offset - 2 : p.offset - 2 + p.size] = codec.bytes_to_registers(
                        value.encode("utf-8")[: 2 * p.size].ljust(2 * p.size, b"\0")
                    )
            m = ModelAt(model_id, at, length, tuple(body))
        chain.models.append(m)
        address = at + 2 + length
    return chain


def _read(read: Reader, address: int, count: int) -> list[int]:
    """Registers address.. in requests of at most MAX_READ; every answer must be exactly count long."""
    out: list[int] = []
    while count > 0:
        n = min(count, MAX_READ)
        regs = read(address, n)
        if len(regs) != n:
            raise ReadFailed(f"asked for {n} registers at {address}, got {len(regs)}")
        out += regs
        address, count = address + n, count - n
    return out


def find_base(read: Reader, bases: tuple[int, ...] = BASES) -> int | None:
    """The first base register holding "SunS", or None. ReadFailed (not refused) propagates: a unit
    that does not answer at all is not asked again."""
    for base in bases:
        try:
            if tuple(read(base, 2)) == MARKER:
                return base
        except ReadFailed as exc:
            if not exc.refused:
                raise
    return None


def _check_length(m: ModelAt) -> None:
    d = model(m.id)
    where = f"model {m.id} ({d.name}) at register {m.address}"
    if d.group_length:
        extra = m.length - d.length
        if extra < 0 or extra % d.group_length:
            raise SunSpecError(
                f"{where} has length {m.length}; its definition has {d.length} + {d.group_length} per "
                f"{'module' if m.id == MPPT else 'group'}"
            )
    elif m.id == COMMON and m.length in (d.length, d.length - 1):
        return  # 65 (without the pad register) is met on older devices
    elif m.length != d.length:
        raise SunSpecError(f"{where} has length {m.length}; its definition ({DEFINITIONS_VERSION}) has {d.length}")


def walk(read: Reader, base: int) -> Chain:
    """The model chain after the marker at `base` (the caller found it there). SunSpecError when the
    chain cannot be trusted; ReadFailed when the device stops answering."""
    chain = Chain(base)
    address = base + 2
    while True:
        if len(chain.models) >= MAX_MODELS:
            raise SunSpecError(
                f"more than {MAX_MODELS} models after register {base} without an end model "
                "(the device answers garbage, or the chain loops)"
            )
        if address + 2 > 0x10000:
            raise SunSpecError(f"the chain from {base} runs past register 65535 without an end model")
        try:
            model_id, length = _read(read, address, 2)
        except ReadFailed as exc:
            if exc.refused and chain.models:
                chain.notes.append(f"no end model: register {address} refused ({exc}); taken as the end")
                return chain
            raise
        if model_id == END_ID:
            if length not in (0, 0xFFFF):
                chain.notes.append(f"end model at {address} has length {length} (0 expected)")
            return chain
        if model_id == 0:
            raise SunSpecError(f"register {address}: model id 0 is not a SunSpec model (the chain is broken)")
        if not chain.models and model_id != COMMON:
            raise SunSpecError(f"register {address}: the first model is {model_id}; SunSpec starts with common (1)")
        if address + 2 + length > 0x10000:
            raise SunSpecError(
                f"model {model_id} at register {address} has length {length}, past register 65535 (the chain is broken)"
            )
        m = ModelAt(model_id, address, length)
        if m.known:
            _check_length(m)
            if model_id in (COMMON, MPPT):
                m = ModelAt(model_id, address, length, tuple(_read(read, address + 2, length)))
                if model_id == MPPT:
                    _check_mppt(m)
        chain.models.append(m)
        address += 2 + length


def _check_mppt(m: ModelAt) -> None:
    d = model(MPPT)
    count_point = d.point("N")
    modules = (m.length - d.length) // d.group_length
    if count_point is not None:
        n = m.body[count_point.offset - 2]
        if n not in (modules, 0xFFFF):
            raise SunSpecError(
                f"model 160 at register {m.address}: N says {n} modules, its length {m.length} holds {modules}"
            )


def text(m: ModelAt, point: str) -> str | None:
    """A string point of a model whose body was read (the common model)."""
    p = model(m.id).point(point)
    if p is None or not m.body or p.offset - 2 + p.size > len(m.body):
        return None
    return codec.decode_text(codec.registers_to_bytes(list(m.body[p.offset - 2 : p.offset - 2 + p.size]))) or None


def discover(read: Reader, bases: tuple[int, ...] = BASES) -> Chain | None:
    """find_base, then walk; None when no base holds the marker."""
    base = find_base(read, bases)
    return None if base is None else walk(read, base)


# ---------------------------------------------------------------------------------------------
# drivers


def _field(p: Point, register: int, sf_field: str | None) -> dict:
    datatype, sentinels = TYPES.get(p.type, (None, ()))
    out: dict[str, Any] = {"register": register}
    if p.type == "string":
        out["datatype"] = f"str{2 * p.size}"
        out["words"] = p.size
        out["valuemap"] = {"": None}
    else:
        out["datatype"] = datatype
        out["words"] = p.size
        out["valuemap"] = {k: None for k in sentinels}
    if sf_field is not None:
        out["scale_factor"] = sf_field
    if p.units == "Pct" and p.name.startswith("PF"):
        out["multiplier"] = 0.01  # power factor in percent -> per unit, as AMMP's pf fields
    elif p.units:
        out["unit"] = UNITS.get(p.units, p.units)
    if p.label:
        out["description"] = p.label
    return out


def _slug(value: str | None, fallback: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "_", (value or "").lower()).strip("_")
    return s[:32] or fallback


def published(driver: dict) -> list[str]:
    """The fields of a driver a config reads: not the scale factors, not the layout checks."""
    fields = driver.get("fields") or {}
    helpers = {f.get("scale_factor") for f in fields.values() if isinstance(f, dict)}
    helpers |= set(driver.get("expect") or {})
    return [k for k in fields if k not in helpers]


@dataclass
class Generated:
    """One logical device of a chain (a common model and the models after it) as a driver."""

    name: str
    driver: dict
    models: list[ModelAt]
    manufacturer: str | None = None
    model_name: str | None = None
    serial: str | None = None


def _model_fields(m: ModelAt, used: set[str], fields: dict[str, dict], role_prefix: str) -> None:
    d = model(m.id)
    names = NAMES.get(m.id, {})
    end = m.address + 2 + m.length  # a shorter (older) model: only points inside its length
    planned: list[tuple[str, Point, int]] = []
    for p in d.points:
        if p.name in names:
            planned.append((names[p.name], p, m.address + p.offset))
    if m.id == MPPT and d.group_length:
        for i in range((m.length - d.length) // d.group_length):
            start = m.address + 2 + d.length + i * d.group_length
            for p in d.group:
                if p.name in MPPT_MODULE_NAMES:
                    planned.append((f"{MPPT_MODULE_NAMES[p.name]}{i + 1}", p, start + p.offset))
    planned = [x for x in planned if x[2] + x[1].size <= end]
    # the same names twice in one logical device: a meter after an inverter is its grid meter
    # (grid_P_total ...); anything else gets _2, _3 ...
    prefix, suffix = "", ""
    if any(n in used for n, _, _ in planned):
        prefix = role_prefix
        n = 2
        while any(f"{prefix}{x}{suffix}" in used for x, _, _ in planned):
            suffix, n = f"_{n}", n + 1
    tag = f"{m.id}" + (f"_{m.address}" if any(k.startswith(f"sf_{m.id}_") for k in fields) else "")
    for name, p, register in planned:
        sf_name = None
        if p.sf:
            sfp = d.point(p.sf)
            if sfp is None or m.address + sfp.offset + 1 > end:
                continue  # a scale factor this (short) model does not have: the point cannot be scaled
            sf_name = f"sf_{tag}_{p.sf}"
            fields.setdefault(sf_name, _field(sfp, m.address + sfp.offset, None))
        key = f"{prefix}{name}{suffix}"
        fields[key] = _field(p, register, sf_name)
        used.add(key)


def drivers_for(chain: Chain) -> list[Generated]:
    """A driver per logical device of the chain (each common model starts one). Models this version
    does not know are left out (and named in the driver's description)."""
    out: list[Generated] = []
    groups: list[list[ModelAt]] = []
    for m in chain.models:
        if m.id == COMMON or not groups:
            groups.append([])
        groups[-1].append(m)
    for models in groups:
        fields: dict[str, dict] = {}
        used: set[str] = set()
        kinds: set[str] = set()
        for m in models:
            if not m.known:
                continue
            role = "grid_" if m.id in METERS and "inverter" in kinds else ""
            _model_fields(m, used, fields, role)
            kinds.add("inverter" if m.id in INVERTERS else "meter" if m.id in METERS else str(m.id))
        common = models[0] if models[0].id == COMMON else None
        mn = text(common, "Mn") if common else None
        md = text(common, "Md") if common else None
        sn = text(common, "SN") if common else None
        layout = [[m.id, m.address, m.length] for m in models]
        digest = f"{zlib.crc32(json.dumps([chain.base, layout]).encode()):08x}"[:6]
        name = f"sunspec_{_slug(mn, 'device')}_{_slug(md, 'model')}_{digest}"
        unknown = sorted({m.id for m in models if not m.known})
        description = (
            f"SunSpec {mn or '?'} {md or '?'}: models {', '.join(str(m.id) for m in models)}"
            + (f" (not read: {', '.join(map(str, unknown))})" if unknown else "")
            + f"; generated by ammp-edge from the SunSpec model definitions ({DEFINITIONS_VERSION})"
        )
        # the layout this driver was made for, checked at every read: the marker, and each model's
        # ID and length (one uint32 each); a device whose chain changed publishes nothing, never values
        # from the wrong registers
        expect: dict[str, int] = {}
        for address, value in [(chain.base, (MARKER[0] << 16) | MARKER[1])] + [
            (m.address, (m.id << 16) | m.length) for m in models
        ]:
            fields[f"chk_{address}"] = {
                "register": address,
                "datatype": "uint32",
                "description": "SunSpec layout check",
            }
            expect[f"chk_{address}"] = value
        kind = "hybrid_inverter" if {"inverter", str(STORAGE)} <= kinds else next(iter(sorted(kinds)), "device")
        driver = {
            "description": description,
            "device": {"manufacturer": mn or "SunSpec device", "models": [md or "?"], "kind": f"sunspec {kind}"},
            "source": [{"title": "SunSpec information models", "version": DEFINITIONS_VERSION}],
            "sunspec": {"base": chain.base, "models": layout},
            "expect": expect,
            "fields": fields,
        }
        out.append(Generated(name, driver, models, mn, md, sn))
    return out
