"""Modbus TCP transport (pymodbus sync client), one connection per host:port shared by its unit ids.

Connects with retries and growing delays inside the caller's timeout; after a timeout or a garbled
answer the connection is dropped and made again on the next request, so a late answer can never be
taken for the answer to a later request.
"""

from __future__ import annotations

import logging
import time

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException as PyModbusException, ModbusIOException

from ..core.macs import MacResolver, lookup
from .modbus import DeviceSilent, LinkError, ModbusException

log = logging.getLogger(__name__)
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # we log each failure once, with context

CONNECT_DELAYS = (0.0, 0.25, 0.5, 1.0, 2.0)


class TcpTransport:
    """host:port, or a device known only by its MAC: resolved by `resolve_mac` at every connect, so a
    new DHCP lease is followed (the bus program's resolver: ARP, the scan cache, then a rate-limited
    background scan)."""

    def __init__(self, host: str | None, port: int = 502, mac: str | None = None, resolve_mac: MacResolver = lookup):
        self.host, self.port, self.mac = host, port, (None if host else mac)
        self.resolve_mac = resolve_mac
        self.client = ModbusTcpClient(host or "0.0.0.0", port=port, timeout=3, retries=0)
        self.connects = 0

    def _connect(self, timeout: float) -> None:
        if self.client.connected:
            return
        if self.mac:
            ip = self.resolve_mac(self.mac)
            if ip is None:
                raise DeviceSilent(f"MAC {self.mac}: no IP address known yet (ARP table, scan cache)")
            if ip != self.host:
                log.info("MAC %s is at %s", self.mac, ip)
            self.host = self.client.comm_params.host = ip
        deadline = time.monotonic() + timeout
        for delay in CONNECT_DELAYS:
            if time.monotonic() + delay >= deadline:
                break
            time.sleep(delay)
            self.client.comm_params.timeout_connect = max(0.05, deadline - time.monotonic())
            if self.client.connect():
                self.connects += 1
                return
        raise DeviceSilent(f"cannot connect to {self.host}:{self.port}")

    def read(self, unit: int, fncode: int, address: int, count: int, timeout: float) -> list[int]:
        started = time.monotonic()
        self._connect(timeout)
        self.client.comm_params.timeout_connect = max(0.05, timeout - (time.monotonic() - started))
        call = self.client.read_holding_registers if fncode == 3 else self.client.read_input_registers
        try:
            rr = call(address, count=count, device_id=unit)
        except ModbusIOException as exc:
            self.close()
            if "No response" in str(exc):
                raise DeviceSilent(f"no answer from unit {unit} within {timeout:.1f} s") from None
            raise LinkError(f"bad answer from unit {unit}: {exc}") from None
        except ConnectionException as exc:
            self.close()
            raise LinkError(f"connection to {self.host}:{self.port} lost: {exc}") from None
        except (PyModbusException, ValueError, IndexError, KeyError, OSError) as exc:
            self.close()
            raise LinkError(f"garbled answer from unit {unit}: {type(exc).__name__}: {exc}") from None
        if rr.isError():
            code = getattr(rr, "exception_code", 0)
            if not code:
                self.close()
                raise LinkError(f"error answer from unit {unit}: {rr}")
            raise ModbusException(code)
        return list(rr.registers)[:count] if len(rr.registers) >= count else list(rr.registers)

    def close(self) -> None:
        self.client.close()
