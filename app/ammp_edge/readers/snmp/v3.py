"""An SNMPv3 session with one agent: engine discovery, time window, authenticated and encrypted GETs.

Discovery (RFC 3414 4): an unauthenticated, reportable GET without varbinds; the agent's Report
carries its engine id, boots and time. The engine time is then counted on from our monotonic clock.
A Report "not in time window" (the agent rebooted, or its clock moved) takes the new boots and time
and the request is sent once more; "unknown engine id" discovers again. Other reports (unknown user,
wrong digest, unsupported security level, decryption error) are a LinkError naming the report.
An answer to an authenticated request must be authenticated (HMAC checked over the whole message)
and, with privacy, encrypted; a Response at a lower level is refused.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING

from .. import modbus
from . import ber, message as msg
from .message import MessageError, Stray
from .usm import User, UsmError

if TYPE_CHECKING:
    from . import SnmpDevice


class V3Session:
    def __init__(self, address: dict, device: SnmpDevice):
        self.device = device
        self.user = User(
            str(address["user"]),
            address.get("auth_protocol"),
            str(address.get("auth_password", "")),
            address.get("priv_protocol"),
            str(address.get("priv_password", "")),
        )
        self.context = str(address.get("context", ""))
        self.engine: msg.Engine | None = None
        self.engine_at = 0.0  # monotonic time the engine's boots/time were learned

    def _msg_id(self) -> int:
        return random.randrange(1, 0x7FFFFFFF)

    def _now(self) -> msg.Engine:
        assert self.engine is not None
        elapsed = int(time.monotonic() - self.engine_at)
        return msg.Engine(self.engine.engine_id, self.engine.boots, min(self.engine.time + elapsed, 0x7FFFFFFF))

    def _learn(self, engine: msg.Engine) -> None:
        self.engine, self.engine_at = engine, time.monotonic()

    def discover(self, timeout: float) -> None:
        mid, rid = self._msg_id(), self._msg_id()
        pdu = msg.scoped_pdu(b"", "", msg.encode_pdu(msg.GET, rid, []))
        payload = msg.encode_v3(mid, 65507, msg.FLAG_REPORTABLE, msg.encode_usm(msg.Engine(), "", b"", b""), pdu)

        def accept(data: bytes) -> msg.Engine:
            ans = msg.decode_v3(data)
            if ans.msg_id != mid:
                raise Stray(f"message id {ans.msg_id} (waiting for {mid})")
            if not ans.engine.engine_id:
                raise MessageError("the discovery answer carries no engine id")
            return ans.engine

        self._learn(self.device.transport.exchange(self.device.host, self.device.port, payload, timeout, accept))

    def get(self, oids: list[tuple[int, ...]], timeout: float) -> msg.Pdu:
        deadline = time.monotonic() + timeout
        for attempt in range(3):
            if self.engine is None:
                self.discover(timeout)
            left = deadline - time.monotonic()
            if left <= 0:
                raise modbus.DeviceSilent(f"no time left for a request to {self.device.host} after discovery")
            result = self._get_once(oids, left)
            if isinstance(result, msg.Pdu):
                return result
            if result == msg.UNKNOWN_ENGINE_ID or attempt == 2:
                self.engine = None  # discover again
        raise modbus.LinkError(f"{self.device.host}: the agent keeps reporting its engine time or id changed")

    def _get_once(self, oids: list[tuple[int, ...]], timeout: float) -> msg.Pdu | tuple[int, ...]:
        engine, user = self._now(), self.user
        mid, rid = self._msg_id(), self._msg_id()
        scoped = msg.scoped_pdu(engine.engine_id, self.context, msg.encode_pdu(msg.GET, rid, oids))
        salt = b""
        if user.priv_protocol:
            cipher, salt = user.encrypt(scoped, engine.engine_id, engine.boots, engine.time)
            data = ber.octets(cipher)
        else:
            data = scoped
        placeholder = bytes(user.auth_length)
        usm_params = msg.encode_usm(engine, user.name, placeholder, salt)
        payload = msg.encode_v3(mid, 65507, user.flags | msg.FLAG_REPORTABLE, usm_params, data)
        if user.auth_protocol:
            at = payload.index(usm_params) + len(usm_params) - len(ber.octets(salt)) - len(placeholder)
            payload = payload[:at] + user.sign(payload, engine.engine_id) + payload[at + len(placeholder) :]

        def accept(raw: bytes) -> msg.Pdu | tuple[int, ...]:
            ans = msg.decode_v3(raw)
            if ans.msg_id != mid:
                raise Stray(f"message id {ans.msg_id} (waiting for {mid})")
            if ans.flags & msg.FLAG_AUTH:
                if not user.auth_protocol:
                    raise MessageError("an authenticated answer to an unauthenticated request")
                zeroed = raw[: ans.auth_at] + bytes(len(ans.auth)) + raw[ans.auth_at + len(ans.auth) :]
                try:
                    user.verify(zeroed, ans.auth, engine.engine_id)
                except UsmError as exc:
                    raise MessageError(str(exc)) from None
            if ans.flags & msg.FLAG_PRIV:
                if ans.data_tag != ber.OCTET_STRING or not user.priv_protocol:
                    raise MessageError("the encrypted answer is not an OCTET STRING, or was not asked for")
                try:
                    plain = user.decrypt(ans.data, engine.engine_id, ans.engine.boots, ans.engine.time, ans.priv)
                except UsmError as exc:
                    raise MessageError(str(exc)) from None
                try:
                    _, inner = ber.Reader(plain, where="decrypted scoped PDU").sub(ber.SEQUENCE, "scoped PDU")
                except ber.BerError as exc:
                    raise MessageError(f"decryption gave no scoped PDU (wrong privacy key?): {exc}") from None
                body = plain[inner.pos : inner.end]
            elif ans.data_tag == ber.SEQUENCE:
                body = ans.data
            else:
                raise MessageError("an encrypted answer to a request without privacy")
            _, pdu = msg.decode_scoped(body)
            if pdu.kind == msg.REPORT:
                oid: tuple[int, ...] = pdu.varbinds[0].oid if pdu.varbinds else ()
                if oid in (msg.NOT_IN_TIME_WINDOW, msg.UNKNOWN_ENGINE_ID):
                    if ans.engine.engine_id:
                        self._learn(ans.engine)
                    return oid
                raise MessageError(f"the agent reports {msg.USM_STATS.get(oid, msg.dotted(oid))}")
            if (ans.flags & 3) != user.flags:
                raise MessageError(f"answer at security flags {ans.flags & 3}, request at {user.flags}")
            if pdu.request_id != rid:
                raise Stray(f"request id {pdu.request_id} (waiting for {rid})")
            msg.check_answer(pdu, rid, oids)
            if ans.engine.engine_id == engine.engine_id:
                self._learn(ans.engine)  # authenticated: keeps the time window
            return pdu

        return self.device.transport.exchange(self.device.host, self.device.port, payload, timeout, accept)
