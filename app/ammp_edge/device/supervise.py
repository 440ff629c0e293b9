"""The appliance under supervisord: the main config `up` renders, and the ordered shutdown.

Everything lives in $AE_TEMP_DIR (volatile, rendered afresh by `ammp-edge up` at each start):
  supervisord.conf        fixed programs (mosquitto, bridge-config, publisher, node, webui, demo simulators)
  supervisor.d/bus-*.conf one include per bus (core.supervisor_conf), written by `up` and later by node.buses
  supervisor.sock         XML-RPC on a unix socket (mode 0700), no inet listener
  logs/                   one size-capped log file per program; supervisord.log beside the conf
All of it readable by its owner only: supervisord runs with umask 077, so every program does too.

Priorities: supervisord starts programs in ascending priority and, on shutdown, stops them one group
at a time in descending priority (supervisord.runforever: the last group of the sorted list first).
So buses (100) stop first and their last readouts reach the outbox, then webui (50), node (40), publisher (30),
bridge-config (20), mosquitto (10); the demo's simulated devices (5) go last, after every bus.
supervisord needs a second or two per group for that (it notices an exit on its next 1 s tick), so
`up` does the same through XML-RPC, one priority tier at a time with all its groups together
(stop_in_order), and leaves supervisord's own ordered shutdown as the fallback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.config import Config
from ..core.supervisor import PRIORITY, SIM_PREFIX, groups, priority_of, program_name, stop_groups
from ..core.supervisor_conf import LOG_BACKUPS, LOG_MAXBYTES, Program, ammp_edge, render_program, value


def fixed_programs(demo: Config | None = None) -> list[Program]:
    """The programs besides the buses: the broker (`ammp-edge broker` checks its persistence file, then
    becomes mosquitto), bridge-config, publisher, node, and the demo's simulated devices."""
    progs = [Program("mosquitto", ammp_edge("broker"), PRIORITY["mosquitto"])]
    progs += [
        Program(name, ammp_edge(name), PRIORITY[name]) for name in ("bridge-config", "publisher", "node", "webui")
    ]
    for dev in demo.devices.values() if demo else ():
        if dev.reading_type == "modbustcp":
            a = dev.address
            progs.append(
                Program(
                    program_name(SIM_PREFIX, dev.key),
                    ammp_edge(
                        "simulate",
                        "--driver",
                        dev.driver_name,
                        "--host",
                        str(a["host"]),
                        "--port",
                        str(a.get("port", 502)),
                        "--unit",
                        str(dev.unit_id),
                    ),
                    PRIORITY["sim"],
                )
            )
    return progs


def render_main(programs: list[Program], temp_dir: Path, env: dict[str, str]) -> str:
    head = f"""; Rendered by `ammp-edge up` at each start; edits are lost. Bus programs: supervisor.d/bus-*.conf
[unix_http_server]
file={value(temp_dir / "supervisor.sock")}
chmod=0700

[supervisord]
nodaemon=true
umask=077
logfile={value(temp_dir / "supervisord.log")}
logfile_maxbytes={LOG_MAXBYTES}
logfile_backups={LOG_BACKUPS}
loglevel=info
pidfile={value(temp_dir / "supervisord.pid")}
childlogdir={value(temp_dir / "logs")}
identifier=ammp-edge

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{value(temp_dir / "supervisor.sock")}

"""
    body = "\n".join(render_program(p, temp_dir, env) for p in programs)
    return head + body + "\n[include]\nfiles = supervisor.d/*.conf\n"


def stop_in_order(server: Any) -> None:
    """supervisord's shutdown order, faster: all groups of one priority together, highest first, each
    tier as soon as the previous one is down (supervisord itself takes a second or two per group)."""
    names = list(groups(server))
    for prio in sorted({priority_of(n) for n in names}, reverse=True):
        stop_groups(server, [n for n in names if priority_of(n) == prio])
