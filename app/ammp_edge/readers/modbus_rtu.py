"""Modbus RTU transport (minimalmodbus) for one serial port: one transaction at a time, with a gap.

All devices on the port share one serial port object, opened by us (exclusively: a second master on
the same line, e.g. `ammp-edge read` beside the running bus process, is refused instead of garbling
both) and handed to minimalmodbus. Timing on the line:

- Inter-frame silence: minimalmodbus waits until 3.5 character times (11 bits each, at least 1.75 ms)
  have passed since the end of the last response (or the last timeout) before it sends; an optional
  `frame_gap` (seconds) adds to that for slow slaves.
- Exception responses: minimalmodbus reads exactly the length a normal answer would have, so a
  5-byte exception response would cost the whole timeout. Our port object knows the RTU frame
  layout and returns as soon as an exception frame is complete.
- Late answers: an RTU answer does not say which request it answers. A slave that answers after our
  timeout would have its answer taken for the answer to the next request of the same shape (same
  slave, function code and length: silently wrong values), or blamed on the next slave (a wrong
  address error). So after a timeout the line is watched for `late_window` (at most 0.5 s, at most
  the timeout) before the next request is sent, and whatever arrives meanwhile is discarded and
  logged; after a bad frame the line must first be quiet for 3.5 characters. Both happen lazily,
  before the next request, so a failing last device of a cycle costs nothing extra. An answer later
  than that window can still be mistaken; it then shows as stray bytes before a later request.
"""

from __future__ import annotations

import logging
import os
import select
import termios
import time

import minimalmodbus
import serial

from ..core.serialline import character_time, parity_letter
from .modbus import DeviceSilent, LinkError, ModbusException

log = logging.getLogger(__name__)

LATE_WINDOW = 0.5  # seconds the line is watched for a late answer after a timeout (at most the timeout)
SETTLE_LIMIT = 1.0  # never wait longer than this for a chattering line to fall quiet
EXCEPTION_FRAME = 5  # unit, function code | 0x80, exception code, CRC (2)


def _exception_code(exc: minimalmodbus.SlaveReportedException) -> int:
    text = str(exc).lower()
    for phrase, code in (
        ("illegal function", 1),
        ("illegal data address", 2),
        ("illegal data value", 3),
        ("busy", 6),
        ("negative acknowledge", 7),
        ("memory parity", 8),
        ("gateway path", 10),
        ("gateway target", 11),
    ):
        if phrase in text:
            return code
    return 4


class RtuLine(serial.Serial):
    """A pyserial port whose read() knows Modbus RTU answers: it returns as soon as an exception
    response is complete, and never takes longer than `read_timeout` in total (POSIX only).

    `read_timeout` is ours: pyserial's `timeout` setter re-applies all port settings (tcsetattr)
    whenever they differ from what the driver holds, which fails with EINVAL on a port that cannot
    hold them (a pty keeps neither parity nor a data size other than 8 bits)."""

    read_timeout: float | None = None

    def read(self, size: int = 1) -> bytes:
        timeout = self.read_timeout if self.read_timeout is not None else self.timeout
        deadline = time.monotonic() + (timeout if timeout is not None else 3600.0)
        data = self._read_until(min(size, EXCEPTION_FRAME), deadline)
        if size > EXCEPTION_FRAME and len(data) == EXCEPTION_FRAME and not data[1] & 0x80:
            data += self._read_until(size - EXCEPTION_FRAME, deadline)
        return data

    def _read_until(self, size: int, deadline: float) -> bytes:
        if not self.is_open:
            raise serial.PortNotOpenError()
        buf = bytearray()
        while len(buf) < size:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                break
            try:
                chunk = os.read(self.fd, size - len(buf))
            except BlockingIOError:
                continue
            except OSError as exc:
                raise serial.SerialException(f"read failed: {exc}") from None
            if not chunk:
                raise serial.SerialException(
                    "device reports readiness to read but returned no data (device disconnected?)"
                )
            buf += chunk
        return bytes(buf)

    def discard_input(self) -> int:
        """Read and drop what is waiting; the number of bytes dropped."""
        dropped = 0
        while True:
            ready, _, _ = select.select([self.fd], [], [], 0)
            if not ready:
                return dropped
            try:
                chunk = os.read(self.fd, 4096)
            except BlockingIOError:
                return dropped
            if not chunk:
                raise serial.SerialException(
                    "device reports readiness to read but returned no data (device disconnected?)"
                )
            dropped += len(chunk)


class RtuTransport:
    def __init__(
        self,
        port: str,
        baudrate: int = 9600,
        bytesize: int = 8,
        parity: str = "none",
        stopbits: float = 1,
        frame_gap: float = 0.0,
        late_window: float = LATE_WINDOW,
    ):
        self.port = port
        letter = parity_letter(parity)
        self.settings = dict(baudrate=baudrate, bytesize=bytesize, parity=letter, stopbits=stopbits)
        self.frame_gap = frame_gap
        self.late_window = late_window
        self.char_time = character_time(baudrate, bytesize, letter, stopbits)
        self.quiet = max(3.5 * self.char_time, 0.00175)  # the RTU inter-frame silence
        self.line: RtuLine | None = None
        self.instruments: dict[int, minimalmodbus.Instrument] = {}
        self.discarded = 0  # bytes dropped from the line before requests (late answers, noise)
        self._last = 0.0
        self._settle_until = 0.0

    def _open(self) -> RtuLine:
        if self.line is None or not self.line.is_open:
            try:
                self.line = RtuLine(self.port, timeout=0.05, write_timeout=2.0, exclusive=True, **self.settings)
            except (serial.SerialException, OSError, ValueError, termios.error) as exc:
                self.line = None
                raise DeviceSilent(f"cannot open {self.port}: {exc}") from None
            self.instruments.clear()
        return self.line

    def _instrument(self, unit: int) -> minimalmodbus.Instrument:
        line = self._open()
        inst = self.instruments.get(unit)
        if inst is None:
            inst = minimalmodbus.Instrument(line, unit, close_port_after_each_call=False)
            inst.clear_buffers_before_each_transaction = True
            self.instruments[unit] = inst
        return inst

    def _settle(self, line: RtuLine) -> None:
        """Before a request: drop what is on the line and wait out a possible late answer; after
        anything was dropped, wait until the line has been quiet for 3.5 characters."""
        start = time.monotonic()
        after_failure = self._settle_until > 0
        hard = start + SETTLE_LIMIT + max(0.0, self._settle_until - start)
        dropped, quiet_since = 0, start
        while True:
            n = line.discard_input()
            now = time.monotonic()
            if n:
                dropped, quiet_since = dropped + n, now
            target = max(self._settle_until, quiet_since + self.quiet) if dropped else self._settle_until
            if now >= target or now >= hard:
                break
            select.select([line.fd], [], [], min(target, hard) - now)
        self._settle_until = 0.0
        if dropped:
            self.discarded += dropped
            if after_failure:  # expected now and then: a slave answering after our timeout
                log.info("%s: dropped %d byte(s) arriving after a failed request (a late answer)", self.port, dropped)
            else:
                log.warning(
                    "%s: dropped %d stray byte(s) found on the line before a request (noise, another "
                    "master, or an answer later than the late window)",
                    self.port,
                    dropped,
                )

    def read(self, unit: int, fncode: int, address: int, count: int, timeout: float) -> list[int]:
        inst = self._instrument(unit)
        try:
            self._settle(inst.serial)
        except (serial.SerialException, OSError) as exc:
            self.close()
            raise LinkError(f"serial port {self.port} failed: {exc}") from None
        wait = self._last + self.frame_gap - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        inst.serial.read_timeout = max(0.05, timeout)
        try:
            return inst.read_registers(address, count, functioncode=fncode)
        except minimalmodbus.NoResponseError:
            self._settle_until = time.monotonic() + min(self.late_window, max(0.05, timeout))
            raise DeviceSilent(f"no answer from slave {unit} on {self.port} within {timeout:.1f} s") from None
        except minimalmodbus.SlaveReportedException as exc:
            raise ModbusException(_exception_code(exc)) from None
        except minimalmodbus.ModbusException as exc:  # CRC, wrong slave, malformed or short frame
            self._settle_until = time.monotonic() + self.quiet
            raise LinkError(f"bad frame from slave {unit} on {self.port}: {exc}") from None
        except (serial.SerialException, OSError, termios.error) as exc:
            self.close()
            raise LinkError(f"serial port {self.port} failed: {exc}") from None
        finally:
            self._last = time.monotonic()

    def close(self) -> None:
        if self.line is not None:
            try:
                self.line.close()
            except (serial.SerialException, OSError):
                pass
        self.line = None
        self.instruments.clear()
