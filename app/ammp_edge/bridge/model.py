"""What a broker bridge is, where the broker's files go, and the checks every bridge's values share."""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import keys, paths

PROD_ADDRESS = "mqtt.ammp.io:8883"
STAGE_ADDRESS = "mqtt.stage.ammp.io:8883"
PROTOCOLS = ("mqttv50", "mqttv311", "mqttv31")
SYSTEM_CA_PATH = paths.SYSTEM_CA_DIR
KV_KEYS = (
    keys.NODE_ID,
    keys.ACCESS_KEY,
    keys.MQTT_BRIDGE_PROD,
    keys.MQTT_BRIDGE_STAGE,
    "mqtt_bridge_prod_address",
    "mqtt_bridge_prod_cafile",
    "mqtt_bridge_stage_address",
    "mqtt_bridge_stage_cafile",
    keys.MQTT_BRIDGE_CUSTOM,
)
CUSTOM_KEYS = (
    "host",
    "port",
    "tls",
    "ca_file",
    "ca_cert",
    "username",
    "password",
    "topic_prefix",
    "client_id",
    "protocol",
    "insecure",
)
MAIN_CONF = "mosquitto.conf"
CONF_D = "conf.d"
PERSISTENCE_FILE = "mosquitto.db"

# Characters that would break a mosquitto config line or an MQTT topic/client id we build from them.
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")  # node_id, connection names, client ids
HOST = re.compile(r"^[A-Za-z0-9_.-]+$")  # host names and IPv4 addresses (mosquitto splits on ':')


class _Invalid:
    """A KV value that is not valid JSON (kept apart so `plan` can report it)."""

    def __repr__(self) -> str:
        return "<invalid JSON>"


INVALID = _Invalid()


@dataclass(frozen=True)
class Layout:
    """Everything `render` needs apart from the KV values (so tests can render anywhere)."""

    conf_dir: Path  # where the rendered files go; conf paths inside them point here
    persistence_dir: Path
    templates_dir: Path
    port: int
    as_root: bool
    hostname: str

    @classmethod
    def default(cls) -> Layout:
        return cls(
            paths.mosquitto_rendered_dir(),
            paths.mosquitto_persistence_dir(),
            paths.conf_templates_dir(),
            paths.mqtt_port(),
            hasattr(os, "geteuid") and os.geteuid() == 0,
            socket.gethostname(),
        )


@dataclass(frozen=True)
class Bridge:
    name: str  # "prod", "stage" or "custom"
    connection: str  # mosquitto connection name (the local side's client id is "local.<connection>")
    address: str  # host:port
    state_topic: str  # local topic with a retained "1" while connected, "0" otherwise
    remote_clientid: str
    topic_prefix: str  # remote prefix: local u/x is published remotely as <topic_prefix>u/x
    tls: bool = True
    cafile: str | None = None
    capath: str | None = None
    ca_cert: str | None = field(default=None, repr=False)  # PEM to write under certs/ (custom only)
    insecure: bool = False
    protocol: str = "mqttv50"
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def filename(self) -> str:
        return f"{CONF_D}/bridge-{self.name}.conf"

    def describe(self) -> str:
        return f"{self.name} ({self.connection} -> {self.address}, state on {self.state_topic})"


@dataclass
class Plan:
    bridges: list[Bridge]
    problems: list[tuple[int, str]]  # (logging level, message); messages never contain secrets


def check_file(value: Any, key: str) -> tuple[str | None, str | None]:
    if not isinstance(value, str) or not value:
        return None, f"{key}: must be a file path"
    if CONTROL.search(value) or value != value.strip():
        return None, f"{key}: must not contain line breaks, control characters or leading/trailing spaces"
    if not os.path.isabs(value):
        return None, f"{key}: {value!r} must be an absolute path"
    if not os.path.isfile(value):
        return None, f"{key}: {value}: no such file"
    if not os.access(value, os.R_OK):
        return None, f"{key}: {value}: not readable"
    return value, None
