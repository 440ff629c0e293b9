"""The local network: the default interface, nmap scans and the MAC cache (reference section 5.7).

nmap always runs as an argument list (never through a shell), with XML on stdout:

    nmap -oX - <ip>/<max(bits, 22)> --disable-arp-ping -p 22,80,443,502     full scan
    nmap -oX - <ip>/<max(bits, 22)> -sn -n --disable-arp-ping                 ping sweep (MAC cache refresh)

Each host that is up becomes `{"ipv4", "mac"?, "vendor"?, "hostname"?, "ports": ["502", ...]}`
(open ports as strings, as upstream); every host with a MAC is stored in the KV cache as
`env/net/mac/<mac lowercase>` for MAC resolution (macs.py). A scan is cancellable (nmap is
killed) and reports progress from nmap's `--stats-every` lines.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import shutil
import socket
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable

import psutil

from ...core import keys
from ...core.kvs import KVStore

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
DEFAULT_PORTS = (22, 80, 443, 502)
MIN_NETMASK_BITS = 22  # never scan more than a /22 (1024 addresses)
NMAP_TIMEOUT_S = 900.0
_PROGRESS = re.compile(rb'<taskprogress[^>]*\bpercent="([0-9.]+)"')


class ScanError(Exception):
    """nmap is missing, failed, or gave no usable output."""


class Cancelled(Exception):
    """The caller set the cancel event."""


def default_ipv4(probe: str = "1.1.1.1") -> str | None:
    """The local address of the default route: a UDP socket "connected" to a public address sends
    nothing, but the kernel picks the source address it would use."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((probe, 1))
            return s.getsockname()[0]
    except OSError:
        return None


def netmask_bits(netmask: str | None) -> int | None:
    try:
        return ipaddress.IPv4Network(f"0.0.0.0/{netmask}").prefixlen if netmask else None
    except ValueError:
        return None


def default_interface() -> dict | None:
    """{"ifname", "ipv4", "netmask" (bits)} of the interface holding the default route's address."""
    ip = default_ipv4()
    if ip is None:
        return None
    for ifname, addrs in psutil.net_if_addrs().items():
        for a in addrs:
            if a.family == socket.AF_INET and a.address == ip:
                return {"ifname": ifname, "ipv4": ip, "netmask": netmask_bits(a.netmask)}
    return {"ifname": None, "ipv4": ip, "netmask": None}


def interfaces() -> list[dict]:
    """[{"ifname", "mac", "ipv4", "netmask" (bits)}] of every interface but loopback (web UI's table;
    `network_of(ipv4, netmask)` is what a scan of one of them covers)."""
    out = []
    for ifname, addrs in sorted(psutil.net_if_addrs().items()):
        if ifname.startswith("lo"):
            continue
        entry: dict = {"ifname": ifname, "mac": None, "ipv4": None, "netmask": None}
        for a in addrs:
            if a.family == socket.AF_INET and entry["ipv4"] is None:
                entry["ipv4"], entry["netmask"] = a.address, netmask_bits(a.netmask)
            elif a.family == psutil.AF_LINK and a.address and a.address != "00:00:00:00:00:00":
                entry["mac"] = a.address.lower()
        out.append(entry)
    return out


def network_of(ipv4: str, bits: int | None) -> str:
    """The network to scan: the interface's own, but never larger than a /22."""
    bits = max(bits if bits is not None else 24, MIN_NETMASK_BITS)
    return str(ipaddress.IPv4Interface(f"{ipv4}/{bits}").network)


def parse_nmap_xml(xml: bytes | str) -> list[dict]:
    """The hosts that are up, in nmap's order. Raises ScanError on text that is not nmap XML."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ScanError(f"nmap did not return valid XML: {exc}") from None
    if root.tag != "nmaprun":
        raise ScanError(f"not nmap XML (root element <{root.tag}>)")
    hosts = []
    for h in root.findall("host"):  # not <hosthint>: nmap's early notice of a host, repeated later
        status = h.find("status")
        if status is None or status.get("state") != "up":
            continue
        host: dict = {}
        for a in h.findall("address"):
            if a.get("addrtype") == "ipv4":
                host["ipv4"] = a.get("addr")
            elif a.get("addrtype") == "mac":
                host["mac"] = a.get("addr")
                if a.get("vendor"):
                    host["vendor"] = a.get("vendor")
        names = h.findall("hostnames/hostname")
        if names and names[0].get("name"):
            host["hostname"] = names[0].get("name")
        ports = h.find("ports")
        if ports is not None:
            host["ports"] = [
                p.get("portid")
                for p in ports.findall("port")
                if (state := p.find("state")) is not None and state.get("state") == "open"
            ]
        if "ipv4" in host:
            hosts.append(host)
    return hosts


def run_nmap(
    args: list[str],
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    timeout: float = NMAP_TIMEOUT_S,
    nmap: str = "nmap",
) -> bytes:
    """Run `nmap -oX - --stats-every 2s ARGS` (no shell); its XML. Kills nmap on cancel or timeout."""
    exe = shutil.which(nmap)
    if exe is None:
        raise ScanError("nmap is not installed (Debian: apt-get install nmap)")
    cmd = [exe, "-oX", "-", "--stats-every", "2s", *args]
    log.info("running %s", " ".join(cmd))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    stdout, stderr = proc.stdout, proc.stderr
    assert stdout is not None and stderr is not None  # both PIPE
    out: list[bytes] = []
    err: list[bytes] = []

    def pump_out() -> None:
        for line in stdout:
            out.append(line)
            m = _PROGRESS.search(line)
            if m and progress:
                progress(min(float(m.group(1)), 100.0) / 100.0, "nmap running")

    readers = [
        threading.Thread(target=pump_out, daemon=True),
        threading.Thread(target=lambda: err.append(stderr.read()), daemon=True),
    ]
    for t in readers:
        t.start()
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None:
            if cancel is not None and cancel.is_set():
                raise Cancelled("scan cancelled")
            if time.monotonic() > deadline:
                raise ScanError(f"nmap took longer than {timeout:.0f} s")
            try:
                proc.wait(0.2)
            except subprocess.TimeoutExpired:
                pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        for t in readers:
            t.join(5)
    if proc.returncode != 0:
        raise ScanError(f"nmap exited with {proc.returncode}: {b''.join(err).decode(errors='replace').strip()[:500]}")
    return b"".join(out)


def store_macs(hosts: Iterable[dict], cache: KVStore | None) -> None:
    """Every host with a MAC into the KV cache `env/net/mac/<mac>`."""
    if cache is None:
        return
    for h in hosts:
        if h.get("mac"):
            cache.set(keys.mac_key(h["mac"]), h)


def nmap_scan(
    targets: list[str],
    ports: Iterable[int] = DEFAULT_PORTS,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    cache: KVStore | None = None,
) -> list[dict]:
    """Port scan of targets (addresses or networks); hosts with a MAC go into the cache."""
    port_list = ",".join(str(int(p)) for p in ports)
    hosts = parse_nmap_xml(run_nmap([*targets, "--disable-arp-ping", "-p", port_list], progress, cancel))
    store_macs(hosts, cache)
    return hosts


def ping_sweep(
    targets: list[str] | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    cache: KVStore | None = None,
) -> list[dict]:
    """Hosts that answer a ping sweep (no port scan, no DNS); refreshes the MAC cache. Without
    targets: the default interface's network."""
    if not targets:
        iface = default_interface()
        if iface is None:
            raise ScanError("no default network interface")
        targets = [network_of(iface["ipv4"], iface["netmask"])]
    hosts = parse_nmap_xml(run_nmap([*targets, "-sn", "-n", "--disable-arp-ping"], progress, cancel))
    store_macs(hosts, cache)
    return hosts
