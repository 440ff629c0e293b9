"""Serial lines for tests: a socat pseudo-terminal pair, and a tiny scriptable RTU slave.

`pty_pair(tmp_path)` starts

    socat -d -d pty,raw,echo=0,link=<tmp>/a pty,raw,echo=0,link=<tmp>/b

waits until both symlinks exist and yields (a, b): bytes written to one end come out of the other.
socat is killed (its own pid only) afterwards.

A pty pair carries bytes instantly whatever baud rate, parity or stop bits the two ends set: the
settings are stored by the tty layer but nothing is clocked. Line timing is emulated where it
matters by the simulator (`Simulator(..., serial_port=..., emulate_airtime=True)` holds each
response back for the request + response airtime at the configured baud rate), and a parity
mismatch between the ends cannot be reproduced here.

`FakeSlave` owns one end and answers RTU requests with whatever a script returns (a good
frame, a late frame, a frame with a bad CRC, random bytes or nothing), for the cases a real
simulator does not do.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import serial


def crc16(frame: bytes) -> bytes:
    """Modbus RTU CRC, low byte first (as sent on the line)."""
    crc = 0xFFFF
    for b in frame:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc.to_bytes(2, "little")


def read_response(unit: int, fncode: int, registers: list[int]) -> bytes:
    body = bytes([unit, fncode, 2 * len(registers)]) + b"".join(r.to_bytes(2, "big") for r in registers)
    return body + crc16(body)


def exception_response(unit: int, fncode: int, code: int) -> bytes:
    body = bytes([unit, fncode | 0x80, code])
    return body + crc16(body)


@contextlib.contextmanager
def pty_pair(tmp_path: Path, timeout: float = 5.0) -> Iterator[tuple[str, str]]:
    if shutil.which("socat") is None:
        raise RuntimeError("socat is not installed")
    a, b = tmp_path / "a", tmp_path / "b"
    log = open(tmp_path / "socat.log", "wb")
    proc = subprocess.Popen(
        ["socat", "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        end = time.monotonic() + timeout
        while not (a.exists() and b.exists()):
            if proc.poll() is not None:
                raise RuntimeError(f"socat exited with {proc.returncode}: {(tmp_path / 'socat.log').read_text()}")
            if time.monotonic() > end:
                raise RuntimeError("socat did not create the pty links in time")
            time.sleep(0.01)
        yield str(a), str(b)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        log.close()


Request = tuple[int, int, int, int]  # unit, fncode, address, count


class FakeSlave:
    """Answers fc3/fc4 read requests on one pty end with what `script(request, index)` returns:
    bytes to send, a (delay_seconds, bytes) tuple, or None for no answer. Requests with a bad CRC
    are ignored, as a real slave would."""

    def __init__(self, path: str, script: Callable[[Request, int], bytes | tuple[float, bytes] | None]):
        self.script = script
        self.requests: list[Request] = []
        self.received_at: list[float] = []  # monotonic time each request was complete
        self.answered_at: list[float] = []  # monotonic time each answer started to be written
        self.ser = serial.Serial(path, timeout=0.02)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-slave", daemon=True)

    def __enter__(self) -> FakeSlave:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self.ser.close()

    def _run(self) -> None:
        buf = b""
        while not self._stop.is_set():
            chunk = self.ser.read(1)  # returns as soon as a byte is there (or after 20 ms)
            if chunk:
                chunk += self.ser.read(self.ser.in_waiting)
            now = time.monotonic()
            buf += chunk
            while len(buf) >= 8:
                frame, rest = buf[:8], buf[8:]
                if crc16(frame[:6]) != frame[6:]:
                    buf = buf[1:]  # hunt for a frame start
                    continue
                buf = rest
                req = (frame[0], frame[1], int.from_bytes(frame[2:4], "big"), int.from_bytes(frame[4:6], "big"))
                self.requests.append(req)
                self.received_at.append(now)
                answer = self.script(req, len(self.requests) - 1)
                if answer is None:
                    continue
                if isinstance(answer, tuple):
                    delay, answer = answer
                    if self._stop.wait(delay):
                        return
                self.answered_at.append(time.monotonic())
                self.ser.write(answer)
                self.ser.flush()


def write_raw(path: str, data: bytes) -> None:
    """Open a pty end, write bytes, close (for garbage on the line)."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
