"""Environment scans with real parts on loopback: nmap against 127.0.0.1 with simulated Modbus
devices on free ports, the serial probe over a socat pty pair with the RTU simulator, Speedwire
multicast on the loopback interface, MAC resolution from a crafted ARP table and the KV cache."""

from __future__ import annotations

import socket
import struct
import threading
import time

import psutil
import pytest

from ammp_edge.core import paths
from ammp_edge.core.kvs import KVStore
from ammp_edge.node import scan
from ammp_edge.node.scan import macs, modbus, network, sensor_address, serial as serial_probe, speedwire
from ammp_edge.readers import speedwire as reader_speedwire
from helpers.common import free_port
from helpers.netns import in_netns
from helpers.serial_lines import pty_pair

# Recorded from a real run here (`nmap -oX - 192.0.2.1 --disable-arp-ping -p 22,80,443,502`, a
# host on this machine's LAN, so nmap saw its MAC), then a second host added by hand with an OUI
# vendor and open ports, and a host that is down.
NMAP_XML = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE nmaprun>
<?xml-stylesheet href="file:///usr/bin/../share/nmap/nmap.xsl" type="text/xsl"?>
<!-- Nmap 7.93 scan initiated Thu Nov 26 19:47:46 2026 as: nmap -oX - -&#45;disable-arp-ping -p 22,80,443,502 192.0.2.1 -->
<nmaprun scanner="nmap" args="nmap -oX - -&#45;disable-arp-ping -p 22,80,443,502 192.0.2.1" start="1795722466" startstr="Thu Nov 26 19:47:46 2026" version="7.93" xmloutputversion="1.05">
<scaninfo type="syn" protocol="tcp" numservices="4" services="22,80,443,502"/>
<verbose level="0"/>
<debugging level="0"/>
<hosthint><status state="up" reason="unknown-response" reason_ttl="0"/>
<address addr="192.0.2.1" addrtype="ipv4"/>
<address addr="02:FC:00:00:00:05" addrtype="mac"/>
<hostnames>
</hostnames>
</hosthint>
<host starttime="1795722466" endtime="1795722466"><status state="up" reason="echo-reply" reason_ttl="64"/>
<address addr="192.0.2.1" addrtype="ipv4"/>
<address addr="02:FC:00:00:00:05" addrtype="mac"/>
<hostnames>
</hostnames>
<ports><port protocol="tcp" portid="22"><state state="closed" reason="reset" reason_ttl="64"/><service name="ssh" method="table" conf="3"/></port>
<port protocol="tcp" portid="80"><state state="closed" reason="reset" reason_ttl="64"/><service name="http" method="table" conf="3"/></port>
<port protocol="tcp" portid="443"><state state="closed" reason="reset" reason_ttl="64"/><service name="https" method="table" conf="3"/></port>
<port protocol="tcp" portid="502"><state state="closed" reason="reset" reason_ttl="64"/><service name="mbap" method="table" conf="3"/></port>
</ports>
<times srtt="305" rttvar="1677" to="100000"/>
</host>
<host starttime="1795722466" endtime="1795722466"><status state="up" reason="arp-response" reason_ttl="0"/>
<address addr="192.0.2.111" addrtype="ipv4"/>
<address addr="00:40:AD:12:34:56" addrtype="mac" vendor="SMA Solar Technology AG"/>
<hostnames>
<hostname name="sunny-tripower.lan" type="PTR"/>
<hostname name="stp25" type="user"/>
</hostnames>
<ports><port protocol="tcp" portid="22"><state state="filtered" reason="no-response" reason_ttl="0"/></port>
<port protocol="tcp" portid="80"><state state="open" reason="syn-ack" reason_ttl="64"/></port>
<port protocol="tcp" portid="443"><state state="closed" reason="reset" reason_ttl="64"/></port>
<port protocol="tcp" portid="502"><state state="open" reason="syn-ack" reason_ttl="64"/></port>
</ports>
</host>
<host><status state="down" reason="no-response" reason_ttl="0"/>
<address addr="192.0.2.7" addrtype="ipv4"/>
</host>
<runstats><finished time="1795722466" timestr="Thu Nov 26 19:47:46 2026" summary="Nmap done" elapsed="0.09" exit="success"/><hosts up="2" down="1" total="3"/>
</runstats>
</nmaprun>
"""  # noqa: E501 - nmap's own XML output, kept as it printed it

SUNS = {40000: 0x5375, 40001: 0x6E53}


def text_regs(text: str, words: int) -> list[int]:
    raw = text.encode().ljust(2 * words, b"\0")
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, 2 * words, 2)]


def sunspec_registers(
    base: int, manufacturer="Fronius", model="Symo 10.0-3-M", version="1.2.3", serial="34119102"
) -> dict[int, int]:
    regs = [
        0x5375,
        0x6E53,
        1,
        65,
        *text_regs(manufacturer, 16),
        *text_regs(model, 16),
        *text_regs("", 8),
        *text_regs(version, 8),
        *text_regs(serial, 16),
        1,
        0xFFFF,
        66,
    ]
    return {base + i: v for i, v in enumerate(regs)}


# -- nmap XML -------------------------------------------------------------------------------


def test_parse_recorded_nmap_xml():
    hosts = network.parse_nmap_xml(NMAP_XML)
    assert hosts == [
        {"ipv4": "192.0.2.1", "mac": "02:FC:00:00:00:05", "ports": []},
        {
            "ipv4": "192.0.2.111",
            "mac": "00:40:AD:12:34:56",
            "vendor": "SMA Solar Technology AG",
            "hostname": "sunny-tripower.lan",
            "ports": ["80", "502"],
        },
    ]


@pytest.mark.parametrize("text", ["", "nmap: command failed", "<html><body/></html>"])
def test_parse_refuses_what_is_not_nmap_xml(text):
    with pytest.raises(network.ScanError):
        network.parse_nmap_xml(text)


def test_hosts_with_a_mac_go_into_the_cache():
    cache = KVStore(paths.kvcache_path())
    network.store_macs(network.parse_nmap_xml(NMAP_XML), cache)
    assert cache.get("env/net/mac/00:40:ad:12:34:56")["ipv4"] == "192.0.2.111"
    assert cache.get("env/net/mac/02:fc:00:00:00:05")["ipv4"] == "192.0.2.1"
    assert cache.keys("env/net/mac/") == ["env/net/mac/00:40:ad:12:34:56", "env/net/mac/02:fc:00:00:00:05"]


@pytest.mark.parametrize(
    "ip,bits,net",
    [
        ("192.168.1.5", 24, "192.168.1.0/24"),
        ("10.1.2.3", 8, "10.1.0.0/22"),
        ("172.16.5.9", 30, "172.16.5.8/30"),
        ("192.168.7.9", None, "192.168.7.0/24"),
    ],
)
def test_network_to_scan_is_never_larger_than_a_slash_22(ip, bits, net):
    assert network.network_of(ip, bits) == net


def test_default_interface_has_the_route_address_and_netmask_bits():
    iface = network.default_interface()
    if iface is None:
        pytest.skip("no default route here")
    addrs = psutil.net_if_addrs()[iface["ifname"]]
    assert iface["ipv4"] in [a.address for a in addrs]
    assert 0 < iface["netmask"] <= 32


# -- nmap on loopback, with simulated devices -----------------------------------------------


def test_network_scan_on_loopback_finds_open_ports_and_sunspec(simulator):
    sim = simulator({1: {"fields": {}}}, registers={1: {3: sunspec_registers(40000)}})
    closed = free_port()
    seen = []
    hosts = scan.network_scan(
        ["127.0.0.1"], ports=(sim.port, closed), progress=lambda f, t: seen.append(f), modbus_ports=(sim.port,)
    )
    assert len(hosts) == 1
    host = hosts[0]
    assert host["ipv4"] == "127.0.0.1" and host["ports"] == [str(sim.port)]
    assert "mac" not in host  # no MAC on loopback
    assert host["modbustcp"] == [
        {
            "unit_id": 1,
            "sunspec_base": 40000,
            "sunspec_manufacturer": "Fronius",
            "sunspec_model": "Symo 10.0-3-M",
            "sunspec_version": "1.2.3",
            "sunspec_serial": "34119102",
        }
    ]
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)


def test_sma_identified_by_vendor(simulator):
    regs = {30051: 0, 30052: 8001, 30053: 0, 30054: 9338, 30057: 0x7D2B, 30058: 0x4E20}
    sim = simulator({3: {"fields": {}}}, registers={3: {3: regs}})
    host = {"ipv4": "127.0.0.1", "vendor": "SMA Solar Technology AG", "ports": [str(sim.port)]}
    modbus.probe_hosts([host], modbus_ports=(sim.port,), timeout=0.5)
    assert host["modbustcp"] == [
        {"unit_id": 3, "sma_device_class": 8001, "sma_device_type": 9338, "sma_inverter_serial": 0x7D2B4E20}
    ]


def test_deep_sea_identified_by_vendor(simulator):
    sim = simulator({1: {"fields": {}}}, registers={1: {3: {769: 7420, 770: 0x0001, 771: 0x86A0, 772: 2}}})
    host = {"ipv4": "127.0.0.1", "vendor": "Deep Sea Electronics", "ports": [str(sim.port)]}
    modbus.probe_host(host, sim.port, timeout=0.5)
    assert host["modbustcp"][0] == {"unit_id": 1, "dse_model_number": 7420, "dse_control_mode": 2, "dse_serial": 100000}


def test_sunspec_found_at_base_0_on_unit_126(simulator):
    sim = simulator(
        {126: {"fields": {}}}, registers={126: {3: sunspec_registers(0, "SMA", "STP 25000TL-30")}}, strict=True
    )
    host = {"ipv4": "127.0.0.1", "ports": [str(sim.port)]}
    modbus.probe_host(host, sim.port, timeout=0.5)
    (entry,) = host["modbustcp"]
    assert entry["unit_id"] == 126 and entry["sunspec_base"] == 0
    assert entry["sunspec_manufacturer"] == "SMA" and entry["sunspec_model"] == "STP 25000TL-30"


def test_no_modbus_device_gives_an_empty_list(simulator):
    sim = simulator({5: {"fields": {"x": {"register": 10, "datatype": "uint16"}}}})
    host = {"ipv4": "127.0.0.1", "vendor": "Some Vendor", "ports": [str(sim.port)]}
    modbus.probe_host(host, sim.port, timeout=0.3)
    assert host["modbustcp"] == []


def _nmap_children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if p.name() == "nmap"]


def test_cancel_kills_nmap():
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(scan.Cancelled):
        network.run_nmap(["127.0.0.1", "-p", "1-300", "--scan-delay", "200ms", "--max-retries", "0"], cancel=cancel)
    assert time.monotonic() - started < 3
    assert _nmap_children() == []


def test_env_scan_shape_on_loopback(simulator, tmp_path):
    sim = simulator({1: {"fields": {}}}, registers={1: {3: sunspec_registers(40000)}})
    seen = []
    result = scan.env_scan(
        lambda f, t: seen.append((f, t)),
        targets=["127.0.0.1"],
        ports=(sim.port,),
        modbus_ports=(sim.port,),
        serial_port=str(tmp_path / "ttyNONE"),
        speedwire_timeout=0.3,
        speedwire_port=free_port(),
    )
    assert set(result) == {"time", "network_scan", "serial_scan", "speedwire_serials"}
    assert result["time"].endswith("Z") and len(result["time"]) == 20
    (net,) = result["network_scan"]
    assert set(net) >= {"ifname", "ipv4", "netmask", "hosts"}
    assert net["hosts"][0]["modbustcp"][0]["sunspec_manufacturer"] == "Fronius"
    assert result["serial_scan"] == [
        [f"Serial port {tmp_path / 'ttyNONE'}", "not present on this machine; serial scan skipped"]
    ]
    assert result["speedwire_serials"] == []
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_env_scan_cancelled_before_start_raises():
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(scan.Cancelled):
        scan.env_scan(cancel=cancel, targets=["127.0.0.1"], ports=(free_port(),), speedwire_timeout=0.1)


# -- serial probe over a pty pair -----------------------------------------------------------


@pytest.fixture
def line(tmp_path):
    with pty_pair(tmp_path) as ends:
        yield ends


def _words(value: float) -> list[int]:
    raw = struct.pack(">f", value)
    return [int.from_bytes(raw[:2], "big"), int.from_bytes(raw[2:], "big")]


def test_serial_probe_signatures(line):
    from ammp_edge.simulate import Simulator

    units = {1: {"fields": {}}, 2: {"fields": {}}, 7: {"fields": {}}}
    registers = {1: {3: dict(zip((1, 2), _words(1.25)))}, 2: {4: {0: 850}}, 7: {3: {2: 20000}}}
    sim = Simulator(units, serial_port=line[1], registers=registers).start()
    try:
        sigs = [
            s
            for s in serial_probe.SIGNATURES
            if (s.name, s.slave_id)
            in {
                ("Gamicos ultrasonic sensor", 1),
                ("IMT irradiation sensor", 2),
                ("Holykell HPT604", 7),
                ("APM303 genset controller", 5),
            }
        ]
        progress = []
        result = serial_probe.serial_scan(
            line[0], progress=lambda f, t: progress.append(f), signatures=sigs, timeout=0.5
        )
    finally:
        sim.stop()
    by_test = dict((test, text) for test, text in result)
    assert len(result) == 4
    gamicos = by_test["Testing slave ID 1 for Gamicos ultrasonic sensor at baud rate 9600"]
    assert "= 1.25 ==> SUCCESS: Device Gamicos ultrasonic sensor present as ID 1" in gamicos
    assert (
        "irradiance (W/m2) = 850 ==> SUCCESS"
        in by_test["Testing slave ID 2 for IMT irradiation sensor at baud rate 9600"]
    )
    holykell = by_test["Testing slave ID 7 for Holykell HPT604 at baud rate 9600"]
    assert holykell.startswith("Error: implausible value 20000") and "SUCCESS" not in holykell
    apm = by_test["Testing slave ID 5 for APM303 genset controller at baud rate 9600"]
    assert apm.startswith("Error: no answer") and "slave id = 5, baud rate = 9600" in apm
    assert progress[-1] == 1.0


def test_serial_scan_port_from_the_kv_store(line):
    KVStore().set("serial_sensor_port", line[0])
    assert serial_probe.default_port() == line[0]
    cancel = threading.Event()
    cancel.set()
    assert scan.serial_scan(cancel=cancel) == []  # cancelled before the first probe


def test_signature_table_matches_upstream():
    table = {(s.name, s.slave_id): (s.register, s.datatype, s.fncode) for s in serial_probe.SIGNATURES}
    assert len(table) == 14
    assert table[("Gamicos ultrasonic sensor", 1)] == (1, "float", 3)
    assert table[("IMT irradiation sensor", 2)] == (0, "uint16", 4)
    assert table[("APM303 genset controller", 6)] == (28, "int16", 4)
    assert table[("Cummins PS0600", 3)] == (10, "uint16", 3)
    assert table[("Holykell HPT604-LT", 8)] == (2, "float", 3)
    assert table[("Carlo Gavazzi meter EM24", 11)] == (55, "int16", 3)


# -- Speedwire --------------------------------------------------------------------------------


def datagram(serial: int) -> bytes:
    return reader_speedwire.encode_datagram(serial, {(1, 4): (1234).to_bytes(4, "big")}, susy_id=0x0174, ticks=12345)


@pytest.mark.parametrize(
    "data,expected",
    [
        (datagram(3004123456), 3004123456),
        (datagram(1), 1),
        (b"SMA\x00" + bytes(10), None),  # short
        (b"", None),
        (b"XMA\x00" + datagram(7)[4:], None),  # wrong signature
        (datagram(7)[:16] + b"\x60\x65" + datagram(7)[18:], None),  # an inverter's protocol, not a meter's
        (datagram(7) + b"\x00", None),  # longer than its length says
        (datagram(7)[:-6], None),  # cut off inside a record
    ],
)
def test_speedwire_serial_parser(data, expected):
    assert speedwire.serial_of(data) == expected


def test_speedwire_multicast_on_loopback():
    in_netns(_multicast_on_loopback)


def _multicast_on_loopback():
    port = free_port()

    def send():
        time.sleep(0.3)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            s.sendto(b"SMA\x00garbage", (speedwire.GROUP, port))  # counted among the 5, yields no serial
            for serial in (3004123456, 3004123456, 1901234567, 3004123456, 1901234567, 42):
                s.sendto(datagram(serial), (speedwire.GROUP, port))

    threading.Thread(target=send, daemon=True).start()
    serials, error = speedwire.collect_serials(5.0, port=port, interface="127.0.0.1")
    assert error is None
    assert serials == [3004123456, 1901234567]  # unique serials from the first 5 datagrams; the rest unread


def test_speedwire_times_out_quietly():
    started = time.monotonic()
    assert speedwire.collect_serials(0.5, port=free_port(), interface="127.0.0.1") == ([], None)
    assert time.monotonic() - started < 1.5


def test_speedwire_join_error_is_reported_not_raised():
    serials, error = speedwire.collect_serials(0.2, port=free_port(), group="10.0.0.1")  # not a multicast group
    assert serials == [] and "cannot listen for Speedwire" in error


# -- MAC resolution -------------------------------------------------------------------------

ARP = """IP address       HW type     Flags       HW address            Mask     Device
192.168.1.20     0x1         0x2         00:40:AD:12:34:56     *        eth0
192.168.1.21     0x1         0x0         00:00:00:00:00:00     *        eth0
192.168.1.1      0x1         0x2         02:fc:00:00:00:05     *        eth0
"""


def test_resolve_mac_from_arp_then_cache_then_one_sweep(tmp_path):
    arp = tmp_path / "arp"
    arp.write_text(ARP)
    cache = KVStore(paths.kvcache_path())
    sweeps = []
    resolve = lambda mac: macs.resolve_mac(mac, arp_path=arp, cache=cache, trigger=sweeps.append)
    assert resolve("00:40:ad:12:34:56") == "192.168.1.20"  # lowercase lookup of an uppercase entry
    assert resolve("02:FC:00:00:00:05") == "192.168.1.1"
    assert resolve("00:00:00:00:00:00") is None  # incomplete entries are ignored
    cache.set("env/net/mac/aa:bb:cc:dd:ee:ff", {"ipv4": "192.168.1.50", "mac": "AA:BB:CC:DD:EE:FF"})
    assert resolve("AA:BB:CC:DD:EE:FF") == "192.168.1.50"
    assert len(sweeps) == 1  # the all-zero lookup missed and started one sweep
    assert resolve("11:22:33:44:55:66") is None
    assert resolve("11:22:33:44:55:67") is None
    assert len(sweeps) == 1  # at most one per 15 minutes
    cache.set(macs.LOCK_KEY, time.time() - 1)  # the hold-off is over
    assert resolve("11:22:33:44:55:66") is None
    assert len(sweeps) == 2


def test_missing_arp_table_falls_back_to_the_cache(tmp_path):
    cache = KVStore(paths.kvcache_path())
    cache.set("env/net/mac/00:40:ad:12:34:56", {"ipv4": "10.0.0.9"})
    assert macs.resolve_mac("00:40:AD:12:34:56", arp_path=tmp_path / "none", cache=cache, trigger=None) == "10.0.0.9"


def test_ping_sweep_refreshes_hosts_without_a_port_scan():
    hosts = network.ping_sweep(["127.0.0.1"], cache=KVStore(paths.kvcache_path()))
    assert hosts == [{"ipv4": "127.0.0.1"}]  # -n: no DNS name; -sn: no ports


def test_no_shell_anywhere_in_commands_and_scans():
    from ammp_edge.node import commands

    sources = [commands.__file__] + [
        m.__file__ for m in (scan, macs, modbus, network, serial_probe, speedwire, sensor_address)
    ]
    for path in sources:
        text = open(path).read()
        assert "shell=True" not in text and "os.system" not in text and "os.popen" not in text, path


def test_interfaces_table_without_loopback():
    table = network.interfaces()
    assert all(i["ifname"] != "lo" for i in table)
    iface = network.default_interface()
    if iface is not None:
        (mine,) = [i for i in table if i["ifname"] == iface["ifname"]]
        assert mine["ipv4"] == iface["ipv4"] and mine["netmask"] == iface["netmask"]


def test_serial_scan_of_a_port_that_cannot_be_opened(tmp_path):
    not_a_tty = tmp_path / "ttyFILE"
    not_a_tty.write_text("")
    (entry,) = serial_probe.serial_scan(str(not_a_tty), timeout=0.2)
    assert entry[0] == f"Opening {not_a_tty} at baud rate 9600" and entry[1].startswith("Error: cannot open")
