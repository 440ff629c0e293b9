"""Config intake: the provisioning file, the HTTP watch and the `d/config` push (upstream section 5.4).

Every config goes through the one door, core.configdoor.submit (the same for the web UI, `up --config`
and the legacy import): checked with the one parser and config.load; one that cannot be used is
refused, the reason logged and published as plain text on `u/log/msg`, and the previous config keeps
running. A usable one is stored in the KV key `config` as the exact bytes received (never
re-serialised, so its digest is the cloud's `config_id`), minus a top-level `config_id` member. node
says on `u/log/msg` which config runs, where it came from and its problems when it loads it
(configdoor.announcement); the rest runs. The node's ConfigSource sees the new bytes within a round
and reconciles the bus programs.

- Provisioning file (`paths.provisioning_file()`, default `<AE_ROOT_DIR>/provisioning/config.json`,
  env AE_PROVISIONING_FILE): offered at node start when the KV store has no config.
- HTTP watch: GET {base}/nodes/{id} gives `config_id` (recorded: configdoor.record_cloud); when it
  differs from config.digest of the stored config, and it is not the cloud config a kept local edit
  replaced (configdoor.holds), GET {base}/nodes/{id}/config gives {"config": {...}}; the bytes of the
  `config` value are cut out of the envelope as they are. At start, then every AE_CONFIG_CHECK_INTERVAL
  (3600 s), and at once when the web UI hands control back (configdoor.take_check_request); failures
  are retried with capped backoff.
- `d/config`: handled in node.py (a persistent MQTT session) and passed to `offer`.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable

from ..core import configdoor, jsontext, keys
from ..core.problems import ConfigUnusable, Problem
from ..delivery.outputcheck import output_problems
from .cloudapi import Api, ApiError, Retry

log = logging.getLogger(__name__)

ENVELOPE_SLACK = 64 * 1024  # the API's answer around the config: {"node_id": ..., "config": ...}
REQUEST_POLL_S = 2.0  # how often the watch looks for a check asked for in the web UI


def config_from_envelope(body: bytes) -> bytes:
    """The exact bytes of "config" in the API's {"config": {...}}. ApiError when there is none (retried);
    jsontext.OverLimit when the answer is over the config limits (a refusal, not retried)."""
    try:
        doc, text = jsontext.parse_text(
            body, "the config answer", jsontext.MAX_BYTES + ENVELOPE_SLACK, jsontext.MAX_DEPTH + 1
        )
    except jsontext.OverLimit:
        if len(body) > jsontext.MAX_BYTES + ENVELOPE_SLACK:
            problem = f"config is {len(body):,} bytes with its envelope; the limit is {jsontext.MAX_BYTES:,} bytes"
        else:
            problem = f"config nests arrays and objects more than {jsontext.MAX_DEPTH} levels deep"
        raise jsontext.OverLimit([Problem("$", f"{problem} (the cloud API's answer)")]) from None
    except ConfigUnusable as exc:
        raise ApiError(f"the config answer is not JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict) or not doc["config"]:
        raise ApiError("the config answer has no config object")
    config = jsontext.member_text(text, "config")
    if config is None:
        raise ApiError("the config answer has no config object")
    return config.encode("utf-8")


# ---------------------------------------------------------------------------------------------
# intake


class Intake:
    """node's side of the door: its sources, what it says on u/log/msg, a refusal said once per config
    for the hourly watch."""

    def __init__(self, store, builtin_drivers: dict, publish: Callable[[str, str], None]):
        self.store = store
        self.builtin = builtin_drivers
        self.publish = publish
        self._lock = threading.Lock()  # the MQTT thread and the HTTP watch both offer
        self._refused: bytes | None = None

    def _say(self, text: str) -> None:
        self.publish(keys.LOG_TOPIC, text)

    def offer(self, raw: bytes, source: str, detail: str | None = None, quiet_repeat: bool = False) -> bool:
        """Hand a config from `source` (configdoor.SOURCES) to the door; True when the stored config is now
        this one. quiet_repeat: a refusal of the config refused last time is not said again."""
        with self._lock:
            say = None if quiet_repeat and raw == self._refused else self._say
            try:
                verdict = configdoor.submit(
                    self.store, raw, source, self.builtin, output_problems, detail=detail, say=say
                )
            except sqlite3.Error as exc:
                msg = (
                    f"config from {configdoor.label(source, detail)} could not be stored ({exc}); "
                    "the previous config keeps running"
                )
                log.error("%s", msg)
                self._say(msg)
                return False
            self._refused = None if verdict.accepted else raw
            return verdict.accepted

    def refuse(self, raw: bytes, source: str, problems: list[Problem], quiet_repeat: bool = False) -> bool:
        """Refuse what never reached the door (an API answer over the limits) with the door's words."""
        with self._lock:
            say = None if quiet_repeat and raw == self._refused else self._say
            configdoor.refuse(source, problems, say)
            self._refused = raw
            return False

    def stored_digest(self) -> str | None:
        return configdoor.stored_digest(self.store)

    def provision(self, path) -> bool:
        """Offer the provisioning file when the KV store has no config yet."""
        if self.store.get_raw("config") is not None or not path.exists():
            return False
        try:
            raw = path.read_bytes()
        except OSError as exc:
            log.error("provisioning file %s cannot be read: %s", path, exc)
            return False
        return self.offer(raw, "provisioning", detail=str(path))


class HttpWatch:
    """The config from the AMMP API: checked at start, then every `interval` seconds."""

    def __init__(
        self,
        intake: Intake,
        api_for: Callable[[], Api],
        node_id: str,
        access_key: str,
        interval: float,
        retry_first: float | None = None,
    ):
        self.intake = intake
        self.api_for = api_for
        self.node_id = node_id
        self.access_key = access_key
        self.interval = interval
        self.retry = Retry(
            "config check against the AMMP API", **({} if retry_first is None else {"first": retry_first}), logger=log
        )
        self._message: str | None = None
        self._held: str | None = None

    def check(self) -> str:
        """One check; returns what happened. Raises ApiError."""
        api = self.api_for()
        meta = api.json("GET", f"nodes/{self.node_id}", self.access_key)
        if not isinstance(meta, dict):
            raise ApiError(f"GET nodes/{self.node_id}: the answer is not an object")
        if meta.get("message") and meta["message"] != self._message:
            log.info("AMMP API: %s", meta["message"])
            self._message = meta["message"]
        cloud_id = meta.get("config_id") or None
        store = self.intake.store
        configdoor.record_cloud(store, cloud_id)
        if not cloud_id:
            return "the cloud has no config for this node"
        if self.intake.stored_digest() == cloud_id:
            return f"config {cloud_id} is current"
        if configdoor.holds(store, cloud_id):
            result = f"the local config is kept: the cloud's config {cloud_id} is the one it replaced"
            if result != self._held:
                log.info("%s", result)
                self._held = result
            return result
        body = api.request("GET", f"nodes/{self.node_id}/config", self.access_key).content
        try:
            raw = config_from_envelope(body)
        except jsontext.OverLimit as exc:
            self.intake.refuse(body, "api", exc.problems, quiet_repeat=True)
            return f"config {cloud_id} refused"
        stored = self.intake.offer(raw, "api", quiet_repeat=True)
        return f"config {cloud_id} {'stored' if stored else 'refused'}"

    def _wait(self, stop: threading.Event, seconds: float) -> bool:
        """Wait until the next check (True when stopped); a check asked for in the web UI comes at once."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if stop.wait(min(left, REQUEST_POLL_S)):
                return True
            if configdoor.take_check_request(self.intake.store):
                log.info("config check now, as asked in the web UI (control handed back to the AMMP cloud)")
                return False
        return False

    def run(self, stop: threading.Event) -> None:
        log.info("checking the config against the AMMP API now and every %.0f s", self.interval)
        while not stop.is_set():
            try:
                result = self.check()
            except ApiError as exc:
                if stop.wait(self.retry.failed(exc)):
                    return
                continue
            self.retry.succeeded()
            log.debug("config check: %s", result)
            if self._wait(stop, self.interval):
                return
