"""The `sma_hycon_csv` reader: one day of an SMA Hybrid Controller's CSV log, from its FTP server.

As upstream (reference 8.7): FTP, or implicit FTPS with certificate checks off (the HyCon has a
self-signed certificate), login from the URL's user info, passive mode with the server's own
address ignored (ftplib's default: the NAT workaround), the `.zip` and `.csv` files of the URL's
directory; a ZIP's first `*.csv` entry; the "Version CSV3|Hybrid Controller" format (`;`, the column
keys on line 5, types and units after them, then one row per timestamp in the HyCon's local time);
values x 1000 (kW -> W); the HyCon's clock offset from an SNTP query to it, subtracted from each
timestamp (0 when it does not answer).

Fixed here: the day is chosen by the date in the file names (the newest whose day is over in the
HyCon's time zone), not as "the second-to-last name" (which with fewer than two files panicked, and
picked the wrong day when today's file was not there yet); a time in the hour that a DST change
repeats is read by the order of the rows (upstream dropped every such row); bad bytes anywhere (not
UTF-8, a short row, a broken ZIP, an oversized entry) are an error for that row or that file, never a
value.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from ...core.config import Device
from .csv3 import DayRows, LocalClock, parse_csv
from .errors import HyconError
from .ftp import MAX_FILE_BYTES, FtpTarget, csv_bytes, download, file_day, parse_base_url, select_file
from .sntp import clock_offset, sntp_offset

__all__ = [
    "DATA_PROVIDER",
    "MAX_FILE_BYTES",
    "DayFile",
    "DayRows",
    "FtpTarget",
    "HyconError",
    "LocalClock",
    "clock_offset",
    "csv_bytes",
    "file_day",
    "parse_base_url",
    "parse_csv",
    "read_day",
    "select_file",
    "sntp_offset",
]

DATA_PROVIDER = "sma-hycon-csv"


@dataclass
class DayFile:
    name: str
    day: date
    offset: float
    parsed: DayRows


def read_day(device: Device, known: tuple[date, float] | None = None, now: float | None = None) -> DayFile:
    """Fetch and parse the newest complete day of a HyCon device (one attempt). `known`: a day and the
    clock offset measured for it before (a resumed backfill keeps its timestamps)."""
    a = device.address
    target = parse_base_url(a["base_url"])
    tz = ZoneInfo(a["timezone"])
    today = datetime.fromtimestamp(time.time() if now is None else now, tz).date()
    name, data = download(target, today, device.timeout)
    text = csv_bytes(name, data)
    day = file_day(name) or (today - timedelta(days=1))
    if known is not None and known[0] == day:
        offset = known[1]
    else:
        offset = clock_offset(target.host, int(a.get("ntp_port", 123)), timeout=min(5.0, device.timeout))
    parsed = parse_csv(text, device.fields, tz, offset)
    return DayFile(name, day, offset, parsed)
