"""The node program: the appliance's own housekeeping, one concern per module, wired together here.

- clock (core/clock.py): waits for NTP or a running RTC, then writes the KV cache key `clock_trusted`, which
  the buses wait for before their first cycle.
- identity (provision.py): node_id, activation against the AMMP API, the legacy config.db import.
- config intake (intake.py): the provisioning file when there is no config, the HTTP watch (at start,
  then hourly) and `d/config` pushes; usable configs are stored raw in the KV key `config`, unusable
  ones refused with the reason on `u/log/msg`.
- commands (commands.py): `d/command` payloads go to commands.CommandService.
- metadata (meta.py): `u/meta/*` once the broker runs with its bridges.
- bus programs: every round the KV key `config` is read; when its bytes changed it is loaded
  (core.configsource.ConfigSource: an unusable config is logged and the previous one kept) and the
  `bus-*` programs are reconciled with its buses through supervisord (buses.py). Reconciling runs every
  round, so a failed attempt is retried and a bus that gave up is started again. When the config that
  runs changes (and at start), node says on `u/log/msg` which config it is, where it came from (any
  door: core.configdoor keeps its origin) and its problems.

MQTT: one persistent session on the local broker (client id `ammp-edge-node`, clean session false)
with QoS 2 subscriptions to `d/config` and `d/command`; the broker keeps what arrives while node is
down (the bridge maps the cloud's a/<node_id>/d/# to local d/#) and delivers it when node is back.

AE_OFFLINE=1 (set by `up --demo`): no HTTP request at all (no activation, no config watch); the rest
runs. The cloud parts run in their own threads, so the buses follow a config from `up --config`
while activation is still retrying.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..bridge.plan import bridge_state_topics
from ..core import clock, configdoor, keys, paths, watchdog
from ..core.config import Config
from ..core.configsource import ConfigSource
from ..core.kvs import KVStore, cache
from ..delivery.mqtt import MqttLink
from . import meta, provision
from .buses import BusPrograms
from .cloudapi import Api, base_url
from .commands import CommandService
from .intake import HttpWatch, Intake

log = logging.getLogger(__name__)

ROUND_S = 2.0
MAX_SILENCE_S = 120.0  # a round: a KV read (SQLite waits up to 30 s) and XML-RPC calls (30 s timeout each)
SUBSCRIPTIONS = ((keys.CONFIG_TOPIC, 2), (keys.COMMAND_TOPIC, 2))


def command_service(publish: Callable[[str, str], None]) -> CommandService | None:
    """commands.CommandService(publish), or None when it cannot be set up (d/command is then answered
    with an error)."""
    try:
        return CommandService(publish)
    except Exception:
        log.exception("commands could not be set up: d/command is answered with an error")
    return None


class Node:
    def __init__(
        self,
        stop: threading.Event,
        store: KVStore,
        offline: bool | None = None,
        link: Any = None,
        retry_first: float | None = None,
    ):
        self.stop = stop
        self.store = store
        self.offline = paths.offline() if offline is None else offline
        self.retry_first = retry_first
        self.fatal = threading.Event()  # an unexpected error in a thread: exit, supervisord restarts us
        self.identity = threading.Event()
        self.started = time.time()
        self.source = ConfigSource(kvstore=store, remember_good=True)
        self.link = link or MqttLink(keys.NODE_CLIENT_ID, self.on_message, SUBSCRIPTIONS, clean_session=False)
        self.intake = Intake(store, self.source.builtin, self.publish)
        self.commands: CommandService | None = None  # set up in start(), after the clock check has begun
        self.threads: list[threading.Thread] = []
        self._announced: Config | None = None
        self._announcement: str | None = None  # said on u/log/msg once node is connected

    # -- MQTT -------------------------------------------------------------------------------------
    def publish(self, topic: str, text: str) -> None:
        self.link.connected.wait(5)  # early messages (the clock check) come before the first CONNACK
        if self.link.publish(topic, text, qos=1) is None:
            log.warning("not connected to the local broker: %s not sent: %s", topic, text)

    def on_message(self, topic: str, payload: bytes, retain: bool) -> None:
        """paho's network thread; a QoS 2 message is acknowledged after this returns."""
        try:
            if topic == keys.CONFIG_TOPIC:
                log.info("config pushed on %s (%d bytes)", topic, len(payload))
                self.intake.offer(bytes(payload), "d/config")
            elif topic == keys.COMMAND_TOPIC:
                if self.commands is None:
                    self.publish(keys.COMMAND_RESPONSE_TOPIC, "Commands could not be set up on this node (see its log)")
                elif retain:
                    self.commands.handle(bytes(payload), retained=True)  # refused there: it would rerun at each connect
                else:
                    self.commands.handle(bytes(payload))
        except Exception:
            log.exception("handling %s failed; node exits to be restarted", topic)
            self.fatal.set()

    # -- threads ----------------------------------------------------------------------------------
    def _thread(self, name: str, target: Callable[[], None]) -> None:
        def guarded() -> None:
            try:
                target()
            except Exception:
                log.exception("node %s failed; node exits to be restarted", name)
                self.fatal.set()

        th = threading.Thread(target=guarded, name=f"node {name}", daemon=True)
        th.start()
        self.threads.append(th)

    def _clock(self) -> None:
        if clock.wait_until_trusted(self.stop, self.publish):
            kv = cache()
            clock.mark_trusted(kv)
            kv.close()

    def _cloud(self) -> None:
        def api_for() -> Api:
            return Api(base_url(self.store))

        ident = provision.ensure_identity(self.store, self.stop, api_for, retry_first=self.retry_first)
        if ident is None:
            return
        self.identity.set()
        HttpWatch(self.intake, api_for, *ident, paths.config_check_interval(), self.retry_first).run(self.stop)

    def _meta(self) -> None:
        if not self.offline:
            while not self.identity.wait(1.0):
                if self.stop.is_set():
                    return
        meta.wait_for_bridges(bridge_state_topics(self.store), self.stop)
        if not self.stop.is_set():
            meta.publish_meta(self.link, meta.values(self.started), self.stop)

    def announce(self, config: Config | None) -> None:
        """Say on u/log/msg which config runs and where it came from, once per config that starts to run;
        never waits for the broker (the round reconciles the buses): while node is not connected the
        latest announcement waits for a later round."""
        if config is not None and config is not self._announced:
            self._announced = config
            self._announcement = configdoor.announcement(self.store, config)
            log.info("%s", self._announcement)
        if self._announcement is not None and self.link.connected.is_set():
            if self.link.publish(keys.LOG_TOPIC, self._announcement, qos=1) is not None:
                self._announcement = None

    # -- the program ------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread("clock", self._clock)  # first: the buses wait for it
        self.commands = command_service(self.publish)
        self.intake.provision(paths.provisioning_file())
        self.link.start()
        if self.offline:
            log.info("AE_OFFLINE: no activation and no config check against the AMMP API")
        else:
            self._thread("cloud", self._cloud)
        self._thread("meta", self._meta)

    def run(self, round_s: float = ROUND_S) -> int:
        self.start()
        buses = BusPrograms(round_s=round_s)
        log.info("node: watching the KV store key '%s' every %.0f s", keys.CONFIG, round_s)
        try:
            while not self.stop.is_set() and not self.fatal.is_set():
                watchdog.heartbeat("node", MAX_SILENCE_S)
                config = self.source.current()
                buses.step(config)
                self.announce(config)
                self.stop.wait(round_s)
        finally:
            self.link.stop()
        if self.fatal.is_set():
            return 1
        log.info("node: stopped")
        return 0


def run(stop: threading.Event, round_s: float = ROUND_S, kvstore: KVStore | None = None) -> int:
    return Node(stop, kvstore or KVStore()).run(round_s)
