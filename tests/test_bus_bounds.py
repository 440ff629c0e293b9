"""A bus process against devices that stay silent or stream bytes at it: SIGTERM within seconds
whatever the timeouts, the watchdog armed and quiet, and bounded CPU while a device streams (other
buses unaffected). Real `ammp-edge bus` processes, a hostile TCP device and socat pty pairs."""

from __future__ import annotations

import signal
import subprocess
import time

import psutil
import pytest

from ammp_edge.core import config as cfg, keys, watchdog
from ammp_edge.core.kvs import cache
from ammp_edge.delivery.outbox import Outbox
from helpers.common import AMMP_EDGE, child_env, write_json
from helpers.hostile import HostileTcpDevice, SerialStreamer, TcpStreamer, good_tcp
from helpers.serial_lines import FakeSlave, pty_pair

DRIVER = {"fields": {"a": {"register": 0, "datatype": "uint16"}, "b": {"register": 3, "datatype": "uint16"}}}


def device(address: dict, reading_type: str = "modbustcp", **kw) -> dict:
    return {"driver": "t16", "reading_type": reading_type, "vendor_id": "v", "address": address, **kw}


def site(devices: dict, read_interval: int = 1) -> dict:
    readings = {f"{d}_{f}": {"device": d, "var": f} for d in devices for f in DRIVER["fields"]}
    return {"drivers": {"t16": DRIVER}, "devices": devices, "readings": readings, "read_interval": read_interval}


def bus_ids(raw: dict) -> dict[str, str]:
    """device key -> bus id"""
    return {d.key: d.bus_id for d in cfg.load(raw, {}).devices.values()}


def start_bus(tmp_path, raw: dict, bus_id: str, supervised: bool = False) -> subprocess.Popen:
    conf = write_json(tmp_path / f"{bus_id}.json", raw)
    env = child_env(LOGGING_LEVEL="info")
    if supervised:  # the watchdog arms (and the bus waits for a trusted clock: given here)
        env["SUPERVISOR_ENABLED"] = "1"
        kv = cache()
        kv.set(keys.CLOCK_TRUSTED, True)
        kv.close()
    log = open(tmp_path / f"{bus_id}.log", "w")
    return subprocess.Popen([*AMMP_EDGE, "bus", bus_id, "--config", str(conf)], env=env, stdout=log, stderr=log)


def readouts(bus_id: str) -> list[dict]:
    box = Outbox()
    try:
        return [r for _, r in box.read_from(None, 10_000) if r["bus"] == bus_id]
    finally:
        box.close()


def wait_for(check, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def stop(proc: subprocess.Popen) -> tuple[int, float]:
    """SIGTERM; (exit code, seconds until it exited). SIGKILL after 20 s (a failure)."""
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        code = -9
    return code, time.monotonic() - started


# -- SIGTERM whatever the config says ---------------------------------------------------------


def test_sigterm_stops_a_bus_waiting_on_a_silent_device_with_the_largest_timeout(tmp_path):
    """timeout 1e9 is used as 60 s (the bound), deadline as 600 s; the device never answers. The bus
    is in the middle of that request when SIGTERM comes: it exits 0 within a few seconds, the
    watchdog (armed, as under supervisord) did not bite, and the device is not reported down for it."""
    dev = HostileTcpDevice(lambda req, i: None)
    good = HostileTcpDevice(lambda req, i: good_tcp(req))
    raw = site(
        {
            "ok": device({"host": "127.0.0.1", "port": good.port, "unit_id": 1}),
            "silent": device({"host": "127.0.0.1", "port": dev.port, "unit_id": 1}, timeout=1e9, deadline=1e9),
        }
    )
    config = cfg.load(raw, {})
    assert (config.devices["silent"].timeout, config.devices["silent"].deadline) == (60.0, 600.0)
    assert [p.path for p in config.problems] == ["devices.silent.timeout", "devices.silent.deadline"]
    limit = watchdog.bus_max_silence(config, config.devices["silent"].bus_id)
    assert limit == 3 * 1 + 2 * 600  # finite, from the bounds (it was 2e9 s)
    proc = start_bus(tmp_path, raw, config.devices["silent"].bus_id, supervised=True)
    try:
        wait_for(lambda: dev.requests, 30, "the request to the silent device")
        time.sleep(1.0)  # well inside its 60 s timeout
        assert proc.poll() is None
        code, took = stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        dev.close()
        good.close()
    log = (tmp_path / f"{config.devices['silent'].bus_id}.log").read_text()
    assert code == 0, log
    assert took < 5.0, f"took {took:.1f} s to stop"  # the grace (1.5 s) for a request in flight, then cut
    assert "watchdog" not in log
    assert "not answering" not in log  # cut short by the stop, not found down


def test_sigterm_stops_a_serial_bus_waiting_on_a_silent_slave(tmp_path):
    with pty_pair(tmp_path) as (master, slave_end), FakeSlave(slave_end, lambda req, i: None) as slave:
        raw = site({"m": device({"device": master, "slaveaddr": 4}, "modbusrtu", timeout=60)})
        bus_id = bus_ids(raw)["m"]
        proc = start_bus(tmp_path, raw, bus_id, supervised=True)
        try:
            wait_for(lambda: slave.requests, 30, "the request to the silent slave")
            time.sleep(0.5)
            code, took = stop(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert code == 0, (tmp_path / f"{bus_id}.log").read_text()
    assert took < 5.0, f"took {took:.1f} s to stop"


def test_a_stopping_bus_finishes_a_request_in_flight_within_the_grace_and_cuts_a_silent_one():
    import threading

    from ammp_edge.bus.poller import BusPoller
    from ammp_edge.readers.modbus import STOP_GRACE

    def slow(req, i):
        time.sleep(0.5)
        return good_tcp(req)

    for script, timeout in ((slow, 5), (lambda req, i: None, 60)):
        dev = HostileTcpDevice(script)
        config = cfg.load(
            site({"d": device({"host": "127.0.0.1", "port": dev.port, "unit_id": 1}, timeout=timeout)}), {}
        )
        stop = threading.Event()
        poller = BusPoller(config.devices["d"].bus_id, list(config.devices.values()), 1, stop=stop)
        try:
            threading.Timer(0.2, stop.set).start()  # SIGTERM while the request is in flight
            started = time.monotonic()
            readout = poller.poll(0)
            took = time.monotonic() - started
        finally:
            poller.close()
            dev.close()
        if script is slow:  # answered within the grace: the cycle is complete
            assert readout["devices"] == [{"_d": "d", "_vid": "v", "a": 1000, "b": 1003}]
            assert "stopped" not in readout and took < 1.0
        else:  # cut after the grace, left out, not counted as down
            assert readout["devices"] == [] and readout["stopped"] is True
            assert 0.2 + STOP_GRACE <= took < 0.2 + STOP_GRACE + 1.0
            assert "the bus is stopping" in readout["errors"]["d"][0]
            assert poller.health["d"].failures == 0


# -- devices that stream ----------------------------------------------------------------------


def cpu_share(proc: subprocess.Popen, seconds: float) -> float:
    """CPU time of the process over `seconds` of wall time, as a share of one core."""
    p = psutil.Process(proc.pid)
    t0, c0 = time.monotonic(), sum(p.cpu_times()[:2])
    time.sleep(seconds)
    t1, c1 = time.monotonic(), sum(p.cpu_times()[:2])
    return (c1 - c0) / (t1 - t0)


@pytest.mark.slow
def test_a_streaming_tcp_device_costs_its_bus_little_cpu_and_other_buses_nothing(tmp_path):
    streamer = TcpStreamer()
    good = HostileTcpDevice(lambda req, i: good_tcp(req))
    raw = site(
        {
            "stream": device({"host": "127.0.0.1", "port": streamer.port, "unit_id": 1}, timeout=1),
            "ok": device({"host": "127.0.0.1", "port": good.port, "unit_id": 1}, timeout=1),
        }
    )
    ids = bus_ids(raw)
    procs = {key: start_bus(tmp_path, raw, bus) for key, bus in ids.items()}
    try:
        wait_for(lambda: readouts(ids["stream"]) and readouts(ids["ok"]), 60, "a first cycle of both buses")
        share = cpu_share(procs["stream"], 8.0)
        streamed = readouts(ids["stream"])
        ok = readouts(ids["ok"])
    finally:
        for p in procs.values():
            stop(p)
        streamer.close()
        good.close()
    print(f"bus CPU while its device streams: {share:.1%} of a core")
    assert share < 0.2, f"the bus of a streaming device used {share:.0%} of a core"
    assert streamer.connections >= 2, "the device was tried again after its backoff"
    first_error = next(r["errors"]["stream"] for r in streamed if "stream" in r["errors"])
    assert "bad answer from unit 1" in first_error[0], first_error
    assert all(rec == {"_d": "stream", "_vid": "v"} for r in streamed for rec in r["devices"])
    # the other bus read its device every cycle meanwhile
    assert len(ok) >= 8
    assert all(r["devices"] == [{"_d": "ok", "_vid": "v", "a": 1000, "b": 1003}] for r in ok)


@pytest.mark.slow
def test_a_streaming_serial_line_costs_its_bus_little_cpu(tmp_path):
    with pty_pair(tmp_path) as (master, slave_end):
        streamer = SerialStreamer(slave_end)
        raw = site({"m": device({"device": master, "slaveaddr": 1}, "modbusrtu", timeout=1)})
        bus_id = bus_ids(raw)["m"]
        proc = start_bus(tmp_path, raw, bus_id)
        try:
            wait_for(lambda: readouts(bus_id), 60, "a first cycle")
            share = cpu_share(proc, 8.0)
            out = readouts(bus_id)
        finally:
            stop(proc)
            streamer.close()
    print(f"bus CPU while its line streams: {share:.1%} of a core")
    assert share < 0.2, f"the bus of a streaming line used {share:.0%} of a core"
    assert streamer.sent > 100_000, "the line really streamed"
    errors = [e for r in out for e in r["errors"].get("m", [])]
    # a line still busy after a second, or an answer that is none (the stream's bytes): a link error
    assert all("did not fall quiet" in e or "bad frame" in e or "backed off" in e for e in errors), errors
    assert sum("backed off" in e for e in errors) >= 3, errors
    assert all(rec == {"_d": "m", "_vid": "v"} for r in out for rec in r["devices"])
