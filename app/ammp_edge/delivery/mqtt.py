"""The local broker link (paho-mqtt 2.x): "connected" means CONNACK received; reconnects with
increasing delays; publishes are tracked by mid until their PUBACK.

Every program uses its own stable client id (`ammp-edge-<program>`), so two programs never kick each
other off (an upstream bug), and a restarted program takes over its own session.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from ..core import paths

log = logging.getLogger(__name__)


class MqttLink:
    def __init__(self, client_id: str, on_message: Callable[[str, bytes, bool], None] | None = None,
                 subscriptions: tuple[tuple[str, int], ...] = (), host: str | None = None, port: int | None = None,
                 max_inflight: int = 100, clean_session: bool = True):
        self.host = host or paths.mqtt_host()
        self.port = port or paths.mqtt_port()
        self.subscriptions = subscriptions
        self._on_message = on_message
        self.connected = threading.Event()
        self.epoch = 0  # counts connections; a publish from an older epoch can no longer be acknowledged
        self._acked: set[int] = set()
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session)
        self.client.max_inflight_messages_set(max_inflight)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(1, 30)
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
    def _connected(self, client, userdata, flags, reason_code, properties=None):
        if reason_code.is_failure:
            log.warning("local broker %s:%d refused the connection: %s", self.host, self.port, reason_code)
            return
        with self._lock:
            self.epoch += 1
            self._acked.clear()
        for topic, qos in self.subscriptions:
            client.subscribe(topic, qos)
        self.connected.set()
        log.info("connected to the local broker %s:%d", self.host, self.port)
        self._was_connected = True

    def _disconnected(self, client, userdata, flags, reason_code, properties=None):
        if self.connected.is_set():
            log.warning("lost the local broker %s:%d (%s); reconnecting", self.host, self.port, reason_code)
        self.connected.clear()

    def _published(self, client, userdata, mid, reason_code=None, properties=None):
        with self._lock:
            self._acked.add(mid)

    def _message(self, client, userdata, msg):
        if self._on_message is not None:
            self._on_message(msg.topic, msg.payload, msg.retain)

    # -- API --------------------------------------------------------------------------------------
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
