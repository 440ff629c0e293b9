"""JSONata outputs: derived fields computed across all devices of a cycle (reference section 3.7).

Input document: {device_key: [{"var": field, "value": value}, ...]}. An output with `device` set to a
device present in the cycle is added to that device's record; without `device` (or "asset") it goes to
the synthetic `_calc` device with `_vid` = calc_vendor_id. A null/undefined result is skipped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import jsonata
from jsonata.jexception import JException

from ..core import codec
from ..core.problems import Problem, join_path

log = logging.getLogger(__name__)
EVAL_ERRORS = (
    JException,
    TypeError,
    ValueError,
    ZeroDivisionError,
    RecursionError,
    KeyError,
    AttributeError,
    IndexError,
)


@dataclass(frozen=True)
class Output:
    field: str
    expr: Any
    source: str
    typecast: str | None
    device: str | None


def compile_outputs(raw_outputs: list) -> tuple[list[Output], list[Problem]]:
    outputs: list[Output] = []
    problems: list[Problem] = []
    for i, out in enumerate(raw_outputs or []):
        path = join_path("output", i)
        if not isinstance(out, dict):
            problems.append(Problem(path, "an output must be an object {field, source, typecast}"))
            continue
        name, source, typecast, device = out.get("field"), out.get("source"), out.get("typecast"), out.get("device")
        if not isinstance(name, str) or not name:
            problems.append(Problem(join_path(path, "field"), "missing"))
            continue
        if not isinstance(source, str) or not source.strip():
            problems.append(Problem(join_path(path, "source"), "missing JSONata expression"))
            continue
        if typecast is not None and typecast not in codec.TYPECASTS:
            problems.append(
                Problem(join_path(path, "typecast"), f"{typecast!r} is not one of {', '.join(codec.TYPECASTS)}")
            )
            continue
        if device is not None and not isinstance(device, str):
            problems.append(Problem(join_path(path, "device"), 'must be a device key or "asset"'))
            continue
        try:
            expr = jsonata.Jsonata(source)
        except EVAL_ERRORS as exc:
            problems.append(Problem(join_path(path, "source"), f"not a valid JSONata expression: {exc}"))
            continue
        outputs.append(Output(name, expr, source, typecast, device))
    return outputs, problems


def apply_outputs(outputs: list[Output], records: list[dict], calc_vendor_id: str) -> list[str]:
    """Evaluate outputs over the cycle's device records (modified in place). Returns warnings."""
    if not outputs:
        return []
    doc = {r["_d"]: [{"var": k, "value": v} for k, v in r.items() if not k.startswith("_")] for r in records}
    by_device = {r["_d"]: r for r in records}
    warnings = []
    calc: dict | None = None
    for out in outputs:
        try:
            value = out.expr.evaluate(doc)
        except EVAL_ERRORS as exc:
            warnings.append(f"output {out.field}: evaluation failed: {exc}")
            continue
        if value is None or isinstance(value, (dict, list)) and not value:
            continue
        try:
            value = codec.scale(value, codec.ValueSpec(typecast=out.typecast))
        except codec.DecodeError as exc:
            warnings.append(f"output {out.field}: {exc}")
            continue
        if out.device and out.device != "asset":
            target = by_device.get(out.device)
            if target is None:
                warnings.append(f"output {out.field}: device {out.device!r} was not read this cycle")
                continue
            target[out.field] = value
        else:
            if calc is None:
                calc = {"_d": "_calc", "_vid": calc_vendor_id}
                records.append(calc)
            calc[out.field] = value
    return warnings
