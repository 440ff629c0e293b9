"""Modbus RTU transport (minimalmodbus) for one serial port: one transaction at a time, with a gap.

All devices on the port share one serial port object (minimalmodbus keeps one per port name). A
silent gap of at least 3.5 characters, plus an optional configured `frame_gap` (seconds), separates
frames; minimalmodbus enforces the 3.5 characters itself.
"""

from __future__ import annotations

import logging
import time

import minimalmodbus
import serial

from .modbus import DeviceSilent, LinkError, ModbusException

log = logging.getLogger(__name__)

PARITY = {"none": serial.PARITY_NONE, "n": serial.PARITY_NONE, "even": serial.PARITY_EVEN, "e": serial.PARITY_EVEN,
          "odd": serial.PARITY_ODD, "o": serial.PARITY_ODD, "mark": serial.PARITY_MARK, "space": serial.PARITY_SPACE}


def _exception_code(exc: minimalmodbus.SlaveReportedException) -> int:
    text = str(exc).lower()
    for phrase, code in (("illegal function", 1), ("illegal data address", 2), ("illegal data value", 3),
                         ("busy", 6), ("negative acknowledge", 7)):
        if phrase in text:
            return code
    return 4


class RtuTransport:
    def __init__(self, port: str, baudrate: int = 9600, bytesize: int = 8, parity: str = "none",
                 stopbits: float = 1, frame_gap: float = 0.0):
        self.port = port
        self.settings = dict(baudrate=baudrate, bytesize=bytesize, parity=PARITY[str(parity).lower()], stopbits=stopbits)
        self.frame_gap = frame_gap
        self.instruments: dict[int, minimalmodbus.Instrument] = {}
        self._last = 0.0

    def _instrument(self, unit: int) -> minimalmodbus.Instrument:
        inst = self.instruments.get(unit)
        if inst is None:
            try:
                inst = minimalmodbus.Instrument(self.port, unit, close_port_after_each_call=False)
            except (serial.SerialException, OSError) as exc:
                raise DeviceSilent(f"cannot open {self.port}: {exc}") from None
            for key, value in self.settings.items():
                setattr(inst.serial, key, value)
            inst.clear_buffers_before_each_transaction = True
            self.instruments[unit] = inst
        return inst

    def read(self, unit: int, fncode: int, address: int, count: int, timeout: float) -> list[int]:
        inst = self._instrument(unit)
        wait = self._last + self.frame_gap - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        inst.serial.timeout = max(0.05, timeout)
        try:
            return inst.read_registers(address, count, functioncode=fncode)
        except minimalmodbus.NoResponseError:
            raise DeviceSilent(f"no answer from slave {unit} on {self.port} within {timeout:.1f} s") from None
        except minimalmodbus.SlaveReportedException as exc:
            raise ModbusException(_exception_code(exc)) from None
        except minimalmodbus.ModbusException as exc:  # CRC, wrong slave, malformed frame
            raise LinkError(f"bad frame from slave {unit} on {self.port}: {exc}") from None
        except (serial.SerialException, OSError) as exc:
            self.close()
            raise LinkError(f"serial port {self.port} failed: {exc}") from None
        finally:
            self._last = time.monotonic()

    def close(self) -> None:
        for inst in self.instruments.values():
            try:
                inst.serial.close()
            except (serial.SerialException, OSError):
                pass
        self.instruments.clear()
        minimalmodbus._serialports.pop(self.port, None)
