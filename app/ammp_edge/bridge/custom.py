"""The custom bridge (`mqtt_bridge_custom`): a bridge to any MQTT broker, checked key by key."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from ..core import keys
from .model import CONTROL, CUSTOM_KEYS, HOST, INVALID, NAME, PROTOCOLS, SYSTEM_CA_PATH, Bridge, Layout, check_file


def custom_bridge(value: Any, node_id: str | None, layout: Layout, problems: list) -> Bridge | None:
    """The custom bridge of the KV value `mqtt_bridge_custom`, or None with the reasons in `problems`
    ((logging level, message); messages never contain the password)."""
    key = keys.MQTT_BRIDGE_CUSTOM
    if value is INVALID:
        problems.append((logging.ERROR, f"custom bridge left out: {key}: the stored value is not valid JSON"))
        return None
    if not isinstance(value, dict):
        problems.append(
            (
                logging.ERROR,
                f"custom bridge left out: {key}: must be an object such as "
                f'{{"host": "broker.example.com", "port": 8883}}, got {type(value).__name__}',
            )
        )
        return None
    errors: list[str] = []

    def text(
        name: str,
        *,
        secret: bool = False,
        default: str | None = None,
        allow_empty: bool = False,
        pattern: re.Pattern | None = None,
        what: str = "",
    ) -> str | None:
        if value.get(name) is None:
            return default
        v = value[name]
        if not isinstance(v, str):
            errors.append(f"{key}.{name}: must be a string, got {type(v).__name__}")
            return None
        if (not v and not allow_empty) or CONTROL.search(v) or v != v.strip():
            errors.append(
                f"{key}.{name}: must be {'' if allow_empty else 'non-empty '}text without line breaks, "
                "control characters or leading/trailing spaces"
            )
            return None
        if pattern is not None and not pattern.match(v):
            errors.append(f"{key}.{name}: {'it' if secret else repr(v)} {what}")
            return None
        return v

    def flag(name: str, default: bool) -> bool:
        v = value.get(name, default)
        if v is None:
            return default
        if not isinstance(v, bool):
            errors.append(f"{key}.{name}: must be true or false, got {json.dumps(v)}")
            return default
        return v

    for k in value:
        if k not in CUSTOM_KEYS:
            problems.append((logging.WARNING, f"{key}.{k}: unknown key, ignored (known: {', '.join(CUSTOM_KEYS)})"))

    host = None
    if value.get("host") in (None, ""):
        errors.append(f"{key}.host: required (the broker's host name or IPv4 address)")
    else:
        host = text(
            "host",
            pattern=HOST,
            what="is not a host name or IPv4 address (IPv6 literals are not "
            "supported by mosquitto bridges; use a name)",
        )
    tls = flag("tls", True)
    insecure = flag("insecure", False)
    port = 8883 if tls else 1883
    raw_port = value.get("port")
    if raw_port is not None:
        if isinstance(raw_port, bool) or not (
            isinstance(raw_port, int) or (isinstance(raw_port, str) and raw_port.isdigit())
        ):
            errors.append(f"{key}.port: must be an integer, got {json.dumps(raw_port)}")
        elif not 1 <= int(raw_port) <= 65535:
            errors.append(f"{key}.port: {int(raw_port)} is outside 1..65535")
        else:
            port = int(raw_port)
    protocol = value.get("protocol", "mqttv50")
    if protocol is None:
        protocol = "mqttv50"
    if protocol not in PROTOCOLS:
        errors.append(f"{key}.protocol: {json.dumps(protocol)} is not one of {', '.join(PROTOCOLS)}")
    username = text("username")
    password = text("password", secret=True)
    if password is not None and username is None and "password" in value:
        errors.append(f"{key}.password: given without {key}.username")
    base = node_id or re.sub(r"[^A-Za-z0-9_.-]", "-", layout.hostname) or "ammp-edge"
    client_id = text(
        "client_id",
        default=f"{base}-brg-custom",
        pattern=NAME,
        what="may only contain letters, digits, '_', '.', ':' and '-'",
    )
    prefix = text(
        "topic_prefix",
        default=f"a/{node_id}/" if node_id else "",
        allow_empty=True,
        pattern=re.compile(r'^([^\s+#"]*/)?$'),
        what="must be empty or end with '/' and contain no spaces, quotes, '+' or '#'",
    )
    cafile = capath = ca_cert = None
    if value.get("ca_file") is not None and value.get("ca_cert") is not None:
        errors.append(f"{key}: give ca_file or ca_cert, not both")
    elif value.get("ca_file") is not None:
        cafile, err = check_file(value["ca_file"], f"{key}.ca_file")
        if err:
            errors.append(err)
    elif value.get("ca_cert") is not None:
        pem = value["ca_cert"]
        if (
            not isinstance(pem, str)
            or "-----BEGIN CERTIFICATE-----" not in pem
            or "-----END CERTIFICATE-----" not in pem
        ):
            errors.append(
                f"{key}.ca_cert: must be PEM text (-----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----)"
            )
        else:
            ca_cert = pem.strip() + "\n"
            cafile = str(layout.conf_dir / "certs" / "custom-ca.crt")
    if tls and cafile is None and ca_cert is None and not errors:
        capath = SYSTEM_CA_PATH  # a broker with a certificate from a public CA
    if not tls and (value.get("ca_file") is not None or value.get("ca_cert") is not None or value.get("insecure")):
        problems.append((logging.WARNING, f"{key}: tls is false, so ca_file, ca_cert and insecure are ignored"))
        cafile = capath = ca_cert = None
    if errors or host is None or client_id is None or prefix is None:  # (None only with an error)
        for e in errors:
            problems.append((logging.ERROR, f"custom bridge left out: {e}"))
        return None
    state_topic = f"{prefix}bridge_state"
    if node_id and state_topic == f"a/{node_id}/bridge_state":
        state_topic += "_custom"  # keep it apart from the AMMP bridge's state
    return Bridge(
        name="custom",
        connection=f"{base}-brg-custom",
        address=f"{host}:{port}",
        state_topic=state_topic,
        remote_clientid=client_id,
        topic_prefix=prefix,
        tls=tls,
        cafile=cafile,
        capath=capath,
        ca_cert=ca_cert,
        insecure=insecure,
        protocol=protocol,
        username=username,
        password=password,
    )


def check_custom(value: Any) -> tuple[bool, list[str]]:
    """(usable, messages) for a custom bridge value, as bridge-config would judge it (for the Pi
    settings file, which is checked where no broker runs)."""
    found: list[tuple[int, str]] = []
    nowhere = Path("/nonexistent")
    bridge = custom_bridge(value, None, Layout(nowhere, nowhere, nowhere, 1883, True, "ammp-edge"), found)
    return bridge is not None, [m for _, m in found]
