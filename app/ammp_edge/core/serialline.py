"""Facts about a serial line that the config loader, the RTU reader, the simulator, the web UI and the
scans share: parity names, baud rates, and how long a character takes on the wire."""

from __future__ import annotations

# parity as written in configs (upstream's names and their first letters) -> pyserial's (PARITY_NONE == "N", ...)
PARITIES = {"none": "N", "n": "N", "even": "E", "e": "E", "odd": "O", "o": "O", "mark": "M", "space": "S"}
FORM_PARITIES = ("none", "even", "odd")  # what the web UI offers (and `ammp-edge simulate --parity`)
NO_PARITY = "N"
STANDARD_BAUDRATES = (300, 600, 1200, 2400, 4800, 9600, 14400, 19200, 38400, 57600, 115200, 230400)
MIN_BAUDRATE, MAX_BAUDRATE = 50, 4_000_000  # accepted at all (a rate outside STANDARD_BAUDRATES is warned about)
DEFAULT_BAUDRATE = 9600


def parity_letter(name: object) -> str:
    """pyserial's parity for a config's parity name; KeyError for an unknown one."""
    return PARITIES[str(name).lower()]


def character_time(baudrate: int, bytesize: int = 8, parity: str = NO_PARITY, stopbits: float = 1) -> float:
    """Seconds one character takes on the line (start bit, data bits, parity bit, stop bits)."""
    return (1 + bytesize + (parity != NO_PARITY) + stopbits) / baudrate
