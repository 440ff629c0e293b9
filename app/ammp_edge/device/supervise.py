"""The appliance under supervisord: the rendered config, the XML-RPC client and bus reconciliation.

Everything lives in $AE_TEMP_DIR (volatile, rendered afresh by `ammp-edge up` at each start):
  supervisord.conf        fixed programs (mosquitto, bridge-config, publisher, node, webui, demo simulators)
  supervisor.d/bus-*.conf one include per bus, written by `up` and later by `reconcile()` in `node`
  supervisor.sock         XML-RPC on a unix socket (mode 0700), no inet listener
  logs/                   one size-capped log file per program; supervisord.log beside the conf

Priorities: supervisord starts programs in ascending priority and, on shutdown, stops them one group
at a time in descending priority (supervisord.runforever: the last group of the sorted list first).
So buses (100) stop first and their last readouts reach the outbox, then webui (50), node (40), publisher (30),
bridge-config (20), mosquitto (10); the demo's simulated devices (5) go last, after every bus.
supervisord needs a second or two per group for that (it notices an exit on its next 1 s tick), so
`up` does the same through XML-RPC, one priority tier at a time with all its groups together
(stop_in_order), and leaves supervisord's own ordered shutdown as the fallback.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import sys
import time
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path

from supervisor.xmlrpc import Faults, SupervisorTransport, UnixStreamHTTPConnection

from ..core import paths
from ..core.fileio import write_atomic
from ..core.config import Config

log = logging.getLogger(__name__)

BUS_PREFIX = "bus-"
SIM_PREFIX = "sim-"
PRIORITY = {"sim": 5, "mosquitto": 10, "bridge-config": 20, "publisher": 30, "node": 40, "webui": 50, "bus": 100}
START_RETRIES = 1000  # supervisord waits 1 s longer after each failed start: ~6 days before FATAL
STOP_WAIT_S = 10  # a bus finishes its cycle on SIGTERM; after this supervisord sends SIGKILL
LOG_MAXBYTES = "1MB"
LOG_BACKUPS = 2
PASS_ENV = re.compile(r"^(AE_\w+|MQTT_BRIDGE_\w+|LOGGING_LEVEL|LOG_LEVEL)$")
STOPPED_STATES = ("STOPPED", "EXITED", "FATAL", "UNKNOWN")
MAX_UNIX_SOCKET_PATH = 107
RPC_TIMEOUT_S = 30.0  # every call we make returns at once (stop with wait=False)




def program_name(prefix: str, ident: str) -> str:
    """supervisord refuses ' ', ':' and '/' in names and expands '%'; bus ids are already safe."""
    return prefix + re.sub(r"[^A-Za-z0-9_.-]", "_", ident)


@dataclass(frozen=True)
class Program:
    name: str
    command: list[str]
    priority: int


def ammp_edge(*args: str) -> list[str]:
    return [sys.executable, "-m", "ammp_edge", *args]


def bus_program(bus_id: str) -> Program:
    return Program(program_name(BUS_PREFIX, bus_id), ammp_edge("bus", bus_id), PRIORITY["bus"])


def fixed_programs(demo: Config | None = None) -> list[Program]:
    """The programs besides the buses: the broker (`ammp-edge broker` checks its persistence file, then
    becomes mosquitto), bridge-config, publisher, node, and the demo's simulated devices."""
    progs = [Program("mosquitto", ammp_edge("broker"), PRIORITY["mosquitto"])]
    progs += [Program(name, ammp_edge(name), PRIORITY[name]) for name in ("bridge-config", "publisher", "node", "webui")]
    for dev in (demo.devices.values() if demo else ()):
        if dev.reading_type == "modbustcp":
            a = dev.address
            progs.append(Program(program_name(SIM_PREFIX, dev.key), ammp_edge(
                "simulate", "--driver", dev.driver_name, "--host", str(a["host"]), "--port", str(a.get("port", 502)),
                "--unit", str(dev.unit_id)), PRIORITY["sim"]))
    return progs


# ---------------------------------------------------------------------------------------------
# rendering (pure)


def _v(value) -> str:
    """A value for supervisord's config: '%' starts an expansion there."""
    return str(value).replace("%", "%%")


def _environment(env: dict[str, str]) -> str:
    """`environment=` for the variables passed through, each value in double quotes. supervisord's
    parser has no escapes and strips quote characters at the ends, so a value with a quote or a line
    break is left to inheritance (programs get supervisord's environment too)."""
    items = {"PYTHONUNBUFFERED": "1"}
    items.update({k: v for k, v in sorted(env.items()) if PASS_ENV.match(k) and not re.search("[\"'\n\r]", v)})
    return ",".join(f'{k}="{_v(v)}"' for k, v in items.items())


def render_program(prog: Program, temp_dir: Path, env: dict[str, str]) -> str:
    logfile = temp_dir / "logs" / f"{prog.name}.log"
    return "\n".join([
        f"[program:{prog.name}]",
        f"command={_v(shlex.join(prog.command))}",
        f"priority={prog.priority}",
        "autostart=true",
        "autorestart=true",
        "startsecs=1",
        f"startretries={START_RETRIES}",
        "stopsignal=TERM",
        f"stopwaitsecs={STOP_WAIT_S}",
        "stopasgroup=true",
        "killasgroup=true",
        "redirect_stderr=true",
        f"stdout_logfile={_v(logfile)}",
        f"stdout_logfile_maxbytes={LOG_MAXBYTES}",
        f"stdout_logfile_backups={LOG_BACKUPS}",
        f"environment={_environment(env)}",
        "",
    ])


def render_main(programs: list[Program], temp_dir: Path, env: dict[str, str]) -> str:
    head = f"""; Rendered by `ammp-edge up` at each start; edits are lost. Bus programs: supervisor.d/bus-*.conf
[unix_http_server]
file={_v(temp_dir / "supervisor.sock")}
chmod=0700

[supervisord]
nodaemon=true
logfile={_v(temp_dir / "supervisord.log")}
logfile_maxbytes={LOG_MAXBYTES}
logfile_backups={LOG_BACKUPS}
loglevel=info
pidfile={_v(temp_dir / "supervisord.pid")}
childlogdir={_v(temp_dir / "logs")}
identifier=ammp-edge

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{_v(temp_dir / "supervisor.sock")}

"""
    body = "\n".join(render_program(p, temp_dir, env) for p in programs)
    return head + body + "\n[include]\nfiles = supervisor.d/*.conf\n"


def write_bus_include(bus_id: str, env: dict[str, str] | None = None) -> Path:
    prog = bus_program(bus_id)
    path = paths.supervisor_include_dir() / f"{prog.name}.conf"
    write_atomic(path, render_program(prog, paths.temp_dir(), dict(os.environ) if env is None else env))
    return path


# ---------------------------------------------------------------------------------------------
# XML-RPC over the unix socket


class _UnixConnection(UnixStreamHTTPConnection):
    def connect(self):
        super().connect()
        self.sock.settimeout(self.timeout)  # supervisor's own connection has none: a hung supervisord would hang us


def connect(sock: Path | None = None, timeout: float = RPC_TIMEOUT_S) -> xmlrpc.client.ServerProxy:
    """A client for supervisord; calls raise OSError when it is not there or does not answer in time,
    xmlrpc.client.Fault when it refuses. Not thread-safe: one per thread."""
    path = str(sock or paths.supervisor_socket())
    transport = SupervisorTransport(None, None, f"unix://{path}")

    def unix_connection():
        conn = _UnixConnection("localhost", timeout=timeout)
        conn.socketfile = path
        return conn

    transport._get_connection = unix_connection
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def groups(server) -> dict[str, list[dict]]:
    """Process info by group name."""
    out: dict[str, list[dict]] = {}
    for info in server.supervisor.getAllProcessInfo():
        out.setdefault(info["group"], []).append(info)
    return out


def stop_groups(server, names: list[str], timeout: float = STOP_WAIT_S + 5) -> None:
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


def priority_of(group: str) -> int:
    if group.startswith(BUS_PREFIX):
        return PRIORITY["bus"]
    if group.startswith(SIM_PREFIX):
        return PRIORITY["sim"]
    return PRIORITY.get(group, 999)  # supervisord's default


def stop_in_order(server) -> None:
    """supervisord's shutdown order, faster: all groups of one priority together, highest first, each
    tier as soon as the previous one is down (supervisord itself takes a second or two per group)."""
    names = list(groups(server))
    for prio in sorted({priority_of(n) for n in names}, reverse=True):
        stop_groups(server, [n for n in names if priority_of(n) == prio])


@dataclass
class Changes:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.restarted)

    def __str__(self) -> str:
        return "; ".join(f"{what} {', '.join(names)}" for what, names in
                         (("added", self.added), ("removed", self.removed), ("restarted", self.restarted)) if names)


def reconcile(config: Config, server=None) -> Changes:
    """Make the `bus-*` program groups match the buses of the config.

    Added buses get an include file, `reloadConfig` and `addProcessGroup` (which starts them); removed
    ones are stopped together, removed and their include deleted; a bus that gave up (FATAL) is
    started again. Buses in both are never touched: they reload the config between cycles."""
    server = server or connect()
    wanted = {bus_program(b).name: b for b in config.buses()}
    present = {name: infos for name, infos in groups(server).items() if name.startswith(BUS_PREFIX)}
    changes = Changes(added=sorted(set(wanted) - set(present)), removed=sorted(set(present) - set(wanted)))
    if changes.removed:
        stop_groups(server, changes.removed)
        for name in changes.removed:
            server.supervisor.removeProcessGroup(name)
            (paths.supervisor_include_dir() / f"{name}.conf").unlink(missing_ok=True)
    if changes.added:
        for name in changes.added:
            write_bus_include(wanted[name])
        server.supervisor.reloadConfig()
        for name in changes.added:
            try:
                server.supervisor.addProcessGroup(name)
            except xmlrpc.client.Fault as exc:
                if exc.faultCode != Faults.ALREADY_ADDED:
                    raise
    for name, infos in present.items():
        if name in wanted and any(i["statename"] == "FATAL" for i in infos):
            server.supervisor.startProcessGroup(name, False)
            changes.restarted.append(name)
    return changes
