"""Environment scans: what is on the LAN, on the RS-485 port and on Speedwire (reference 5.7).

The API (used by the `env_scan` command and the web UI; every function blocks, so run it in a
worker thread; `progress(fraction 0..1, text)` is called along the way, `cancel` is a
threading.Event that stops the scan early):

    network_scan(targets=None, ports=(22, 80, 443, 502), progress=None, cancel=None) -> list[dict]
        nmap port scan of `targets` (addresses or networks; default: the default interface's
        network, at most a /22), then the Modbus identification of hosts with 502 open. Hosts:
        {"ipv4", "mac"?, "vendor"?, "hostname"?, "ports": ["502", ...], "modbustcp"?: [{"unit_id", ...}]}.
        Raises Cancelled when cancelled (nmap is killed), ScanError when nmap cannot run.
    serial_scan(port=None, baudrate=9600, progress=None, cancel=None) -> list[list[str]]
        [test description, result text] per probe signature (port default: KV `serial_sensor_port`,
        else /dev/ttyAMA0); returns what was probed so far when cancelled.
    env_scan(progress=None, cancel=None) -> dict
        all three, in upstream's shape: {"time", "network_scan": [{"ifname", "ipv4", "netmask",
        "hosts"}], "serial_scan", "speedwire_serials"}. Raises Cancelled when cancelled.
    resolve_mac(mac) -> str | None
        MAC -> IPv4 from ARP, then the scan cache; a rate-limited background sweep when unknown.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterable

from ...core import keys
from ...core.kvs import KVStore, cache as open_cache
from . import macs, modbus, network, serial, speedwire
from .network import Cancelled, ScanError

log = logging.getLogger(__name__)

__all__ = ["network_scan", "serial_scan", "env_scan", "resolve_mac", "Cancelled", "ScanError", "LAST_SCAN_KEY"]

Progress = Callable[[float, str], None]
LAST_SCAN_KEY = keys.LAST_ENV_SCAN  # KV cache


def _part(progress: Progress | None, start: float, end: float) -> Progress | None:
    """A progress callback for one stage, mapped onto [start, end] of the whole."""
    if progress is None:
        return None
    return lambda f, text: progress(start + (end - start) * max(0.0, min(1.0, f)), text)


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("scan cancelled")


def network_scan(
    targets: list[str] | None = None,
    ports: Iterable[int] = network.DEFAULT_PORTS,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    *,
    modbus_ports: Iterable[int] = (modbus.MODBUS_PORT,),
    probe_modbus: bool = True,
    cache: KVStore | None = None,
) -> list[dict]:
    ports = list(ports)
    if not targets:
        iface = network.default_interface()
        if iface is None:
            raise ScanError("no default network interface (no route to the internet configured)")
        targets = [network.network_of(iface["ipv4"], iface["netmask"])]
    if progress:
        progress(0.0, f"scanning {', '.join(targets)} (ports {', '.join(map(str, ports))})")
    hosts = network.nmap_scan(targets, ports, _part(progress, 0.0, 0.8), cancel, cache or open_cache())
    _check(cancel)
    if probe_modbus:
        if progress:
            progress(0.8, f"{len(hosts)} host(s) up; identifying Modbus devices")
        modbus.probe_hosts(hosts, modbus_ports, cancel=cancel)
        _check(cancel)
    if progress:
        progress(1.0, f"{len(hosts)} host(s) found")
    return hosts


def serial_scan(
    port: str | None = None,
    baudrate: int = serial.BAUDRATE,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> list[list[str]]:
    return serial.serial_scan(port, baudrate, progress, cancel)


def env_scan(
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    *,
    targets: list[str] | None = None,
    ports: Iterable[int] = network.DEFAULT_PORTS,
    modbus_ports: Iterable[int] = (modbus.MODBUS_PORT,),
    serial_port: str | None = None,
    speedwire_timeout: float = speedwire.TIMEOUT_S,
    speedwire_port: int = speedwire.PORT,
) -> dict:
    """The full environment scan (keyword arguments for tests and special sites)."""
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    iface = network.default_interface() or {"ifname": None, "ipv4": None, "netmask": None}
    net: dict = dict(iface, hosts=[])
    if targets is None and iface["ipv4"] is not None:
        targets = [network.network_of(iface["ipv4"], iface["netmask"])]
    if targets:
        try:
            net["hosts"] = network_scan(targets, ports, _part(progress, 0.0, 0.6), cancel, modbus_ports=modbus_ports)
        except ScanError as exc:
            log.warning("network scan failed: %s", exc)
            net["error"] = str(exc)
    else:
        net["error"] = "no default network interface"
    _check(cancel)
    serial_result = serial_scan(serial_port, serial.BAUDRATE, _part(progress, 0.6, 0.9), cancel)
    _check(cancel)
    if progress:
        progress(0.9, "listening for SMA Speedwire")
    serials, sw_error = speedwire.collect_serials(speedwire_timeout, port=speedwire_port, cancel=cancel)
    _check(cancel)
    result = {"time": started, "network_scan": [net], "serial_scan": serial_result, "speedwire_serials": serials}
    if sw_error:
        result["speedwire_error"] = sw_error
    if progress:
        progress(1.0, "environment scan complete")
    return result


def resolve_mac(mac: str) -> str | None:
    return macs.resolve_mac(mac)
