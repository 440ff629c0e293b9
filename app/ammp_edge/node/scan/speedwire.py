"""SMA Speedwire: the serial numbers of energy meters multicasting on the LAN.

Each datagram goes through the reader's own check (readers.speedwire.parse_datagram: signature, tags,
protocol id, lengths), so garbage or another protocol's datagram never yields a serial. We listen on
UDP 9522, join 239.12.255.254 and collect the serials seen in up to 5 datagrams, within a timeout.
Trouble binding or joining is reported in the result, never raised: a scan goes on without Speedwire.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time

from ...readers import speedwire as reader

log = logging.getLogger(__name__)

GROUP = reader.GROUP
PORT = reader.PORT
MAX_DATAGRAMS = 5
TIMEOUT_S = 5.0


def serial_of(datagram: bytes) -> int | None:
    """The sender's serial, or None for a datagram that is not a valid meter datagram."""
    try:
        return reader.parse_datagram(datagram).serial
    except reader.BadDatagram as exc:
        log.debug("speedwire scan: datagram dropped: %s", exc)
        return None


def open_socket(port: int = PORT, group: str | None = GROUP, interface: str = "0.0.0.0") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("", port))
        if group:
            mreq = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(interface))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    except OSError:
        sock.close()
        raise
    return sock


def collect_serials(
    timeout: float = TIMEOUT_S,
    max_datagrams: int = MAX_DATAGRAMS,
    port: int = PORT,
    group: str | None = GROUP,
    interface: str = "0.0.0.0",
    cancel: threading.Event | None = None,
) -> tuple[list[int], str | None]:
    """(unique serials in arrival order, error text or None)."""
    try:
        sock = open_socket(port, group, interface)
    except OSError as exc:
        text = f"cannot listen for Speedwire on UDP {port}" + (f" group {group}" if group else "") + f": {exc}"
        log.warning("%s", text)
        return [], text
    serials: list[int] = []
    deadline = time.monotonic() + timeout
    received = 0
    try:
        while received < max_datagrams:
            left = deadline - time.monotonic()
            if left <= 0 or (cancel is not None and cancel.is_set()):
                break
            sock.settimeout(min(left, 0.5))
            try:
                data = sock.recv(reader.MAX_DATAGRAM)
            except TimeoutError:
                continue
            received += 1
            serial = serial_of(data)
            if serial is not None and serial not in serials:
                serials.append(serial)
    except OSError as exc:
        return serials, f"Speedwire receive failed: {exc}"
    finally:
        sock.close()
    return serials, None
