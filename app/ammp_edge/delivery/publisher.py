"""The publisher: joins the bus readouts of each cycle into one `u/data` message and delivers it
at least once, live cycles first, the backlog after them in time order at a bounded rate.

A readout leaves the outbox only when its message is *confirmed*:
  1. the local broker acknowledged it (PUBACK, QoS 1), and
  2. where a bridge is configured, that bridge reported itself connected (its retained state topic is
     "1") before the message was sent and did not drop since, and
  3. then either `settle` seconds passed with the broker's queue back near its baseline (read from
     `$SYS/broker/store/messages/count`), or, where the broker publishes no such figure, `settle` passed.
A message whose connection or bridge dropped before it was confirmed, or that is not confirmed within
`confirm_timeout` (5 minutes), is sent again (duplicates are allowed, loss is not). While a configured
bridge is down nothing is sent: the outbox is the buffer, mosquitto only the transit hop. When the
broker's queue grows (the uplink is slower than we are), the backlog pauses.

Reading: two cursors over the outbox (cursors.py), live (committed since the gate opened) and backlog
(what was there then, and what must be sent again); every record is held, or ahead of one of them.

Grouping: the readouts of cycle `t` wait until every bus the config expects has delivered, or until a
grace period after `t` (or after it was read, whichever ends first), or until a later cycle is ready
(cycles go out in time order); a bus readout arriving after its cycle went out is sent as its own
message with the same `t`, and so is a second readout of one bus for the same `t`.
A cycle whose readouts hold no device record at all (every device was not due, min_read_interval)
is not published, as upstream; its readouts leave the outbox at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core import config as cfg, keys
from ..core.configsource import ConfigSource
from ..core.kvs import KVStore
from . import outputs as outputs_mod
from .bridgewatch import BridgeWatch
from .cursors import Readers
from .mqtt import MqttLink
from .outbox import Outbox
from .readout import build_message, dumps

log = logging.getLogger(__name__)

DATA_TOPIC = keys.DATA_TOPIC
STORE_COUNT_TOPIC = keys.STORE_COUNT_TOPIC
LIVE_HORIZON = 300  # s: a live-read record for a cycle older than this is sent as backlog


@dataclass
class Group:
    t: int
    live: bool
    seen: float = 0.0  # monotonic time its first readout was read
    readouts: dict[str, tuple[int, dict]] = field(default_factory=dict)  # bus -> (outbox id, readout)
    more: list[tuple[int, dict]] = field(default_factory=list)  # a second readout of a bus for this t
    provider: str = ""  # a backfill's records (data_provider): sent alone, at the backlog's rate

    @property
    def key(self) -> tuple[int, str]:
        return self.t, self.provider

    def ids(self) -> list[int]:
        return [i for i, _ in self.readouts.values()]


@dataclass
class Sent:
    keys: list[int]
    t: int
    token: tuple[int, int]
    sent_at: float
    bridge_epoch: int
    status_items: list[tuple[str, str, int]]
    acked_at: float | None = None


class Publisher:
    def __init__(
        self,
        outbox: Outbox,
        source: ConfigSource,
        bridge_topics: list[str],
        settle: float = 1.0,
        backlog_rate: float = 1000.0,
        window: int = 5000,
        queue_slack: int = 20,
        queue_pause: int = 500,
        confirm_timeout: float = 300.0,
        link: MqttLink | None = None,
        cache: KVStore | None = None,
        bridges_fn: Callable[[], list[str]] | None = None,
    ):
        self.outbox = outbox
        self.source = source
        self.settle, self.backlog_rate, self.window = settle, backlog_rate, window
        self.queue_slack = queue_slack  # a message is confirmed once the broker's queue is this short again
        self.queue_pause = queue_pause  # the backlog waits while the broker's queue is longer than this
        self.confirm_timeout = confirm_timeout  # a message not confirmed by then is sent again
        self.bridges = BridgeWatch(bridge_topics)
        subs = tuple((t, 1) for t in bridge_topics) + ((STORE_COUNT_TOPIC, 0),)
        # the local broker is on loopback: after it restarts, try again every second (live is late until then)
        self.link = link or MqttLink(keys.PUBLISHER_CLIENT_ID, self._on_message, subs, reconnect_max=1)
        self.cache = cache
        self.bridges_fn = bridges_fn  # re-read every few seconds: bridges come and go with the KV store
        self.bridges_checked = time.monotonic()
        # Two readers over the outbox (cursors.py): live (records written since the gate last opened)
        # and backlog (everything older, read in chunks so a week-long backlog never sits in memory).
        self.gate_was_open = False
        self.readers = Readers(outbox)
        self.groups: dict[tuple[int, str], Group] = {}  # (t, data provider or "") -> group
        self.published: dict[int, set[str]] = {}  # t -> buses already sent (late readouts go alone)
        self.unconfirmed: deque[Sent] = deque()
        self.tokens = 0.0
        self.last_refill = time.monotonic()
        self.stats = {"messages": 0, "confirmed": 0, "resent": 0, "empty": 0}
        self.status_sent: dict[str, int | None] = {}
        self.link_epoch = 0
        self._outputs_cache: tuple[int, list] | None = None

    def _on_message(self, topic: str, payload: bytes, retain: bool) -> None:
        if topic == STORE_COUNT_TOPIC:
            self.bridges.on_store_count(payload)
        elif topic in self.bridges.topics:
            self.bridges.on_state(topic, payload)

    # -- intake -------------------------------------------------------------------------------
    def open_gate(self) -> None:
        """The gate (re)opened: what is in the outbox now is backlog, what comes after is live. What is
        in flight stays held until confirmed or sent again; what sat in groups is read again."""
        self.groups.clear()
        self.readers.reopen(keep=[i for s in self.unconfirmed for i in s.keys])

    def _add(self, records: list[tuple[int, dict]], live: bool) -> None:
        now_m, now = time.monotonic(), time.time()
        for rid, readout in records:
            t, bus = int(readout["t"]), str(readout.get("bus", "?"))
            # a record committed now for a cycle long past (a backfill) goes in the backlog's lane: at
            # its rate, within its window, pausing while the broker's queue grows
            # a backfill's rows (data_provider) are old data: each its own message, sent as backlog
            provider = str(readout.get("data_provider") or "")
            lane = live and not provider and t >= now - LIVE_HORIZON
            g = self.groups.setdefault((t, provider), Group(t, lane, now_m, provider=provider))
            if bus in g.readouts:
                g.more.append((rid, readout))  # the same bus twice for one t: goes in a message of its own
            else:
                g.readouts[bus] = (rid, readout)

    def intake(self, backlog_groups: int = 1000, chunk: int = 2000) -> None:
        self._add(self.readers.live(), live=True)
        if self.readers.backlog_left() and sum(1 for g in self.groups.values() if not g.live) < backlog_groups:
            self._add(self.readers.backlog(chunk), live=False)

    def _send_again(self, s: Sent) -> None:
        """Put a message's readouts back in line (they are still in the outbox): the backlog reads them again."""
        self.readers.release(s.keys)
        self.published.get(s.t, set()).clear()
        self.status_sent.clear()
        self.stats["resent"] += 1

    def _outputs(self, config: cfg.Config | None) -> list:
        if config is None:
            return []
        if self._outputs_cache is None or self._outputs_cache[0] != id(config):
            compiled, problems = outputs_mod.compile_outputs(config.outputs)
            for p in problems:
                log.error("config: %s", p)
            self._outputs_cache = (id(config), compiled)
        return self._outputs_cache[1]

    # -- choosing what to send -----------------------------------------------------------------
    def ready_groups(self, now: float, config: cfg.Config | None) -> tuple[list[Group], list[Group]]:
        """(live, backlog) groups ready to go, each in time order. A group is ready when every bus the
        config expects delivered, or the grace period passed (after `t` by the clock, or after its first
        readout was read, whichever comes first: a clock set back never holds a cycle), or a later cycle
        of the same reader is ready (so cycles go out in time order)."""
        interval = config.read_interval if config else 60
        expected = set(config.buses()) if config else set()
        grace = min(max(interval * 0.9, 3.0), 60.0)
        now_m = time.monotonic()
        out: dict[bool, list[Group]] = {True: [], False: []}
        for live in (True, False):
            waiting: list[Group] = []
            for (t, _), g in sorted(self.groups.items()):
                if g.live != live:
                    continue
                complete = expected and expected <= set(g.readouts) | self.published.get(t, set())
                if complete or now >= t + grace or now_m >= g.seen + grace or t in self.published:
                    out[live].extend(waiting)  # earlier cycles go first, with what they have
                    waiting = []
                    out[live].append(g)
                else:
                    waiting.append(g)
        return out[True], out[False]

    def _gate_open(self) -> bool:
        return self.link.connected.is_set() and (not self.bridges.configured or self.bridges.up())

    def _queue_full(self) -> bool:
        q = self.bridges.queue_excess()
        return q is not None and q[1] > self.queue_pause

    def _done_with(self, g: Group) -> None:
        """The group left (sent, or nothing to send): a second readout of a bus for the same t follows
        as its own group, ready at once (its t is published)."""
        self.published.setdefault(g.t, set()).update(g.readouts)
        del self.groups[g.key]
        if g.more:
            rest = Group(g.t, g.live, g.seen, provider=g.provider)
            for rid, readout in g.more:
                bus = str(readout.get("bus", "?"))
                if bus in rest.readouts:
                    rest.more.append((rid, readout))
                else:
                    rest.readouts[bus] = (rid, readout)
            self.groups[g.key] = rest

    def send_group(self, g: Group, config: cfg.Config | None) -> bool:
        readouts = [r for _, r in g.readouts.values()]
        keys = g.ids()
        calc_vid = config.calc_vendor_id if config else ""
        outputs = [] if g.provider else self._outputs(config)  # upstream's backfill had no outputs
        message, warnings = build_message(g.t, readouts, outputs, calc_vid, readouts[0].get("config_id"))
        if g.provider:
            message["m"] = {"data_provider": g.provider}  # as upstream's HyCon messages
        for w in warnings:
            log.warning(w)
        if not message["r"]:
            # every device of the cycle was left out (not due, min_read_interval): upstream sends nothing
            # then; the readouts hold nothing to deliver, so they are done with
            self.readers.done(keys)
            self._done_with(g)
            self.stats["empty"] += 1
            return True
        if not g.provider and (g.live or g.t >= time.time() - 2 * (config.read_interval if config else 60)):
            self._write_last_readings(g.t, message)  # recent cycles only: an old backlog never shows as "latest"
        status_items = self._filter_status(message)
        token = self.link.publish(DATA_TOPIC, dumps(message), qos=1)
        if token is None:
            return False
        self.unconfirmed.append(Sent(keys, g.t, token, time.monotonic(), self.bridges.epoch, status_items))
        self._done_with(g)
        self.stats["messages"] += 1
        return True

    # -- confirmation --------------------------------------------------------------------------
    def confirm(self, now: float) -> None:
        done: list[int] = []
        keep: deque[Sent] = deque()
        if self.link.epoch != self.link_epoch:  # reconnected: the broker may have restarted
            self.link_epoch = self.link.epoch
            self.bridges.forget_samples()  # a new broker instance has its own baseline
        excess = self.bridges.queue_excess()
        while self.unconfirmed:
            s = self.unconfirmed.popleft()
            if s.token[0] != self.link.epoch:
                # sent before our connection to the broker was lost: if the broker died, what it had not
                # forwarded yet died with it (PUBACK or not), so send it again
                self._send_again(s)
                continue
            if s.acked_at is None:
                acked = self.link.acked(s.token)
                if acked is None:  # the connection it went out on is gone
                    self._send_again(s)
                    continue
                if acked:
                    s.acked_at = now
            if self.bridges.configured and s.bridge_epoch != self.bridges.epoch:
                self._send_again(s)  # the bridge dropped before we knew it forwarded this
                continue
            settled = s.acked_at is not None and now - s.acked_at >= (self.settle if self.bridges.configured else 0)
            if settled and s.acked_at is not None and self.bridges.configured and excess is not None:
                # the broker's queue is (nearly) empty after this message was acknowledged. mosquitto
                # publishes the figure only when it changes: no new sample for a while means unchanged
                # a sample received 1.1 s (mosquitto's sys_interval is 1 s) after the PUBACK was taken after it
                sample_at, n = excess
                settled = n <= self.queue_slack and (
                    sample_at >= s.acked_at + 1.1 or now - s.acked_at >= self.settle + 3
                )
            if not settled and now - s.sent_at > self.confirm_timeout:
                # never confirmed (no PUBACK, or the broker's queue never came back down): nothing waits
                # forever, it goes again (a duplicate at worst)
                log.warning("u/data t=%d not confirmed after %.0f s: sending it again", s.t, now - s.sent_at)
                self._send_again(s)
                continue
            if settled:
                self._status_confirmed(s.status_items)
                done.extend(s.keys)
                self.stats["confirmed"] += 1
            else:
                keep.append(s)
        self.unconfirmed = keep
        if done:
            self.readers.done(done)

    # -- status info and last readings -----------------------------------------------------------
    def _filter_status(self, message: dict) -> list[tuple[str, str, int]]:
        """Change-only `_s` (upstream 2.2): drop items whose level equals the last one sent. The cache
        (`last_status_info_level/<device>/<content>`) holds confirmed levels; `status_sent` also those in
        flight, and is forgotten when a message must be sent again, so a lost change is sent again."""
        sent = []
        for rec in message["r"]:
            items = rec.get("_s")
            if not items:
                continue
            keep = []
            for item in items:
                key = keys.status_level_key(rec["_d"], item["c"])
                if key not in self.status_sent:
                    self.status_sent[key] = self.cache.get(key) if self.cache is not None else None
                if self.status_sent[key] != item["l"]:
                    self.status_sent[key] = item["l"]
                    keep.append(item)
                    sent.append((rec["_d"], item["c"], item["l"]))
            if keep:
                rec["_s"] = keep
            else:
                del rec["_s"]
        return sent

    def _status_confirmed(self, items: list[tuple[str, str, int]]) -> None:
        if self.cache is not None:
            for dev, content, level in items:
                self.cache.set(keys.status_level_key(dev, content), level)

    def _write_last_readings(self, t: int, message: dict) -> None:
        """For the web UI, before status filtering, merged by equal t as upstream."""
        if self.cache is None:
            return
        if self.cache.get(keys.LAST_READINGS_TS) == t:
            merged = {r["_d"]: r for r in self.cache.get(keys.LAST_READINGS) or []}
            merged.update({r["_d"]: r for r in message["r"]})
            self.cache.set(keys.LAST_READINGS, list(merged.values()))
        elif t >= (self.cache.get(keys.LAST_READINGS_TS) or 0):
            self.cache.set(keys.LAST_READINGS, message["r"])
            self.cache.set(keys.LAST_READINGS_TS, t)

    # -- the loop ------------------------------------------------------------------------------
    def refresh_bridges(self, now_m: float) -> None:
        if self.bridges_fn is None or now_m - self.bridges_checked < 5:
            return
        self.bridges_checked = now_m
        topics = self.bridges_fn()
        if topics == self.bridges.topics:
            return
        log.info("bridges gating delivery: %s", ", ".join(topics) or "none")
        for t in set(topics) - set(self.bridges.topics):
            self.link.subscribe(t, 1)
        for t in set(self.bridges.topics) - set(topics):
            self.link.unsubscribe(t)
        self.bridges.set_topics(topics)

    def step(self) -> bool:
        """One round; True when backlog was sent and more may be waiting."""
        now_m = time.monotonic()
        self.refresh_bridges(now_m)
        self.confirm(now_m)
        gate = self._gate_open()
        if gate and not self.gate_was_open:
            self.open_gate()
        self.gate_was_open = gate
        if not gate:
            return False  # nothing is sent while the uplink is down: the outbox holds it
        self.intake()
        config = self.source.current(max_age=1.0)  # this loop runs every few ms while a backlog drains
        live, backlog = self.ready_groups(time.time(), config)
        for g in live:
            if not self.send_group(g, config):
                return False
        # backlog: in time order, at a bounded rate, within the window, while the broker keeps up
        self.tokens = min(self.backlog_rate, self.tokens + (now_m - self.last_refill) * self.backlog_rate)
        self.last_refill = now_m
        sent = 0
        for g in backlog:
            if self.tokens < 1 or len(self.unconfirmed) >= self.window or self._queue_full():
                break
            if not self.send_group(g, config):
                return False
            self.tokens -= 1
            sent += 1
        self._prune()
        return sent > 0

    def _prune(self) -> None:
        if len(self.published) > 20000:
            for t in sorted(self.published)[:10000]:
                del self.published[t]

    def run(self, stop: threading.Event, tick: Callable[[], None] = lambda: None) -> None:
        self.link.start()
        try:
            while not stop.is_set():
                busy = self.step()
                tick()
                stop.wait(0.002 if busy else 0.05 if self.groups or self.unconfirmed else 0.1)
            # stopping: give what is in flight a moment to be acknowledged; the rest stays in the outbox
            deadline = time.monotonic() + 2.0
            while self.unconfirmed and time.monotonic() < deadline and not self.bridges.configured:
                self.confirm(time.monotonic())
                time.sleep(0.02)
        finally:
            self.link.stop()
