"""Modbus frames: requests built, and answers checked against the request they answer.

The discipline every reader keeps: an answer is decoded only when each of its parts matches the
request. Anything else is a LinkError naming what was wrong (the transport then resets the
connection or lets the line fall quiet) and nothing of it is decoded:

  Modbus TCP (MBAP header)  transaction id and protocol id (0) as sent, unit id as asked, and a
                            length field that is exactly that of an answer to this request
                            (3 + 2 x count, or 3 for an exception), so at most 260 bytes are read
  Modbus RTU                slave address as asked, CRC; an RTU answer is at most 256 bytes
  the PDU (both)            function code as asked (or it with 0x80: an exception, with its code),
                            byte count exactly 2 x the registers asked for, exactly that many bytes

Checking the length before reading the rest means a lying or streaming device costs at most one
answer's bytes per request.
"""

from __future__ import annotations

from .modbus import LinkError, ModbusException

MAX_TCP_ADU = 260  # MBAP header (7) + PDU (at most 253)
MAX_RTU_ADU = 256  # address (1) + PDU (at most 253) + CRC (2)
MBAP_HEADER = 7
MAX_READ_REGISTERS = 125


def read_request(fncode: int, address: int, count: int) -> bytes:
    """The PDU of a read-registers request (fncode 3 or 4)."""
    if not 1 <= count <= MAX_READ_REGISTERS or not 0 <= address <= 0xFFFF or address + count > 0x10000:
        raise ValueError(f"cannot read {count} registers at {address}")
    return bytes([fncode]) + address.to_bytes(2, "big") + count.to_bytes(2, "big")


def answer_pdu_lengths(count: int) -> tuple[int, int]:
    """(PDU length of a normal answer to a read of count registers, of an exception answer)."""
    return 2 + 2 * count, 2


def check_read_answer(pdu: bytes, fncode: int, count: int) -> list[int]:
    """The registers of an answer PDU to a read of `count` registers with `fncode`; raises
    ModbusException for an exception answer, LinkError for anything that does not answer it."""
    if not pdu:
        raise LinkError("empty answer")
    fc = pdu[0]
    if fc == fncode | 0x80:
        if len(pdu) != 2:
            raise LinkError(f"exception answer of {len(pdu)} bytes (an exception answer has 2)")
        raise ModbusException(pdu[1])
    if fc != fncode:
        raise LinkError(f"function code {fc} in the answer to a function code {fncode} request")
    if len(pdu) < 2:
        raise LinkError("answer ends before its byte count")
    if pdu[1] != 2 * count:
        raise LinkError(f"byte count {pdu[1]} in the answer to a read of {count} registers (expected {2 * count})")
    if len(pdu) != 2 + 2 * count:
        raise LinkError(f"{len(pdu) - 2} data bytes after byte count {pdu[1]}")
    data = pdu[2:]
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


# -- Modbus TCP -------------------------------------------------------------------------------


def mbap_request(tid: int, unit: int, pdu: bytes) -> bytes:
    return tid.to_bytes(2, "big") + b"\x00\x00" + (len(pdu) + 1).to_bytes(2, "big") + bytes([unit]) + pdu


def check_mbap_header(header: bytes, tid: int, unit: int, count: int) -> int:
    """The PDU length announced by an answer's MBAP header, after checking it against the request
    (transaction `tid` to `unit`, a read of `count` registers)."""
    got_tid = int.from_bytes(header[0:2], "big")
    protocol = int.from_bytes(header[2:4], "big")
    length = int.from_bytes(header[4:6], "big")
    if got_tid != tid:
        raise LinkError(f"transaction id {got_tid} in the answer to transaction {tid}")
    if protocol != 0:
        raise LinkError(f"protocol id {protocol} in the MBAP header (Modbus is 0)")
    if header[6] != unit:
        raise LinkError(f"answer from unit {header[6]} to a request for unit {unit}")
    if length - 1 not in answer_pdu_lengths(count):
        normal, exception = (n + 1 for n in answer_pdu_lengths(count))
        raise LinkError(
            f"MBAP length {length} in the answer to a read of {count} registers "
            f"(expected {normal}, or {exception} for an exception)"
        )
    return length - 1


# -- Modbus RTU -------------------------------------------------------------------------------


def crc16(data: bytes) -> bytes:
    """Modbus RTU CRC-16, low byte first as sent on the line."""
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc.to_bytes(2, "little")


def rtu_request(unit: int, pdu: bytes) -> bytes:
    body = bytes([unit]) + pdu
    return body + crc16(body)


def rtu_answer_rest(head: bytes, unit: int, fncode: int, count: int) -> int:
    """How many bytes follow the first three of an RTU answer (address, function code and the
    byte count or exception code), after checking those against the request."""
    if head[0] != unit:
        raise LinkError(f"answer from slave {head[0]} to a request for slave {unit}")
    if head[1] == fncode | 0x80:
        return 2  # CRC
    if head[1] != fncode:
        raise LinkError(f"function code {head[1]} in the answer to a function code {fncode} request")
    if head[2] != 2 * count:
        raise LinkError(f"byte count {head[2]} in the answer to a read of {count} registers (expected {2 * count})")
    return 2 * count + 2


def check_rtu_answer(frame: bytes, unit: int, fncode: int, count: int) -> list[int]:
    """The registers of a complete RTU answer frame (checked in full, CRC included)."""
    if len(frame) < 5:
        raise LinkError(f"frame of {len(frame)} bytes (an answer has at least 5)")
    if crc16(frame[:-2]) != frame[-2:]:
        raise LinkError(f"CRC {frame[-2:].hex()} does not match the frame (expected {crc16(frame[:-2]).hex()})")
    if frame[0] != unit:
        raise LinkError(f"answer from slave {frame[0]} to a request for slave {unit}")
    return check_read_answer(frame[1:-2], fncode, count)
