"""The sma_speedwire reader: datagrams checked before parsing, serial matching, OBIS scaling, one socket
per bus, and `simulate --speedwire` read by `ammp-edge read`, all on loopback multicast inside a
private network namespace (helpers/netns.py)."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest

from ammp_edge.bus.poller import BusPoller
from ammp_edge.core import config as cfg, netfields
from ammp_edge.readers import speedwire
from ammp_edge.simulate_speedwire import SpeedwireSender
from helpers.common import AMMP_EDGE, REPO, write_json
from helpers.netns import in_netns

SERIAL_A, SERIAL_B = 1900000001, 3004123456
U32 = lambda v: v.to_bytes(4, "big")
U64 = lambda v: v.to_bytes(8, "big")


def meter(serial=SERIAL_A, extra=None):
    values = {(1, 4): U32(12345), (1, 8): U64(36_000_000), (2, 4): U32(0), (32, 4): U32(230_150)}
    values.update(extra or {})
    return speedwire.encode_datagram(serial, values)


# -- the datagram parser ---------------------------------------------------------------------------


def test_a_meter_datagram_parses():
    d = speedwire.parse_datagram(meter())
    assert d.serial == SERIAL_A and d.susy_id == 349
    assert d.values[(1, 4)] == U32(12345) and d.values[(1, 8)] == U64(36_000_000)


def _with(data: bytes, at: int, new: bytes) -> bytes:
    return data[:at] + new + data[at + len(new) :]


@pytest.mark.parametrize(
    "data,why",
    [
        (b"", "0 bytes"),
        (meter()[:27], "27 bytes"),
        (_with(meter(), 0, b"SMB\x00"), "signature"),
        (_with(meter(), 4, b"\x00\x04\x02\xa1"), "group tag"),
        (_with(meter(), 14, b"\x00\x11"), "data tag"),
        (_with(meter(), 16, b"\x60\x65"), "protocol id 0x6065"),
        (meter() + b"\x00", "longer than"),
        (meter()[:-5], "shorter than"),
        (_with(meter(), 12, (9).to_bytes(2, "big")), "shorter than the meter header"),
        # the length says the data ends 2 bytes into the last record's value
        (_with(meter(), 12, (int.from_bytes(meter()[12:14], "big") - 2).to_bytes(2, "big"))[:-6], "runs past"),
    ],
)
def test_bad_datagrams_are_refused_with_the_reason(data, why):
    with pytest.raises(speedwire.BadDatagram, match=why):
        speedwire.parse_datagram(data)


def test_an_unknown_record_type_ends_the_parse_and_the_version_record_is_read_at_its_place():
    records = (
        (0x9000).to_bytes(2, "big") + bytes([0, 0]) + bytes.fromhex("02001252")  # version 2.0.18.R
        + (1).to_bytes(2, "big") + bytes([4, 0]) + U32(777)
        + (5).to_bytes(2, "big") + bytes([7, 0]) + U32(1)  # type 7: unknown length, the parse stops
        + (2).to_bytes(2, "big") + bytes([4, 0]) + U32(888)
    )  # fmt: skip
    body = (0x6069).to_bytes(2, "big") + (349).to_bytes(2, "big") + U32(SERIAL_A) + U32(0) + records
    data = b"SMA\x00\x00\x04\x02\xa0" + U32(1) + len(body).to_bytes(2, "big") + b"\x00\x10" + body + bytes(4)
    d = speedwire.parse_datagram(data)
    assert d.values == {(0x9000, 0): bytes.fromhex("02001252"), (1, 4): U32(777)}


# -- fields and addresses ---------------------------------------------------------------------------


def _config(devices: dict, fields=("P_out", "E_out", "V_L1")) -> cfg.Config:
    from ammp_edge.core import drivers, paths

    readings = {f"{k}_{f}": {"device": k, "var": f} for k in devices for f in fields}
    return cfg.load({"devices": devices, "readings": readings}, drivers.load_builtin_drivers(paths.drivers_dir()))


def _dev(serial, **addr):
    return {"driver": "sma_emeter_speedwire", "reading_type": "sma_speedwire", "vendor_id": f"em{serial}",
            "timeout": 2, "address": {"serial": serial, **addr}}  # fmt: skip


def test_devices_on_one_group_share_a_bus_and_bad_addresses_are_named():
    c = _config(
        {
            "a": _dev(SERIAL_A),
            "b": _dev(str(SERIAL_B)),  # upstream UIs store numbers as strings
            "c": _dev(5, group="239.0.0.9", port=9600),
            "d": {**_dev(1), "address": {}},
            "e": _dev(6, group="10.0.0.1"),
        }
    )
    assert {k: d.bus_id for k, d in c.devices.items()} == {
        "a": "speedwire",
        "b": "speedwire",
        "c": "speedwire_239.0.0.9_9600",
    }
    assert c.devices["b"].address["serial"] == SERIAL_B
    errors = {p.path: p.message for p in c.errors}
    assert "serial number" in errors["devices.d.address.serial"]
    assert "not an IPv4 multicast group" in errors["devices.e.address.group"]


def test_a_field_whose_datatype_does_not_fit_its_obis_type_is_refused():
    driver = {"fields": {"p": {"obis_channel": 1, "obis_type": 4, "datatype": "uint64"}}}
    c = cfg.load(
        {
            "devices": {"m": _dev(1) | {"driver": "x"}},
            "drivers": {"x": driver},
            "readings": {"r": {"device": "m", "var": "p"}},
        },
        {},
    )
    assert [str(p) for p in c.errors] == [
        "drivers.x.fields.p.datatype: uint64 does not fit an OBIS type 4 value (4 bytes)"
    ]
    f = netfields.compile_speedwire_field("e", {"obis_channel": 1, "obis_type": 8}, "f")
    assert f.spec.datatype == "uint64"  # the counter's default (an 8-byte field would infer double)


# -- reading, on loopback multicast in a private network namespace -----------------------------------


def _driver() -> dict:
    return json.loads((REPO / "drivers" / "sma_emeter_speedwire.json").read_text())


def _send(port: int, *datagrams: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        for d in datagrams:
            s.sendto(d, (speedwire.GROUP, port))


def _two_meters_garbage_and_backoff(port: int):
    c = _config({"a": _dev(SERIAL_A, port=port), "b": _dev(SERIAL_B, port=port)})
    poller = BusPoller(c.devices["a"].bus_id, list(c.devices.values()), read_interval=10)
    out = {}
    # garbage, an inverter's datagram with A's serial, B's datagram, then A's: only real ones count
    poller.readers["a"].transport.drain()  # opens the one socket
    bad_a = _with(meter(SERIAL_A, {(1, 4): U32(999_999)}), 16, b"\x60\x65")
    _send(port, b"\x00" * 40, b"SMA\x00junk", bad_a, meter(SERIAL_B, {(1, 4): U32(500)}), meter(SERIAL_A))
    out["first"] = poller.poll(1000)
    out["sockets"] = len({id(r.transport) for r in poller.readers.values()})
    # nothing fresh from A any more (its datagram is older than the timeout): A is silent, B answers
    time.sleep(2.2)
    _send(port, _with(meter(SERIAL_A), 0, b"XXXX"))
    sender_b = SpeedwireSender(_driver(), SERIAL_B, port=port, values={"P_out": 60.0}, interval=0.2).start()
    try:
        started = time.monotonic()
        out["silent"] = poller.poll(1010)
        out["silent_s"] = time.monotonic() - started
    finally:
        sender_b.stop()
    out["skip"] = poller.health["a"].skip_cycles
    return out


def test_one_socket_serial_matching_garbage_dropped_and_a_silent_meter_costs_its_timeout():
    out = in_netns(_two_meters_garbage_and_backoff, 9522)
    first = {d["_d"]: d for d in out["first"]["devices"]}
    assert out["sockets"] == 1
    # scaling as upstream: power x 0.1 W, energy Ws x 1/3600 (Wh), voltage mV x 0.001
    assert first["a"] == {"_d": "a", "_vid": f"em{SERIAL_A}", "P_out": 1234.5, "E_out": 10000.0,
                          "V_L1": 230.15}  # fmt: skip
    assert first["b"]["P_out"] == 50.0
    assert out["first"]["errors"] == {}
    silent = {d["_d"]: d for d in out["silent"]["devices"]}
    assert silent["a"] == {"_d": "a", "_vid": f"em{SERIAL_A}"}  # never the old or a garbage datagram's value
    assert silent["b"]["P_out"] == 60.0
    (why,) = out["silent"]["errors"]["a"]
    assert why.startswith(f"no datagram from serial {SERIAL_A} within 2.0 s")
    assert f"serials heard: {SERIAL_B}" in why and "signature b'XXXX'" in why
    assert 1.9 <= out["silent_s"] < 10  # the silent meter cost its timeout, the other none
    assert out["skip"] == 0  # first failure: tried again next cycle, then 1, 3, 7 ... cycles skipped


def _simulated_meters_read_by_the_cli(tmp):
    vals = write_json(tmp / "vals.json", {"P_out": 4321.5, "E_out": 123456.5, "V_L1": 229.98})
    sims = [
        subprocess.Popen(
            [
                *AMMP_EDGE,
                "simulate",
                "--driver",
                "sma_emeter_speedwire",
                "--speedwire",
                "--serial-number",
                str(s),
                "--interval",
                "0.2",
                *(["--values", str(vals)] if s == SERIAL_A else []),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for s in (SERIAL_A, SERIAL_B)
    ]
    try:
        for sim in sims:
            assert "simulating sma_emeter_speedwire" in sim.stdout.readline()
        conf = write_json(tmp / "c.json", {"devices": {"a": _dev(SERIAL_A), "b": _dev(SERIAL_B)},
                                           "readings": {f"{d}_{f}": {"device": d, "var": f} for d in "ab"
                                                        for f in ("P_out", "E_out", "V_L1", "pf")}})  # fmt: skip
        started = time.monotonic()
        run = subprocess.run([*AMMP_EDGE, "read", "--config", str(conf), "--json"], cwd=REPO, capture_output=True,
                             text=True, timeout=60)  # fmt: skip
        return run.returncode, run.stdout, run.stderr, time.monotonic() - started
    finally:
        for sim in sims:
            sim.terminate()
            sim.wait(10)


def test_simulate_speedwire_is_read_by_ammp_edge_read(tmp_path):
    code, out, err, took = in_netns(_simulated_meters_read_by_the_cli, tmp_path)
    assert code == 0, err
    records = {r["_d"]: r for r in json.loads(out)["r"]}
    # the values given come back through the codec's encoding, the datagram and the reader
    assert records["a"]["P_out"] == 4321.5 and records["a"]["V_L1"] == 229.98
    assert abs(records["a"]["E_out"] - 123456.5) < 0.001
    assert records["b"]["P_out"] > 0 and 0 < records["b"]["pf"] <= 1  # plausible values from the other
    assert took < 30  # a datagram every 0.2 s: no device waits out its timeout


def _probe_a_meter():
    from ammp_edge.core import drivers, paths
    from ammp_edge.webui import probe

    sender = SpeedwireSender(_driver(), SERIAL_A, values={"P_out": 77.7}, interval=0.2).start()
    try:
        device = probe.build_device(_dev(SERIAL_A), {}, drivers.load_builtin_drivers(paths.drivers_dir()))
        return probe.read_device(device)
    finally:
        sender.stop()


def test_the_web_ui_device_test_reads_a_meter_and_says_docker_needs_host_networking():
    out = in_netns(_probe_a_meter)
    rows = {r["name"]: r for r in out["fields"]}
    assert rows["P_out"]["value"] == 77.7 and rows["P_out"]["register"] == "OBIS 1.4"
    assert "--network host" in out["note"]
