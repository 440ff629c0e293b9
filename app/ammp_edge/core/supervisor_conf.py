"""supervisord program sections: how every appliance program is run and logged.

`ammp-edge up` renders supervisord.conf with the fixed programs (device.supervise) and one include per
bus in $AE_TEMP_DIR/supervisor.d/; node writes and deletes bus includes as the config changes
(node.buses). Both render a program section here, so a bus started either way is the same.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from . import paths
from .fileio import write_atomic
from .supervisor import BACKFILL_PREFIX, PRIORITY, STOP_WAIT_S, bus_program_name

START_RETRIES = 1000  # supervisord waits 1 s longer after each failed start: ~6 days before FATAL
LOG_MAXBYTES = "1MB"
LOG_BACKUPS = 2
PASS_ENV = re.compile(r"^(AE_\w+|MQTT_BRIDGE_\w+|LOGGING_LEVEL|LOG_LEVEL)$")


@dataclass(frozen=True)
class Program:
    name: str
    command: list[str]
    priority: int


def ammp_edge(*args: str) -> list[str]:
    return [sys.executable, "-m", "ammp_edge", *args]


def bus_program(bus_id: str) -> Program:
    return Program(bus_program_name(bus_id), ammp_edge("bus", bus_id), PRIORITY["bus"])


def backfill_program(kind: str = "hycon") -> Program:
    return Program(BACKFILL_PREFIX + kind, ammp_edge(kind), PRIORITY["bus"])


def value(text: object) -> str:
    """A value for supervisord's config: '%' starts an expansion there."""
    return str(text).replace("%", "%%")


def _environment(env: dict[str, str]) -> str:
    """`environment=` for the variables passed through, each value in double quotes. supervisord's
    parser has no escapes and strips quote characters at the ends, so a value with a quote or a line
    break is left to inheritance (programs get supervisord's environment too)."""
    items = {"PYTHONUNBUFFERED": "1"}
    items.update({k: v for k, v in sorted(env.items()) if PASS_ENV.match(k) and not re.search("[\"'\n\r]", v)})
    return ",".join(f'{k}="{value(v)}"' for k, v in items.items())


def render_program(prog: Program, temp_dir: Path, env: dict[str, str]) -> str:
    logfile = temp_dir / "logs" / f"{prog.name}.log"
    return "\n".join(
        [
            f"[program:{prog.name}]",
            f"command={value(shlex.join(prog.command))}",
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
            f"stdout_logfile={value(logfile)}",
            f"stdout_logfile_maxbytes={LOG_MAXBYTES}",
            f"stdout_logfile_backups={LOG_BACKUPS}",
            f"environment={_environment(env)}",
            "",
        ]
    )


def write_bus_include(bus_id: str, env: dict[str, str] | None = None) -> Path:
    return write_include(bus_program(bus_id), env)


def write_include(prog: Program, env: dict[str, str] | None = None) -> Path:
    path = paths.supervisor_include_dir() / f"{prog.name}.conf"
    write_atomic(path, render_program(prog, paths.temp_dir(), dict(os.environ) if env is None else env), 0o600)
    return path
