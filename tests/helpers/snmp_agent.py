"""Debian's real snmpd on a loopback UDP port, with values the test sets.

Values under the test's subtrees come from a `pass` script reading a file of `OID TYPE VALUE` lines
(`set()` rewrites it: the next GET sees the new value); system MIB objects (sysUpTime ...) are
snmpd's own. Community `public` (v1, v2c) and two SNMPv3 users made by `createUser` in the config:
`authpriv` (SHA, AES-128) and `authsha256` (SHA-256, no privacy).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers.common import free_port

PASS_SCRIPT = """#!/bin/sh
[ "$1" = "-g" ] || exit 0
line=$(grep -m1 "^$2 " "{vals}") || exit 0
set -- $line
echo "$1"; echo "$2"; shift 2; echo "$*"
"""
USERS = {
    "authpriv": dict(
        auth_protocol="SHA", auth_password="authpass123", priv_protocol="AES", priv_password="privpass123"
    ),
    "authsha256": dict(auth_protocol="SHA-256", auth_password="authpass123"),
}


def free_udp_port() -> int:
    import socket

    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free UDP port")


class SnmpAgent:
    def __init__(self, workdir: Path, subtrees=(".1.3.6.1.4.1.30140", ".1.3.6.1.4.1.99999")):
        if shutil.which("snmpd") is None:
            pytest.skip("snmpd is not installed (scripts/setup --test installs it)")
        self.dir = workdir
        self.port = free_udp_port()
        self.vals = workdir / "vals"
        self.vals.write_text("")
        script = workdir / "pass.sh"
        script.write_text(PASS_SCRIPT.format(vals=self.vals))
        script.chmod(0o755)
        (workdir / "persist").mkdir(exist_ok=True)
        lines = [
            f"[snmp] persistentDir {workdir / 'persist'}",
            f"agentAddress udp:127.0.0.1:{self.port}",
            "rocommunity public 127.0.0.1",
            'createUser authpriv SHA "authpass123" AES "privpass123"',
            'createUser authsha256 SHA-256 "authpass123"',
            "rouser authpriv priv",
            "rouser authsha256 auth",
            *(f"pass {tree} {script}" for tree in subtrees),
        ]
        self.conf = workdir / "snmpd.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = workdir / "snmpd.log"
        self.proc: subprocess.Popen | None = None

    def set(self, values: dict[str, tuple[str, object]]) -> None:
        """{oid: (type, value)}, type as snmpd's pass protocol names it: integer, string, gauge, counter,
        timeticks, counter64, ipaddress, objectid."""
        text = "".join(f"{oid if oid.startswith('.') else '.' + oid} {t} {v}\n" for oid, (t, v) in values.items())
        tmp = self.vals.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.vals)

    def start(self) -> SnmpAgent:
        env = dict(os.environ, MIBS="", SNMP_PERSISTENT_DIR=str(self.dir / "persist"))
        self.proc = subprocess.Popen(
            ["snmpd", "-f", "-Lf", str(self.log), "-C", "-c", str(self.conf), "-p", str(self.dir / "pid")],
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.log.exists() and "NET-SNMP version" in self.log.read_text():
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"snmpd exited: {self.log.read_text() if self.log.exists() else ''}")
            time.sleep(0.05)
        raise RuntimeError("snmpd did not start within 30 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
