"""Settings kept in the KV store (bridge toggles, custom broker, API base URL, log level) and the input
checks for scans. Every value is validated here before it is stored; bridge-config re-renders the broker
within seconds of a change (conf/README.md)."""

from __future__ import annotations

import glob
import ipaddress
import json
import logging
import re

from ..bridge.model import PROTOCOLS
from ..bridge.plan import plan, read_kv
from ..core import keys, serialline
from ..node.configgen import generation_request, tank_dims

LOG_LEVELS = ("debug", "info", "warning", "error")
APPLIES = {
    "bridges": "bridge-config restarts the broker with the new bridges within a few seconds.",
    "custom": "bridge-config restarts the broker with the new bridges within a few seconds.",
    "api": "Used by the node for its next request to the AMMP API.",
    "loglevel": "The web UI uses it now; the other programs take LOGGING_LEVEL from their environment.",
}
URL = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?(/[A-Za-z0-9._~/%-]*)?$")


def current(store) -> dict:
    custom = store.get(keys.MQTT_BRIDGE_CUSTOM)
    if isinstance(custom, dict):
        custom = {k: v for k, v in custom.items() if k != "password"} | {"has_password": bool(custom.get("password"))}
    return {
        "prod": store.get(keys.MQTT_BRIDGE_PROD) not in (False, "false"),
        "stage": store.get(keys.MQTT_BRIDGE_STAGE) in (True, "true"),
        "custom": custom if isinstance(custom, dict) else None,
        "http_api_base_url": store.get(keys.HTTP_API_BASE_URL) or "",
        "log_level": store.get(keys.LOG_LEVEL) or "info",
    }


def _custom_from_form(store, f) -> tuple[dict | None, list[str]]:
    if f.get("remove") == "on":
        return None, []
    old = store.get(keys.MQTT_BRIDGE_CUSTOM) if isinstance(store.get(keys.MQTT_BRIDGE_CUSTOM), dict) else {}
    value: dict = {"host": f.get("host", "").strip()}
    if f.get("port", "").strip():
        if not f.get("port").strip().isdigit():
            return None, [f"mqtt_bridge_custom.port: {f.get('port')!r} is not a number"]
        value["port"] = int(f.get("port"))
    value["tls"] = f.get("tls") == "on"
    value["insecure"] = f.get("insecure") == "on"
    for key in ("username", "topic_prefix", "client_id", "ca_file"):
        if f.get(key, "").strip() != "" or (key == "topic_prefix" and f.get("set_prefix") == "on"):
            value[key] = f.get(key, "").strip()
    if f.get("ca_cert", "").strip():
        value["ca_cert"] = f.get("ca_cert").strip()
    if f.get("protocol") in PROTOCOLS:
        value["protocol"] = f.get("protocol")
    if f.get("password"):
        value["password"] = f.get("password")
    elif old.get("password") and f.get("clear_password") != "on":
        value["password"] = old["password"]  # blank: keep the stored one
    kv = read_kv(store)
    kv[keys.MQTT_BRIDGE_CUSTOM] = value
    problems = [
        msg.replace("custom bridge left out: ", "")
        for level, msg in plan(kv).problems
        if keys.MQTT_BRIDGE_CUSTOM in msg and level >= 40
    ]
    return value, problems


def save(store, section: str, f) -> list[str]:
    if section == "bridges":
        store.set(keys.MQTT_BRIDGE_PROD, f.get("prod") == "on")
        store.set(keys.MQTT_BRIDGE_STAGE, f.get("stage") == "on")
    elif section == "custom":
        value, errors = _custom_from_form(store, f)
        if errors:
            return errors
        if value is None:
            store.delete(keys.MQTT_BRIDGE_CUSTOM)
        else:
            store.set(keys.MQTT_BRIDGE_CUSTOM, value)
    elif section == "api":
        url = f.get("http_api_base_url", "").strip()
        if url and not URL.match(url):
            return [f"http_api_base_url: {url!r} is not an http(s) URL"]
        if url:
            store.set(keys.HTTP_API_BASE_URL, url)
        else:
            store.delete(keys.HTTP_API_BASE_URL)
    elif section == "loglevel":
        level = f.get("log_level", "")
        if level not in LOG_LEVELS:
            return [f"log_level: must be one of {', '.join(LOG_LEVELS)}"]
        store.set(keys.LOG_LEVEL, level)
        apply_log_level(level)
    return []


def apply_log_level(level: object) -> None:
    if level in LOG_LEVELS:
        logging.getLogger().setLevel(str(level).upper())


def serial_ports() -> list[str]:
    found = []
    for pattern in ("/dev/ttyUSB*", "/dev/ttyACM*", "/dev/ttyAMA*", "/dev/ttyS[0-3]", "/dev/serial/by-id/*"):
        found += sorted(glob.glob(pattern))
    return found


def scan_args(body: dict) -> tuple[str, dict]:
    kind = body.get("kind")
    if kind == "network":
        text = str(body.get("targets") or "").strip()
        targets = None
        if text:
            targets = []
            for item in re.split(r"[\s,]+", text)[:16]:
                try:
                    net = ipaddress.ip_network(item, strict=False)
                except ValueError:
                    raise ValueError(f"targets: {item!r} is not an IP address or network") from None
                if net.version != 4 or net.prefixlen < 16:
                    raise ValueError(f"targets: {item!r}: IPv4 networks of /16 or smaller only")
                targets.append(str(net) if net.prefixlen < 32 else str(net.network_address))
        ports = body.get("ports") or [22, 80, 443, 502]
        if isinstance(ports, str):
            ports = [p for p in re.split(r"[\s,]+", ports) if p]
        try:
            ports = tuple(int(p) for p in ports)[:32]
        except (TypeError, ValueError):
            raise ValueError("ports: whole numbers 1..65535") from None
        if not ports or not all(1 <= p <= 65535 for p in ports):
            raise ValueError("ports: whole numbers 1..65535")
        return kind, {"targets": targets, "ports": ports}
    if kind == "serial":
        port = str(body.get("port") or "").strip() or None
        if port is not None and (not re.fullmatch(r"/dev/[A-Za-z0-9_./:-]{1,100}", port) or ".." in port):
            raise ValueError(f"port: {port!r} is not a serial port path")
        try:
            baud = int(body.get("baudrate") or serialline.DEFAULT_BAUDRATE)
        except (TypeError, ValueError):
            raise ValueError("baudrate: a whole number") from None
        if baud not in serialline.STANDARD_BAUDRATES:
            raise ValueError(f"baudrate: {baud} is not a standard rate")
        return kind, {"port": port, "baudrate": baud}
    if kind == "env":
        return kind, {}
    raise ValueError("kind: network, serial or env")


def sensor_port(store) -> str:
    port = store.get(keys.SERIAL_SENSOR_PORT)
    return port if isinstance(port, str) and port.startswith("/dev/") else keys.DEFAULT_SENSOR_PORT


def tank_dims_from(body: dict) -> dict | None:
    """As upstream's form: with a tank, width, length and height in metres, each a non-zero number."""
    if body.get("tank") not in (True, "on", "yes"):
        return None
    dims = {}
    for key in ("width", "length", "height"):
        try:
            value = float(body.get(key, ""))
        except (TypeError, ValueError):
            raise ValueError(f"{key}: a number of metres") from None
        if not (0 < value < 1000):
            raise ValueError(f"{key}: must be a positive number of metres")
        dims[key] = value
    return tank_dims(**dims)


def request_config_generation(scan: dict, dims: dict | None, publish) -> dict:
    """As upstream (and the `trigger_config_generation` command): the scan plus "generate_new_config" on
    u/state/env_scan; the AMMP cloud answers with a new config, delivered like any config."""
    if not publish(keys.ENV_SCAN_TOPIC, json.dumps(generation_request(scan, dims))):
        return {"ok": False, "message": "the local broker is not reachable; try again in a moment"}
    return {
        "ok": True,
        "message": f"Config generation requested (on {keys.ENV_SCAN_TOPIC}); the new config arrives "
        "from the AMMP cloud like any config.",
    }
