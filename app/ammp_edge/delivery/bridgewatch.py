"""The delivery gate: which bridges must be up, and whether they are (from their retained state
topics on the local broker), and the local broker's queue length (`$SYS/broker/store/messages/count`)
the publisher confirms messages by and pauses the backlog on."""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)


class BridgeWatch:
    """The delivery gate: which bridges must be up, and whether they are (from their state topics)."""

    def __init__(self, topics: list[str]):
        self.topics = list(topics)
        self.state: dict[str, bool] = {}
        self.epoch = 0  # bumps whenever any gating bridge drops
        self.store_count: list[tuple[float, int]] = []  # ($SYS samples) (monotonic time, count)
        self._lock = threading.Lock()

    def set_topics(self, topics: list[str]) -> None:
        with self._lock:
            self.topics = list(topics)
            self.epoch += 1  # what was sent through the old set of bridges is sent again

    @property
    def configured(self) -> bool:
        return bool(self.topics)

    def up(self) -> bool:
        with self._lock:
            return all(self.state.get(t, False) for t in self.topics)

    def on_state(self, topic: str, payload: bytes) -> None:
        up = payload.strip() == b"1"
        with self._lock:
            was = self.state.get(topic)
            self.state[topic] = up
            if was and not up:
                self.epoch += 1
        if was != up:
            log.warning("bridge %s %s", topic, "connected" if up else "DISCONNECTED")

    def forget_samples(self) -> None:
        with self._lock:
            self.store_count.clear()

    def on_store_count(self, payload: bytes) -> None:
        try:
            n = int(payload)
        except ValueError:
            return
        with self._lock:
            now = time.monotonic()
            self.store_count.append((now, n))
            while self.store_count and self.store_count[0][0] < now - 300:
                self.store_count.pop(0)

    def queue_excess(self) -> tuple[float, int] | None:
        """(time of the last sample, messages above the 5-minute minimum), None without samples."""
        with self._lock:
            if not self.store_count:
                return None
            low = min(n for _, n in self.store_count)
            at, last = self.store_count[-1]
            return at, last - low
