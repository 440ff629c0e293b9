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

import io
import logging
import math
import re
import socket
import ssl
import struct
import time
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from ftplib import FTP, FTP_TLS, Error as FtpError
from typing import Any
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo

from ..core import codec
from ..core.config import Device
from ..core.drivers import CsvField

log = logging.getLogger(__name__)

DATA_PROVIDER = "sma-hycon-csv"
LINES_BEFORE_HEADER = 5
LINES_AFTER_HEADER = 2  # types, units
SEPARATOR = ";"
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
FORMAT_PREFIX = "Version CSV3|Hybrid Controller"
MAX_FILE_BYTES = 64 * 1024 * 1024  # a day at 10 s is about 2 MB of CSV
DATE_IN_NAME = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
NTP_EPOCH = 2208988800  # 1900-01-01 to 1970-01-01


class HyconError(Exception):
    """The file could not be fetched or is not a HyCon CSV3 day (a reason a person can act on)."""


@dataclass(frozen=True)
class FtpTarget:
    host: str
    port: int
    user: str
    password: str
    secure: bool
    path: str

    def __str__(self) -> str:  # never the password
        user = f"{self.user}@" if self.user else ""
        return f"{'ftps' if self.secure else 'ftp'}://{user}{self.host}:{self.port}/{self.path}"


def parse_base_url(url: str) -> FtpTarget:
    parts = urlsplit(url)
    if parts.scheme not in ("ftp", "ftps") or not parts.hostname:
        raise HyconError("base_url must be ftp://host/path/ or ftps://host/path/")
    return FtpTarget(
        parts.hostname,
        parts.port or 21,
        unquote(parts.username or ""),
        unquote(parts.password or ""),
        parts.scheme == "ftps",
        parts.path.lstrip("/"),
    )


class _ImplicitFTPS(FTP_TLS):
    """FTPS with TLS from the first byte (port 990 style), as the HyCon speaks it."""

    def connect(self, host: str = "", port: int = 0, timeout: float = -999, source_address: Any = None) -> str:
        self.host, self.port = host, port
        if timeout != -999:
            self.timeout = timeout
        sock = socket.create_connection((host, port), self.timeout)
        self.af = sock.family
        self.sock = self.context.wrap_socket(sock, server_hostname=host)
        self.file = self.sock.makefile("r", encoding=self.encoding)
        self.welcome = self.getresp()
        return self.welcome


def _insecure_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False  # as upstream: the HyCon's certificate is its own
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def open_ftp(target: FtpTarget, timeout: float) -> FTP:
    ftp: FTP
    if target.secure:
        ftp = _ImplicitFTPS(context=_insecure_context(), timeout=timeout)
    else:
        ftp = FTP(timeout=timeout)
    ftp.connect(target.host, target.port)
    ftp.login(target.user, target.password)
    if isinstance(ftp, FTP_TLS):
        ftp.prot_p()
    ftp.set_pasv(True)
    if target.path:
        ftp.cwd(target.path)
    return ftp


def file_day(name: str) -> date | None:
    m = DATE_IN_NAME.search(name)
    if not m:
        return None
    try:
        return date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return None


def select_file(names: list[str], today: date) -> str:
    """The newest complete day: the data file with the latest date before `today` (the HyCon's local
    date); names without a date: upstream's second-to-last name."""
    files = sorted(n for n in names if n.lower().endswith((".zip", ".csv")))
    if not files:
        raise HyconError("no .zip or .csv files in the directory")
    dated = [(d, n) for n in files if (d := file_day(n)) is not None]
    if dated:
        done = [(d, n) for d, n in dated if d < today]
        if not done:
            raise HyconError(f"no file of a day before {today} (newest: {max(dated)[1]})")
        return max(done)[1]
    if len(files) < 2:
        raise HyconError(f"only {files[0]!r}: no complete day yet (today's file is being written)")
    return files[-2]


def download(target: FtpTarget, today: date, timeout: float) -> tuple[str, bytes]:
    try:
        ftp = open_ftp(target, timeout)
        try:
            names = ftp.nlst()
            name = select_file([n.rsplit("/", 1)[-1] for n in names], today)
            buf = bytearray()

            def take(chunk: bytes) -> None:
                buf.extend(chunk)
                if len(buf) > MAX_FILE_BYTES:
                    raise HyconError(f"{name} is larger than {MAX_FILE_BYTES} bytes")

            ftp.retrbinary(f"RETR {name}", take)
        finally:
            try:
                ftp.quit()
            except (OSError, FtpError, EOFError):
                ftp.close()
    except (OSError, FtpError, EOFError) as exc:
        raise HyconError(f"{target}: {type(exc).__name__}: {exc}") from None
    return name, bytes(buf)


def csv_bytes(name: str, data: bytes) -> bytes:
    """The CSV itself: the file, or a ZIP's first *.csv entry."""
    if not name.lower().endswith(".zip"):
        return data
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            for info in z.infolist():
                if not info.is_dir() and info.filename.lower().endswith(".csv"):
                    if info.file_size > MAX_FILE_BYTES:
                        raise HyconError(f"{name}: {info.filename} unpacks to {info.file_size} bytes")
                    with z.open(info) as f:
                        out = f.read(MAX_FILE_BYTES + 1)
                    if len(out) > MAX_FILE_BYTES:
                        raise HyconError(f"{name}: {info.filename} unpacks to more than {MAX_FILE_BYTES} bytes")
                    return out
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, NotImplementedError) as exc:
        raise HyconError(f"{name} is not a readable ZIP: {exc}") from None
    raise HyconError(f"{name} holds no .csv file")


# ---------------------------------------------------------------------------------------------
# time


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


def sntp_offset(host: str, port: int = 123, timeout: float = 5.0) -> float:
    """Seconds the clock at host:port is ahead of ours (one SNTP query, RFC 4330); ValueError or
    OSError when the answer is missing or not a valid server answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.connect((host, port))
        t1 = time.time()
        stamp = struct.pack(">II", int(t1) + NTP_EPOCH, int((t1 % 1) * 2**32))
        s.send(b"\x23" + b"\x00" * 39 + stamp)  # LI 0, version 4, mode 3 (client)
        data = s.recv(512)
        t4 = time.time()
    if len(data) < 48:
        raise ValueError(f"an SNTP answer of {len(data)} bytes (48 expected)")
    mode, stratum = data[0] & 7, data[1]
    if mode != 4 or stratum == 0 or stratum > 15:
        raise ValueError(f"not a server answer (mode {mode}, stratum {stratum})")
    if data[24:32] != stamp:
        raise ValueError("the SNTP answer is not for our request")

    def ts(off: int) -> float:
        sec, frac = struct.unpack(">II", data[off : off + 8])
        return sec - NTP_EPOCH + frac / 2**32

    t2, t3 = ts(32), ts(40)
    if t3 <= 0:
        raise ValueError("an SNTP answer without a transmit time")
    return ((t2 - t1) + (t3 - t4)) / 2


def clock_offset(host: str, port: int, retry_for: float = 15.0, timeout: float = 5.0) -> float:
    """The HyCon's clock offset, retried for `retry_for` seconds; 0 when it cannot be had (as upstream)."""
    if not port:
        return 0.0
    deadline = time.monotonic() + retry_for
    while True:
        try:
            return sntp_offset(host, port, min(timeout, max(0.1, deadline - time.monotonic())))
        except (OSError, ValueError) as exc:
            if time.monotonic() >= deadline:
                log.warning("[hycon %s] no clock offset from SNTP (%s); assuming 0", host, exc)
                return 0.0
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


# ---------------------------------------------------------------------------------------------
# the CSV


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
