"""Real mosquitto brokers for tests: a test CA, a local broker, a TLS "cloud" broker, a recording subscriber.

    from helpers.brokers import Mosquitto, Recorder, cloud_broker, make_ca

    ca = make_ca(tmp_path)                       # CA plus a server certificate for 127.0.0.1 / localhost
    with Mosquitto.from_text(tmp_path / "b", "listener {port} 127.0.0.1\\nallow_anonymous true\\n") as broker:
        with Recorder(broker.port, "u/#") as rec:
            ...
            rec.wait_for(lambda m: m.topic == "u/data")

    cloud = cloud_broker(tmp_path)               # TLS + password listener, plus a plain admin listener
    cloud.tls_port, cloud.admin_port, cloud.ca.ca_crt, cloud.node_user, cloud.node_password
    Recorder(cloud.admin_port, "a/#", **cloud.admin_auth)
    Recorder(local_port, "d/#", **local_auth())  # a rendered local broker: as the appliance's programs

Everything runs on free loopback ports in the given temporary directory (tests run beside a live appliance).
Brokers are stopped by their own pid only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt

from helpers.common import free_port

MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Poll until predicate() is truthy; return its value, or raise AssertionError after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# certificates


@dataclass
class CA:
    dir: Path
    ca_crt: Path
    ca_key: Path
    server_crt: Path
    server_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {r.stderr}")


def make_ca(tmpdir: Path, name: str = "ca") -> CA:
    """A throwaway CA and a server certificate (SAN IP:127.0.0.1, DNS:localhost) signed by it, via openssl."""
    d = Path(tmpdir) / name
    d.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=ammp-edge test CA",
        cwd=d,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
        cwd=d,
    )
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        cwd=d,
    )
    return CA(d, d / "ca.crt", d / "ca.key", d / "server.crt", d / "server.key")


# ---------------------------------------------------------------------------------------------
# a broker process


class Mosquitto:
    """/usr/sbin/mosquitto with a given config file; its stderr goes to a log file.

    `port` is the listener the config opens (the one waited for). stop(), kill() and restart() keep
    the same config, port and persistence directory.
    """

    def __init__(self, conf: Path, port: int, log_path: Path | None = None, extra_ports: tuple[int, ...] = ()):
        self.conf = Path(conf)
        self.port = port
        self.extra_ports = extra_ports
        self.log_path = Path(log_path) if log_path else self.conf.with_suffix(".log")
        self.proc: subprocess.Popen | None = None

    @classmethod
    def from_text(cls, directory: Path, text: str, port: int | None = None, **fmt) -> Mosquitto:
        """Write `text` (with {port}, {dir} and any **fmt placeholders) to <directory>/mosquitto.conf."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        if AS_ROOT and "\nuser " not in "\n" + text:
            text += "\nuser root\n"  # else mosquitto drops to user 'mosquitto', who cannot read tmp_path
        (directory / "mosquitto.conf").write_text(text.format(port=port, dir=directory, **fmt))
        return cls(directory / "mosquitto.conf", port, directory / "mosquitto.log")

    # -- lifecycle --

    def start(self, timeout: float = 10.0) -> Mosquitto:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        for p in (self.port, *self.extra_ports):
            while not port_open(p):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mosquitto exited with {self.proc.returncode}:\n{self.log}")
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"mosquitto did not listen on {p} within {timeout} s:\n{self.log}")
                time.sleep(0.02)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (mosquitto saves its persistence), then wait."""
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL: no persistence save, like a crash or power cut."""
        self._end(signal.SIGKILL, 10)

    def restart(self, timeout: float = 10.0) -> Mosquitto:
        self.stop()
        return self.start(timeout)

    def _end(self, sig: int, timeout: float) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.running else None

    @property
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, text: str, timeout: float = 10.0) -> str:
        return wait_until(lambda: text in self.log and self.log, timeout, what=f"{text!r} in {self.log_path}")

    def __enter__(self) -> Mosquitto:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# the "cloud"


@dataclass
class CloudBroker:
    broker: Mosquitto
    ca: CA
    tls_port: int
    admin_port: int
    node_user: str
    node_password: str
    admin_user: str = "admin"
    admin_password: str = "admin-secret"

    @property
    def admin_auth(self) -> dict:
        return {"username": self.admin_user, "password": self.admin_password}

    def start(self) -> CloudBroker:
        self.broker.start()
        return self

    def stop(self) -> None:
        self.broker.stop()

    def kill(self) -> None:
        self.broker.kill()

    def __enter__(self) -> CloudBroker:
        if not self.broker.running:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.broker.stop()


CLOUD_CONF = """\
# test "cloud" broker: TLS with passwords for nodes, a plain loopback listener for test subscribers
per_listener_settings false
allow_anonymous false
password_file {dir}/passwords
persistence true
persistence_location {dir}/data/
log_dest stderr
log_type all
listener {port} 127.0.0.1
cafile {ca_crt}
certfile {server_crt}
keyfile {server_key}
listener {admin_port} 127.0.0.1
"""


def cloud_broker(
    tmp_path: Path,
    node_user: str = "0123456789ab",
    node_password: str = "node-secret",
    ca: CA | None = None,
    start: bool = True,
) -> CloudBroker:
    """A TLS listener (free port, password auth; `node_user` may connect) and a plain admin listener.

    Both require a password (users `node_user` and `admin`), so no per_listener_settings quirks.
    """
    d = Path(tmp_path) / "cloud"
    (d / "data").mkdir(parents=True, exist_ok=True)
    ca = ca or make_ca(d)
    pw = d / "passwords"
    pw.touch()
    for user, password in ((node_user, node_password), ("admin", "admin-secret")):
        subprocess.run([MOSQUITTO_PASSWD, "-b", str(pw), user, password], check=True, capture_output=True, timeout=30)
    admin_port = free_port()
    broker = Mosquitto.from_text(
        d, CLOUD_CONF, admin_port=admin_port, ca_crt=ca.ca_crt, server_crt=ca.server_crt, server_key=ca.server_key
    )
    broker.extra_ports = (admin_port,)
    cloud = CloudBroker(broker, ca, broker.port, admin_port, node_user, node_password)
    return cloud.start() if start else cloud


# ---------------------------------------------------------------------------------------------
# a recording subscriber


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool
    at: float = field(default=0.0, compare=False)  # time.time() when the recorder received it

    @property
    def text(self) -> str:
        return self.payload.decode(errors="replace")


class Recorder:
    """Subscribes (QoS 1) to topics on a broker and records every message in a background thread.

    Reconnects by itself when the broker restarts (and resubscribes).
    """

    def __init__(
        self,
        port: int,
        *topics: str,
        host: str = "127.0.0.1",
        username: str | None = None,
        password: str | None = None,
        client_id: str = "",
    ):
        self.topics = topics or ("#",)
        self.messages: list[Message] = []
        self._cond = threading.Condition()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a, **k: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 1)
        self.host, self.port = host, port

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, client, userdata, msg):
        with self._cond:
            self.messages.append(Message(msg.topic, bytes(msg.payload), bool(msg.retain), time.time()))
            self._cond.notify_all()

    def start(self, timeout: float = 10.0) -> Recorder:
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self.subscribed.wait(timeout):
            self.stop()
            raise AssertionError(f"could not subscribe to {self.topics} on port {self.port}")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Recorder:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def on(self, topic: str) -> list[Message]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def last(self, topic: str) -> Message | None:
        found = self.on(topic)
        return found[-1] if found else None

    def wait_for(self, predicate: Callable[[Message], bool], timeout: float = 10.0, what: str = "message") -> Message:
        deadline = time.monotonic() + timeout
        with self._cond:
            seen = 0
            while True:
                for m in self.messages[seen:]:
                    if predicate(m):
                        return m
                seen = len(self.messages)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out after {timeout} s waiting for {what}; got "
                        f"{[(m.topic, m.payload[:60], m.retain) for m in self.messages[-20:]]}"
                    )
                self._cond.wait(left)

    def wait_for_last(self, topic: str, payload: bytes | str, timeout: float = 10.0) -> Message:
        """Wait until the latest message on `topic` is `payload`."""
        payload = payload.encode() if isinstance(payload, str) else payload

        def check():
            m = self.last(topic)
            return m if m is not None and m.payload == payload else None

        return wait_until(check, timeout, what=f"{topic} = {payload!r}")


def local_auth(data_dir: Path | None = None) -> dict:
    """Recorder/publish/retained keyword arguments to log in to a rendered local broker as the
    appliance's programs do (the password in <data dir>/broker-password, made when missing)."""
    from ammp_edge.core import credentials, keys, paths

    return {
        "username": keys.LOCAL_BROKER_USER,
        "password": credentials.broker_password(paths.broker_password_path(data_dir)),
    }


def retained(port: int, topic: str, wait: float = 1.0, **auth) -> bytes | None:
    """The retained payload on `topic` as a new subscriber sees it (None if none arrives within `wait` s)."""
    with Recorder(port, topic, **auth) as rec:
        try:
            return rec.wait_for(lambda m: m.topic == topic and m.retain, wait, what=topic).payload
        except AssertionError:
            return None


def publish(
    port: int, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False, timeout: float = 10.0, **auth
) -> None:
    """Publish one message and wait until the broker acknowledged it (QoS 1)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    if auth.get("username") is not None:
        client.username_pw_set(auth["username"], auth.get("password"))
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout)
        assert info.is_published(), f"{topic} not acknowledged within {timeout} s"
    finally:
        client.disconnect()
        client.loop_stop()
