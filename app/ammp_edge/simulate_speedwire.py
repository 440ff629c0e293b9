"""A simulated SMA Energy Meter: a driver's OBIS fields sent as Speedwire datagrams to a multicast group.

`ammp-edge simulate --driver sma_emeter_speedwire --speedwire [--serial-number N]` sends one datagram
every `interval` seconds (a real meter: one a second) to 239.12.255.254:9522 out of the loopback
interface (IP_MULTICAST_IF 127.0.0.1, TTL 1: it never leaves the machine). Values come from a JSON
file or are plausible and changing (simulate.plausible), encoded by the one codec with the driver's
scaling, so a reader decodes the values given. Receiving loopback multicast needs a multicast route
on lo (`ip route add 224.0.0.0/4 dev lo`; the tests make one in a private network namespace).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from .core import codec, drivers, netfields
from .core.problems import InvalidInput
from .readers import speedwire

log = logging.getLogger(__name__)


def compile_fields(driver: dict) -> dict[str, netfields.SpeedwireField]:
    out = {}
    for name in driver.get("fields") or {}:
        try:
            f = drivers.compile_field(driver, name, f"fields.{name}", [])
        except InvalidInput as exc:
            raise ValueError(str(exc.problem)) from None
        if isinstance(f, netfields.SpeedwireField):
            out[name] = f
    if not out:
        raise ValueError("the driver has no Speedwire (obis_channel) fields")
    return out


def plausible(name: str, f: netfields.SpeedwireField, t: float) -> Any:
    unit = (f.unit or "").strip()
    if unit == "Wh":
        return round(1_000_000 + max(0.0, t - 1.7e9) * 2.5, 3)
    if unit == "W":
        return round(3000 + 1000 * ((t % 60) / 60), 1)
    if unit == "V":
        return 230.1
    if unit == "A":
        return 4.2
    return 1 if f.spec.typecast == "int" else 0.99


class SpeedwireSender:
    """Sends one meter's datagrams from a background thread; `sent` counts them."""

    def __init__(
        self,
        driver: dict,
        serial: int,
        group: str = speedwire.GROUP,
        port: int = speedwire.PORT,
        values: dict | None = None,
        interval: float = 1.0,
        interface: str = "127.0.0.1",
    ):
        self.fields = compile_fields(driver)
        self.serial, self.group, self.port = serial, group, port
        self.values, self.interval, self.interface = dict(values or {}), interval, interface
        self.sent = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))

    def datagram(self, now: float | None = None) -> bytes:
        now = time.time() if now is None else now
        raw: dict[tuple[int, int], bytes] = {}
        for name, f in self.fields.items():
            value = self.values.get(name, plausible(name, f, now))
            raw[(f.channel, f.obis_type)] = codec.encode_bytes(value, f.spec, netfields.OBIS_SIZES[f.obis_type])
        return speedwire.encode_datagram(self.serial, raw, ticks=int(now * 1000))

    def send_once(self) -> None:
        self.sock.sendto(self.datagram(), (self.group, self.port))
        self.sent += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.send_once()
            except OSError as exc:
                log.warning("speedwire datagram not sent to %s:%s: %s", self.group, self.port, exc)
            self._stop.wait(self.interval)

    def start(self) -> SpeedwireSender:
        self._thread = threading.Thread(target=self._run, name="sim:speedwire", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        self.sock.close()
