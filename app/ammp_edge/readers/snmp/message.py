"""SNMP messages: GET requests built, answers decoded and checked against the request they answer.

v1 and v2c: SEQUENCE {version, community, PDU}. v3: SEQUENCE {3, header data {msgID, msgMaxSize,
msgFlags, security model 3}, USM parameters, scoped PDU (encrypted with privacy)}. A PDU is
[type] {request-id, error-status, error-index, varbinds}.

An answer is used only when it is a Response PDU with the request's id (and for v3 the message id)
and the version and community sent, authenticated when asked (usm.py), and names exactly the OIDs
asked for in the order asked; anything else is a MessageError naming what was wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import ber
from .ber import BerError

GET, GET_NEXT, RESPONSE, REPORT = 0xA0, 0xA1, 0xA2, 0xA8
PDU_NAMES = {0xA0: "GetRequest", 0xA1: "GetNextRequest", 0xA2: "Response", 0xA3: "SetRequest", 0xA4: "Trap",
             0xA5: "GetBulkRequest", 0xA6: "InformRequest", 0xA7: "SNMPv2-Trap", 0xA8: "Report"}  # fmt: skip
ERRORS = {0: "noError", 1: "tooBig", 2: "noSuchName", 3: "badValue", 4: "readOnly", 5: "genErr", 6: "noAccess",
          7: "wrongType", 8: "wrongLength", 9: "wrongEncoding", 10: "wrongValue", 11: "noCreation",
          12: "inconsistentValue", 13: "resourceUnavailable", 14: "commitFailed", 15: "undoFailed",
          16: "authorizationError", 17: "notWritable", 18: "inconsistentName"}  # fmt: skip
TOO_BIG, NO_SUCH_NAME = 1, 2
WIRE_VERSION = {1: 0, 2: 1, 3: 3}
FLAG_AUTH, FLAG_PRIV, FLAG_REPORTABLE = 1, 2, 4
SECURITY_MODEL_USM = 3
# usmStats counters an agent reports with (RFC 3414)
USM_STATS: dict[tuple[int, ...], str] = {
    (1, 3, 6, 1, 6, 3, 15, 1, 1, 1, 0): "unsupported security level",
    (1, 3, 6, 1, 6, 3, 15, 1, 1, 2, 0): "not in time window",
    (1, 3, 6, 1, 6, 3, 15, 1, 1, 3, 0): "unknown user name",
    (1, 3, 6, 1, 6, 3, 15, 1, 1, 4, 0): "unknown engine id",
    (1, 3, 6, 1, 6, 3, 15, 1, 1, 5, 0): "wrong digest (authentication failed)",
    (1, 3, 6, 1, 6, 3, 15, 1, 1, 6, 0): "decryption error",
}
NOT_IN_TIME_WINDOW, UNKNOWN_ENGINE_ID = (1, 3, 6, 1, 6, 3, 15, 1, 1, 2, 0), (1, 3, 6, 1, 6, 3, 15, 1, 1, 4, 0)


class MessageError(ValueError):
    """An answer that does not answer the request (or is not valid SNMP)."""


class Stray(Exception):
    """A datagram that answers another request (dropped; the wait goes on)."""


@dataclass
class Varbind:
    oid: tuple[int, ...]
    tag: int
    body: bytes


@dataclass
class Pdu:
    kind: int
    request_id: int
    error_status: int
    error_index: int
    varbinds: list[Varbind] = field(default_factory=list)


@dataclass
class Engine:
    """What an SNMPv3 agent told us about itself (discovery, or a report)."""

    engine_id: bytes = b""
    boots: int = 0
    time: int = 0


def dotted(oid: tuple[int, ...]) -> str:
    return ".".join(map(str, oid))


def encode_pdu(kind: int, request_id: int, oids: list[tuple[int, ...]]) -> bytes:
    varbinds = [ber.sequence(ber.oid(o), ber.tlv(ber.NULL, b"")) for o in oids]
    return ber.sequence(ber.integer(request_id), ber.integer(0), ber.integer(0), ber.sequence(*varbinds), tag=kind)


def decode_pdu(reader: ber.Reader) -> Pdu:
    kind, pdu = reader.sub(tuple(PDU_NAMES), "PDU")
    request_id = pdu.integer("request-id")
    status = pdu.integer("error-status")
    index = pdu.integer("error-index")
    _, vbs = pdu.sub(ber.SEQUENCE, "varbind list")
    pdu.done("varbind list")
    out = Pdu(kind, request_id, status, index)
    while not vbs.at_end():
        _, vb = vbs.sub(ber.SEQUENCE, "varbind")
        oid = vb.oid("varbind OID")
        tag, start, stop = vb.next(None, f"value of {dotted(oid)}")
        vb.done("varbind")
        out.varbinds.append(Varbind(oid, tag, reader.data[start:stop]))
    return out


def encode_community(version: int, community: str, pdu: bytes) -> bytes:
    return ber.sequence(ber.integer(WIRE_VERSION[version]), ber.octets(community.encode()), pdu)


def decode_community(data: bytes, version: int, community: str) -> Pdu:
    try:
        outer = ber.Reader(data)
        _, msg = outer.sub(ber.SEQUENCE, "message")
        outer.done("message")
        got = msg.integer("version")
        if got != WIRE_VERSION[version]:
            raise MessageError(f"version {got} in the answer to a version {WIRE_VERSION[version]} request")
        if msg.octets("community") != community.encode():
            raise MessageError("the answer's community is not the one sent")
        pdu = decode_pdu(msg)
        msg.done("PDU")
        return pdu
    except BerError as exc:
        raise MessageError(f"invalid BER: {exc}") from None


def check_answer(pdu: Pdu, request_id: int, oids: list[tuple[int, ...]]) -> None:
    """A Response to this request naming exactly the OIDs asked (an error answer may carry them too)."""
    if pdu.kind != RESPONSE:
        raise MessageError(f"{PDU_NAMES.get(pdu.kind, hex(pdu.kind))} PDU where a Response was expected")
    if pdu.request_id != request_id:
        raise MessageError(f"request id {pdu.request_id} in the answer to request {request_id}")
    if pdu.error_status:
        return  # the caller handles errors; the varbinds of an error answer are not used
    if len(pdu.varbinds) != len(oids):
        raise MessageError(f"{len(pdu.varbinds)} varbinds in the answer to a request for {len(oids)}")
    for i, (vb, oid) in enumerate(zip(pdu.varbinds, oids, strict=True)):
        if vb.oid != oid:
            raise MessageError(f"varbind {i + 1} names {dotted(vb.oid)} where {dotted(oid)} was asked")


# -- v3 -----------------------------------------------------------------------------------------


def encode_usm(engine: Engine, user: str, auth: bytes, priv: bytes) -> bytes:
    return ber.octets(
        ber.sequence(
            ber.octets(engine.engine_id),
            ber.integer(engine.boots),
            ber.integer(engine.time),
            ber.octets(user.encode()),
            ber.octets(auth),
            ber.octets(priv),
        )
    )


def scoped_pdu(engine_id: bytes, context: str, pdu: bytes) -> bytes:
    return ber.sequence(ber.octets(engine_id), ber.octets(context.encode()), pdu)


def encode_v3(msg_id: int, max_size: int, flags: int, usm_params: bytes, data: bytes) -> bytes:
    header = ber.sequence(
        ber.integer(msg_id), ber.integer(max_size), ber.octets(bytes([flags])), ber.integer(SECURITY_MODEL_USM)
    )
    return ber.sequence(ber.integer(3), header, usm_params, data)


@dataclass
class V3Answer:
    msg_id: int
    flags: int
    engine: Engine
    user: bytes
    auth: bytes
    auth_at: int  # where the authentication parameters start in the message (for the check)
    priv: bytes
    data_tag: int
    data: bytes  # the scoped PDU, or its encryption


def decode_v3(data: bytes) -> V3Answer:
    try:
        outer = ber.Reader(data)
        _, msg = outer.sub(ber.SEQUENCE, "message")
        outer.done("message")
        version = msg.integer("version")
        if version != 3:
            raise MessageError(f"version {version} in the answer to a version 3 request")
        _, head = msg.sub(ber.SEQUENCE, "header data")
        msg_id = head.integer("msgID")
        head.integer("msgMaxSize")
        flags = head.octets("msgFlags")
        model = head.integer("msgSecurityModel")
        head.done("header data")
        if len(flags) != 1 or model != SECURITY_MODEL_USM:
            raise MessageError(f"msgFlags of {len(flags)} bytes or security model {model} (USM is 3)")
        _, params = msg.sub(ber.OCTET_STRING, "security parameters")
        _, usm = params.sub(ber.SEQUENCE, "USM parameters")
        params.done("USM parameters")
        engine = Engine(usm.octets("engine id"), usm.integer("engine boots"), usm.integer("engine time"))
        user = usm.octets("user name")
        _, start, stop = usm.next(ber.OCTET_STRING, "authentication parameters")
        priv = usm.octets("privacy parameters")
        usm.done("USM parameters")
        tag, dstart, dstop = msg.next((ber.SEQUENCE, ber.OCTET_STRING), "scoped PDU")
        msg.done("scoped PDU")
        return V3Answer(msg_id, flags[0], engine, user, data[start:stop], start, priv, tag, data[dstart:dstop])
    except BerError as exc:
        raise MessageError(f"invalid BER: {exc}") from None


def decode_scoped(body: bytes) -> tuple[bytes, Pdu]:
    """(context engine id, PDU) of a scoped PDU's contents."""
    try:
        r = ber.Reader(body, where="scoped PDU")
        engine_id = r.octets("context engine id")
        r.octets("context name")
        pdu = decode_pdu(r)
        r.done("PDU")
        return engine_id, pdu
    except BerError as exc:
        raise MessageError(f"invalid BER: {exc}") from None
