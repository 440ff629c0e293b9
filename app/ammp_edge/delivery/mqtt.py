"""The local broker link (paho-mqtt 2.x), the one MQTT client every program uses: "connected" means
CONNACK received; reconnects with increasing delays; publishes are tracked by mid until their PUBACK;
subscriptions can change while it runs and are made again after every reconnect.

Client ids are in core.keys: each program has its own, so two programs never kick each other off (an
upstream bug); those holding a session (node, publisher) keep theirs stable, so a restarted program
takes its session over.

Every link logs in as keys.LOCAL_BROKER_USER with the local broker password (core.credentials; made
when the data directory has none): without it the broker lets a client read u/# and nothing else.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from ..core import credentials, keys, paths

log = logging.getLogger(__name__)


class MqttLink:
    def __init__(
        self,
        client_id: str,
        on_message: Callable[[str, bytes, bool], None] | None = None,
        subscriptions: tuple[tuple[str, int], ...] = (),
        host: str | None = None,
        port: int | None = None,
        max_inflight: int = 100,
        clean_session: bool = True,
        reconnect_max: int = 30,
    ):
        self.host = host or paths.mqtt_host()
        self.port = port or paths.mqtt_port()
        self._subscriptions: dict[str, int] = dict(subscriptions)  # topic -> QoS
        self._on_message = on_message
        self.connected = threading.Event()
        self.epoch = 0  # counts connections; a publish from an older epoch can no longer be acknowledged
        self._acked: set[int] = set()
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session)
        self.client.username_pw_set(keys.LOCAL_BROKER_USER, credentials.broker_password())
        self.client.max_inflight_messages_set(max_inflight)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(1, reconnect_max)
        self.client.on_connect = self._connected
        self.client.on_disconnect = self._disconnected
        self.client.on_publish = self._published
        self.client.on_message = self._message
        self._was_connected = False

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=60)
        self.client.loop_start()

    def stop(self) -> None:
        self.connected.clear()  # a disconnect we asked for is not worth a warning
        self.client.disconnect()
        self.client.loop_stop()

    # -- callbacks (paho's network thread) --------------------------------------------------------
    def _connected(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any = None) -> None:
        if reason_code.is_failure:
            log.warning("local broker %s:%d refused the connection: %s", self.host, self.port, reason_code)
            # the password may have been made anew (the broker follows once bridge-config re-rendered)
            try:
                client.username_pw_set(keys.LOCAL_BROKER_USER, credentials.broker_password())
            except OSError as exc:
                log.error("cannot read the local broker password: %s", exc)
            return
        with self._lock:
            self.epoch += 1
            self._acked.clear()
            subscriptions = list(self._subscriptions.items())
        for topic, qos in subscriptions:
            client.subscribe(topic, qos)
        self.connected.set()
        log.info("connected to the local broker %s:%d", self.host, self.port)
        self._was_connected = True

    def _disconnected(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any = None) -> None:
        if self.connected.is_set():
            log.warning("lost the local broker %s:%d (%s); reconnecting", self.host, self.port, reason_code)
        self.connected.clear()

    def _published(self, client: Any, userdata: Any, mid: int, reason_code: Any = None, properties: Any = None) -> None:
        with self._lock:
            self._acked.add(mid)

    def _message(self, client: Any, userdata: Any, msg: Any) -> None:
        if self._on_message is not None:
            self._on_message(msg.topic, msg.payload, msg.retain)

    # -- API --------------------------------------------------------------------------------------
    @property
    def subscriptions(self) -> dict[str, int]:
        with self._lock:
            return dict(self._subscriptions)

    def subscribe(self, topic: str, qos: int = 0) -> None:
        """From now on (and after every reconnect); at once when connected."""
        with self._lock:
            self._subscriptions[topic] = qos
        if self.connected.is_set():
            self.client.subscribe(topic, qos)

    def unsubscribe(self, topic: str) -> None:
        with self._lock:
            known = self._subscriptions.pop(topic, None) is not None
        if known and self.connected.is_set():
            self.client.unsubscribe(topic)

    def publish(self, topic: str, payload: str | bytes, qos: int = 1, retain: bool = False) -> tuple[int, int] | None:
        """Send; returns (epoch, mid) to ask `acked` about, or None when not connected."""
        if not self.connected.is_set():
            return None
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            return None
        return self.epoch, info.mid

    def acked(self, token: tuple[int, int]) -> bool | None:
        """True once PUBACKed, None when the connection it was sent on is gone (send again)."""
        epoch, mid = token
        with self._lock:
            if epoch != self.epoch:
                return None
            if mid in self._acked:
                self._acked.discard(mid)
                return True
        return False if self.connected.is_set() else None
