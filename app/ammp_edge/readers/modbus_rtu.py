"""Modbus RTU transport for one serial port: one transaction at a time, each answer checked in full.

All devices on the port share one serial port object, opened by us (exclusively: a second master on
the same line, e.g. `ammp-edge read` beside the running bus process, is refused instead of garbling
both). The transaction is ours (frames.py builds the request and checks the answer), read by its
header: slave address and function code first, then the byte count (or the exception code), then
exactly the bytes that announces and the CRC, so an exception answer returns as soon as it is complete
and at most 256 bytes are read per request. Timing on the line:

- Inter-frame silence: before a request the line must have been quiet for 3.5 character times (11 bits
  each, at least 1.75 ms) since the last answer; an optional `frame_gap` (seconds) adds to that for
  slow slaves.
- An answer counts only when the line falls quiet after it: bytes that follow it within 3.5 characters
  (a second frame glued to it, a device streaming) make it a bad frame, and nothing of it is decoded.
- Late answers: an RTU answer does not say which request it answers. A slave that answers after our
  timeout would have its answer taken for the answer to the next request of the same shape (same
  slave, function code and length: silently wrong values), or blamed on the next slave (a wrong
  address error). So after a timeout the line is watched for `late_window` (at most 0.5 s, at most
  the timeout) before the next request is sent, and whatever arrives meanwhile is discarded and
  logged; after a bad frame the line must first be quiet for 3.5 characters. Both happen lazily,
  before the next request, so a failing last device of a cycle costs nothing extra. An answer later
  than that window can still be mistaken; it then shows as stray bytes before a later request.
- A line that does not fall quiet within SETTLE_LIMIT (a device sending without being asked) fails the
  request without sending it: a LinkError, so the device backs off; the bytes are dropped at a bounded
  rate of wake-ups, not one per byte.
- Every wait looks at `interrupt` (the bus's stop event, after its grace) at least every INTERRUPT_SLICE.

`RtuLine` is also the port object the sensor-address commands hand to minimalmodbus (node/scan).
"""

from __future__ import annotations

import logging
import os
import select
import termios
import time
from collections.abc import Callable

import serial

from ..core.serialline import character_time, parity_letter
from . import frames
from .modbus import INTERRUPT_SLICE, DeviceSilent, Interrupt, Interrupted, LinkError

log = logging.getLogger(__name__)

LATE_WINDOW = 0.5  # seconds the line is watched for a late answer after a timeout (at most the timeout)
SETTLE_LIMIT = 1.0  # never wait longer than this for a chattering line to fall quiet
EXCEPTION_FRAME = 5  # unit, function code | 0x80, exception code, CRC (2)
DROP_POLL = 0.01  # dropping stray bytes, look at the line at most this often (bounds a streaming device's CPU)


class RtuLine(serial.Serial):
    """A pyserial port whose read() knows Modbus RTU answers: it returns as soon as an exception
    response is complete, and never takes longer than `read_timeout` in total (POSIX only).

    `read_timeout` is ours: pyserial's `timeout` setter re-applies all port settings (tcsetattr)
    whenever they differ from what the driver holds, which fails with EINVAL on a port that cannot
    hold them (a pty keeps neither parity nor a data size other than 8 bits). `interrupt`, when set,
    ends a wait within INTERRUPT_SLICE with Interrupted."""

    read_timeout: float | None = None
    interrupt: Interrupt | None = None

    def read(self, size: int = 1) -> bytes:
        timeout = self.read_timeout if self.read_timeout is not None else self.timeout
        deadline = time.monotonic() + (timeout if timeout is not None else 3600.0)
        data = self.read_until_deadline(min(size, EXCEPTION_FRAME), deadline)
        if size > EXCEPTION_FRAME and len(data) == EXCEPTION_FRAME and not data[1] & 0x80:
            data += self.read_until_deadline(size - EXCEPTION_FRAME, deadline)
        return data

    def read_until_deadline(self, size: int, deadline: float) -> bytes:
        """Up to `size` bytes: fewer only when the deadline came first."""
        if not self.is_open:
            raise serial.PortNotOpenError()
        buf = bytearray()
        while len(buf) < size:
            if self.interrupt is not None and self.interrupt.is_set():
                raise Interrupted("the bus is stopping")
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([self.fd], [], [], min(left, INTERRUPT_SLICE))
            if not ready:
                continue
            chunk = self._read_ready(size - len(buf))
            if chunk is not None:
                buf += chunk
        return bytes(buf)

    def _read_ready(self, size: int) -> bytes | None:
        """Up to `size` bytes from a descriptor select found readable (None: it was not after all)."""
        try:
            chunk = os.read(self.fd, size)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise serial.SerialException(f"read failed: {exc}") from None
        if not chunk:
            raise serial.SerialException("device reports readiness to read but returned no data (device disconnected?)")
        return chunk

    def read_available(self, until: float) -> bytes:
        """The bytes waiting now, or the first that arrive before monotonic time `until` (b"" if none)."""
        while True:
            if self.interrupt is not None and self.interrupt.is_set():
                raise Interrupted("the bus is stopping")
            left = until - time.monotonic()
            ready, _, _ = select.select([self.fd], [], [], max(0.0, min(left, INTERRUPT_SLICE)))
            if ready:
                chunk = self._read_ready(4096)
                if chunk is None:
                    continue
                return chunk
            if left <= 0:
                return b""

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
        # the RTU inter-frame silence: 3.5 characters of 11 bits (as the spec counts), at least 1.75 ms
        self.quiet = max(3.5 * 11 / baudrate, 0.00175)
        self.line: RtuLine | None = None
        self.interrupt: Interrupt | None = None
        self.discarded = 0  # bytes dropped from the line before requests (late answers, noise)
        self._last = 0.0  # when the line was last busy (our request or an answer)
        self._answered = 0.0  # when the last complete answer ended (0: the last request got none)
        self._settle_until = 0.0

    def _open(self) -> RtuLine:
        if self.line is None or not self.line.is_open:
            try:
                self.line = RtuLine(self.port, timeout=0.05, write_timeout=2.0, exclusive=True, **self.settings)
            except (serial.SerialException, OSError, ValueError, termios.error) as exc:
                self.line = None
                raise DeviceSilent(f"cannot open {self.port}: {exc}") from None
        self.line.interrupt = self.interrupt
        return self.line

    def _check_interrupt(self) -> None:
        if self.interrupt is not None and self.interrupt.is_set():
            raise Interrupted("the bus is stopping")

    def _settle(self, line: RtuLine) -> None:
        """Before a request: drop what is on the line and wait out a possible late answer; after
        anything was dropped, wait until the line has been quiet for 3.5 characters. A line that is
        still busy at the limit is a LinkError (the request is not sent)."""
        start = time.monotonic()
        after_failure = self._settle_until > 0
        hard = start + SETTLE_LIMIT + max(0.0, self._settle_until - start)
        dropped, quiet_since = 0, start
        while True:
            self._check_interrupt()
            n = line.discard_input()
            now = time.monotonic()
            if n:
                dropped, quiet_since = dropped + n, now
            target = max(self._settle_until, quiet_since + self.quiet) if dropped else self._settle_until
            if now >= target:
                break
            if now >= hard:
                self.discarded += dropped
                self._settle_until = 0.0
                raise LinkError(
                    f"the line did not fall quiet within {hard - start:.1f} s: {dropped} byte(s) dropped "
                    "(a device sending without being asked?); request not sent"
                )
            wait = min(target, hard) - now
            if dropped:  # a chattering line: look again after a pause instead of at every byte
                time.sleep(min(wait, max(self.quiet, DROP_POLL), INTERRUPT_SLICE))
            else:
                select.select([line.fd], [], [], min(wait, INTERRUPT_SLICE))
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

    def _pause_until(self, t: float) -> None:
        while True:
            self._check_interrupt()
            left = t - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, INTERRUPT_SLICE))

    def _trailing(self, line: RtuLine) -> int:
        """Bytes arriving within 3.5 characters after an answer (dropped; 0 when the line fell quiet)."""
        ready, _, _ = select.select([line.fd], [], [], self.quiet)
        return line.discard_input() if ready else 0

    def _transact(self, line: RtuLine, unit: int, fncode: int, count: int, request: bytes, timeout: float) -> list[int]:
        line.write(request)
        deadline = time.monotonic() + max(0.05, timeout)
        head = line.read_until_deadline(3, deadline)
        if not head:
            self._settle_until = time.monotonic() + min(self.late_window, max(0.05, timeout))
            raise DeviceSilent(f"no answer from slave {unit} on {self.port} within {timeout:.1f} s")
        if len(head) < 3:
            raise LinkError(f"incomplete frame: {len(head)} byte(s) within {timeout:.1f} s")
        expected = frames.rtu_answer_rest(head, unit, fncode, count)  # checks address, function code, byte count
        rest = line.read_until_deadline(expected, deadline)
        frame = head + rest
        if len(rest) < expected:
            raise LinkError(f"incomplete frame: {len(frame)} byte(s) within {timeout:.1f} s")
        self._answered = time.monotonic()  # the quiet before the next request counts from here
        trailing = self._trailing(line)
        if trailing:
            self.discarded += trailing
            raise LinkError(f"{trailing} more byte(s) followed the answer without a pause (the line is out of step)")
        return frames.check_rtu_answer(frame, unit, fncode, count)

    def read(self, unit: int, fncode: int, address: int, count: int, timeout: float) -> list[int]:
        request = frames.rtu_request(unit, frames.read_request(fncode, address, count))
        line = self._open()
        self._answered = 0.0
        try:
            self._settle(line)  # a LinkError of its own when the line does not fall quiet
            self._pause_until(self._last + self.quiet + self.frame_gap)
            try:
                return self._transact(line, unit, fncode, count, request, timeout)
            except LinkError as exc:
                self._settle_until = max(self._settle_until, time.monotonic() + self.quiet)
                raise LinkError(f"bad frame from slave {unit} on {self.port}: {exc}") from None
        except (serial.SerialException, OSError, termios.error) as exc:
            self.close()
            raise LinkError(f"serial port {self.port} failed: {exc}") from None
        finally:
            self._last = self._answered or time.monotonic()

    def exchange(
        self,
        request: bytes,
        receive: Callable[[Callable[[float], bytes]], bytes],
        timeout: float,
        deadline: float | None = None,
    ) -> bytes:
        """One transaction of a byte-stream protocol on this line (rawserial, readers.streams): the same
        settling and quiet before it as a Modbus request, `request` written (not when the settling took
        the device's `deadline`: DeviceSilent), the answer read by `receive`; after a DeviceSilent the
        line is watched for a late answer before the next request, after a LinkError it must fall quiet
        first."""
        line = self._open()
        self._answered = 0.0
        try:
            self._settle(line)
            self._pause_until(self._last + self.quiet + self.frame_gap)
            if deadline is not None and time.monotonic() >= deadline:
                raise DeviceSilent(f"the deadline passed while {self.port} settled; not sent")
            line.write(request)
            try:
                answer = receive(line.read_available)
            except DeviceSilent as exc:
                self._settle_until = time.monotonic() + min(self.late_window, max(0.05, timeout))
                raise DeviceSilent(f"{exc} on {self.port}") from None
            except LinkError as exc:
                self._settle_until = max(self._settle_until, time.monotonic() + self.quiet)
                raise LinkError(f"bad answer on {self.port}: {exc}") from None
            self._answered = time.monotonic()
            return answer
        except (serial.SerialException, OSError, termios.error) as exc:
            self.close()
            raise LinkError(f"serial port {self.port} failed: {exc}") from None
        finally:
            self._last = self._answered or time.monotonic()

    def close(self) -> None:
        if self.line is not None:
            try:
                self.line.close()
            except (serial.SerialException, OSError):
                pass
        self.line = None
