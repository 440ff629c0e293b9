"""The transport and the reader for a device, by its reading type.

The transports are imported when a bus needs one, not before: a TCP bus must not load pyserial, and
the node (which lists buses) neither transport.
"""

from __future__ import annotations

from typing import Any

from ..core.config import Device
from ..core.macs import MacResolver, lookup
from .modbus import ModbusDevice, PlanStore, Transport
from .system import SystemDevice


def make_transport(device: Device, resolve_mac: MacResolver | None = None) -> Transport | None:
    """The transport the bus of `device` shares (None for `sys`). `resolve_mac` finds the address of a
    TCP device known only by its MAC (default: the ARP table and the scan cache, no scan)."""
    a = device.address
    if device.reading_type == "modbustcp":
        from .modbus_tcp import TcpTransport  # only in TCP buses (see the module doc)

        return TcpTransport(a.get("host"), int(a.get("port", 502)), mac=a.get("mac"), resolve_mac=resolve_mac or lookup)
    if device.reading_type == "modbusrtu":
        from .modbus_rtu import RtuTransport  # pyserial: only in serial buses

        return RtuTransport(
            a["device"],
            int(a.get("baudrate", 9600)),
            int(a.get("bytesize", 8)),
            str(a.get("parity", "none")),
            a.get("stopbits", 1),
            float(a.get("frame_gap", 0)),
        )
    if device.reading_type == "sma_speedwire":
        from .speedwire import SpeedwireSocket  # one socket for the group and port

        return SpeedwireSocket(a.get("group", "239.12.255.254"), int(a.get("port", 9522)))  # type: ignore[return-value]
    if device.reading_type == "snmp":
        from .snmp import SnmpTransport  # one UDP socket per agent, made at its first request

        return SnmpTransport()  # type: ignore[return-value]
    return None


def make_reader(
    device: Device, transport: Any, plans: PlanStore | None = None, plan_key: str = ""
) -> ModbusDevice | SystemDevice:
    """Raises ValueError when the device cannot be read (e.g. its registers leave 0..65535). `plans`
    keeps a Modbus device's working plan under `plan_key` across restarts."""
    if device.reading_type == "sys":
        return SystemDevice(device)
    if device.reading_type == "sma_speedwire":
        from .speedwire import SpeedwireDevice

        return SpeedwireDevice(device, transport)  # type: ignore[return-value]
    if device.reading_type == "snmp":
        from .snmp import SnmpDevice

        return SnmpDevice(device, transport)  # type: ignore[return-value]
    return ModbusDevice(device, transport, plans, plan_key)
