"""The `mqtt` reader: the last message of each topic a device's fields name, from one persistent
connection per broker (the bus `mqtt_<host>_<port>` owns it).

Upstream (reference 8.4) connected for every cycle with the fixed client id `ammp-edge` (two devices
or processes kicked each other off), waited `timeout` seconds, and had nothing in its first cycle.
Here the bus keeps one connection (client.py, packets.py) open from its start, subscribed to every
topic of its devices; a cycle reads what arrived. So:

- The client id is stable for the bus program and cannot collide: `ammp-edge-` and 12 hex digits of
  a digest of the node id and the bus id (another node, another bus: another id); `ammp-edge read`
  and the web UI's device test connect with that id plus a random suffix, so they never kick the
  bus off. `address.client_id` overrides it.
- Clean session by default: only the last message of a topic is used, and messages a persistent
  session queued while the bus was down would arrive at once, looking new. Retained messages give
  the first cycle its values: a cycle waits (within the device's timeout) until the subscriptions
  are acknowledged and the broker's retained messages are in.
- A value is its topic's last message, with its arrival time. One older than `address.max_age`
  seconds (default 300; 0: no limit) is published as null, with a note; a topic that never had a
  message is left out with an error. A message that cannot be decoded is an error for its field,
  never a value (and not the previous one).
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

from ...core import codec, jsontext, keys, paths
from ...core.config import Device
from ...core.drivers import MqttField
from ...core.kvs import KVStore
from ...core.problems import ConfigUnusable
from ..modbus import INTERRUPT_SLICE, DeviceResult
from .client import Subscriber
from .packets import MAX_PAYLOAD

try:  # CPython's own SHA-1: hashlib would map OpenSSL (~5 MB of RSS) into every bus process for one digest
    from _sha1 import sha1 as _sha1
except ImportError:  # pragma: no cover - other Pythons
    from hashlib import sha1 as _sha1

log = logging.getLogger(__name__)

_STABLE = {"on": False}


def use_stable_client_id() -> None:
    """The bus program owns its broker session: it connects with the stable client id. Every other
    process (read, the web UI's device test) adds a random suffix."""
    _STABLE["on"] = True


def _node_identity() -> str:
    try:
        if not paths.kvstore_path().exists():
            raise FileNotFoundError  # not made here: reading a config must not create a data directory
        store = KVStore()
        try:
            node_id = store.get(keys.NODE_ID)
        finally:
            store.close()
        if isinstance(node_id, str) and node_id:
            return node_id
    except (sqlite3.Error, OSError, ValueError):
        pass
    try:
        return Path("/etc/machine-id").read_text().strip() or socket.gethostname()
    except OSError:
        return socket.gethostname()


def client_id_for(bus_id: str, address: dict, stable: bool | None = None) -> str:
    if address.get("client_id"):
        base = str(address["client_id"])
    else:
        base = keys.MQTT_READER_CLIENT_ID_PREFIX + _sha1(f"{_node_identity()}|{bus_id}".encode()).hexdigest()[:12]
    if stable if stable is not None else _STABLE["on"]:
        return base
    return f"{base}-{os.urandom(3).hex()}"


class MqttTransport:
    """The bus's connection to its broker, shared by every device of the bus."""

    def __init__(self, device: Device, client_id: str | None = None):
        a = device.address
        tls = {"ca_certs": a.get("ca_certs"), "insecure": bool(a.get("tls_insecure"))} if a.get("tls") else None
        cid = client_id or client_id_for(device.bus_id, a)
        self.interrupt: Any = None
        self.subscriber = Subscriber(
            str(a.get("host", "localhost")),
            int(a.get("port", 1883)),
            cid,
            username=a.get("username"),
            password=a.get("password"),
            tls=tls,
            keepalive=int(a.get("keepalive", 60)),
            qos=int(a.get("qos", 1)),
            clean=bool(a.get("clean_session", True)),
            connect_timeout=device.timeout,
            max_payload=MAX_PAYLOAD,
            label=device.bus_id,
        ).start()

    def close(self) -> None:
        self.subscriber.stop()


def _walk(doc: Any, keypath: tuple) -> Any:
    value = doc
    for i, key in enumerate(keypath):
        where = "".join(f"[{k!r}]" for k in keypath[:i]) or "the document"
        if isinstance(key, int) and isinstance(value, list):
            if not -len(value) <= key < len(value):
                raise codec.DecodeError(f"{where} has no index {key} ({len(value)} items)")
            value = value[key]
        elif isinstance(value, dict) and str(key) in value:
            value = value[str(key)]
        else:
            kind = "an object" if isinstance(value, dict) else type(value).__name__
            raise codec.DecodeError(f"{where} ({kind}) has no key {key!r}")
    return value


def decode_message(payload: bytes, f: MqttField) -> Any:
    """The field's value from one payload; DecodeError naming what was wrong."""
    if f.parse_as != "json":
        return codec.decode_as(payload, f.parse_as, f.spec)
    try:
        doc = jsontext.parse(codec.utf8_text(payload), "payload", max_bytes=MAX_PAYLOAD, max_depth=32)
    except ConfigUnusable as exc:
        raise codec.DecodeError(str(exc.problems[0].message)) from None
    return codec.decode_value(_walk(doc, f.keypath), f.spec)


class MqttDevice:
    def __init__(self, device: Device, transport: MqttTransport):
        self.device = device
        self.transport = transport
        self.max_age = float(device.address.get("max_age", 300.0))
        transport.subscriber.add_topics([f.topic for f in device.fields.values()])

    def read(self, deadline: float) -> DeviceResult:
        res = DeviceResult()
        sub = self.transport.subscriber
        # the first cycle (and one after new topics) waits for the subscriptions and retained messages;
        # not while the broker is known to be down, and not past a stopping bus's grace
        end = min(deadline, time.monotonic() + self.device.timeout)
        synced = sub.synced.is_set()
        while not synced and time.monotonic() < end and not (sub.error and not sub.connected.is_set()):
            if self.transport.interrupt is not None and self.transport.interrupt.is_set():
                res.interrupted = True
                return res
            synced = sub.wait_synced(min(end, time.monotonic() + INTERRUPT_SLICE))
        now = time.monotonic()
        for var, f in self.device.fields.items():
            msg = sub.last(f.topic)
            if msg is None:
                why = sub.refused(f.topic) or (
                    "no message yet" if synced else f"not subscribed yet: {sub.error or 'waiting for the broker'}"
                )
                res.item_errors[var] = why
                res.errors.append(f"{var}: topic {f.topic!r}: {why}")
                continue
            age = now - msg.received
            if msg.error is not None:
                res.item_errors[var] = msg.error
                res.errors.append(f"{var}: topic {f.topic!r}: {msg.error}")
                continue
            if self.max_age and age > self.max_age:
                res.values[var] = None  # stale: published as null
                res.item_errors[var] = f"last message {age:.0f} s ago (max_age {self.max_age:g} s)"
                res.errors.append(f"{var}: topic {f.topic!r}: last message {age:.0f} s ago, over max_age: null")
                continue
            assert msg.payload is not None  # a message without an error has its payload
            try:
                res.values[var] = decode_message(msg.payload, f)
            except codec.DecodeError as exc:
                res.item_errors[var] = str(exc)
                res.errors.append(f"{var}: topic {f.topic!r}: {exc} (payload {msg.payload[:40]!r})")
        fresh = [v for v in res.values if v not in res.item_errors]
        if not fresh and res.errors and not sub.connected.is_set():
            res.failed = True  # the broker is unreachable and nothing fresh is left
            res.errors.insert(0, f"broker {sub.host}:{sub.port}: {sub.error or 'not connected'}")
        return res
