"""Node identity and activation (upstream sections 5.1, 5.2 and the legacy import of 4.4).

- node_id: the MAC of the primary interface (eth0, en0, eth1, en1, wlan0, wlan1 in that order, else
  the first interface with a non-zero MAC) as 12 lowercase hex digits; with no MAC at all "ff" and 10
  random hex digits.
- An upstream node's data directory is taken over as it is: when the KV store has a node_id nothing
  is done; when it has none but the legacy `<data>/config.db` exists, the first row of its table
  `nodeconfig(node_id, access_key, config)` is copied into the KV store (its config through the one
  door, core.configdoor, like every other config: one that cannot be used is not copied).
- Otherwise activation: GET {base}/nodes/{id}/activate gives {"access_key": ...}; POST to the same URL
  with the key in `Authorization` (raw, no scheme) and an empty body activates the node. Each step is
  retried until it works (capped backoff, cloudapi.Retry). Then `node_id`, `access_key` and
  `activated` (RFC 3339, UTC) are stored. The access key is never logged.
"""

from __future__ import annotations

import logging
import re
import secrets
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from ..core import configdoor, drivers, keys, paths
from ..core.clock import now_rfc3339
from ..delivery.outputcheck import output_problems
from .cloudapi import Api, ApiError, Retry

log = logging.getLogger(__name__)

INTERFACE_PRIORITY = ("eth0", "en0", "eth1", "en1", "wlan0", "wlan1")
_HEX12 = re.compile(r"^[0-9a-f]{12}$")


def interface_macs() -> dict[str, str]:
    """Interface name -> MAC as the system lists them (getifaddrs order)."""
    import psutil

    macs: dict[str, str] = {}
    for name, addrs in psutil.net_if_addrs().items():
        for a in addrs:
            if a.family == psutil.AF_LINK and a.address:
                macs.setdefault(name, a.address)
    return macs


def mac_hex(mac: str) -> str | None:
    """'B8:27:EB:12:34:56' -> 'b827eb123456'; None for anything else or an all-zero MAC."""
    digits = re.sub(r"[:\-.]", "", str(mac)).lower()
    if not _HEX12.match(digits) or int(digits, 16) == 0:
        return None
    return digits


def node_id_from(macs: dict[str, str], random_hex: Callable[[], str] = lambda: secrets.token_hex(5)) -> str:
    for name in INTERFACE_PRIORITY:
        found = mac_hex(macs.get(name, ""))
        if found:
            return found
    for mac in macs.values():
        found = mac_hex(mac)
        if found:
            return found
    return "ff" + random_hex()


def generate_node_id() -> str:
    return node_id_from(interface_macs())


# ---------------------------------------------------------------------------------------------
# legacy data directory


def import_legacy(store, path: Path | None = None) -> bool:
    """Copy the first row of an upstream `config.db` into the KV store; True when a node_id came from it."""
    path = Path(path or paths.legacy_config_db_path())
    if not path.exists():
        return False
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            row = db.execute("SELECT node_id, access_key, config FROM nodeconfig ORDER BY rowid LIMIT 1").fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        log.error("legacy %s cannot be read (%s); activating as a new node", path, exc)
        return False
    if row is None or not row[0]:
        log.warning("legacy %s has no node; activating as a new node", path)
        return False
    node_id, access_key, config = row
    store.set("node_id", str(node_id))
    if access_key:
        store.set("access_key", str(access_key))
    if config and store.get_raw(keys.CONFIG) is None:
        raw = config.encode() if isinstance(config, str) else bytes(config)
        builtin = drivers.load_builtin_drivers(paths.drivers_dir())
        verdict = configdoor.submit(store, raw, "legacy", builtin, output_problems, detail=str(path))
        if not verdict.accepted:
            log.error("legacy %s: its config is not copied: %s", path, verdict.message)
    log.info("took over node %s from the legacy %s", node_id, path)
    return True


# ---------------------------------------------------------------------------------------------
# activation


def activate(
    api_for: Callable[[], Api], node_id: str, stop: threading.Event, retry_first: float | None = None
) -> str | None:
    """GET then POST {base}/nodes/{id}/activate, each retried until it works; the access key, or None
    when stopped first."""
    kw = {} if retry_first is None else {"first": retry_first}
    access_key = None
    retry = Retry(f"activation of node {node_id} (GET nodes/{node_id}/activate)", logger=log, **kw)
    while access_key is None:
        try:
            answer = api_for().json("GET", f"nodes/{node_id}/activate")
            key = answer.get("access_key") if isinstance(answer, dict) else None
            if not isinstance(key, str) or not key:
                raise ApiError(f"GET nodes/{node_id}/activate: the answer has no access_key")
            access_key = key
            if answer.get("message"):
                log.info("activation: %s", answer["message"])
            retry.succeeded()
        except ApiError as exc:
            if stop.wait(retry.failed(exc)):
                return None
    retry = Retry(f"activation of node {node_id} (POST nodes/{node_id}/activate)", logger=log, **kw)
    while True:
        try:
            answer = api_for().json("POST", f"nodes/{node_id}/activate", access_key)
            retry.succeeded()
            if isinstance(answer, dict) and answer.get("message"):
                log.info("activation: %s", answer["message"])
            return access_key
        except ApiError as exc:
            if stop.wait(retry.failed(exc)):
                return None


def ensure_identity(
    store,
    stop: threading.Event,
    api_for: Callable[[], Api] | None = None,
    legacy: Path | None = None,
    node_id: Callable[[], str] = generate_node_id,
    retry_first: float | None = None,
) -> tuple[str, str] | None:
    """(node_id, access_key): from the KV store, the legacy config.db, or by activation (which waits,
    retrying, until it works). None when stopped before."""
    api_for = api_for or (lambda: Api.from_store(store))
    known, key = store.get("node_id"), store.get("access_key")
    if known and key:
        return str(known), str(key)
    if not known and import_legacy(store, legacy):
        known, key = store.get("node_id"), store.get("access_key")
        if known and key:
            return str(known), str(key)
    if known:
        log.error("node_id %s is stored without an access_key: activating it again", known)
        new_id = str(known)
    else:
        new_id = node_id()
        log.info("node id %s; activating against %s", new_id, api_for().base)
    access_key = activate(api_for, new_id, stop, retry_first)
    if access_key is None:
        return None
    store.set("node_id", new_id)
    store.set("access_key", access_key)
    store.set("activated", now_rfc3339())
    log.info("node %s activated", new_id)
    return new_id, access_key
