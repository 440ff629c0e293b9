"""Answers to a different question are never decoded: hostile Modbus TCP devices (raw sockets) and
scripted RTU slaves on socat pty pairs send frames that do not answer the request (wrong function
code, byte count, MBAP length, protocol, transaction or unit id, slave address, CRC, frames glued to
or ahead of the answer, exceptions of the wrong shape). Every bad frame carries 0xDEAD (57005) in
its registers; it must never appear in a readout or in `ammp-edge read --json`, the error must name
what was wrong, and the next good answer is decoded again."""

from __future__ import annotations

import json
import subprocess

import pytest

from ammp_edge.bus.poller import BusPoller
from ammp_edge.core import config as cfg
from helpers.common import AMMP_EDGE, REPO, child_env, write_json
from helpers.hostile import DEAD, HostileTcpDevice, TcpRequest, dead_tcp, good_tcp, mbap, value_at
from helpers.serial_lines import FakeSlave, crc16, exception_response, pty_pair, read_response

T0 = 1_700_000_000
# fc3 0..5 (a, b, c with a gap: one block of 6 registers), fc4 40 (d): two requests per cycle
DRIVER = {
    "fields": {
        "a": {"register": 0, "datatype": "uint16"},
        "b": {"register": 1, "datatype": "uint16"},
        "c": {"register": 5, "datatype": "uint16"},
        "d": {"register": 40, "fncode": 4, "datatype": "uint16"},
    }
}
GOOD = {"a": value_at(0), "b": value_at(1), "c": value_at(5), "d": value_at(40)}


def site(address: dict, reading_type: str = "modbustcp", timeout: float = 0.5) -> dict:
    return {
        "drivers": {"t16": DRIVER},
        "devices": {
            "dev": {
                "driver": "t16",
                "reading_type": reading_type,
                "vendor_id": "v",
                "timeout": timeout,
                "address": address,
            }
        },
        "readings": {f: {"device": "dev", "var": f} for f in DRIVER["fields"]},
        "read_interval": 10,
    }


def poller_for(raw: dict) -> BusPoller:
    config = cfg.load(raw, {})
    assert not config.errors, config.errors
    ((bus_id, devices),) = config.buses().items()
    return BusPoller(bus_id, devices, config.read_interval)


def values(readout: dict) -> dict:
    (rec,) = readout["devices"]
    return {k: v for k, v in rec.items() if not k.startswith("_")}


def errors(readout: dict) -> str:
    return "; ".join(readout["errors"].get("dev", []))


def until_good(poller: BusPoller, t: int, cycles: int = 5) -> dict:
    """Poll until the device is read again after its backoff; the readout with values."""
    for i in range(1, cycles + 1):
        readout = poller.poll(t + 10 * i)
        assert DEAD not in values(readout).values(), readout
        if values(readout):
            return readout
    raise AssertionError(f"not read again within {cycles} cycles: {readout}")


# -- Modbus TCP -------------------------------------------------------------------------------


def wrong_fncode(req: TcpRequest):
    return dead_tcp(req, fncode=4 if req.fncode == 3 else 3)


def short_byte_count(req: TcpRequest):  # byte count says one register less; MBAP length fits the request
    return dead_tcp(req, byte_count=2 * req.count - 2)


def long_byte_count(req: TcpRequest):  # one register more, and a MBAP length that fits it
    return dead_tcp(req, count=req.count + 1)


def short_data(req: TcpRequest):  # one register less, byte count and MBAP length consistent with it
    return dead_tcp(req, count=req.count - 1) if req.count > 1 else dead_tcp(req, count=2)


def mbap_too_long(req: TcpRequest):  # announces 255 bytes, sends a frame of the right shape
    return dead_tcp(req, length=255)


def mbap_too_short(req: TcpRequest):
    return dead_tcp(req, length=2 * req.count + 1)


def mbap_zero(req: TcpRequest):
    return dead_tcp(req, length=0)


def wrong_unit(req: TcpRequest):
    return dead_tcp(req, unit=(req.unit + 6) % 256)


def wrong_tid(req: TcpRequest):
    return dead_tcp(req, tid=(req.tid + 1) & 0xFFFF)


def wrong_protocol(req: TcpRequest):
    return dead_tcp(req, protocol=1)


def extra_frame_glued(req: TcpRequest):  # the answer and, in the same segment, one for the next transaction
    return good_tcp(req) + dead_tcp(req, tid=(req.tid + 1) & 0xFFFF)


def extra_frame_ahead(req: TcpRequest):  # a stray frame for "the next" transaction id, then the answer
    return dead_tcp(req, tid=(req.tid + 1) & 0xFFFF) + good_tcp(req)


def exception_too_long(req: TcpRequest):  # an exception answer with register data behind it
    return mbap(req.tid, req.unit, bytes([req.fncode | 0x80, 2]) + DEAD.to_bytes(2, "big"))


def exception_other_fncode(req: TcpRequest):
    return mbap(req.tid, req.unit, bytes([0x84 if req.fncode == 3 else 0x83, 2]))


def dripped(req: TcpRequest):  # a good answer in three pieces: must be put together, not refused
    frame = good_tcp(req)
    return [frame[:3], frame[3:9], frame[9:]]


TCP_ATTACKS = [
    ("wrong function code", wrong_fncode, "function code 4 in the answer to a function code 3 request"),
    ("byte count short", short_byte_count, "byte count 10 in the answer to a read of 6 registers (expected 12)"),
    ("byte count long", long_byte_count, "MBAP length 17 in the answer to a read of 6 registers (expected 15"),
    ("fewer registers", short_data, "MBAP length 13 in the answer to a read of 6 registers (expected 15"),
    ("MBAP length too long", mbap_too_long, "MBAP length 255"),
    ("MBAP length too short", mbap_too_short, "MBAP length 13"),
    ("MBAP length zero", mbap_zero, "MBAP length 0"),
    ("wrong unit id", wrong_unit, "answer from unit 9 to a request for unit 3"),
    ("wrong transaction id", wrong_tid, "transaction id"),
    ("wrong protocol id", wrong_protocol, "protocol id 1"),
    ("extra frame with the next transaction id", extra_frame_glued, "came with the answer"),
    ("stray frame ahead of the answer", extra_frame_ahead, "transaction id"),
    ("exception with data", exception_too_long, "MBAP length 5"),
    ("exception for another function", exception_other_fncode, "function code 132"),
]


@pytest.mark.parametrize("name, attack, message", TCP_ATTACKS, ids=[a[0] for a in TCP_ATTACKS])
def test_tcp_answer_to_another_question_is_never_decoded(name, attack, message):
    mode = {"bad": True}
    dev = HostileTcpDevice(lambda req, i: attack(req) if mode["bad"] else good_tcp(req))
    poller = poller_for(site({"host": "127.0.0.1", "port": dev.port, "unit_id": 3}))
    try:
        first = poller.poll(T0)
        assert DEAD not in values(first).values(), first
        assert values(first) == {}, f"{name}: nothing of a bad answer may be decoded: {first}"
        assert message in errors(first), errors(first)
        connections = dev.connections
        mode["bad"] = False
        readout = until_good(poller, T0)
        assert values(readout) == GOOD
        assert readout["errors"] == {}
        assert dev.connections > connections or name.startswith("exception"), "the connection was reset"
    finally:
        poller.close()
        dev.close()


def test_tcp_bad_answer_to_one_block_spares_the_others():
    """A wrong answer to the fc4 block only: the fc3 block is still decoded, d is not, and the
    connection is made again for the next request."""

    def script(req, i):
        return wrong_unit(req) if req.fncode == 4 else good_tcp(req)

    dev = HostileTcpDevice(script)
    poller = poller_for(site({"host": "127.0.0.1", "port": dev.port, "unit_id": 3}))
    try:
        for cycle in range(3):
            readout = poller.poll(T0 + 10 * cycle)
            assert values(readout) == {"a": GOOD["a"], "b": GOOD["b"], "c": GOOD["c"]}
            assert "registers 40..40 (d): bad answer from unit 3: answer from unit 9" in errors(readout)
            assert not poller.health["dev"].failures  # the device answered: not down
        assert dev.connections == 3  # reset after each bad answer
    finally:
        poller.close()
        dev.close()


def test_tcp_exceptions_are_decoded_as_exceptions():
    """Well-formed exception answers keep the connection: illegal data address splits the block,
    device failure fails its fields; no register of an exception frame is ever a value."""

    def script(req, i):
        if req.fncode == 4:
            return mbap(req.tid, req.unit, bytes([0x84, 4]))
        if req.count > 2:  # the merged block 0..5: refused
            return mbap(req.tid, req.unit, bytes([0x83, 2]))
        return good_tcp(req)

    dev = HostileTcpDevice(script)
    poller = poller_for(site({"host": "127.0.0.1", "port": dev.port, "unit_id": 3}))
    try:
        readout = poller.poll(T0)
        assert values(readout) == {"a": GOOD["a"], "b": GOOD["b"], "c": GOOD["c"]}
        assert "exception 4 (device failure)" in errors(readout)
        assert [(r.fncode, r.address, r.count) for r in dev.requests] == [(3, 0, 6), (3, 0, 2), (3, 5, 1), (4, 40, 1)]
        assert dev.connections == 1
    finally:
        poller.close()
        dev.close()


def test_tcp_answer_in_pieces_is_put_together():
    dev = HostileTcpDevice(lambda req, i: dripped(req))
    poller = poller_for(site({"host": "127.0.0.1", "port": dev.port, "unit_id": 3}))
    try:
        readout = poller.poll(T0)
        assert values(readout) == GOOD and readout["errors"] == {}
    finally:
        poller.close()
        dev.close()


def test_tcp_stray_frame_between_requests_resets_the_connection():
    """An extra frame that arrives after the answer (not with it) waits on the connection until the
    next request: the connection is made again first, so it is never read as that request's answer."""
    import time

    def script(req, i):
        if i == 1:  # the last request of the first cycle (fc4, one register)
            return [good_tcp(req), dead_tcp(req, tid=(req.tid + 1) & 0xFFFF, fncode=3, count=6)]
        return good_tcp(req)

    dev = HostileTcpDevice(script)
    poller = poller_for(site({"host": "127.0.0.1", "port": dev.port, "unit_id": 3}))
    try:
        first = poller.poll(T0)
        time.sleep(0.1)  # the stray frame (sent 20 ms after the answer) is there by now
        assert values(first) == GOOD
        second = poller.poll(T0 + 10)
        assert values(second) == GOOD
        assert poller.transport.dropped == 7 + 2 + 12
        assert dev.connections >= 2
    finally:
        poller.close()
        dev.close()


@pytest.mark.parametrize(
    "name, attack, message",
    [a for a in TCP_ATTACKS if a[0] in ("wrong function code", "byte count short", "stray frame ahead of the answer")],
)
def test_cli_read_json_never_shows_a_bad_frame(tmp_path, name, attack, message):
    dev = HostileTcpDevice(lambda req, i: attack(req))
    try:
        conf = write_json(tmp_path / "site.json", site({"host": "127.0.0.1", "port": dev.port, "unit_id": 3}))
        proc = subprocess.run(
            [*AMMP_EDGE, "read", "--config", str(conf), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            env=child_env(AE_ROOT_DIR=REPO),
        )
    finally:
        dev.close()
    assert proc.returncode == 0, proc.stderr
    assert str(DEAD) not in proc.stdout
    assert json.loads(proc.stdout)["r"] == [{"_d": "dev", "_vid": "v"}]
    assert message in proc.stderr


# -- Modbus RTU -------------------------------------------------------------------------------


@pytest.fixture
def line(tmp_path):
    with pty_pair(tmp_path) as ends:
        yield ends


def good_rtu(req):
    unit, fncode, address, count = req
    return read_response(unit, fncode, [value_at(a) for a in range(address, address + count)])


def rtu_frame(body: bytes) -> bytes:
    return body + crc16(body)


def dead_rtu(req, unit=None, fncode=None, count=None, byte_count=None):
    u, fc, _, n = req
    n = n if count is None else count
    data = DEAD.to_bytes(2, "big") * n
    return rtu_frame(
        bytes([u if unit is None else unit, fc if fncode is None else fncode])
        + bytes([len(data) if byte_count is None else byte_count])
        + data
    )


RTU_ATTACKS = [
    ("wrong slave address", lambda r: dead_rtu(r, unit=9), "answer from slave 9 to a request for slave 1"),
    ("wrong function code", lambda r: dead_rtu(r, fncode=4 if r[1] == 3 else 3), "function code 4 in the answer"),
    ("byte count short", lambda r: dead_rtu(r, count=r[3] - 1 or 2), "byte count 10 in the answer to a read of 6"),
    ("byte count long", lambda r: dead_rtu(r, count=r[3] + 1), "byte count 14 in the answer to a read of 6"),
    ("byte count lies", lambda r: dead_rtu(r, byte_count=2 * r[3] + 2), "byte count 14"),
    ("bad CRC", lambda r: dead_rtu(r)[:-1] + bytes([dead_rtu(r)[-1] ^ 0x55]), "CRC"),
    ("extra frame glued", lambda r: good_rtu(r) + dead_rtu(r), "followed the answer without a pause"),
    ("stray frame ahead", lambda r: dead_rtu(r) + good_rtu(r), "followed the answer without a pause"),
    ("exception with data", lambda r: rtu_frame(bytes([1, r[1] | 0x80, 2]) + b"\xde\xad"), "followed the answer"),
    ("exception bad CRC", lambda r: exception_response(1, r[1], 2)[:-1] + b"\x00", "CRC"),
    ("exception for another function", lambda r: exception_response(1, 4 if r[1] == 3 else 3, 2), "function code 132"),
]


@pytest.mark.parametrize("name, attack, message", RTU_ATTACKS, ids=[a[0] for a in RTU_ATTACKS])
def test_rtu_answer_to_another_question_is_never_decoded(name, attack, message, line):
    mode = {"bad": True}
    with FakeSlave(line[1], lambda req, i: attack(req) if mode["bad"] else good_rtu(req)):
        poller = poller_for(site({"device": line[0], "slaveaddr": 1}, "modbusrtu"))
        try:
            first = poller.poll(T0)
            assert DEAD not in values(first).values(), first
            assert values(first) == {}, f"{name}: nothing of a bad answer may be decoded: {first}"
            assert message in errors(first), errors(first)
            assert "bad frame from slave 1" in errors(first)
            mode["bad"] = False
            readout = until_good(poller, T0)
            assert values(readout) == GOOD
            assert readout["errors"] == {}
        finally:
            poller.close()


def test_rtu_exceptions_split_and_fail_as_on_tcp(line):
    def script(req, i):
        unit, fncode, _, count = req
        if fncode == 4:
            return exception_response(unit, fncode, 4)
        if count > 2:
            return exception_response(unit, fncode, 2)
        return good_rtu(req)

    with FakeSlave(line[1], script) as slave:
        poller = poller_for(site({"device": line[0], "slaveaddr": 1}, "modbusrtu"))
        try:
            readout = poller.poll(T0)
            assert values(readout) == {"a": GOOD["a"], "b": GOOD["b"], "c": GOOD["c"]}
            assert "exception 4 (device failure)" in errors(readout)
            assert slave.requests == [(1, 3, 0, 6), (1, 3, 0, 2), (1, 3, 5, 1), (1, 4, 40, 1)]
        finally:
            poller.close()
