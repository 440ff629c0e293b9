"""Modbus RTU on real serial lines: a socat pty pair, the pymodbus RTU server (our Simulator with
serial_port=) or a scripted fake slave on one end, our RtuTransport / ModbusDevice / BusPoller on
the other. Nothing is mocked.

A pty moves bytes instantly and ignores baud rate and parity; the settings are still applied to
both ends (checked through termios), and line timing is emulated where a test needs it.
"""

from __future__ import annotations

import json
import random
import subprocess
import termios
import time

import pytest

from ammp_edge.bus.poller import BusPoller
from ammp_edge.core import config as cfg
from ammp_edge.readers.modbus import DeviceSilent, LinkError, ModbusException
from ammp_edge.readers.modbus_rtu import RtuTransport
from ammp_edge.simulate import Simulator
from helpers.common import AMMP_EDGE, REPO, child_env, write_json
from helpers.serial_lines import FakeSlave, crc16, exception_response, pty_pair, read_response, write_raw

# float32-exact values, so decoded values compare equal
SDM_VALUES = {
    "V_L1": 230.5,
    "V_L2": 231.25,
    "V_L3": 229.75,
    "I_L1": 10.5,
    "I_L2": 11.25,
    "I_L3": 12.0,
    "I_total": 33.75,
    "P_L1": 2400.0,
    "P_L2": 2500.5,
    "P_L3": 2600.25,
    "P_total": 7500.75,
    "freq": 50.0,
    "E_imported": 125500.0,
    "E_exported": 2250.0,
    "E_total": 127750.0,  # kWh in the registers: 125.5 ...
    "S_L1": 2500.0,
    "S_L2": 2600.0,
    "S_L3": 2700.0,
    "Q_L1": -100.5,
    "Q_L2": 0.0,
    "Q_L3": 100.25,
    "pf_L1": 0.5,
    "pf_L2": 0.75,
    "pf_L3": -0.875,
}
T0 = 1_700_000_000


@pytest.fixture
def line(tmp_path):
    """(master end, slave end) of a fresh pty pair."""
    with pty_pair(tmp_path) as ends:
        yield ends


@pytest.fixture
def rtu_sim(line):
    """Factory: rtu_sim({unit: driver}, **kw) -> Simulator serving RTU on the slave end; stopped after."""
    started = []

    def make(units, **kw):
        sim = Simulator(units, serial_port=line[1], **kw).start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


def meter_config(port: str, slaves=(1,), timeout: float = 1.0, vars_=None, **addr) -> dict:
    vars_ = vars_ or list(SDM_VALUES)
    devices = {
        f"meter{s}": {
            "driver": "eastron_sdm530",
            "reading_type": "modbusrtu",
            "vendor_id": f"m{s}",
            "timeout": timeout,
            "address": {"device": port, "slaveaddr": s, **addr},
        }
        for s in slaves
    }
    readings = {f"{d}_{v}": {"device": d, "var": v} for d in devices for v in vars_}
    return {"devices": devices, "readings": readings, "read_interval": 10}


def make_poller(raw: dict, drivers: dict) -> BusPoller:
    config = cfg.load(raw, drivers)
    assert not config.errors, config.errors
    ((bus_id, devices),) = config.buses().items()
    return BusPoller(bus_id, devices, config.read_interval)


def by_device(readout: dict) -> dict:
    return {r["_d"]: r for r in readout["devices"]}


def sdm_image(builtin_drivers, values=SDM_VALUES) -> dict[int, int]:
    """The input registers of an SDM530 with these values (the simulator's encoder, not started)."""
    return Simulator({1: builtin_drivers["eastron_sdm530"]}, port=0, values={1: values}).registers(1)[4]


def answer_from(image: dict[int, int]):
    def regs(req):
        unit, fncode, address, count = req
        return read_response(unit, fncode, [image.get(a, 0) for a in range(address, address + count)])

    return regs


# ---------------------------------------------------------------------------------------------


def test_sdm530_values_over_rtu(line, rtu_sim, builtin_drivers):
    sim = rtu_sim({1: builtin_drivers["eastron_sdm530"]}, values={1: SDM_VALUES})
    poller = make_poller(meter_config(line[0]), builtin_drivers)
    try:
        readout = poller.poll(T0)
    finally:
        poller.close()
    assert readout["errors"] == {}
    rec = by_device(readout)["meter1"]
    assert {k: rec[k] for k in SDM_VALUES} == SDM_VALUES
    # 24 fields, registers 0..35, 48..53, 70..75, 342..343: four requests with the RTU max_gap of 8
    assert readout["requests"] == 4
    assert sorted(sim.seen) == [(1, 4, 0, 36), (1, 4, 48, 6), (1, 4, 70, 6), (1, 4, 342, 2)]


def test_two_slaves_one_silent(line, rtu_sim, builtin_drivers):
    sim = rtu_sim({1: builtin_drivers["eastron_sdm530"]}, values={1: SDM_VALUES})
    # the silent slave first: its timeout (and the late-answer window after it) must not hurt slave 1
    poller = make_poller(
        meter_config(line[0], slaves=(7, 1), timeout=0.4, vars_=["V_L1", "P_total", "E_total"]), builtin_drivers
    )
    try:
        started = time.monotonic()
        readout = poller.poll(T0)
        took = time.monotonic() - started
        recs = by_device(readout)
        assert recs["meter1"]["V_L1"] == 230.5
        assert recs["meter1"]["P_total"] == 7500.75
        assert recs["meter1"]["E_total"] == 127750.0
        assert recs["meter7"] == {"_d": "meter7", "_vid": "m7"}  # published empty, as upstream
        assert list(readout["errors"]) == ["meter7"]
        assert "no answer from slave 7" in readout["errors"]["meter7"][0]
        assert poller.health["meter7"].failures == 1 and poller.health["meter1"].failures == 0
        # the silent slave cost two timeouts (its first block, then one field alone: does it answer at
        # all?), each with the late-answer window after it
        assert 0.75 < took < 2.5
        assert [s[0] for s in sim.seen].count(7) == 2  # two requests, then the device is given up for the cycle
        # second cycle: still silent, still reported, slave 1 still fine; now one timeout (the probe first)
        started = time.monotonic()
        readout = poller.poll(T0 + 10)
        took = time.monotonic() - started
        assert by_device(readout)["meter1"]["V_L1"] == 230.5
        assert "meter7" in readout["errors"]
        assert [s[0] for s in sim.seen].count(7) == 3
        assert 0.35 < took < 1.5
    finally:
        poller.close()


def test_served_unit_switched_off_then_back(line, rtu_sim, builtin_drivers):
    sim = rtu_sim(
        {1: builtin_drivers["eastron_sdm530"], 2: builtin_drivers["eastron_sdm530"]},
        values={1: SDM_VALUES, 2: {**SDM_VALUES, "V_L1": 100.0}},
    )
    sim.silent_units.add(2)
    poller = make_poller(meter_config(line[0], slaves=(1, 2), timeout=0.3, vars_=["V_L1"]), builtin_drivers)
    try:
        readout = poller.poll(T0)
        assert by_device(readout)["meter1"]["V_L1"] == 230.5
        assert "meter2" in readout["errors"]
        sim.silent_units.clear()
        readout = poller.poll(T0 + 10)  # failures == 1: not backed off yet
        assert readout["errors"] == {}
        assert by_device(readout)["meter2"]["V_L1"] == 100.0
    finally:
        poller.close()


def test_refused_merged_block_is_split_and_the_split_plan_is_kept(line, rtu_sim, builtin_drivers):
    # strict: registers 50..51 (between I_total and P_total) do not exist; the planner merges 48..53
    sim = rtu_sim({1: builtin_drivers["eastron_sdm530"]}, values={1: SDM_VALUES}, strict=True)
    poller = make_poller(meter_config(line[0], timeout=2.0), builtin_drivers)
    try:
        started = time.monotonic()
        first = poller.poll(T0)
        took = time.monotonic() - started
        assert first["errors"] == {}
        assert {k: by_device(first)["meter1"][k] for k in SDM_VALUES} == SDM_VALUES
        assert (1, 4, 48, 6) in sim.seen
        assert first["requests"] == 6  # 4 planned, one refused, split into two
        # an exception answer returns at once, not after the 2 s timeout
        assert took < 1.0
        assert sim.requests == 5  # refused requests never reach the simulator's counter; sim.seen has them all
        n, sim.requests = len(sim.seen), 0
        second = poller.poll(T0 + 10)
        assert second["errors"] == {}
        assert second["requests"] == sim.requests == 5 == len(sim.seen) - n  # nothing refused any more
        assert sorted(sim.seen[n:]) == [(1, 4, 0, 36), (1, 4, 48, 2), (1, 4, 52, 2), (1, 4, 70, 6), (1, 4, 342, 2)]
        assert by_device(second)["meter1"]["P_total"] == 7500.75
    finally:
        poller.close()


def test_exception_answer_does_not_cost_the_timeout(line, rtu_sim, builtin_drivers):
    rtu_sim({1: builtin_drivers["eastron_sdm530"]}, values={1: SDM_VALUES}, strict=True)
    tr = RtuTransport(line[0])
    try:
        started = time.monotonic()
        with pytest.raises(ModbusException) as err:
            tr.read(1, 4, 40, 2, timeout=3.0)
        assert err.value.code == 2
        assert time.monotonic() - started < 0.5
        assert tr.read(1, 4, 0, 2, timeout=3.0) == [0x4366, 0x8000]  # 230.5 as float32: the line is in sync
    finally:
        tr.close()


@pytest.mark.parametrize(
    "name, garbage",
    [
        ("bad crc", lambda good: good[:-2] + bytes([good[-2] ^ 0xFF, good[-1]])),
        ("random bytes", lambda good: bytes(random.Random(7).randrange(256) for _ in range(len(good)))),
        ("short frame", lambda good: good[:5]),
        ("noise then the answer", lambda good: b"\x00\xff\x13" + good),
    ],
)
def test_garbage_is_a_link_error_for_that_block_and_the_next_cycle_works(name, garbage, line, builtin_drivers):
    image = sdm_image(builtin_drivers)
    good = answer_from(image)
    bad_index = 1  # the second request of the first cycle (registers 48..53)

    def script(req, i):
        return garbage(good(req)) if i == bad_index else good(req)

    with FakeSlave(line[1], script) as slave:
        poller = make_poller(meter_config(line[0], timeout=0.3), builtin_drivers)
        try:
            first = poller.poll(T0)
            errors = first["errors"]["meter1"]
            assert len(errors) == 1 and "registers 48..53" in errors[0]
            assert "bad frame" in errors[0] or "no answer" in errors[0], errors
            rec = by_device(first)["meter1"]
            assert rec["V_L1"] == 230.5 and rec["freq"] == 50.0 and rec["E_total"] == 127750.0  # other blocks read
            assert "I_total" not in rec and "P_total" not in rec
            assert not poller.health["meter1"].failures  # the device answered: not counted as down
            second = poller.poll(T0 + 10)
            assert second["errors"] == {}
            assert {k: by_device(second)["meter1"][k] for k in SDM_VALUES} == SDM_VALUES
        finally:
            poller.close()
    assert slave.requests[bad_index] == (1, 4, 48, 6)


def test_garbage_on_the_first_request_fails_the_device_for_that_cycle_only(line, builtin_drivers):
    good = answer_from(sdm_image(builtin_drivers))
    with FakeSlave(line[1], lambda req, i: b"\x01\x04\x48garbage!" if i == 0 else good(req)):
        poller = make_poller(meter_config(line[0], timeout=0.3), builtin_drivers)
        try:
            first = poller.poll(T0)
            assert "bad frame" in first["errors"]["meter1"][0]
            assert poller.health["meter1"].failures == 1
            second = poller.poll(T0 + 10)  # first failure: retried in the next cycle
            assert second["errors"] == {}
            assert by_device(second)["meter1"]["V_L1"] == 230.5
        finally:
            poller.close()


def test_stray_bytes_on_an_idle_line_are_dropped_before_the_request(line, rtu_sim, builtin_drivers):
    rtu_sim({1: builtin_drivers["eastron_sdm530"]}, values={1: SDM_VALUES})
    poller = make_poller(meter_config(line[0], vars_=["V_L1"]), builtin_drivers)
    try:
        assert poller.poll(T0)["errors"] == {}
        write_raw(line[1], bytes(range(0, 250, 7)))  # noise from the slave side, between cycles
        time.sleep(0.05)
        readout = poller.poll(T0 + 10)
        assert readout["errors"] == {}
        assert by_device(readout)["meter1"]["V_L1"] == 230.5
        assert poller.transport.discarded == len(range(0, 250, 7))
    finally:
        poller.close()


def test_even_parity_two_stop_bits_19200_applied_on_both_ends(line, rtu_sim, builtin_drivers):
    """A pty keeps the baud rate and the stop bits but clears parity and the data size (Linux pty
    driver), so parity is checked as configured on the port objects; the read must work with it
    (re-applying settings a pty refused fails with EINVAL: the transport must not do that per read)."""
    sim = rtu_sim(
        {1: builtin_drivers["eastron_sdm530"]}, values={1: SDM_VALUES}, baudrate=19200, parity="even", stopbits=2
    )
    poller = make_poller(
        meter_config(line[0], baudrate=19200, parity="even", stopbits=2, vars_=["V_L1", "E_total"]), builtin_drivers
    )
    try:
        for t in (T0, T0 + 10):
            readout = poller.poll(t)
            assert readout["errors"] == {}
            assert by_device(readout)["meter1"]["V_L1"] == 230.5
        master = poller.transport.line
        assert (master.baudrate, master.parity, master.stopbits, master.bytesize) == (19200, "E", 2, 8)
        slave = sim._server.transport.sync_serial
        assert (slave.baudrate, slave.stopbits) == (19200, 2)
        assert sim.serial_settings["parity"] == "E"
        for fd in (master.fd, slave.fd):  # what the tty layer holds for each end
            _, _, cflag, _, ispeed, ospeed, _ = termios.tcgetattr(fd)
            assert cflag & termios.CSTOPB, "two stop bits"
            assert ispeed == ospeed == termios.B19200
    finally:
        poller.close()


def test_odd_parity_and_7_data_bits_reach_the_port(line):
    tr = RtuTransport(line[0], baudrate=4800, bytesize=7, parity="odd", stopbits=1)
    try:
        with FakeSlave(line[1], lambda req, i: None):
            for _ in range(2):
                with pytest.raises(DeviceSilent):
                    tr.read(1, 3, 0, 1, timeout=0.1)
        assert (tr.line.baudrate, tr.line.bytesize, tr.line.parity, tr.line.stopbits) == (4800, 7, "O", 1)
        _, _, cflag, _, ispeed, _, _ = termios.tcgetattr(tr.line.fd)
        assert ispeed == termios.B4800 and not cflag & termios.CSTOPB
        assert tr.char_time == pytest.approx(10 / 4800)  # start, 7 data, parity, stop
    finally:
        tr.close()


def test_port_that_does_not_exist_is_a_failed_device(tmp_path, builtin_drivers):
    poller = make_poller(meter_config(str(tmp_path / "ttyUSB9"), vars_=["V_L1"]), builtin_drivers)
    try:
        readout = poller.poll(T0)
        assert "cannot open" in readout["errors"]["meter1"][0]
        assert poller.health["meter1"].failures == 1
    finally:
        poller.close()


def test_simulator_on_a_missing_serial_port_fails_to_start(tmp_path, builtin_drivers):
    with pytest.raises(OSError):
        Simulator({1: builtin_drivers["eastron_sdm530"]}, serial_port=str(tmp_path / "ttyNONE")).start()


def test_simulator_emulates_airtime_and_latency(line, rtu_sim, builtin_drivers):
    sim = rtu_sim(
        {1: builtin_drivers["eastron_sdm530"]}, values={1: SDM_VALUES}, baudrate=9600, delay=0.02, emulate_airtime=True
    )
    assert sim.airtime(8 + 77) == pytest.approx(85 * 10 / 9600)
    tr = RtuTransport(line[0])
    try:
        tr.read(1, 4, 0, 2, 1.0)
        started = time.monotonic()
        assert tr.read(1, 4, 0, 36, 1.0)[:2] == [0x4366, 0x8000]
        took = time.monotonic() - started
        expected = 0.02 + (8 + 5 + 72) * 10 / 9600  # latency + 85 bytes at 9600 8N1: 108.5 ms
        assert expected <= took < expected + 0.03
    finally:
        tr.close()


def test_a_second_master_on_the_same_port_is_refused(line, rtu_sim, builtin_drivers):
    rtu_sim({1: builtin_drivers["eastron_sdm530"]}, values={1: SDM_VALUES})
    first, second = RtuTransport(line[0]), RtuTransport(line[0])
    try:
        assert first.read(1, 4, 0, 2, 1.0) == [0x4366, 0x8000]
        with pytest.raises(DeviceSilent, match="cannot open"):
            second.read(1, 4, 0, 2, 1.0)
    finally:
        first.close()
        second.close()


# ---------------------------------------------------------------------------------------------
# timing on the line: inter-frame silence, late answers


@pytest.mark.parametrize(
    "baudrate, frame_gap, minimum",
    [
        (9600, 0.0, 3.5 * 11 / 9600),  # 3.5 characters of 11 bits: 4.0 ms
        (115200, 0.0, 0.00175),  # above 19200 baud: the fixed 1.75 ms of the Modbus spec
        (9600, 0.03, 0.03),  # a configured frame_gap on top
    ],
)
def test_inter_frame_silence_before_each_request(baudrate, frame_gap, minimum, line, builtin_drivers):
    good = answer_from(sdm_image(builtin_drivers))
    tr = RtuTransport(line[0], baudrate=baudrate, frame_gap=frame_gap)
    try:
        with FakeSlave(line[1], lambda req, i: good(req)) as slave:
            for addr in (0, 2, 4, 6, 8, 10):
                tr.read(1, 4, addr, 2, timeout=1.0)
        gaps = [slave.received_at[i + 1] - slave.answered_at[i] for i in range(5)]
        # measured on the slave side: from its answer leaving to the next request being complete
        assert min(gaps) >= minimum, gaps
        # and no needless waiting (no second 3.5-character wait): the median, since a loaded machine can delay
        # any one request by its scheduler alone
        assert sorted(gaps)[len(gaps) // 2] < minimum + 0.05, gaps
    finally:
        tr.close()


def late_then_prompt(late: float):
    """Slave 1 answers its first request `late` seconds late with [1, 2], later ones at once with [3, 4]."""

    def script(req, i):
        unit, fncode, _, count = req
        if i == 0:
            return late, read_response(unit, fncode, [1, 2][:count])
        return read_response(unit, fncode, [3, 4][:count])

    return script


def test_without_a_late_window_a_late_answer_is_taken_for_the_next_one(line):
    """The hazard, shown with the protection off: RTU answers carry no request id, so a late answer of
    the same shape is taken for the answer to the next request when the slave (still busy with the
    first) misses that request and the line falls quiet after the late answer."""

    def script(req, i):
        unit, fncode, _, count = req
        if i == 0:
            return 0.3, read_response(unit, fncode, [1, 2][:count])
        return None if i == 1 else read_response(unit, fncode, [3, 4][:count])

    tr = RtuTransport(line[0], late_window=0.0)
    try:
        with FakeSlave(line[1], script):
            with pytest.raises(DeviceSilent):
                tr.read(1, 3, 100, 2, timeout=0.2)
            assert tr.read(1, 3, 200, 2, timeout=1.0) == [1, 2]  # wrong: these are registers 100..101
            assert tr.read(1, 3, 300, 2, timeout=1.0) == [3, 4]
    finally:
        tr.close()


def test_a_late_answer_glued_to_the_next_answer_is_a_bad_frame(line):
    """Without the late window, but the slave answers the next request at once: the late answer is
    followed by more bytes without a pause, so it is not taken (and neither is the one after it)."""
    tr = RtuTransport(line[0], late_window=0.0)
    try:
        with FakeSlave(line[1], late_then_prompt(0.3)):
            with pytest.raises(DeviceSilent):
                tr.read(1, 3, 100, 2, timeout=0.2)
            with pytest.raises(LinkError, match="followed the answer without a pause"):
                tr.read(1, 3, 200, 2, timeout=1.0)
            assert tr.read(1, 3, 300, 2, timeout=1.0) == [3, 4]
            assert tr.discarded == 9
    finally:
        tr.close()


def test_a_late_answer_within_the_window_is_dropped(line):
    tr = RtuTransport(line[0])  # late_window: min(0.5 s, the timeout) after a timeout
    try:
        with FakeSlave(line[1], late_then_prompt(0.3)) as slave:
            with pytest.raises(DeviceSilent):
                tr.read(1, 3, 100, 2, timeout=0.2)
            started = time.monotonic()
            assert tr.read(1, 3, 200, 2, timeout=1.0) == [3, 4]
            assert time.monotonic() - started < 0.5
            assert tr.discarded == 9
            assert slave.requests == [(1, 3, 100, 2), (1, 3, 200, 2)]
    finally:
        tr.close()


def test_a_late_answer_is_not_blamed_on_the_next_slave(line, builtin_drivers):
    """A slow slave 5 answers after its timeout; slave 1, polled next, must not get a wrong-address
    error (or be marked down) because of it."""
    good = answer_from(sdm_image(builtin_drivers))

    def script(req, i):
        if req[0] == 5:
            return 0.45, read_response(5, req[1], [0] * req[3])
        return good(req)

    with FakeSlave(line[1], script):
        poller = make_poller(meter_config(line[0], slaves=(5, 1), timeout=0.3, vars_=["V_L1", "freq"]), builtin_drivers)
        try:
            readout = poller.poll(T0)
            assert list(readout["errors"]) == ["meter5"]
            assert by_device(readout)["meter1"]["V_L1"] == 230.5
            assert poller.health["meter1"].failures == 0
        finally:
            poller.close()


def test_transport_errors_map_to_reader_exceptions(line):
    answers = [
        exception_response(1, 3, 2),
        exception_response(1, 3, 6),
        exception_response(1, 3, 11),
        read_response(2, 3, [1]),
        b"\x01\x03\x02\x00\x01" + crc16(b"junk"),
    ]
    tr = RtuTransport(line[0])
    try:
        with FakeSlave(line[1], lambda req, i: answers[i]):
            for code in (2, 6, 11):
                with pytest.raises(ModbusException) as err:
                    tr.read(1, 3, 0, 1, timeout=0.5)
                assert err.value.code == code
            with pytest.raises(LinkError, match="bad frame"):  # an answer from another slave
                tr.read(1, 3, 0, 1, timeout=0.5)
            with pytest.raises(LinkError, match="bad frame"):  # bad CRC
                tr.read(1, 3, 0, 1, timeout=0.5)
    finally:
        tr.close()


# ---------------------------------------------------------------------------------------------
# the CLI


def test_cli_read_json_over_rtu(tmp_path, line, rtu_sim, builtin_drivers):
    rtu_sim({3: builtin_drivers["eastron_sdm530"]}, values={3: SDM_VALUES}, parity="even")
    raw = meter_config(line[0], slaves=(3,), vars_=["V_L1", "P_total", "E_imported", "pf_L3"], parity="E")
    conf = write_json(tmp_path / "site.json", raw)
    proc = subprocess.run(
        [*AMMP_EDGE, "read", "--config", str(conf), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(AE_ROOT_DIR=REPO),
    )
    assert proc.returncode == 0, proc.stderr
    message = json.loads(proc.stdout)
    assert set(message) == {"t", "r", "m"}
    assert message["r"] == [
        {"_d": "meter3", "_vid": "m3", "V_L1": 230.5, "P_total": 7500.75, "E_imported": 125500.0, "pf_L3": -0.875}
    ]
    assert abs(message["t"] - time.time()) < 60
    assert message["m"]["config_id"] == cfg.digest(raw)
