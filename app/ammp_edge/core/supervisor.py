"""supervisord as the programs see it: its XML-RPC client, program names and process states.

Everything here talks to a running supervisord over its unix socket ($AE_TEMP_DIR/supervisor.sock);
rendering its config is `supervisor_conf` (bus includes) and `device.supervise` (the main file).
Program names: the fixed programs are named as their `ammp-edge` subcommand (`mosquitto` runs
`ammp-edge broker`); a bus is `bus-<bus id>`, a demo simulator `sim-<device>`.
"""

from __future__ import annotations

import logging
import re
import time
import xmlrpc.client
from pathlib import Path
from typing import Any

from supervisor.xmlrpc import SupervisorTransport, UnixStreamHTTPConnection

from . import paths

log = logging.getLogger(__name__)

BUS_PREFIX = "bus-"
SIM_PREFIX = "sim-"
BACKFILL_PREFIX = "backfill-"  # backfill-hycon: the daily HyCon CSV backfill, while the config has a HyCon
PRIORITY = {"sim": 5, "mosquitto": 10, "bridge-config": 20, "publisher": 30, "node": 40, "webui": 50, "bus": 100}
STOP_WAIT_S = 10  # a bus finishes its cycle on SIGTERM; after this supervisord sends SIGKILL
RUNNING = "RUNNING"
FATAL = "FATAL"
STOPPED_STATES = ("STOPPED", "EXITED", FATAL, "UNKNOWN")
MAX_UNIX_SOCKET_PATH = 107
RPC_TIMEOUT_S = 30.0  # every call we make returns at once (stop with wait=False)


def program_name(prefix: str, ident: str) -> str:
    """supervisord refuses ' ', ':' and '/' in names and expands '%'; bus ids are already safe."""
    return prefix + re.sub(r"[^A-Za-z0-9_.-]", "_", ident)


def bus_program_name(bus_id: str) -> str:
    return program_name(BUS_PREFIX, bus_id)


def priority_of(group: str) -> int:
    if group.startswith((BUS_PREFIX, BACKFILL_PREFIX)):
        return PRIORITY["bus"]
    if group.startswith(SIM_PREFIX):
        return PRIORITY["sim"]
    return PRIORITY.get(group, 999)  # supervisord's default


class _UnixConnection(UnixStreamHTTPConnection):
    def connect(self) -> None:
        super().connect()
        self.sock.settimeout(self.timeout)  # supervisor's own connection has none: a hung supervisord would hang us


def connect(sock: Path | None = None, timeout: float = RPC_TIMEOUT_S) -> Any:
    """A client for supervisord (an xmlrpc.client.ServerProxy); calls raise OSError when it is not there
    or does not answer in time, xmlrpc.client.Fault when it refuses. Not thread-safe: one per thread."""
    path = str(sock or paths.supervisor_socket())
    transport = SupervisorTransport(None, None, f"unix://{path}")

    def unix_connection() -> _UnixConnection:
        conn = _UnixConnection("localhost", timeout=timeout)
        conn.socketfile = path
        return conn

    transport._get_connection = unix_connection  # supervisor's transport has no other way to set a timeout
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def groups(server: Any) -> dict[str, list[dict]]:
    """Process info by group name."""
    out: dict[str, list[dict]] = {}
    for info in server.supervisor.getAllProcessInfo():
        out.setdefault(info["group"], []).append(info)
    return out


def stop_groups(server: Any, names: list[str], timeout: float = STOP_WAIT_S + 5) -> None:
    """Stop groups together (supervisord's own shutdown stops one group after the other)."""
    for name in names:
        server.supervisor.stopProcessGroup(name, False)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        current = groups(server)
        if all(i["statename"] in STOPPED_STATES for n in names for i in current.get(n, [])):
            return
        time.sleep(0.1)
    log.warning("programs still stopping after %.0f s: %s", timeout, ", ".join(names))


def programs(timeout: float = 5.0) -> tuple[list[dict], str | None]:
    """supervisord's programs (name, group, state, description, pid) by name, or an error text."""
    try:
        infos = connect(timeout=timeout).supervisor.getAllProcessInfo()
    except (OSError, xmlrpc.client.Error) as exc:
        return [], f"supervisord not reachable: {exc}"
    return [
        {
            "name": i["name"],
            "group": i["group"],
            "state": i["statename"],
            "description": i["description"],
            "pid": i["pid"],
        }
        for i in sorted(infos, key=lambda i: i["name"])
    ], None
