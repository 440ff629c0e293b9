"""Which bridges the broker has: decided from the KV values (upstream section 6), with each bridge's
local state topic. The one place that says which bridges exist."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

from ..core import keys, paths
from ..core.kvs import KVStore
from .custom import custom_bridge
from .model import CONTROL, HOST, INVALID, KV_KEYS, NAME, PROD_ADDRESS, STAGE_ADDRESS, Bridge, Layout, Plan, check_file

log = logging.getLogger(__name__)


def read_kv(store: KVStore | None = None) -> dict[str, Any]:
    """The KV values `plan` and `render` look at (missing keys left out, unparsable ones as INVALID)."""
    own = store is None
    store = store or KVStore()
    values: dict[str, Any] = {}
    try:
        for key in KV_KEYS:
            raw = store.get_raw(key)
            if raw is None:
                continue
            try:
                values[key] = json.loads(raw)
            except ValueError:
                values[key] = INVALID
    finally:
        if own:
            store.close()
    return values


def _literal(value: Any) -> str | None:
    """What upstream's `ae kvs-get` printed for a value (its shell script compared that text)."""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return None


def _ident(kv: dict, key: str, problems: list) -> str | None:
    """node_id or access_key as text, or None (with the reason) when unusable. Never logs the value."""
    value = kv.get(key)
    if value is None:
        return None
    if value is INVALID:
        problems.append((logging.ERROR, f"{key}: the stored value is not valid JSON"))
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        problems.append((logging.ERROR, f"{key}: must be a string, got {type(value).__name__}"))
        return None
    text = str(value)
    if key == keys.NODE_ID:
        if not NAME.match(text):
            problems.append(
                (
                    logging.ERROR,
                    f"node_id: {text!r} is not usable in topics and client ids (letters, digits, '_', '.', ':', '-')",
                )
            )
            return None
    elif not text or CONTROL.search(text) or text != text.strip():
        problems.append(
            (
                logging.ERROR,
                f"{key}: must be non-empty text without line breaks, control characters or leading/trailing spaces",
            )
        )
        return None
    return text


def _parse_address(text: Any, key: str) -> tuple[str | None, str | None]:
    """("host:port", None) or (None, error)."""
    if not isinstance(text, str):
        return None, f'{key}: must be a string "host:port", got {type(text).__name__}'
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        return None, f'{key}: {text!r} is not "host:port"'
    if not HOST.match(host):
        return None, f"{key}: {host!r} is not a host name or IPv4 address"
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        return None, f"{key}: port {port!r} is outside 1..65535"
    return f"{host}:{int(port)}", None


def _ammp_bridge(name: str, kv: dict, layout: Layout, node_id: str, access_key: str, problems: list) -> Bridge | None:
    default_address, ca_name = (PROD_ADDRESS, "ammp-ca.crt") if name == "prod" else (STAGE_ADDRESS, "ammp-ca-stage.crt")
    address, cafile = default_address, str(layout.templates_dir / "certs" / ca_name)
    addr_key, ca_key = f"mqtt_bridge_{name}_address", f"mqtt_bridge_{name}_cafile"
    if kv.get(addr_key) is not None:
        parsed, err = _parse_address(kv[addr_key], addr_key)
        if err or parsed is None:
            problems.append((logging.ERROR, f"{name} bridge left out: {err}"))
            return None
        address = parsed
    if kv.get(ca_key) is not None:
        checked, err = check_file(kv[ca_key], ca_key)
        if checked is not None:
            cafile = checked
        if err:
            problems.append((logging.ERROR, f"{name} bridge left out: {err}"))
            return None
    elif not os.path.isfile(cafile):
        problems.append((logging.ERROR, f"{name} bridge left out: its CA file {cafile} is missing"))
        return None
    connection = f"{node_id}-brg" + ("" if name == "prod" else f"-{name}")
    return Bridge(
        name=name,
        connection=connection,
        address=address,
        state_topic=keys.ammp_bridge_state_topic(node_id),
        remote_clientid=connection,
        topic_prefix=f"a/{node_id}/",
        cafile=cafile,
        username=node_id,
        password=access_key,
    )


def plan(kv: dict, layout: Layout | None = None) -> Plan:
    """Which bridges the KV values ask for, and why any of them is left out."""
    layout = layout or Layout.default()
    problems: list[tuple[int, str]] = []
    bridges: list[Bridge] = []
    prod_on = _literal(kv.get(keys.MQTT_BRIDGE_PROD)) != "false"
    stage_on = _literal(kv.get(keys.MQTT_BRIDGE_STAGE)) == "true"
    if paths.offline() and (prod_on or stage_on):  # `up --demo`: no cloud, even on an activated data dir
        problems.append((logging.INFO, "AE_OFFLINE: no AMMP bridge"))
        prod_on = stage_on = False
    for key in ("mqtt_bridge_prod", "mqtt_bridge_stage"):
        if kv.get(key) is INVALID:
            problems.append(
                (
                    logging.WARNING,
                    f"{key}: the stored value is not valid JSON (taken as {'on' if key.endswith('prod') else 'off'})",
                )
            )
    if prod_on or stage_on:
        node_id = _ident(kv, keys.NODE_ID, problems)
        access_key = _ident(kv, keys.ACCESS_KEY, problems)
        missing = [k for k, v in (("node_id", node_id), ("access_key", access_key)) if v is None]
        if missing or node_id is None or access_key is None:
            which = " and ".join(n for n, on in (("prod", prod_on), ("stage", stage_on)) if on)
            problems.append(
                (
                    logging.INFO,
                    f"no AMMP bridge ({which}): {' and '.join(missing)} not set in the KV store "
                    "(the node is not provisioned yet)",
                )
            )
        else:
            for name, on in (("prod", prod_on), ("stage", stage_on)):
                if on:
                    bridge = _ammp_bridge(name, kv, layout, node_id, access_key, problems)
                    if bridge:
                        bridges.append(bridge)
    else:
        node_id = _ident(kv, keys.NODE_ID, problems)
    if kv.get(keys.MQTT_BRIDGE_CUSTOM) not in (None, False):
        bridge = custom_bridge(kv[keys.MQTT_BRIDGE_CUSTOM], node_id, layout, problems)
        if bridge:
            bridges.append(bridge)
    # Every bridge gets its own state topic, so the state of one never stands for another. Upstream
    # gives prod and stage the same notification topic; when both run, stage's becomes ..._stage.
    taken: set[str] = set()
    unique = []
    for b in bridges:
        if b.state_topic in taken:
            b = dataclasses.replace(b, state_topic=f"{b.state_topic}_{b.name}")
        taken.add(b.state_topic)
        unique.append(b)
    return Plan(unique, problems)


def configured_bridges(kvstore: KVStore | None = None, layout: Layout | None = None) -> list[Bridge]:
    """The bridges the broker has (or gets at its next restart), each with its local state topic.

    The one place that says which bridges exist: the publisher gates delivery on their state topics.
    """
    return plan(read_kv(kvstore), layout).bridges


def bridge_state_topics(kvstore: KVStore) -> list[str]:
    """The local state topics of the configured bridges (the publisher gates delivery on them, node waits
    for them before it publishes metadata)."""
    return sorted({b.state_topic for b in configured_bridges(kvstore)})
