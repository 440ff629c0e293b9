"""An SMA HyCon for tests: its CSV3 day files (made here, in the upstream mock's format), served by a
real FTP server (pyftpdlib, plain FTP or implicit FTPS) on loopback, and an SNTP server with a chosen
clock offset.

    files = {"LogDataFast_2023-03-09.zip": zip_of(day_csv(date(2023, 3, 9), "Europe/Amsterdam"))}
    with HyconFtp(tmp_path, files) as ftp:          # ftp.url: ftp://testuser:TestPWD123!@127.0.0.1:PORT/fsc/log/DataFast/
        ...
    with SntpServer(offset=7.25) as ntp: ntp.port
"""

from __future__ import annotations

import io
import socket
import struct
import threading
import time
import zipfile
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler
from pyftpdlib.servers import FTPServer

USER, PASSWORD = "testuser", "TestPWD123!"
DIR = "fsc/log/DataFast"
COLUMNS = (
    "OpStt;HybridSysState;HybridSysStateTrans;LoadPwrAtTot;LoadPwrRtTot;PvBatMin;PvBatMax;GenPwrAtTot;GenPwrRtTot;"
    "GenPwrAtNomTot;GcbSttCode;GenPwrAtResSpnt;PvPwrAtTot;PvPwrRtTot;PvPwrAtMpp;PvPwrAtLim;PvPwrRtSpnt;GridPwrAtTot;"
    "GridPwrRtTot;PoiPwrAt;PoiPwrRt;PoiFrq;PoiVtg"
).split(";")
HEAD = (
    "Version CSV3|Hybrid Controller|Linebreaks CR/LF|Delimiter semicolon|Decimalpoint dot|Language en|FW 2.16.16.R|\r\n"
    "\r\n"
    + ";"
    + ";".join(["Hybrid Controller"] * len(COLUMNS))
    + "\r\n"
    + ";"
    + ";".join(["HYBRID-CONTROLLER"] * len(COLUMNS))
    + "\r\n"
    + ";"
    + ";".join(["1234567890"] * len(COLUMNS))
    + "\r\n"
    + ";"
    + ";".join(COLUMNS)
    + "\r\n"
    + ";"
    + ";".join(["Analog"] * len(COLUMNS))
    + "\r\n"
    + "YYYY-MM-DD hh:mm:ss;"
    + ";".join(["kW"] * len(COLUMNS))
    + "\r\n"
)


def row_values(i: int) -> dict[str, str]:
    """The cells of row i (kW, two decimals as the HyCon writes them)."""
    return {
        "LoadPwrAtTot": f"{1000 + i % 500 + 0.97:.2f}",
        "GenPwrAtTot": f"{1000 + i % 500 + 0.4:.2f}",
        "PvPwrAtTot": f"{(i % 300) / 100:.2f}",
        "GridPwrAtTot": "0.00" if i % 2 else "-1.25",
    }


def row_line(local: datetime, i: int, override: dict[str, str] | None = None) -> str:
    cells = {c: "0" for c in COLUMNS}
    cells.update({"OpStt": "5: Operate", "GcbSttCode": "0000 0000 0000 0001"})
    cells.update(row_values(i))
    cells.update(override or {})
    return local.strftime("%Y-%m-%d %H:%M:%S") + ";" + ";".join(cells[c] for c in COLUMNS) + "\r\n"


def local_times(day: date, tz: str, step: int = 10, first_second: int = 4):
    """Every `step` seconds of the local day, as the HyCon's clock writes them (a DST change: the
    skipped hour absent, the repeated hour twice)."""
    z = ZoneInfo(tz)
    start = datetime(day.year, day.month, day.day, tzinfo=z).astimezone(ZoneInfo("UTC"))
    end = datetime(day.year, day.month, day.day, tzinfo=z) + timedelta(days=1)
    end_utc = end.astimezone(ZoneInfo("UTC"))
    t = start + timedelta(seconds=first_second)
    while t < end_utc:
        yield t.astimezone(z).replace(tzinfo=None), t
        t += timedelta(seconds=step)


def day_csv(day: date, tz: str, step: int = 10, rows: int | None = None, extra: str = "") -> bytes:
    lines = [HEAD]
    for i, (local, _) in enumerate(local_times(day, tz, step)):
        if rows is not None and i >= rows:
            break
        lines.append(row_line(local, i))
    return ("".join(lines) + extra).encode()


def zip_of(data: bytes, name: str = "LogDataFast.csv") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("readme.txt", "not the data")
        z.writestr(name, data)
    return buf.getvalue()


class _ImplicitTLSHandler(TLS_FTPHandler):
    """FTPS with TLS from the first byte (the HyCon's implicit FTPS)."""

    def handle(self):
        self.secure_connection(self.ssl_context)

    def handle_ssl_established(self):
        FTPHandler.handle(self)  # the 220 banner, now inside TLS


class HyconFtp:
    def __init__(self, tmp_path: Path, files: dict[str, bytes], tls_cert: tuple[Path, Path] | None = None):
        self.root = Path(tmp_path) / "hycon-ftp"
        (self.root / DIR).mkdir(parents=True, exist_ok=True)
        self.set_files(files)
        auth = DummyAuthorizer()
        auth.add_user(USER, PASSWORD, str(self.root), perm="elr")
        if tls_cert:
            handler = type("H", (_ImplicitTLSHandler,), {})
            handler.certfile, handler.keyfile = str(tls_cert[0]), str(tls_cert[1])
            handler.ssl_context = None
            handler.tls_control_required = True
            handler.tls_data_required = True
        else:
            handler = type("H", (FTPHandler,), {})
        handler.authorizer = auth
        handler.banner = "HyCon test FTP"
        self.server = FTPServer(("127.0.0.1", 0), handler)
        self.port = self.server.address[1]
        self.scheme = "ftps" if tls_cert else "ftp"
        self.thread: threading.Thread | None = None

    def set_files(self, files: dict[str, bytes]) -> None:
        for old in (self.root / DIR).iterdir():
            old.unlink()
        for name, data in files.items():
            (self.root / DIR / name).write_bytes(data)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{USER}:{PASSWORD.replace('!', '%21')}@127.0.0.1:{self.port}/{DIR}/"

    def start(self) -> HyconFtp:
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"timeout": 0.2}, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.close_all()
        if self.thread:
            self.thread.join(5)

    def __enter__(self) -> HyconFtp:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class SntpServer:
    """Answers SNTP requests on loopback as a server whose clock is `offset` seconds ahead."""

    def __init__(self, offset: float = 0.0, answer: bytes | None = None):
        self.offset, self.answer = offset, answer
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.queries = 0
        self._stop = threading.Event()

    def _serve(self):
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(512)
            except OSError:
                continue
            self.queries += 1
            if self.answer is not None:
                self.sock.sendto(self.answer, peer)
                continue
            now = time.time() + self.offset
            stamp = struct.pack(">II", int(now) + 2208988800, int((now % 1) * 2**32))
            reply = b"\x24\x02\x00\xe9" + b"\x00" * 20 + data[40:48] + stamp + stamp
            self.sock.sendto(reply, peer)

    def __enter__(self) -> SntpServer:
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.sock.close()
