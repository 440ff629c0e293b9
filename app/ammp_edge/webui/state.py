"""What the web UI knows about the running appliance, gathered in the background so pages render fast.

A sampler thread (every second) follows:
  - the KV cache `last_readings` / `last_readings_ts` (written by the publisher for each cycle it sends),
  - the tail of the outbox (readouts the publisher has not delivered yet: while the uplink is down the
    live values still show), with each bus's last cycle, duration and errors,
  - the KV cache `bus_status/<bus>` each bus program writes after every cycle (protocol: core.keys),
  - the local broker's retained bridge state topics (bridge.plan.configured_bridges says which exist),
  - supervisord's programs every 2 s (ProgramWatch: each program's starts, for crash-loop detection).
It keeps a short history of every field for the charts and, per device, when it last answered (for
/health). Nothing here writes to the appliance's state.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
import xmlrpc.client
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..bridge.plan import configured_bridges
from ..bus import status as bus_status
from ..core import config as cfg, drivers, keys, paths, supervisor as supervisord
from ..core.kvs import KVStore, cache as kv_cache
from ..core.problems import ConfigUnusable
from ..delivery.mqtt import MqttLink
from ..delivery.outbox import Outbox

log = logging.getLogger(__name__)

HISTORY_POINTS = 360
STALE_CYCLES = 2.5


@dataclass
class BusState:
    t: int = 0
    duration: float | None = None
    requests: int | None = None
    errors: dict = field(default_factory=dict)
    overruns: int = 0
    seen_at: float = 0.0


class ProgramWatch:
    """supervisord's programs as last sampled, and when each was (re)started since the web UI started:
    supervisord's `start` time of a program changes with every spawn, whatever the program's state."""

    KEEP_S = 3600
    MIN_INTERVAL_S = 1.0  # /health may ask as often as it likes: supervisord is asked at most this often

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.infos: dict[str, dict] = {}
        self.error: str | None = None
        self.sampled_at = 0.0
        self.restarts: dict[str, deque[float]] = {}
        self._starts: dict[str, int] = {}

    def sample(self) -> None:
        with self._lock:
            now = time.time()
            if now - self.sampled_at >= self.MIN_INTERVAL_S or self.error:
                self._sample(now)

    def _sample(self, now: float) -> None:
        try:
            infos = supervisord.connect(timeout=5).supervisor.getAllProcessInfo()
        except (OSError, xmlrpc.client.Error) as exc:
            self.error, self.infos = f"supervisord not reachable: {exc}", {}
            return
        self.error, self.sampled_at = None, now
        self.infos = {i["name"]: i for i in infos}
        for name, info in self.infos.items():
            start, before = int(info.get("start") or 0), self._starts.get(name)
            if before is not None and start and start != before:
                self.restarts.setdefault(name, deque(maxlen=100)).append(float(start))
            if start:
                self._starts[name] = start
        for name in list(self._starts):
            if name not in self.infos:  # removed (a bus that left the config): a new one starts afresh
                del self._starts[name]
                self.restarts.pop(name, None)
        for times in self.restarts.values():
            while times and times[0] < now - self.KEEP_S:
                times.popleft()

    def restarts_since(self, name: str, since: float) -> int:
        return sum(1 for t in self.restarts.get(name, ()) if t >= since)


class BridgeMonitor:
    """The retained bridge state topics on the local broker, followed through the web UI's MqttLink."""

    def __init__(self, link: MqttLink | None = None):
        self.states: dict[str, str] = {}
        self.topics: set[str] = set()
        self.link = link or MqttLink(f"{keys.WEBUI_CLIENT_ID_PREFIX}{int(time.time())}", self._on_message)

    @property
    def connected(self) -> bool:
        return self.link.connected.is_set()

    def start(self) -> None:
        self.link.start()

    def _on_message(self, topic: str, payload: bytes, retain: bool) -> None:
        self.states[topic] = payload.decode(errors="replace")

    def follow(self, topics: set[str]) -> None:
        if topics == self.topics:
            return
        for t in topics - self.topics:
            self.link.subscribe(t, 0)
        for t in self.topics - topics:
            self.link.unsubscribe(t)
            self.states.pop(t, None)
        self.topics = set(topics)

    def publish(self, topic: str, payload: str) -> bool:
        return self.link.publish(topic, payload, qos=1) is not None

    def stop(self) -> None:
        self.link.stop()


class WebState:
    def __init__(self, store: KVStore | None = None, cache: KVStore | None = None, watch_broker: bool = True):
        self.store = store or KVStore()
        self.cache = cache or kv_cache()
        self.builtin = drivers.load_builtin_drivers(paths.drivers_dir())
        self.started = time.time()
        self._config_raw: bytes | None = None
        self._config: cfg.Config | None = None
        self._config_error: list | None = None
        self._lock = threading.Lock()
        self.history: dict[tuple[str, str], deque] = {}
        self.latest: dict[str, tuple[int, dict]] = {}  # device -> (t, record)
        self.answered: dict[str, int] = {}  # device -> the last t it gave a value
        self.expected_since: dict[str, float] = {}  # bus of the config -> since when (for /health's grace)
        self.programs = ProgramWatch()
        self.status: dict[str, tuple[int, list]] = {}  # device -> (t, status items): kept until new ones come
        self.buses: dict[str, BusState] = {}
        self.last_readings_ts: int | None = None
        self.outbox_key: int | None = None
        self.outbox_info: dict = {"count": None, "oldest_t": None, "dropped": None}
        self.bridges = BridgeMonitor() if watch_broker else None
        self.bridge_list: list = []
        self._outbox: Outbox | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- config -------------------------------------------------------------------------------------
    def config_raw(self) -> bytes | None:
        return self.store.get_raw(keys.CONFIG)

    def config(self) -> tuple[cfg.Config | None, list]:
        """The compiled current config (cached by its bytes) and, when unusable, its problems."""
        raw = self.config_raw()
        with self._lock:
            if raw != self._config_raw:
                self._config_raw = raw
                self._config, self._config_error = None, None
                if raw is not None:
                    try:
                        self._config = cfg.load(cfg.parse_json(raw), self.builtin)
                    except ConfigUnusable as exc:
                        self._config_error = exc.problems
            return self._config, self._config_error or []

    def read_interval(self) -> int:
        config, _ = self.config()
        return config.read_interval if config else 60

    # -- sampling -------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.bridges is not None:
            try:
                self.bridges.start()
            except OSError as exc:
                log.warning("cannot watch the local broker: %s", exc)
        self._thread = threading.Thread(target=self._run, name="webui-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self.bridges is not None:
            self.bridges.stop()

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            try:
                self.sample(bridges=n % 5 == 0, programs=n % 2 == 0)
            except Exception:
                log.exception("sampling failed")
            n += 1
            self._stop.wait(1.0)

    def _record(self, t: int, rec: dict) -> None:
        dev = rec.get("_d")
        if not isinstance(dev, str):
            return
        if any(not k.startswith("_") for k in rec) and t > self.answered.get(dev, 0):
            self.answered[dev] = t
        if isinstance(rec.get("_s"), list) and t >= self.status.get(dev, (0, []))[0]:
            self.status[dev] = (t, [s for s in rec["_s"] if isinstance(s, dict)])
        prev = self.latest.get(dev)
        if prev is None or prev[0] < t:
            self.latest[dev] = (t, rec)
        elif prev[0] == t:
            self.latest[dev] = (t, {**prev[1], **rec})
        # the history in time order, whichever source (cache or outbox) was sampled first
        for k, v in rec.items():
            if k.startswith("_") or not (v is None or isinstance(v, (int, float))) or isinstance(v, bool):
                continue
            h = self.history.setdefault((dev, k), deque(maxlen=HISTORY_POINTS))
            if not h or h[-1][0] < t:
                h.append((t, v))
                continue
            i = bisect.bisect_left([p[0] for p in h], t)
            if i < len(h) and h[i][0] == t:
                h[i] = (t, v)
            elif len(h) < HISTORY_POINTS:
                h.insert(i, (t, v))
            elif i > 0:  # a full history drops its oldest point for it (older than all of them: not kept)
                h.popleft()
                h.insert(i - 1, (t, v))

    def sample(self, bridges: bool = True, programs: bool = True) -> None:
        ts = self.cache.get(keys.LAST_READINGS_TS)
        if ts is not None and ts != self.last_readings_ts:
            self.last_readings_ts = ts
            records = [r for r in self.cache.get(keys.LAST_READINGS) or [] if isinstance(r, dict)]
            for rec in records:
                self._record(int(ts), rec)
            self._buses_from_records(int(ts), records)
        self._sample_outbox()
        for bus, value in bus_status.read_all(self.cache).items():
            self._bus_seen(bus, value)
        if bridges:
            self._sample_bridges()
        if programs:
            self.programs.sample()
        config, _ = self.config()
        wanted = set(config.buses()) if config else set()
        now = time.time()
        self.expected_since = {b: self.expected_since.get(b, now) for b in wanted}

    def outbox(self) -> Outbox:
        if self._outbox is None:
            self._outbox = Outbox()
        return self._outbox

    def _sample_outbox(self) -> None:
        box = self.outbox()
        first, last = box.bounds()
        oldest = box.oldest() if first is not None else None
        self.outbox_info = {
            "count": box.count(),
            "oldest_t": oldest.get("t") if oldest else None,
            "dropped": box.dropped(),
        }
        if first is None or last is None:
            return
        start = max(first, (self.outbox_key + 1) if self.outbox_key is not None else last - 50)
        records, _ = box.read_range(start, last + 1, limit=200)
        for _, r in records:
            if isinstance(r, dict) and isinstance(r.get("t"), int):
                if not r.get("data_provider"):  # a backfill's rows (yesterday's) are not a bus cycle
                    self._bus_seen(str(r.get("bus")), r)
                for rec in r.get("devices") or []:
                    if isinstance(rec, dict):
                        self._record(r["t"], rec)
        self.outbox_key = last

    def _buses_from_records(self, t: int, records: list[dict]) -> None:
        """A delivered cycle (no bus readout left in the outbox): which buses answered, from the config."""
        config, _ = self.config()
        if config is None:
            return
        by_dev = {r.get("_d"): r for r in records}
        for bus, devices in config.buses().items():
            seen = [by_dev[d.key] for d in devices if d.key in by_dev]
            cur = self.buses.get(bus)
            if not seen or (cur is not None and cur.t >= t):
                continue
            silent = {r["_d"]: ["no values"] for r in seen if not any(not k.startswith("_") for k in r)}
            self.buses[bus] = BusState(t, None, None, silent, 0, time.time())

    def _bus_seen(self, bus: str, r: dict) -> None:
        cur = self.buses.get(bus)
        if cur is not None and cur.t > r["t"]:
            return
        self.buses[bus] = BusState(
            r["t"], r.get("duration"), r.get("requests"), r.get("errors") or {}, r.get("overruns") or 0, time.time()
        )

    def _sample_bridges(self) -> None:
        try:
            self.bridge_list = configured_bridges(self.store)
        except (OSError, ValueError) as exc:
            log.warning("cannot tell the configured bridges: %s", exc)
            return
        if self.bridges is not None:
            self.bridges.follow({b.state_topic for b in self.bridge_list})

    def publish(self, topic: str, payload: str) -> bool:
        """On the local broker (QoS 1), e.g. a config generation request; False when not connected."""
        return self.bridges is not None and self.bridges.publish(topic, payload)

    # -- views -----------------------------------------------------------------------------------------
    def bridge_view(self) -> list[dict]:
        states = dict(self.bridges.states) if self.bridges else {}
        out = []
        for b in self.bridge_list:
            s = states.get(b.state_topic)
            out.append(
                {
                    "name": b.name,
                    "address": b.address,
                    "topic": b.state_topic,
                    "state": "connected" if s == "1" else "disconnected" if s == "0" else "unknown",
                }
            )
        return out

    def live(self, now: float | None = None) -> dict:
        """Per device: fields with value, unit, age, stale/null marks; status items; for /api/live."""
        now = now or time.time()
        config, _ = self.config()
        interval = config.read_interval if config else 60
        devices = []
        known = dict(config.devices) if config else {}
        latest, status = dict(self.latest), dict(self.status)  # copies: the sampler thread adds to them
        for key in list(known) + sorted(k for k in latest if k not in known):
            dev = known.get(key)
            t, rec = latest.get(key, (None, {}))
            age = None if t is None else max(0, int(now - t))
            stale = age is None or age > STALE_CYCLES * max(interval, 1)
            fields = []
            names = list(dev.fields) if dev else []
            names += [k for k in rec if not k.startswith("_") and k not in names]
            for name in names:
                f = dev.fields.get(name) if dev else None
                value = rec.get(name)
                fields.append(
                    {
                        "name": name,
                        "value": value,
                        "unit": getattr(f, "unit", None) or "",
                        "description": getattr(f, "description", None) or "",
                        "null": name in rec and value is None,
                        "missing": name not in rec,
                    }
                )
            devices.append(
                {
                    "key": key,
                    "name": (dev.name if dev else None) or "",
                    "driver": dev.driver_name if dev else "",
                    "bus": dev.bus_id if dev else "",
                    "t": t,
                    "age": age,
                    "stale": stale,
                    "answered": any(not k.startswith("_") for k in rec),
                    "fields": fields,
                    "status": status.get(key, (0, []))[1],
                }
            )
        return {"now": int(now), "read_interval": interval, "devices": devices}

    def series(self, device: str, field_name: str) -> list[tuple[int, Any]]:
        return list(self.history.get((device, field_name), ()))
