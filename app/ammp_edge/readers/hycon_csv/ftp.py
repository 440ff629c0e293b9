"""The HyCon's FTP or implicit FTPS server: its URL, the day's file chosen by name, a ZIP opened."""

from __future__ import annotations

import io
import re
import socket
import ssl
import zipfile
from dataclasses import dataclass
from datetime import date
from ftplib import FTP, FTP_TLS, Error as FtpError
from typing import Any
from urllib.parse import unquote, urlsplit

from .errors import HyconError

MAX_FILE_BYTES = 64 * 1024 * 1024  # a day at 10 s is about 2 MB of CSV
DATE_IN_NAME = re.compile(r"(\d{4})-(\d{2})-(\d{2})")


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
