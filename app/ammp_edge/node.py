"""The node program: the appliance's own housekeeping, one concern per part.

Today: config intake from the KV store key `config` and the bus programs that follow it. Every few
seconds the raw value is read; when its bytes changed it is loaded (bus.ConfigSource: an unusable
config is logged and the previous one kept) and the `bus-*` programs are reconciled with its buses
through supervisord (supervise.reconcile). Reconciling runs every round, so a failed attempt
(supervisord not up yet, a refused call) is retried and a bus that gave up is started again.

Provisioning and activation, config from the HTTP API and `d/config`, commands from `d/command` and
start-up metadata come later as their own modules, each a part with a `step()` called from `run()`.
"""

from __future__ import annotations

import logging
import threading
import xmlrpc.client
from typing import Callable

from supervisor.xmlrpc import Faults

from . import supervise, watchdog
from .bus import ConfigSource
from .config import Config
from .kvs import KVStore

log = logging.getLogger(__name__)

ROUND_S = 2.0
MAX_SILENCE_S = 120.0  # a round: a KV read (SQLite waits up to 30 s) and XML-RPC calls (30 s timeout each)


class BusPrograms:
    """Keeps the bus programs in step with the config; logs changes, and trouble once per episode."""

    def __init__(self, reconcile: Callable[[Config], supervise.Changes] = supervise.reconcile):
        self.reconcile = reconcile
        self.failing = False

    def step(self, config: Config | None) -> None:
        if config is None:
            return
        try:
            changes = self.reconcile(config)
        except (OSError, xmlrpc.client.Error) as exc:
            stopping = isinstance(exc, xmlrpc.client.Fault) and exc.faultCode == Faults.SHUTDOWN_STATE
            if not self.failing and not stopping:  # when supervisord is stopping, node is next
                log.error("cannot reconcile the bus programs with supervisord (%s); retrying every %.0f s", exc, ROUND_S)
                self.failing = True
            return
        if self.failing:
            log.info("supervisord reachable again")
            self.failing = False
        if changes:
            log.info("bus programs for config %s: %s", config.config_id, changes)


def run(stop: threading.Event, round_s: float = ROUND_S, kvstore: KVStore | None = None) -> int:
    source = ConfigSource(kvstore=kvstore or KVStore(), remember_good=True)
    buses = BusPrograms()
    log.info("node: watching the KV store key 'config' every %.0f s", round_s)
    while not stop.is_set():
        watchdog.heartbeat("node", MAX_SILENCE_S)
        buses.step(source.current())
        stop.wait(round_s)
    log.info("node: stopped")
    return 0
