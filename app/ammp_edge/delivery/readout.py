"""The upstream readout message and its human-readable table.

{"t": cycle start, "r": [{"_d": device, "_vid": vendor id, field: value, ..., "_s": [...]}, ...],
 "m": {"reading_duration": s, "version": ..., "config_id": ...}}; compact JSON, NaN as null.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .. import __version__
from ..core.config import Config
from .outputs import Output, apply_outputs


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def dumps(message: dict) -> str:
    """Compact JSON with NaN and infinity as null (upstream Py emitted invalid 'NaN')."""
    return json.dumps(_clean(message), separators=(",", ":"), allow_nan=False)


def build_message(
    t: int, bus_readouts: list[dict], outputs: list[Output], calc_vendor_id: str, config_id: str | None = None
) -> tuple[dict, list[str]]:
    """One u/data message from the bus readouts of cycle t, with JSONata outputs applied."""
    records = [dict(r) for br in bus_readouts for r in br["devices"]]
    warnings = apply_outputs(outputs, records, calc_vendor_id)
    meta: dict[str, Any] = {
        "reading_duration": round(max((br.get("duration", 0) for br in bus_readouts), default=0), 3),
        "version": __version__,
    }
    if config_id:
        meta["config_id"] = config_id
    return {"t": t, "r": records, "m": meta}, warnings


def _fmt(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)


def table(message: dict, config: Config | None = None) -> str:
    """device | field | value | unit, one row per value; status items and failures included."""
    rows = [("device", "field", "value", "unit")]
    for rec in message["r"]:
        dev = config.devices.get(rec["_d"]) if config else None
        values = {k: v for k, v in rec.items() if not k.startswith("_")}
        if not values and "_s" not in rec:
            rows.append((rec["_d"], "-", "(no values)", ""))
        for k, v in values.items():
            f = dev.fields.get(k) if dev else None
            rows.append((rec["_d"], k, _fmt(v), (getattr(f, "unit", None) or "") if f else ""))
        for s in rec.get("_s", []):
            rows.append((rec["_d"], f"status: {s['c']}", f"level {s['l']}", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
