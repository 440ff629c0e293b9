"""The "Version CSV3|Hybrid Controller" file: local timestamps to UTC (DST by row order), the columns."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from ...core import codec
from ...core.drivers import CsvField
from .errors import HyconError

LINES_BEFORE_HEADER = 5
LINES_AFTER_HEADER = 2  # types, units
SEPARATOR = ";"
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
FORMAT_PREFIX = "Version CSV3|Hybrid Controller"


class LocalClock:
    """Local timestamps of one file, in order, to UTC: a time the DST change repeats is the first
    pass (summer time) until the rows go back in time, the second after (upstream dropped both)."""

    def __init__(self, tz: ZoneInfo):
        self.tz = tz
        self.prev: datetime | None = None
        self.second_pass = False

    def to_utc(self, naive: datetime) -> datetime:
        early = naive.replace(tzinfo=self.tz, fold=0)
        late = naive.replace(tzinfo=self.tz, fold=1)
        if early.utcoffset() == late.utcoffset():
            self.second_pass = False
            chosen = early
        else:
            roundtrip = early.astimezone(UTC).astimezone(self.tz).replace(tzinfo=None)
            if roundtrip != naive:
                raise ValueError(f"{naive} does not exist in {self.tz.key} (skipped by the DST change)")
            if self.prev is not None and naive < self.prev:
                self.second_pass = True
            chosen = late if self.second_pass else early
        self.prev = naive
        return chosen.astimezone(UTC)


@dataclass
class DayRows:
    rows: list[dict] = field(default_factory=list)  # {"t": int, field: value, ...} in file order
    errors: list[str] = field(default_factory=list)  # one per bad row or missing column (capped)
    bad_rows: int = 0
    skipped_cells: int = 0


MAX_ERRORS = 50


def parse_csv(data: bytes, fields: dict[str, CsvField], tz: ZoneInfo, offset: float) -> DayRows:
    """Rows of a CSV3 file: t (UTC seconds, HyCon clock offset subtracted) and each field's value.
    HyconError when the file is not that format at all."""
    out = DayRows()

    def bad(lineno: int, why: str) -> None:
        out.bad_rows += 1
        if len(out.errors) < MAX_ERRORS:
            out.errors.append(f"line {lineno + 1}: {why}")

    lines = data.splitlines()
    if not lines or not lines[0].startswith(FORMAT_PREFIX.encode()):
        raise HyconError(f"not a HyCon CSV3 file (it starts {lines[0][:40]!r})" if lines else "an empty file")
    if len(lines) <= LINES_BEFORE_HEADER:
        raise HyconError(f"{len(lines)} lines: no header line (line {LINES_BEFORE_HEADER + 1})")
    try:
        header = lines[LINES_BEFORE_HEADER].decode("utf-8").split(SEPARATOR)
    except UnicodeDecodeError:
        raise HyconError(f"the header line {LINES_BEFORE_HEADER + 1} is not UTF-8") from None
    columns: dict[str, int] = {}
    for var, f in fields.items():
        if f.column in header:
            columns[var] = header.index(f.column)
        else:
            out.errors.append(f"no column {f.column!r} ({var}) in the header")
    clock = LocalClock(tz)
    last_t: int | None = None
    for lineno in range(LINES_BEFORE_HEADER + 1 + LINES_AFTER_HEADER, len(lines)):
        raw = lines[lineno]
        if not raw.strip():
            continue
        try:
            cells = raw.decode("utf-8").split(SEPARATOR)
        except UnicodeDecodeError as exc:
            bad(lineno, f"not UTF-8 (byte 0x{raw[exc.start]:02x} at {exc.start})")
            continue
        if len(cells) != len(header):
            bad(lineno, f"{len(cells)} cells, the header has {len(header)}")
            continue
        try:
            local = datetime.strptime(cells[0], TIMESTAMP_FORMAT)
            utc = clock.to_utc(local)
        except ValueError as exc:
            bad(lineno, f"timestamp {cells[0][:30]!r}: {exc}")
            continue
        t = math.floor(utc.timestamp() - offset)
        if last_t is not None and t <= last_t:
            bad(lineno, f"timestamp {cells[0]} is not after the row before it")
            continue
        last_t = t
        row: dict[str, Any] = {"t": t}
        for var, i in columns.items():
            try:
                value = codec.decode_text_value(cells[i], fields[var].spec)
            except codec.DecodeError:
                out.skipped_cells += 1  # as upstream: a cell that is not a number is left out
                continue
            if value is not None:
                row[var] = value
        out.rows.append(row)
    return out
