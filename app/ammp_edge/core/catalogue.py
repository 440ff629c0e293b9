"""The driver catalogue: what each driver reads, for `ammp-edge drivers` and the web UI's search.

An entry says: the driver's name, the device it is for (its `device` object, else the first sentence
of its `description`), where its register facts come from (its `source` titles; a driver without
one is an upstream AMMP driver), how many fields it has, and the reading types its fields need
(modbustcp/modbusrtu for register fields, sys, snmp ...).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from . import drivers as drv
from .problems import InvalidInput

UPSTREAM_SOURCE = "upstream AMMP edge driver"
KIND_READING_TYPES = {
    "modbus": "modbustcp/modbusrtu",
    "sys": "sys",
    "snmp": "snmp",
    "rawserial": "rawserial",
    "rawtcp": "rawtcp",
    "sma_speedwire": "sma_speedwire",
    "mqtt": "mqtt",
}


@dataclass
class Entry:
    name: str
    device: str
    source: str
    fields: int
    reading_types: list[str]
    field_names: list[str] = field(default_factory=list)
    vectors: int = 0
    origin: str = "built-in"  # or "config" (a driver of the site config)

    def as_dict(self) -> dict:
        return asdict(self)


def _first_sentence(text: str) -> str:
    m = re.match(r"(.+?[.:;])(\s|$)", text.strip(), re.S)
    out = (m.group(1) if m else text.strip()).rstrip(".:;")
    return out if len(out) <= 160 else out[:157] + "..."


def device_of(name: str, driver: dict) -> str:
    dev = driver.get("device")
    if isinstance(dev, dict):
        maker = dev.get("manufacturer") or ""
        models = dev.get("models") or []
        models = [str(m) for m in models] if isinstance(models, list) else [str(models)]
        text = f"{maker} {', '.join(models)}".strip()
        if text:
            return text if len(text) <= 160 else text[:157] + "..."
    if isinstance(dev, str) and dev.strip():
        return dev.strip()
    if isinstance(driver.get("description"), str) and driver["description"].strip():
        return _first_sentence(driver["description"])
    return name.replace("_", " ")


def source_of(driver: dict, origin: str = "built-in") -> str:
    sources = driver.get("source")
    if isinstance(sources, list) and sources:
        titles = [str(s.get("title")) for s in sources if isinstance(s, dict) and s.get("title")]
        version = next((str(s["version"]) for s in sources if isinstance(s, dict) and s.get("version")), None)
        text = "; ".join(titles) or "given"
        return f"{text} ({version})" if version and version not in text else text
    return UPSTREAM_SOURCE if origin == "built-in" else "not given (a driver of the site config)"


def entry(name: str, driver: Any, origin: str = "built-in") -> Entry:
    if not isinstance(driver, dict):
        return Entry(name, "(not a driver object)", "", 0, [], origin=origin)
    fields: dict = driver["fields"] if isinstance(driver.get("fields"), dict) else {}
    kinds = sorted({KIND_READING_TYPES.get(drv.field_kind(drv.merge_field(driver, f)), "?") for f in fields})
    vectors = driver.get("test_vectors")
    return Entry(
        name,
        device_of(name, driver),
        source_of(driver, origin),
        len(fields),
        kinds,
        list(fields),
        len(vectors) if isinstance(vectors, list) else 0,
        origin,
    )


def catalogue(builtin: dict[str, Any], config_drivers: dict[str, Any] | None = None) -> list[Entry]:
    """Every driver by name; a config's driver of the same name wins, as when a config is loaded."""
    out = {name: entry(name, d) for name, d in builtin.items()}
    for name, d in (config_drivers or {}).items():
        out[name] = entry(name, d, "config")
    return [out[k] for k in sorted(out)]


def search(entries: list[Entry], query: str) -> list[Entry]:
    """Entries holding every word of `query` (case-insensitive) in their name, device, source,
    reading types or field names; the best first (names starting with a word, names holding it,
    then device hits)."""
    words = [w for w in re.split(r"\s+", query.lower().strip()) if w]
    if not words:
        return list(entries)
    scored = []
    for e in entries:
        hay = " ".join([e.name, e.device, e.source, " ".join(e.reading_types), " ".join(e.field_names)]).lower()
        if all(w in hay for w in words):
            name = e.name.lower()
            score = sum(
                4 if name.startswith(w) else 3 if w in name else 2 if w in e.device.lower() else 1 for w in words
            )
            scored.append((-score, e.name, e))
    return [e for _, _, e in sorted(scored, key=lambda x: (x[0], x[1]))]


def field_rows(driver: dict) -> list[dict]:
    """One row per field: what it reads, as compiled (register, fncode, datatype, scaling), or the
    problem that keeps it from being read."""
    rows = []
    for name in (driver.get("fields") or {}) if isinstance(driver.get("fields"), dict) else {}:
        opts = drv.merge_field(driver, name)
        row: dict[str, Any] = {"field": name, "unit": opts.get("unit"), "description": opts.get("description")}
        try:
            f = drv.compile_field(driver, name, name, [])
        except InvalidInput as exc:
            row["problem"] = exc.problem.message
            rows.append(row)
            continue
        if isinstance(f, drv.ModbusField):
            row.update(
                register=f.register,
                fncode=f.fncode,
                words=f.words,
                datatype=f.spec.datatype or f"(uint, {f.words} word(s))",
                multiplier=f.spec.multiplier,
                scale_factor=f.scale_factor.name if f.scale_factor else None,
            )
        elif isinstance(f, drv.SysField):
            row.update(call=f"{f.module}.{f.method}", keypath=list(f.keypath))
        elif hasattr(f, "oid"):  # snmp (core.netfields)
            row.update(oid=".".join(map(str, f.oid)))
        elif hasattr(f, "channel"):  # sma_speedwire (core.netfields)
            row.update(obis_channel=f.channel, obis_type=f.obis_type)
        else:
            row.update(kind=getattr(f, "kind", type(f).__name__))
        rows.append(row)
    return rows
