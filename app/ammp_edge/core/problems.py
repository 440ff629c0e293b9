"""Problems found in outside input (config, driver), each naming the JSON path and what was wrong."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    path: str  # JSON path, e.g. "devices.inv1.address.baudrate"
    message: str
    severity: str = "error"  # "error" (the item is skipped) or "warning" (used, with a note)

    def __str__(self) -> str:
        prefix = "" if self.severity == "error" else f"{self.severity}: "
        return f"{self.path}: {prefix}{self.message}"


class InvalidInput(ValueError):
    """An item of outside input that cannot be used; carries the JSON path."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")
        self.problem = Problem(path, message)


class ConfigUnusable(ValueError):
    """A config that cannot be used at all (the previous one keeps running)."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


def join_path(*parts: object) -> str:
    """Join JSON path parts: the first is a path already; later keys with dots or spaces are quoted;
    ints become [i]."""
    out = ""
    for i, part in enumerate(parts):
        if i == 0 and isinstance(part, str):
            out = part
            continue
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = str(part)
        if not text or any(c in text for c in ".[] \"'"):
            text = '"' + text.replace('"', '\\"') + '"'
        out = f"{out}.{text}" if out else text
    return out


def nonfinite(value: object, path: str = "") -> list[tuple[str, float]]:
    """(JSON path, number) of every NaN or infinity inside a parsed JSON value, in document order.
    Python's json module accepts NaN, Infinity and numbers too large for a float (1e999 -> inf);
    JSON has none of them. Iterative: a deeply nested document cannot exhaust the stack."""
    found: list[tuple[str, float]] = []
    stack: list[tuple[str, object]] = [(path, value)]
    while stack:
        where, v = stack.pop()
        if isinstance(v, float):
            if v != v or v in (float("inf"), float("-inf")):
                found.append((where, v))
        elif isinstance(v, dict):
            stack.extend((join_path(where, k), v[k]) for k in reversed(list(v)))
        elif isinstance(v, list):
            stack.extend((f"{where}[{i}]", v[i]) for i in reversed(range(len(v))))
    return found


def nonfinite_problem(path: str, number: float) -> Problem:
    return Problem(path, f"{number!r} is not a finite number (NaN and Infinity are not JSON numbers)")


def refuse_nonfinite(value: object, path: str) -> None:
    """InvalidInput for the first NaN or infinity inside value (an item with one is not used)."""
    found = nonfinite(value, path)
    if found:
        raise InvalidInput(found[0][0], nonfinite_problem(*found[0]).message)
