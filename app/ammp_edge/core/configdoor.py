"""The one door for the site config: every writer of the KV store key `config` calls `submit`.

The doors: the AMMP API's config check and `d/config` (node.intake), the provisioning file (node),
the legacy config.db (node.provision), the web UI (upload, paste, device edit or add, restore),
`up --config` and `up --demo` (device.appliance) and `kvs set config` (cli). One set of rules:

1. The bytes go through the one parser (core.jsontext): UTF-8 (a leading byte order mark dropped), at
   most jsontext.MAX_BYTES, nested at most jsontext.MAX_DEPTH deep, valid JSON.
2. A top-level `config_id` member is cut out of the text; nothing else is changed or re-serialised,
   so the stored config's digest is the cloud's `config_id`.
3. config.load: a config that cannot be used is refused whole with the reason, and the previous config
   keeps running. The reason is said where the door can say it (`say`: u/log/msg from node and the web
   UI; the page; the console).
4. Problems of single items (config.load) and of JSONata outputs (`check_outputs`, which every door
   passes: delivery.outputcheck.output_problems) are returned and recorded; those items are skipped,
   the rest runs. The web UI asks before storing a config with errors (`confirm_errors`); with "apply
   anyway" it stores what every other door stores.
5. Cloud-managed or local. A config from the cloud (the API or `d/config`) replaces any local one,
   unless a local edit is kept (`keep_local`, chosen in the web UI): then the cloud's config that the
   edit replaced (its config_id, `config_keep_local.replaced`) is not applied again; a config with any
   other config_id is new, replaces the local one and ends the keeping, as does handing control back
   (`hand_back`).
6. The config, where it came from (`config_origin`), the config it replaced (`webui_previous_config`,
   which the web UI's "Restore" uses) and the keep-local state are written in one KV transaction.

node says on u/log/msg which config runs and where it came from (`announcement`) whenever the stored
config changes, whichever door wrote it; /health, the status page and the config page show `state`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import config as cfg, jsontext, keys, paths
from .clock import now_rfc3339
from .kvs import KVStore
from .problems import ConfigUnusable, Problem

log = logging.getLogger(__name__)

SOURCES = {
    "api": "the cloud API",
    "d/config": "d/config",
    "provisioning": "the provisioning file",
    "webui": "the web UI",
    "up": "up --config",
    "demo": "up --demo",
    "legacy": "the legacy config.db",
    "kvs": "kvs set",
}
CLOUD_SOURCES = ("api", "d/config")
UNKNOWN_SOURCE = "a direct write to the KV store"
MAX_RECORDED_PROBLEMS = 100

STORED, CURRENT, REFUSED, HELD, UNCONFIRMED = "stored", "current", "refused", "held", "unconfirmed"

CheckOutputs = Callable[[cfg.Config], list[Problem]]
Say = Callable[[str], None]


@dataclass
class Verdict:
    outcome: str  # STORED, CURRENT (the same bytes were stored already), REFUSED, HELD, UNCONFIRMED
    message: str  # what a person is told, the same text at every door
    problems: list[Problem] = field(default_factory=list)
    config: cfg.Config | None = None
    stored: bytes | None = None  # the bytes the KV store holds for this config (STORED, CURRENT)

    @property
    def accepted(self) -> bool:
        """The stored config is now this one."""
        return self.outcome in (STORED, CURRENT)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


def label(source: str, detail: str | None = None) -> str:
    return SOURCES[source] + (f" {detail}" if detail else "")


def _problem_text(problems: list[Problem]) -> str:
    return "; ".join(map(str, problems))


def _summary(config: cfg.Config, problems: list[Problem]) -> str:
    text = f"{len(config.devices)} device(s) on {len(config.buses())} bus(es)"
    if problems:
        text += f"; {len(problems)} problem(s), those items are skipped and the rest runs: {_problem_text(problems)}"
    return text


def _get(store: KVStore, key: str) -> Any:
    raw = store.get_raw(key)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _set(store: KVStore, key: str, value: Any) -> None:
    store.set_raw(key, json.dumps(value, separators=(",", ":")).encode())


def submit(
    store: KVStore,
    raw: bytes | str,
    source: str,
    builtin: dict,
    check_outputs: CheckOutputs,
    *,
    detail: str | None = None,
    confirm_errors: bool = False,
    keep_local: bool = False,
    say: Say | None = None,
) -> Verdict:
    """Check a config from `source` (a key of SOURCES) and store it when the rules allow (module doc).
    keep_local (web UI): keep this local config until the cloud sends a new one."""
    if source not in SOURCES:
        raise ValueError(f"unknown config source {source!r}")
    where = label(source, detail)
    verdict = _check(raw, where, builtin, check_outputs)
    if verdict.outcome == REFUSED:
        return _said(verdict, say)
    config = verdict.config
    assert config is not None and verdict.stored is not None
    if confirm_errors and verdict.errors:
        verdict.outcome = UNCONFIRMED
        verdict.message = (
            f"config {config.config_id} from {where} not applied: {len(verdict.errors)} error(s); "
            "apply it anyway to skip those items"
        )
        return verdict
    with store.transaction():
        keep = _get(store, keys.CONFIG_KEEP_LOCAL)
        if source in CLOUD_SOURCES and keep and keep.get("cloud_known") and keep.get("replaced") == config.config_id:
            verdict.outcome, verdict.stored = HELD, None
            verdict.message = (
                f"config {config.config_id} from {where} not applied: the local config {keep.get('config_id')} "
                f"({keep.get('by')}, {keep.get('since')}) is kept until the AMMP cloud sends a config other than "
                f"{config.config_id}, or control is handed back in the web UI"
            )
        else:
            _store(store, verdict, source, where, keep, keep_local)
    if verdict.outcome == HELD:
        return _said(verdict, say)
    log.info("%s", verdict.message)
    return verdict


def _check(raw: bytes | str, where: str, builtin: dict, check_outputs: CheckOutputs) -> Verdict:
    try:
        doc, text = jsontext.parse_text(raw, "config")
        if isinstance(doc, dict) and "config_id" in doc:
            text = jsontext.without_member(text, "config_id")
            doc.pop("config_id")
        config = cfg.load(doc, builtin)
    except ConfigUnusable as exc:
        return _refusal(where, exc.problems)
    problems = list(config.problems)
    problems += [p for p in check_outputs(config) if p not in problems]
    stored = text.encode("utf-8")
    message = f"config {config.config_id} from {where} stored: {_summary(config, problems)}"
    return Verdict(STORED, message, problems, config, stored)


def _store(store: KVStore, verdict: Verdict, source: str, where: str, keep: dict | None, keep_local: bool) -> None:
    config, stored = verdict.config, verdict.stored
    assert config is not None and stored is not None
    now = now_rfc3339()
    current = store.get_raw(keys.CONFIG)
    if current == stored:
        verdict.outcome = CURRENT
        verdict.message = f"config {config.config_id} from {where}: already the current config"
    else:
        before = _get(store, keys.CONFIG_ORIGIN)
        if current is not None:
            store.set_raw(keys.WEBUI_PREVIOUS_CONFIG, current)
        store.set_raw(keys.CONFIG, stored)
        origin: dict[str, Any] = {
            "source": source,
            "label": where,
            "at": now,
            "config_id": config.config_id,
            "problem_count": len(verdict.problems),
            "problems": [str(p) for p in verdict.problems[:MAX_RECORDED_PROBLEMS]],
            "replaced": None,
        }
        if isinstance(before, dict) and current is not None:
            if source in CLOUD_SOURCES and before.get("source") not in CLOUD_SOURCES:
                origin["replaced"] = {k: before.get(k) for k in ("source", "label", "at", "config_id")}
        _set(store, keys.CONFIG_ORIGIN, origin)
    if source in CLOUD_SOURCES:
        if keep:
            store.delete(keys.CONFIG_KEEP_LOCAL)
            verdict.message += f"; it ends the keeping of the local config {keep.get('config_id')}"
    elif source == "webui":
        if keep_local:
            cloud = _get(store, keys.CONFIG_CLOUD)
            record = {
                "since": (keep or {}).get("since", now),
                "by": where,
                "config_id": config.config_id,
                "replaced": (keep or {}).get("replaced", cloud.get("config_id") if isinstance(cloud, dict) else None),
                "cloud_known": (keep or {}).get("cloud_known", isinstance(cloud, dict)),
            }
            _set(store, keys.CONFIG_KEEP_LOCAL, record)
            verdict.message += "; kept until the AMMP cloud sends a new config"
        elif keep:
            store.delete(keys.CONFIG_KEEP_LOCAL)


def _refusal(where: str, problems: list[Problem]) -> Verdict:
    text = f"config from {where} refused, the previous config keeps running: {_problem_text(problems)}"
    return Verdict(REFUSED, text, list(problems))


def refuse(source: str, problems: list[Problem], say: Say | None, detail: str | None = None) -> Verdict:
    """A refusal in the door's words for what a door could not even hand in (an API answer over the
    limits)."""
    return _said(_refusal(label(source, detail), problems), say)


def _said(verdict: Verdict, say: Say | None) -> Verdict:
    """Log and say a refusal (or a config not applied); a door without `say` (the CLI, a repeat the
    hourly check already said) reports it itself or not at all."""
    if say is not None:
        log.log(logging.ERROR if verdict.outcome == REFUSED else logging.WARNING, "%s", verdict.message)
        say(verdict.message)
    return verdict


# ---------------------------------------------------------------------------------------------
# cloud-managed or local


def managed(store: KVStore) -> bool:
    """The AMMP cloud manages this node's config: it is activated and may call the API (not AE_OFFLINE),
    so the hourly check replaces a config whose digest differs from the cloud's config_id."""
    return not paths.offline() and bool(store.get_raw(keys.NODE_ID)) and bool(store.get_raw(keys.ACCESS_KEY))


def keep_local(store: KVStore) -> dict | None:
    keep = _get(store, keys.CONFIG_KEEP_LOCAL)
    return keep if isinstance(keep, dict) else None


def holds(store: KVStore, cloud_id: str) -> bool:
    """A kept local config is not to be replaced by the cloud's config `cloud_id` (the one it replaced)."""
    keep = keep_local(store)
    return bool(keep and keep.get("cloud_known") and keep.get("replaced") == cloud_id)


def record_cloud(store: KVStore, cloud_id: str | None) -> None:
    """What the AMMP API said at a config check. A local config kept before the node ever heard from
    the API takes the cloud's config then as the one it replaced."""
    with store.transaction():
        _set(store, keys.CONFIG_CLOUD, {"config_id": cloud_id, "checked": now_rfc3339()})
        keep = keep_local(store)
        if keep is not None and not keep.get("cloud_known"):
            keep.update(replaced=cloud_id, cloud_known=True)
            _set(store, keys.CONFIG_KEEP_LOCAL, keep)


def hand_back(store: KVStore) -> bool:
    """The engineer hands control back to the cloud: the keeping ends and node checks the API now.
    True when a local config was kept."""
    with store.transaction():
        kept = store.get_raw(keys.CONFIG_KEEP_LOCAL) is not None
        store.delete(keys.CONFIG_KEEP_LOCAL)
        _set(store, keys.CONFIG_CHECK_REQUEST, now_rfc3339())
    log.info("config control handed back to the AMMP cloud%s", " (the local config was kept)" if kept else "")
    return kept


def take_check_request(store: KVStore) -> bool:
    """True once after the web UI asked for a config check now."""
    with store.transaction():
        asked = store.get_raw(keys.CONFIG_CHECK_REQUEST) is not None
        if asked:
            store.delete(keys.CONFIG_CHECK_REQUEST)
    return asked


def stored_digest(store: KVStore) -> str | None:
    raw = store.get_raw(keys.CONFIG)
    if raw is None:
        return None
    try:
        doc = jsontext.parse(raw)
    except ConfigUnusable:
        return None
    return cfg.digest(doc) if isinstance(doc, dict) else None


def origin(store: KVStore, config_id: str | None) -> dict:
    """Where the config with `config_id` came from; a config no door recorded is from UNKNOWN_SOURCE."""
    rec = _get(store, keys.CONFIG_ORIGIN)
    if isinstance(rec, dict) and config_id is not None and rec.get("config_id") == config_id:
        return rec
    return {"source": None, "label": UNKNOWN_SOURCE, "at": None, "config_id": config_id, "replaced": None}


def state(store: KVStore, config_id: str | None) -> dict:
    """The running config's story for /health, the status and config pages: which config, from where
    and when, whether the cloud manages it, whether a local edit is kept, what the cloud said last."""
    rec = origin(store, config_id)
    cloud = _get(store, keys.CONFIG_CLOUD)
    is_managed = managed(store)
    return {
        "config_id": config_id,
        "source": rec.get("source"),
        "label": rec.get("label"),
        "at": rec.get("at"),
        "replaced": rec.get("replaced"),
        "managed": is_managed,
        "local_because": None
        if is_managed
        else "AE_OFFLINE: the node calls no AMMP API"
        if paths.offline()
        else "the node is not activated",
        "keep_local": keep_local(store) if is_managed else None,
        "cloud": cloud if isinstance(cloud, dict) else None,
    }


def announcement(store: KVStore, config: cfg.Config) -> str:
    """What node says on u/log/msg when `config` starts to run (a change, or node's start)."""
    rec = origin(store, config.config_id)
    problems = rec.get("problems") if rec.get("source") else None
    count = rec.get("problem_count", len(problems)) if problems is not None else len(config.problems)
    text = (
        f"config {config.config_id} running, from {rec['label']}"
        + (f" at {rec['at']}" if rec.get("at") else "")
        + f": {len(config.devices)} device(s) on {len(config.buses())} bus(es)"
    )
    if count:
        shown = problems if problems is not None else [str(p) for p in config.problems]
        text += f"; {count} problem(s), those items are skipped and the rest runs: " + "; ".join(shown)
    replaced = rec.get("replaced")
    if replaced:
        text += (
            f"; it replaced the local config {replaced.get('config_id')} from {replaced.get('label')} "
            f"({replaced.get('at')})"
        )
    keep = keep_local(store)
    if keep and managed(store):
        text += "; kept locally until the AMMP cloud sends a new config"
    return text
