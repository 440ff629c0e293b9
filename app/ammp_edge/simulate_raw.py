"""A simulated byte-stream device (rawserial, rawtcp) served from a driver, values encoded by our codec.

`ammp-edge simulate --driver eastron_sdm_lora --port 5020 --unit 7` answers rawtcp requests on TCP;
`ammp-edge simulate --driver pylontech_rs485 --serial /dev/pts/5` answers rawserial queries on a
serial port (one end of a socat pty pair). A driver says where each value lies in an answer but not
what the rest of the answer is, so the simulator makes it up:

rawtcp     the answer to a request is the request's first pos - 1 bytes, the value, and the CRC when
           the schema checks one (for eastron_sdm_lora: unit id, 01, function code, and where a real
           meter sends the byte count, the register's high byte).
rawserial  the answer to a query is '0' characters with each of its fields' values at their pos, and
           the field's resp_termination; a driver whose resp_template such an answer does not match
           (steca_solarix_pli) cannot be simulated, and says so.

Values come from `values` ({field: value}) or are plain constants by unit (230 V, 10 A, 1000 W, 50 Hz,
25 C, 50 %, 1 otherwise; a raw 1000, scaled, where the field cannot carry that). Text values are
written to fit their length (zero-padded numbers).
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from typing import Any

from .core import codec, drivers
from .core.problems import InvalidInput
from .core.rawfields import CRC16, DeviceArg, RawSerialField, RawTcpField
from .readers.frames import crc16

log = logging.getLogger(__name__)

PLAIN = {"V": 230.0, "A": 10.0, "W": 1000.0, "VA": 1000.0, "VAr": 100.0, "Hz": 50.0, "C": 25.0, "%": 50.0}


def raw_kind(driver: dict) -> str | None:
    """'rawserial' or 'rawtcp' when the driver's fields are of that reader, else None."""
    kinds = {drivers.field_kind(drivers.merge_field(driver, n)) for n in driver.get("fields") or {}}
    return next(iter(kinds)) if len(kinds) == 1 and kinds & {"rawserial", "rawtcp"} else None


def _text(value: Any, length: int, typecast: str | None) -> bytes:
    if typecast == "int" or (isinstance(value, int) and not isinstance(value, bool)):
        text = str(int(value)).zfill(length)
    elif isinstance(value, float):
        text = ""
        for decimals in range(length, -1, -1):
            text = f"{value:0{length}.{decimals}f}"
            if len(text) <= length:
                break
    else:
        text = str(value).ljust(length)
    if len(text) != length:
        raise ValueError(f"{value!r} does not fit in {length} characters")
    return text.encode()


def encode(f: RawSerialField | RawTcpField, value: Any) -> bytes:
    """The bytes of a value at the field's place in an answer (the inverse of codec.decode_parsed)."""
    if f.parse_as == "str":
        return _text(value, f.length, f.spec.typecast)
    if f.parse_as == "hex":
        return codec.encode_bytes(value, f.spec, f.length // 2).hex().upper().encode()
    return codec.encode_bytes(value, f.spec, f.length)


class RawSimulator:
    def __init__(
        self,
        driver: dict,
        values: dict | None = None,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        serial_port: str | None = None,
        device_args: dict | None = None,
        delay: float = 0.0,
    ):
        self.kind = raw_kind(driver)
        if self.kind is None:
            raise ValueError("the driver has no rawserial or rawtcp fields (one kind only)")
        self.values = dict(values or {})
        self.port, self.host, self.serial_port, self.delay = port, host, serial_port, delay
        self.fields: dict[str, Any] = {}
        for name in driver.get("fields") or {}:
            try:
                self.fields[name] = drivers.compile_field(driver, name, name, [])
            except InvalidInput as exc:
                log.warning("field %s not simulated: %s", name, exc)
        self.args = dict(device_args or {})
        self.requests = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sock: socket.socket | None = None
        self.answers = self._answers()

    def value(self, name: str, f: Any) -> Any:
        if name in self.values:
            return self.values[name]
        if f.spec.typecast == "str":
            return "B"
        plain = PLAIN.get((f.unit or "").strip(), 1)
        value = int(plain) if f.spec.typecast == "int" else plain
        try:  # the plain value, when the field can carry it (else raw 1000, scaled)
            if codec.decode_parsed(encode(f, value), f.spec, f.parse_as) == value:
                return value
        except (ValueError, OverflowError, TypeError):
            pass
        return codec.scale(1000, f.spec)

    def _request(self, f: RawTcpField) -> bytes:
        out = b""
        for c in f.sequence:
            if isinstance(c, DeviceArg):
                out += int(self.args.get(c.key, c.default or 0)).to_bytes(c.num_bytes, c.byteorder)  # type: ignore[arg-type]
            elif c == CRC16:
                out += crc16(out)
            else:
                assert isinstance(c, bytes)
                out += c
        return out

    def _answers(self) -> dict[bytes, bytes]:
        """request or query -> the answer, for the values as they are now."""
        bufs: dict[bytes, bytearray] = {}
        tails: dict[bytes, bytes] = {}
        templates: dict[bytes, Any] = {}
        for name, f in self.fields.items():
            data = encode(f, self.value(name, f))
            if isinstance(f, RawTcpField):
                request = self._request(f)
                start = f.pos - 1
                buf = bufs.setdefault(request, bytearray(request[:start].ljust(start, b"\0")))
                tails[request] = b"crc" if f.check_crc else b""
            else:
                request, start = f.query, f.pos
                buf = bufs.setdefault(request, bytearray())
                tails[request] = f.termination or b""
                if f.template is not None:
                    templates[request] = f.template
            if len(buf) < start + len(data):
                buf.extend(b"0" * (start + len(data) - len(buf)))
            buf[start : start + len(data)] = data
        out = {}
        for request, buf in bufs.items():
            answer = bytes(buf) + crc16(bytes(buf)) if tails[request] == b"crc" else bytes(buf) + tails[request]
            if request in templates and not templates[request].match(answer):
                raise ValueError(
                    f"query {request!r}: a made-up answer does not match the driver's resp_template; "
                    "this driver cannot be simulated"
                )
            out[request] = answer
        return out

    # -- serving ----------------------------------------------------------------------------------
    def start(self) -> RawSimulator:
        if self.kind == "rawtcp":
            if self.port is None:
                raise ValueError("a rawtcp driver is served on TCP (a port)")
            self._sock = socket.socket()
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind((self.host, self.port))
            self._sock.listen(8)
            self.port = self._sock.getsockname()[1]
            self._spawn(self._accept)
        else:
            if self.serial_port is None:
                raise ValueError("a rawserial driver is served on a serial port")
            import serial  # pyserial: only when serving a serial line

            line = serial.Serial(self.serial_port, timeout=0.05)
            self._spawn(self._serve_serial, line)
        return self

    def _spawn(self, target: Any, *args: Any) -> None:
        th = threading.Thread(target=target, args=args, daemon=True, name="raw-sim")
        th.start()
        self._threads.append(th)

    def _reply(self, request: bytes) -> bytes | None:
        answer = self.answers.get(request)
        if answer is not None:
            self.requests += 1
            if self.delay:
                time.sleep(self.delay)
        return answer

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            ready, _, _ = select.select([self._sock], [], [], 0.1)
            if ready:
                try:
                    conn, _ = self._sock.accept()
                except OSError:
                    return
                self._spawn(self._serve_tcp, conn)

    def _serve_tcp(self, conn: socket.socket) -> None:
        with conn:
            buf = b""
            while not self._stop.is_set():
                ready, _, _ = select.select([conn], [], [], 0.1)
                if not ready:
                    continue
                try:
                    data = conn.recv(4096)
                except OSError:
                    return
                if not data:
                    return
                buf += data
                answer = self._reply(buf)
                if answer is not None:
                    buf = b""
                    conn.sendall(answer)
                elif not any(r.startswith(buf) for r in self.answers):
                    buf = b""  # not a request of this device: no answer

    def _serve_serial(self, line: Any) -> None:
        buf = b""
        try:
            while not self._stop.is_set():
                data = line.read(1)
                if data:
                    data += line.read(line.in_waiting)
                buf += data
                if not buf:
                    continue
                answer = self._reply(buf)
                if answer is not None:
                    buf = b""
                    line.write(answer)
                    line.flush()
                elif not any(q.startswith(buf) for q in self.answers):
                    buf = b""
        finally:
            line.close()

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            self._sock.close()
        for th in self._threads:
            th.join(2)
