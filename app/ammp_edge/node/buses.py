"""The bus programs follow the config: one supervisord group `bus-<bus id>` per bus of the config.

Reconciling adds the groups of new buses, stops and removes those of buses that left the config and
starts again a bus that gave up (FATAL); buses in both are never touched (they reload the config
between cycles). node runs it every round, so a failed attempt is retried.
"""

from __future__ import annotations

import logging
import xmlrpc.client
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from supervisor.xmlrpc import Faults

from ..core import paths
from ..core.config import Config
from ..core.supervisor import BACKFILL_PREFIX, BUS_PREFIX, FATAL, bus_program_name, connect, groups, stop_groups
from ..core.supervisor_conf import Program, backfill_program, bus_program, write_include

log = logging.getLogger(__name__)


@dataclass
class Changes:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.restarted)

    def __str__(self) -> str:
        return "; ".join(
            f"{what} {', '.join(names)}"
            for what, names in (("added", self.added), ("removed", self.removed), ("restarted", self.restarted))
            if names
        )


def reconcile(config: Config, server: Any = None) -> Changes:
    """Make the `bus-*` program groups match the buses of the config.

    Added buses get an include file, `reloadConfig` and `addProcessGroup` (which starts them); removed
    ones are stopped together, removed and their include deleted; a bus that gave up (FATAL) is
    started again. Buses in both are never touched: they reload the config between cycles."""
    server = server or connect()
    wanted: dict[str, Program] = {bus_program_name(b): bus_program(b) for b in config.buses()}
    if config.backfill_devices():  # the daily HyCon backfill runs while the config has a HyCon
        prog = backfill_program("hycon")
        wanted[prog.name] = prog
    present = {name: infos for name, infos in groups(server).items() if name.startswith((BUS_PREFIX, BACKFILL_PREFIX))}
    changes = Changes(added=sorted(set(wanted) - set(present)), removed=sorted(set(present) - set(wanted)))
    if changes.removed:
        stop_groups(server, changes.removed)
        for name in changes.removed:
            server.supervisor.removeProcessGroup(name)
            (paths.supervisor_include_dir() / f"{name}.conf").unlink(missing_ok=True)
    if changes.added:
        for name in changes.added:
            write_include(wanted[name])
        server.supervisor.reloadConfig()
        for name in changes.added:
            try:
                server.supervisor.addProcessGroup(name)
            except xmlrpc.client.Fault as exc:
                if exc.faultCode != Faults.ALREADY_ADDED:
                    raise
    for name, infos in present.items():
        if name in wanted and any(i["statename"] == FATAL for i in infos):
            server.supervisor.startProcessGroup(name, False)
            changes.restarted.append(name)
    return changes


class BusPrograms:
    """Keeps the bus programs in step with the config; logs changes, and trouble once per episode."""

    def __init__(self, reconcile: Callable[[Config], Changes] = reconcile, round_s: float = 2.0):
        self.reconcile = reconcile
        self.round_s = round_s
        self.failing = False

    def step(self, config: Config | None) -> None:
        if config is None:
            return
        try:
            changes = self.reconcile(config)
        except (OSError, xmlrpc.client.Error) as exc:
            stopping = isinstance(exc, xmlrpc.client.Fault) and exc.faultCode == Faults.SHUTDOWN_STATE
            if not self.failing and not stopping:  # when supervisord is stopping, node is next
                log.error(
                    "cannot reconcile the bus programs with supervisord (%s); retrying every %.0f s", exc, self.round_s
                )
                self.failing = True
            return
        if self.failing:
            log.info("supervisord reachable again")
            self.failing = False
        if changes:
            log.info("bus programs for config %s: %s", config.config_id, changes)
