"""A small MQTT 3.1.1 subscriber: one connection to one broker, the last message of each topic.

Why our own (the reading path may not load paho, bus RSS): a reader needs only CONNECT, SUBSCRIBE,
PUBLISH received at QoS 0 and 1 (answered with PUBACK), PINGREQ for the keepalive and a reconnect
with growing delays. Every packet from the broker is checked before anything of it is used: its
type and flags, a remaining length of at most 4 bytes that is exactly what the packet's type allows
(CONNACK 2, SUBACK 2 + one code per topic asked for, PUBACK 2, PINGRESP 0), a topic that is UTF-8
without NUL or wildcards, a packet id where QoS 1 needs one and no QoS 2; anything else is a
protocol error and the connection is made again. A payload over `max_payload` is read past (the
connection stays in step) and recorded as an error for its topic, never a value.

Sync: after the SUBSCRIBEs a PINGREQ goes out; the broker answers packets in order, so when its
PINGRESP is back every retained message it queued for the subscriptions has arrived (a round that
brought new ones is followed by another, for brokers that hold QoS 1 messages back by their inflight
window). `wait_synced` is what a reader's first cycle waits for.

One thread does all the socket I/O; readers only look at `last()`.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from typing import Any

from .packets import (
    BACKOFF_MAX,
    BACKOFF_START,
    CONNACK,
    CONNACK_REFUSED,
    MAX_PAYLOAD,
    PACKET_TIMEOUT,
    PINGREQ,
    PINGRESP,
    PUBACK,
    PUBLISH,
    SLICE,
    SUBACK,
    TOPICS_PER_SUBSCRIBE,
    Message,
    ProtocolError,
    Refused,
    Wire,
    check_topic,
    connect_packet,
    packet,
    read_header,
    subscribe_packet,
)

log = logging.getLogger(__name__)


class Subscriber:
    """One connection to one broker; the last message of every topic added. Thread-safe to read."""

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        *,
        username: str | None = None,
        password: str | None = None,
        tls: dict | None = None,
        keepalive: int = 60,
        qos: int = 1,
        clean: bool = True,
        connect_timeout: float = 5.0,
        max_payload: int = MAX_PAYLOAD,
        label: str = "",
    ):
        self.host, self.port, self.client_id = host, port, client_id
        self.username, self.password, self.tls = username, password, tls
        self.keepalive, self.qos, self.clean = keepalive, qos, clean
        self.connect_timeout, self.max_payload = connect_timeout, max_payload
        self.label = label or f"mqtt {host}:{port}"
        self._lock = threading.Lock()
        self._topics: list[str] = []
        self._generation = 0
        self._subscribed: set[str] = set()
        self._refused: dict[str, str] = {}
        self._last: dict[str, Message] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()
        self.synced = threading.Event()
        self.error: str | None = None  # why the connection is down (None while up)
        self.down_since: float | None = time.monotonic()
        self.connects = 0
        self.stats = {"messages": 0, "dropped": 0, "protocol_errors": 0}

    # -- what readers use --------------------------------------------------------------------
    def add_topics(self, topics: list[str]) -> None:
        with self._lock:
            new = [t for t in dict.fromkeys(topics) if t not in self._topics]
            self._topics.extend(new)
            if new:
                self._generation += 1  # a sync round in flight does not cover these
                self.synced.clear()

    def last(self, topic: str) -> Message | None:
        with self._lock:
            return self._last.get(topic)

    def refused(self, topic: str) -> str | None:
        with self._lock:
            return self._refused.get(topic)

    def wait_synced(self, deadline: float) -> bool:
        while not self.synced.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or self._stop.is_set():
                return False
            self.synced.wait(min(left, SLICE))
        return True

    def start(self) -> Subscriber:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"mqtt-{self.host}:{self.port}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the I/O thread ----------------------------------------------------------------------
    def _run(self) -> None:
        delay = BACKOFF_START
        while not self._stop.is_set():
            sock = None
            try:
                sock = self._open()
                self._session(sock)
            except ConnectionAbortedError:
                break
            except (OSError, ProtocolError, Refused, ValueError) as exc:
                if isinstance(exc, ProtocolError):
                    self.stats["protocol_errors"] += 1
                self._down(f"{type(exc).__name__}: {exc}" if not isinstance(exc, ConnectionError) else str(exc))
            except Exception as exc:  # a bug here must not leave the bus alive with a dead connection
                log.exception("[%s] unexpected error in the MQTT connection; connecting again", self.label)
                self._down(f"{type(exc).__name__}: {exc}")
            finally:
                if sock is not None:
                    try:
                        sock.close()
                    except OSError:
                        pass
            if self.connected.is_set():
                delay = BACKOFF_START  # it was up: start again from the shortest delay
            self.connected.clear()
            self.synced.clear()
            # growing delays with jitter, so many buses do not knock on a restarted broker at once
            if self._stop.wait(delay * random.uniform(0.8, 1.2)):
                break
            delay = min(delay * 2, BACKOFF_MAX)
        self.connected.clear()
        self.synced.clear()

    def _down(self, why: str) -> None:
        if self.error is None:
            log.warning("[%s] connection down: %s; reconnecting with growing delays", self.label, why)
            self.down_since = time.monotonic()
        elif why != self.error:
            log.info("[%s] still down: %s", self.label, why)
        self.error = why

    def _open(self) -> Any:
        sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        if self.tls is not None:
            import ssl  # only for a TLS broker: OpenSSL adds ~5 MB to a bus process

            ctx = ssl.create_default_context(cafile=self.tls.get("ca_certs") or None)
            if self.tls.get("insecure"):
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(sock, server_hostname=self.host)
        return sock

    def _session(self, sock: Any) -> None:
        sock.settimeout(self.connect_timeout)
        sock.sendall(connect_packet(self.client_id, self.keepalive, self.clean, self.username, self.password))
        wire = Wire(sock, self._stop)
        deadline = time.monotonic() + self.connect_timeout
        while not wire.buf:
            if not wire.fill(None) and time.monotonic() > deadline:
                raise TimeoutError(f"no CONNACK within {self.connect_timeout:g} s")
        kind, flags, length = read_header(wire, wire.take(1, deadline)[0], deadline)
        if kind != CONNACK or flags or length != 2:
            raise ProtocolError(f"expected CONNACK (type 2, length 2), got type {kind} length {length}")
        ack_flags, code = wire.take(2, deadline)
        if ack_flags & 0xFE:
            raise ProtocolError(f"CONNACK flags 0x{ack_flags:02x} have reserved bits set")
        if code:
            raise Refused(f"the broker refused the connection: {CONNACK_REFUSED.get(code, f'code {code}')}")
        sock.settimeout(SLICE)
        self.connects += 1
        if self.error is not None and self.connects > 1:
            log.warning("[%s] connected again after %.0f s", self.label, time.monotonic() - (self.down_since or 0))
        elif self.connects == 1:
            log.info("[%s] connected as %s", self.label, self.client_id)
        self.error, self.down_since = None, None
        with self._lock:
            self._subscribed.clear()
            self._refused.clear()  # asked again on every connection: an ACL may have changed
        self.connected.set()
        self._loop(sock, wire)

    def _loop(self, sock: Any, wire: Wire) -> None:
        next_id = 0
        pending_subs: dict[int, list[str]] = {}
        ping_out: float | None = None  # when the outstanding PINGREQ was sent
        sync_ping: int | None = None  # the outstanding PINGREQ is a sync barrier for this topic generation
        new_retained = False  # a retained message came in during this sync round
        last_sent = time.monotonic()

        def send(data: bytes) -> None:
            nonlocal last_sent
            sock.sendall(data)
            last_sent = time.monotonic()

        while not self._stop.is_set():
            with self._lock:
                todo = [t for t in self._topics if t not in self._subscribed and t not in self._refused]
                waiting = {t for ts in pending_subs.values() for t in ts}
                todo = [t for t in todo if t not in waiting]
            for i in range(0, len(todo), TOPICS_PER_SUBSCRIBE):
                next_id = next_id % 0xFFFF + 1
                chunk = todo[i : i + TOPICS_PER_SUBSCRIBE]
                send(subscribe_packet(next_id, chunk, self.qos))
                pending_subs[next_id] = chunk
            now = time.monotonic()
            if not pending_subs and not self.synced.is_set() and ping_out is None:
                send(packet(PINGREQ, 0, b""))  # the sync barrier (see the module text)
                ping_out, sync_ping, new_retained = now, self._generation, False
            elif ping_out is None and now - last_sent >= self.keepalive:
                send(packet(PINGREQ, 0, b""))
                ping_out, sync_ping = now, None
            if ping_out is not None and now - ping_out > max(self.connect_timeout, min(self.keepalive, 30)):
                raise TimeoutError(f"no PINGRESP within {now - ping_out:.0f} s")
            if not wire.buf and not wire.fill(None):
                continue
            deadline = time.monotonic() + PACKET_TIMEOUT
            kind, flags, length = read_header(wire, wire.take(1, deadline)[0], deadline)
            if kind == PUBLISH:
                retained = self._publish(wire, flags, length, deadline, send)
                new_retained = new_retained or retained
            elif kind == SUBACK:
                self._suback(wire, flags, length, deadline, pending_subs)
            elif kind == PINGRESP:
                if flags or length:
                    raise ProtocolError(f"PINGRESP with flags {flags} and length {length} (0 expected)")
                if ping_out is None:
                    raise ProtocolError("a PINGRESP without a PINGREQ")
                ping_out = None
                if sync_ping is not None and sync_ping == self._generation and not pending_subs:
                    if new_retained:
                        continue  # another round: more retained messages may be held back
                    with self._lock:
                        if all(t in self._subscribed or t in self._refused for t in self._topics):
                            self.synced.set()
            else:
                raise ProtocolError(f"unexpected packet type {kind} (length {length}) from the broker")
        raise ConnectionAbortedError("stopping")

    def _suback(self, wire: Wire, flags: int, length: int, deadline: float, pending: dict[int, list[str]]) -> None:
        if flags:
            raise ProtocolError(f"SUBACK flags {flags} (0 expected)")
        if length < 3:
            raise ProtocolError(f"SUBACK of length {length} (at least 3)")
        body = wire.take(length, deadline)
        pid = int.from_bytes(body[:2], "big")
        topics = pending.pop(pid, None)
        if topics is None:
            raise ProtocolError(f"SUBACK for packet id {pid}, which was not asked for")
        codes = body[2:]
        if len(codes) != len(topics):
            raise ProtocolError(f"SUBACK with {len(codes)} return codes for {len(topics)} topics")
        with self._lock:
            for topic, code in zip(topics, codes):
                if code == 0x80:
                    self._refused[topic] = "the broker refused the subscription (ACL?)"
                    log.warning("[%s] the broker refused the subscription to %r", self.label, topic)
                elif code > self.qos:
                    raise ProtocolError(f"SUBACK granted QoS {code} for {topic!r}; asked for {self.qos}")
                else:
                    self._subscribed.add(topic)

    def _publish(self, wire: Wire, flags: int, length: int, deadline: float, send: Any) -> bool:
        qos, retained = (flags >> 1) & 3, bool(flags & 1)
        if qos > 1:
            raise ProtocolError(f"a PUBLISH with QoS {qos}; subscriptions asked for at most {self.qos}")
        head = 2 + (2 if qos else 0)
        if length < head:
            raise ProtocolError(f"a PUBLISH of length {length} cannot hold its topic length")
        tlen = int.from_bytes(wire.take(2, deadline), "big")
        if tlen + head > length:
            raise ProtocolError(f"a PUBLISH topic of {tlen} bytes in a packet of {length}")
        topic = check_topic(wire.take(tlen, deadline))
        pid = 0
        if qos:
            pid = int.from_bytes(wire.take(2, deadline), "big")
            if pid == 0:
                raise ProtocolError("a QoS 1 PUBLISH with packet id 0")
        size = length - head - tlen
        now_m, now_w = time.monotonic(), time.time()
        if size > self.max_payload:
            wire.skip(size, deadline)
            msg = Message(None, now_m, now_w, retained, f"a message of {size} bytes, over the {self.max_payload} limit")
            self.stats["dropped"] += 1
        else:
            msg = Message(wire.take(size, deadline), now_m, now_w, retained)
        if qos:
            send(packet(PUBACK, 0, pid.to_bytes(2, "big")))
        with self._lock:
            if topic in self._topics:
                self._last[topic] = msg
                self.stats["messages"] += 1
        return retained
