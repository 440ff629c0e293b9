"""The transport and the reader for a device, by its reading type.

One transport per bus, made for its first device: a serial port (modbus_rtu's RtuTransport) carries
Modbus RTU and rawserial transactions alike, a TCP connection (modbus_tcp's TcpTransport) Modbus TCP
and rawtcp, one transaction at a time. The transports are imported when a bus needs one, not
before: a TCP bus must not load pyserial, and the node (which lists buses) neither transport.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.config import MODBUS_TYPES, Device
from ..core.macs import MacResolver, lookup
from .modbus import ModbusDevice, PlanStore, Transport
from .system import SystemDevice

if TYPE_CHECKING:
    from .mqtt import MqttTransport

SERIAL_TYPES = ("modbusrtu", "rawserial")
TCP_TYPES = ("modbustcp", "rawtcp")


def make_transport(device: Device, resolve_mac: MacResolver | None = None) -> Transport | MqttTransport | None:
    """The transport the bus of `device` shares (None for `sys`). `resolve_mac` finds the address of a
    TCP device known only by its MAC (default: the ARP table and the scan cache, no scan)."""
    a = device.address
    if device.reading_type in TCP_TYPES:
        from .modbus_tcp import TcpTransport  # only in TCP buses (see the module doc)

        return TcpTransport(a.get("host"), int(a.get("port", 502)), mac=a.get("mac"), resolve_mac=resolve_mac or lookup)
    if device.reading_type in SERIAL_TYPES:
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
    if device.reading_type == "mqtt":
        from .mqtt import MqttTransport  # only in MQTT buses

        return MqttTransport(device)
    return None


def make_reader(device: Device, transport: Any, plans: PlanStore | None = None, plan_key: str = "") -> Any:
    """The reader of a device (its read(deadline) gives a DeviceResult). Raises ValueError when the
    device cannot be read (e.g. its registers leave 0..65535, or its reading type is not supported by
    this version: the bus still publishes it as {_d, _vid} with that error). `plans` keeps a Modbus
    device's working plan under `plan_key` across restarts."""
    if device.reading_type == "sys":
        return SystemDevice(device)
    if device.reading_type == "rawserial":
        from . import rawserial

        _same_line(device, transport, rawserial.line_settings)
        return rawserial.RawSerialDevice(device, transport)
    if device.reading_type == "rawtcp":
        from . import rawtcp

        return rawtcp.RawTcpDevice(device, transport)
    if device.reading_type == "sma_speedwire":
        from .speedwire import SpeedwireDevice

        return SpeedwireDevice(device, transport)
    if device.reading_type == "snmp":
        from .snmp import SnmpDevice

        return SnmpDevice(device, transport)
    if device.reading_type == "mqtt":
        from .mqtt import MqttDevice

        return MqttDevice(device, transport)
    if device.reading_type in MODBUS_TYPES:
        return ModbusDevice(device, transport, plans, plan_key)
    raise ValueError(f"reading type {device.reading_type!r} is not supported by this version yet")


def _same_line(device: Device, transport: Any, settings: Any) -> None:
    """A device on a shared serial port must use the port's line settings (one line, one speed)."""
    line = getattr(transport, "settings", None)
    if line is None:
        return
    port = (line["baudrate"], line["bytesize"], str(line["parity"]).lower()[:1], float(line["stopbits"]))
    if settings(device.address) != port:
        raise ValueError(
            f"devices.{device.key}.address: line settings {settings(device.address)} differ from those of the "
            f"port's first device {port} (baud rate, data bits, parity, stop bits): one line runs at one setting"
        )
