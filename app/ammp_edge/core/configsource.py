"""The current config for a program's loop: from a file or the KV store key `config`.

A new config that cannot be used is logged and the previous one kept; a program that starts after a
bad config was stored falls back to the last usable one (kept by node in `last_good_config`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from . import config as cfg, drivers, keys, paths
from .kvs import KVStore
from .problems import ConfigUnusable

log = logging.getLogger(__name__)


class ConfigSource:
    """The current config, from a file or the KV store key `config`; the previous one is kept when a
    new one cannot be used."""

    LAST_GOOD_KEY = keys.LAST_GOOD_CONFIG  # the last usable config, for a process that starts after a bad one

    def __init__(self, file: Path | None = None, kvstore: KVStore | None = None, remember_good: bool = False):
        self.file = file
        self.kvstore = kvstore
        self.remember_good = remember_good  # the node keeps LAST_GOOD_KEY up to date
        self.builtin = drivers.load_builtin_drivers(paths.drivers_dir())
        self._raw: bytes | None = None
        self._checked = 0.0
        self.config: cfg.Config | None = None

    def _read_raw(self) -> bytes | None:
        if self.file is not None:
            return self.file.read_bytes()
        return self._store().get_raw(keys.CONFIG)

    def _store(self) -> KVStore:
        if self.kvstore is None:
            self.kvstore = KVStore()
        return self.kvstore

    def current(self, max_age: float = 0.0) -> cfg.Config | None:
        """The config; with max_age, the store is read at most that often (for callers in a fast loop)."""
        now = time.monotonic()
        if max_age and self.config is not None and now - self._checked < max_age:
            return self.config
        self._checked = now
        try:
            raw = self._read_raw()
        except OSError as exc:
            log.error("cannot read the config: %s", exc)
            return self.config
        if raw is None or raw == self._raw:
            return self.config
        self._raw = raw
        try:
            new = cfg.load(cfg.parse_json(raw), self.builtin)
        except ConfigUnusable as exc:
            log.error("config cannot be used, keeping the previous one: %s", exc)
            if self.config is None and self.file is None:
                self._fall_back()
            return self.config
        if self.remember_good and self.file is None and self._store().get_raw(self.LAST_GOOD_KEY) != raw:
            self._store().set_raw(self.LAST_GOOD_KEY, raw)
        for p in new.problems:
            log.log(logging.ERROR if p.severity == "error" else logging.WARNING, "config: %s", p)
        self.config = new
        return new

    def _fall_back(self) -> None:
        raw = self._store().get_raw(self.LAST_GOOD_KEY)
        if raw is None:
            return
        try:
            self.config = cfg.load(cfg.parse_json(raw), self.builtin)
        except ConfigUnusable:
            return
        log.warning("using the last usable config (%s) until a usable one arrives", self.config.config_id)
