"""Config intake: the provisioning file, the HTTP watch and the `d/config` push (upstream section 5.4).

Every config, whatever its source, goes through `Intake.offer`: it is checked with config.load; one
that cannot be used (not JSON, not UTF-8, config.ConfigUnusable) is refused, the error is logged and
published as plain text on `u/log/msg`, and the previous config keeps running. A usable one is stored
in the KV key `config` as the exact bytes received (never re-serialised, so its digest is the cloud's
`config_id`), minus a top-level `config_id` member, which is cut out of the text. Problems of single
items (a bad device, a reading of an unknown field) are published on `u/log/msg` too; the rest runs.
The node's ConfigSource then sees the new bytes within a round and reconciles the bus programs.

- Provisioning file (`paths.provisioning_file()`, default `<AE_ROOT_DIR>/provisioning/config.json`,
  env AE_PROVISIONING_FILE): offered at node start when the KV store has no config.
- HTTP watch: GET {base}/nodes/{id} gives `config_id`; when it differs from config.digest of the
  stored config, GET {base}/nodes/{id}/config gives {"config": {...}}; the bytes of the `config`
  value are cut out of the envelope as they are. At start, then every AE_CONFIG_CHECK_INTERVAL
  (3600 s); failures are retried with capped backoff.
- `d/config`: handled in node.py (a persistent MQTT session) and passed to `offer`.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
from collections.abc import Callable

from ..core import config as cfg
from ..core.problems import ConfigUnusable, Problem
from .cloudapi import Api, ApiError, Retry

log = logging.getLogger(__name__)

LOG_TOPIC = "u/log/msg"
_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


# ---------------------------------------------------------------------------------------------
# the exact text of a JSON object's members


def _skip_ws(text: str, i: int) -> int:
    m = _WS.match(text, i)  # always matches (possibly nothing)
    return m.end() if m else i


def members(text: str) -> list[tuple[str, int, int, int]]:
    """(key, key start, value start, value end) of each member of the JSON object `text`, in order.
    `text` must be valid JSON (check with json.loads first)."""
    i = _skip_ws(text, 0)
    if text[i : i + 1] != "{":
        raise ValueError("not a JSON object")
    i = _skip_ws(text, i + 1)
    out: list[tuple[str, int, int, int]] = []
    if text[i : i + 1] == "}":
        return out
    while True:
        key_start = i
        key, i = _DECODER.raw_decode(text, i)
        i = _skip_ws(text, i)
        if not isinstance(key, str) or text[i : i + 1] != ":":
            raise ValueError(f"malformed object member at {key_start}")
        value_start = _skip_ws(text, i + 1)
        _, i = _DECODER.raw_decode(text, value_start)
        out.append((key, key_start, value_start, i))
        i = _skip_ws(text, i)
        if text[i : i + 1] == ",":
            i = _skip_ws(text, i + 1)
        elif text[i : i + 1] == "}":
            return out
        else:
            raise ValueError(f"malformed object at {i}")


def member_text(text: str, key: str) -> str | None:
    """The exact text of the value of `key` (the last one, as json.loads takes), or None."""
    found = [m for m in members(text) if m[0] == key]
    return text[found[-1][2] : found[-1][3]] if found else None


def without_member(text: str, key: str) -> str:
    """`text` with every `key` member cut out (with its comma); everything else byte for byte."""
    while True:
        ms = members(text)
        idx = next((n for n, m in enumerate(ms) if m[0] == key), None)
        if idx is None:
            return text
        if idx + 1 < len(ms):
            start, end = ms[idx][1], ms[idx + 1][1]
        elif idx > 0:
            start, end = ms[idx - 1][3], ms[idx][3]
        else:
            start, end = ms[idx][1], ms[idx][3]
        text = text[:start] + text[end:]


def config_from_envelope(body: bytes) -> bytes:
    """The exact bytes of "config" in the API's {"config": {...}}; ApiError when there is none."""
    try:
        text = body.decode("utf-8")
        doc = json.loads(text)
    except ValueError as exc:
        raise ApiError(f"the config answer is not JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict) or not doc["config"]:
        raise ApiError("the config answer has no config object")
    config = member_text(text, "config")
    if config is None:
        raise ApiError("the config answer has no config object")
    return config.encode("utf-8")


# ---------------------------------------------------------------------------------------------
# intake


class Intake:
    def __init__(self, store, builtin_drivers: dict, publish: Callable[[str, str], None]):
        self.store = store
        self.builtin = builtin_drivers
        self.publish = publish
        self._lock = threading.Lock()  # the MQTT thread and the HTTP watch both offer
        self._refused: bytes | None = None

    def _refuse(self, raw: bytes, source: str, problems: list[Problem], quiet_repeat: bool) -> bool:
        text = f"config from {source} refused, the previous config keeps running: " + "; ".join(map(str, problems))
        if not (quiet_repeat and raw == self._refused):  # the hourly watch finds the same bad config: said already
            log.error("%s", text)
            self.publish(LOG_TOPIC, text)
        self._refused = raw
        return False

    def offer(self, raw: bytes, source: str, quiet_repeat: bool = False) -> bool:
        """Check a config and store it when usable; True when the stored config is now this one.
        quiet_repeat: a refusal of the config refused last time is not said again."""
        with self._lock:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return self._refuse(raw, source, [Problem("$", f"config is not UTF-8 text ({exc})")], quiet_repeat)
            try:
                doc = cfg.parse_json(text)
                if isinstance(doc, dict) and "config_id" in doc:
                    text = without_member(text, "config_id")
                    doc.pop("config_id")
                config = cfg.load(doc, self.builtin)
            except ConfigUnusable as exc:
                return self._refuse(raw, source, exc.problems, quiet_repeat)
            stored = text.encode("utf-8")
            try:
                if self.store.get_raw("config") == stored:
                    log.info("config %s from %s: already the current config", config.config_id, source)
                    return True
                self.store.set_raw("config", stored)
            except sqlite3.Error as exc:
                msg = (
                    f"config {config.config_id} from {source} could not be stored ({exc}); "
                    "the previous config keeps running"
                )
                log.error("%s", msg)
                self.publish(LOG_TOPIC, msg)
                return False
            self._refused = None
            log.info(
                "config %s from %s stored: %d device(s) on %d bus(es), %d problem(s)",
                config.config_id,
                source,
                len(config.devices),
                len(config.buses()),
                len(config.problems),
            )
            if config.problems:
                self.publish(
                    LOG_TOPIC,
                    f"config {config.config_id} from {source}: {len(config.problems)} problem(s), "
                    "those items are skipped and the rest runs: " + "; ".join(map(str, config.problems)),
                )
            return True

    def stored_digest(self) -> str | None:
        raw = self.store.get_raw("config")
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
        except ValueError:
            return None
        return cfg.digest(doc) if isinstance(doc, dict) else None

    def provision(self, path) -> bool:
        """Offer the provisioning file when the KV store has no config yet."""
        if self.store.get_raw("config") is not None or not path.exists():
            return False
        try:
            raw = path.read_bytes()
        except OSError as exc:
            log.error("provisioning file %s cannot be read: %s", path, exc)
            return False
        return self.offer(raw, f"the provisioning file {path}")


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

    def check(self) -> str:
        """One check; returns what happened. Raises ApiError."""
        api = self.api_for()
        meta = api.json("GET", f"nodes/{self.node_id}", self.access_key)
        if not isinstance(meta, dict):
            raise ApiError(f"GET nodes/{self.node_id}: the answer is not an object")
        if meta.get("message") and meta["message"] != self._message:
            log.info("AMMP API: %s", meta["message"])
            self._message = meta["message"]
        cloud_id = meta.get("config_id")
        if not cloud_id:
            return "the cloud has no config for this node"
        if self.intake.stored_digest() == cloud_id:
            return f"config {cloud_id} is current"
        body = api.request("GET", f"nodes/{self.node_id}/config", self.access_key).content
        raw = config_from_envelope(body)
        stored = self.intake.offer(raw, "the AMMP API", quiet_repeat=True)
        return f"config {cloud_id} {'stored' if stored else 'refused'}"

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
            stop.wait(self.interval)
