"""The HyCon's clock offset: one SNTP query (RFC 4330), answers checked, 0 when there is none."""

from __future__ import annotations

import logging
import socket
import struct
import time

log = logging.getLogger(__name__)

NTP_EPOCH = 2208988800  # 1900-01-01 to 1970-01-01


def sntp_offset(host: str, port: int = 123, timeout: float = 5.0) -> float:
    """Seconds the clock at host:port is ahead of ours (one SNTP query, RFC 4330); ValueError or
    OSError when the answer is missing or not a valid server answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.connect((host, port))
        t1 = time.time()
        stamp = struct.pack(">II", int(t1) + NTP_EPOCH, int((t1 % 1) * 2**32))
        s.send(b"\x23" + b"\x00" * 39 + stamp)  # LI 0, version 4, mode 3 (client)
        data = s.recv(512)
        t4 = time.time()
    if len(data) < 48:
        raise ValueError(f"an SNTP answer of {len(data)} bytes (48 expected)")
    mode, stratum = data[0] & 7, data[1]
    if mode != 4 or stratum == 0 or stratum > 15:
        raise ValueError(f"not a server answer (mode {mode}, stratum {stratum})")
    if data[24:32] != stamp:
        raise ValueError("the SNTP answer is not for our request")

    def ts(off: int) -> float:
        sec, frac = struct.unpack(">II", data[off : off + 8])
        return sec - NTP_EPOCH + frac / 2**32

    t2, t3 = ts(32), ts(40)
    if t3 <= 0:
        raise ValueError("an SNTP answer without a transmit time")
    return ((t2 - t1) + (t3 - t4)) / 2


def clock_offset(host: str, port: int, retry_for: float = 15.0, timeout: float = 5.0) -> float:
    """The HyCon's clock offset, retried for `retry_for` seconds; 0 when it cannot be had (as upstream)."""
    if not port:
        return 0.0
    deadline = time.monotonic() + retry_for
    while True:
        try:
            return sntp_offset(host, port, min(timeout, max(0.1, deadline - time.monotonic())))
        except (OSError, ValueError) as exc:
            if time.monotonic() >= deadline:
                log.warning("[hycon %s] no clock offset from SNTP (%s); assuming 0", host, exc)
                return 0.0
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
