"""The local mosquitto broker and its bridges, rendered from the KV store (upstream section 6).

Two parts:
- pure functions: `plan` decides which bridges exist, `render` turns that into mosquitto config text,
  and `configured_bridges` is the one place that says which bridges exist and which local topic tells
  each one's state. The publisher imports it to know which bridge-state topics gate delivery.
- `run_bridge_config`, the `ammp-edge bridge-config` program. It renders into
  $AE_TEMP_DIR/mosquitto/ (mosquitto.conf, conf.d/bridge-*.conf, certs/). While it runs, it re-reads
  the KV store every few seconds. When the rendered text changes, it writes the files and restarts
  the broker through supervisord's XML-RPC interface.

KV keys (store):
  node_id, access_key       bridge credentials. Without both, no AMMP bridge is rendered.
  mqtt_bridge_prod          the AMMP production bridge is on unless this is literally false
  mqtt_bridge_stage         the AMMP staging bridge is on only if this is literally true
  mqtt_bridge_prod_address  "host:port" that replaces mqtt.ammp.io:8883 (for tests and private deployments)
  mqtt_bridge_prod_cafile   CA file that replaces conf/certs/ammp-ca.crt (same purpose)
  mqtt_bridge_stage_address, mqtt_bridge_stage_cafile   the same for the staging bridge
  mqtt_bridge_custom        a bridge to any broker: {"host", "port", "tls", "ca_file" | "ca_cert",
                            "username", "password", "topic_prefix", "client_id", "protocol", "insecure"}
"Literally" means what upstream's shell check saw in `kvs-get` output: JSON false or the string "false"
(and true or "true" for stage).

Bridge state: with `notifications true`, Debian's mosquitto 2.0.11 publishes a retained "0" on the
local notification topic when the bridge starts, a retained "1" when it connects, and "0" again (also
retained) as soon as the connection drops. The remote broker gets "1" on connect and "0" as the
bridge's will. tests/test_broker.py checks this against the real broker. Each bridge has its own
local state topic (see `plan`). conf/README.md documents all of this for operators.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import socket
import string
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..core import paths
from ..core.fileio import write_atomic

log = logging.getLogger("ammp_edge.broker")

PROD_ADDRESS = "mqtt.ammp.io:8883"
STAGE_ADDRESS = "mqtt.stage.ammp.io:8883"
PROTOCOLS = ("mqttv50", "mqttv311", "mqttv31")
SYSTEM_CA_PATH = "/etc/ssl/certs"
KV_KEYS = ("node_id", "access_key", "mqtt_bridge_prod", "mqtt_bridge_stage",
           "mqtt_bridge_prod_address", "mqtt_bridge_prod_cafile",
           "mqtt_bridge_stage_address", "mqtt_bridge_stage_cafile", "mqtt_bridge_custom")
CUSTOM_KEYS = ("host", "port", "tls", "ca_file", "ca_cert", "username", "password", "topic_prefix",
               "client_id", "protocol", "insecure")
MAIN_CONF = "mosquitto.conf"
CONF_D = "conf.d"
PERSISTENCE_FILE = "mosquitto.db"

# Characters that would break a mosquitto config line or an MQTT topic/client id we build from them.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")          # node_id, connection names, client ids
_HOST = re.compile(r"^[A-Za-z0-9_.-]+$")           # host names and IPv4 addresses (mosquitto splits on ':')


class _Invalid:
    """A KV value that is not valid JSON (kept apart so `plan` can report it)."""

    def __repr__(self) -> str:
        return "<invalid JSON>"


INVALID = _Invalid()


# ---------------------------------------------------------------------------------------------
# where things live


def certs_dir() -> Path:
    return paths.conf_templates_dir() / "certs"


@dataclass(frozen=True)
class Layout:
    """Everything `render` needs apart from the KV values (so tests can render anywhere)."""

    conf_dir: Path          # where the rendered files go; conf paths inside them point here
    persistence_dir: Path
    templates_dir: Path
    port: int
    as_root: bool
    hostname: str

    @classmethod
    def default(cls) -> "Layout":
        return cls(paths.mosquitto_rendered_dir(), paths.mosquitto_persistence_dir(), paths.conf_templates_dir(), paths.mqtt_port(),
                   hasattr(os, "geteuid") and os.geteuid() == 0, socket.gethostname())


# ---------------------------------------------------------------------------------------------
# which bridges exist


@dataclass(frozen=True)
class Bridge:
    name: str              # "prod", "stage" or "custom"
    connection: str        # mosquitto connection name (the local side's client id is "local.<connection>")
    address: str           # host:port
    state_topic: str       # local topic with a retained "1" while connected, "0" otherwise
    remote_clientid: str
    topic_prefix: str      # remote prefix: local u/x is published remotely as <topic_prefix>u/x
    tls: bool = True
    cafile: str | None = None
    capath: str | None = None
    ca_cert: str | None = field(default=None, repr=False)   # PEM to write under certs/ (custom only)
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
    problems: list[tuple[int, str]]    # (logging level, message); messages never contain secrets


def read_kv(store=None) -> dict[str, Any]:
    """The KV values `plan` and `render` look at (missing keys left out, unparsable ones as INVALID)."""
    from ..core.kvs import KVStore

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
    if key == "node_id":
        if not _NAME.match(text):
            problems.append((logging.ERROR, f"node_id: {text!r} is not usable in topics and client ids "
                                            "(letters, digits, '_', '.', ':', '-')"))
            return None
    elif not text or _CONTROL.search(text) or text != text.strip():
        problems.append((logging.ERROR, f"{key}: must be non-empty text without line breaks, control "
                                        "characters or leading/trailing spaces"))
        return None
    return text


def _parse_address(text: Any, key: str) -> tuple[str | None, str | None]:
    """("host:port", None) or (None, error)."""
    if not isinstance(text, str):
        return None, f"{key}: must be a string \"host:port\", got {type(text).__name__}"
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        return None, f"{key}: {text!r} is not \"host:port\""
    if not _HOST.match(host):
        return None, f"{key}: {host!r} is not a host name or IPv4 address"
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        return None, f"{key}: port {port!r} is outside 1..65535"
    return f"{host}:{int(port)}", None


def _check_file(value: Any, key: str) -> tuple[str | None, str | None]:
    if not isinstance(value, str) or not value:
        return None, f"{key}: must be a file path"
    if _CONTROL.search(value) or value != value.strip():
        return None, f"{key}: must not contain line breaks, control characters or leading/trailing spaces"
    if not os.path.isabs(value):
        return None, f"{key}: {value!r} must be an absolute path"
    if not os.path.isfile(value):
        return None, f"{key}: {value}: no such file"
    if not os.access(value, os.R_OK):
        return None, f"{key}: {value}: not readable"
    return value, None


def _ammp_bridge(name: str, kv: dict, layout: Layout, node_id: str, access_key: str,
                 problems: list) -> Bridge | None:
    default_address, ca_name = (PROD_ADDRESS, "ammp-ca.crt") if name == "prod" else (STAGE_ADDRESS, "ammp-ca-stage.crt")
    address, cafile = default_address, str(layout.templates_dir / "certs" / ca_name)
    addr_key, ca_key = f"mqtt_bridge_{name}_address", f"mqtt_bridge_{name}_cafile"
    if kv.get(addr_key) is not None:
        address, err = _parse_address(kv[addr_key], addr_key)
        if err:
            problems.append((logging.ERROR, f"{name} bridge left out: {err}"))
            return None
    if kv.get(ca_key) is not None:
        cafile, err = _check_file(kv[ca_key], ca_key)
        if err:
            problems.append((logging.ERROR, f"{name} bridge left out: {err}"))
            return None
    elif not os.path.isfile(cafile):
        problems.append((logging.ERROR, f"{name} bridge left out: its CA file {cafile} is missing"))
        return None
    connection = f"{node_id}-brg" + ("" if name == "prod" else f"-{name}")
    return Bridge(name=name, connection=connection, address=address, state_topic=f"a/{node_id}/bridge_state",
                  remote_clientid=connection, topic_prefix=f"a/{node_id}/", cafile=cafile,
                  username=node_id, password=access_key)


def _custom_bridge(value: Any, node_id: str | None, layout: Layout, problems: list) -> Bridge | None:
    key = "mqtt_bridge_custom"
    if value is INVALID:
        problems.append((logging.ERROR, f"custom bridge left out: {key}: the stored value is not valid JSON"))
        return None
    if not isinstance(value, dict):
        problems.append((logging.ERROR, f"custom bridge left out: {key}: must be an object such as "
                                        f'{{"host": "broker.example.com", "port": 8883}}, got {type(value).__name__}'))
        return None
    errors: list[str] = []

    def text(name: str, *, secret: bool = False, default: str | None = None, allow_empty: bool = False,
             pattern: re.Pattern | None = None, what: str = "") -> str | None:
        if value.get(name) is None:
            return default
        v = value[name]
        if not isinstance(v, str):
            errors.append(f"{key}.{name}: must be a string, got {type(v).__name__}")
            return None
        if (not v and not allow_empty) or _CONTROL.search(v) or v != v.strip():
            errors.append(f"{key}.{name}: must be {'' if allow_empty else 'non-empty '}text without line breaks, "
                          "control characters or leading/trailing spaces")
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
        host = text("host", pattern=_HOST, what="is not a host name or IPv4 address (IPv6 literals are not "
                                                "supported by mosquitto bridges; use a name)")
    tls = flag("tls", True)
    insecure = flag("insecure", False)
    port = 8883 if tls else 1883
    raw_port = value.get("port")
    if raw_port is not None:
        if isinstance(raw_port, bool) or not (isinstance(raw_port, int) or (isinstance(raw_port, str) and raw_port.isdigit())):
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
    client_id = text("client_id", default=f"{base}-brg-custom", pattern=_NAME,
                     what="may only contain letters, digits, '_', '.', ':' and '-'")
    prefix = text("topic_prefix", default=f"a/{node_id}/" if node_id else "", allow_empty=True,
                  pattern=re.compile(r'^([^\s+#"]*/)?$'),
                  what="must be empty or end with '/' and contain no spaces, quotes, '+' or '#'")
    cafile = capath = ca_cert = None
    if value.get("ca_file") is not None and value.get("ca_cert") is not None:
        errors.append(f"{key}: give ca_file or ca_cert, not both")
    elif value.get("ca_file") is not None:
        cafile, err = _check_file(value["ca_file"], f"{key}.ca_file")
        if err:
            errors.append(err)
    elif value.get("ca_cert") is not None:
        pem = value["ca_cert"]
        if not isinstance(pem, str) or "-----BEGIN CERTIFICATE-----" not in pem or "-----END CERTIFICATE-----" not in pem:
            errors.append(f"{key}.ca_cert: must be PEM text (-----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----)")
        else:
            ca_cert = pem.strip() + "\n"
            cafile = str(layout.conf_dir / "certs" / "custom-ca.crt")
    if tls and cafile is None and ca_cert is None and not errors:
        capath = SYSTEM_CA_PATH          # a broker with a certificate from a public CA
    if not tls and (value.get("ca_file") is not None or value.get("ca_cert") is not None or value.get("insecure")):
        problems.append((logging.WARNING, f"{key}: tls is false, so ca_file, ca_cert and insecure are ignored"))
        cafile = capath = ca_cert = None
    if errors:
        for e in errors:
            problems.append((logging.ERROR, f"custom bridge left out: {e}"))
        return None
    state_topic = f"{prefix}bridge_state"
    if node_id and state_topic == f"a/{node_id}/bridge_state":
        state_topic += "_custom"          # keep it apart from the AMMP bridge's state
    return Bridge(name="custom", connection=f"{base}-brg-custom", address=f"{host}:{port}", state_topic=state_topic,
                  remote_clientid=client_id, topic_prefix=prefix, tls=tls, cafile=cafile, capath=capath,
                  ca_cert=ca_cert, insecure=insecure, protocol=protocol, username=username, password=password)


def plan(kv: dict, layout: Layout | None = None) -> Plan:
    """Which bridges the KV values ask for, and why any of them is left out."""
    layout = layout or Layout.default()
    problems: list[tuple[int, str]] = []
    bridges: list[Bridge] = []
    prod_on = _literal(kv.get("mqtt_bridge_prod")) != "false"
    stage_on = _literal(kv.get("mqtt_bridge_stage")) == "true"
    if paths.offline() and (prod_on or stage_on):  # `up --demo`: no cloud, even on an activated data dir
        problems.append((logging.INFO, "AE_OFFLINE: no AMMP bridge"))
        prod_on = stage_on = False
    for key in ("mqtt_bridge_prod", "mqtt_bridge_stage"):
        if kv.get(key) is INVALID:
            problems.append((logging.WARNING, f"{key}: the stored value is not valid JSON "
                                              f"(taken as {'on' if key.endswith('prod') else 'off'})"))
    if prod_on or stage_on:
        node_id = _ident(kv, "node_id", problems)
        access_key = _ident(kv, "access_key", problems)
        missing = [k for k, v in (("node_id", node_id), ("access_key", access_key)) if v is None]
        if missing:
            which = " and ".join(n for n, on in (("prod", prod_on), ("stage", stage_on)) if on)
            problems.append((logging.INFO, f"no AMMP bridge ({which}): {' and '.join(missing)} not set in the KV store "
                                           "(the node is not provisioned yet)"))
        else:
            for name, on in (("prod", prod_on), ("stage", stage_on)):
                if on:
                    bridge = _ammp_bridge(name, kv, layout, node_id, access_key, problems)
                    if bridge:
                        bridges.append(bridge)
    else:
        node_id = _ident(kv, "node_id", problems)
    if kv.get("mqtt_bridge_custom") not in (None, False):
        bridge = _custom_bridge(kv["mqtt_bridge_custom"], node_id, layout, problems)
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


def configured_bridges(kvstore=None, layout: Layout | None = None) -> list[Bridge]:
    """The bridges the broker has (or gets at its next restart), each with its local state topic.

    The one place that says which bridges exist: the publisher gates delivery on their state topics.
    """
    return plan(read_kv(kvstore), layout).bridges


# ---------------------------------------------------------------------------------------------
# rendering


def _template(layout: Layout, name: str) -> string.Template:
    return string.Template((layout.templates_dir / name).read_text())


def _render_bridge(b: Bridge, layout: Layout) -> str:
    if b.name in ("prod", "stage"):
        desc = ("AMMP production bridge (on unless KV mqtt_bridge_prod is false)" if b.name == "prod"
                else "AMMP staging bridge (on when KV mqtt_bridge_stage is true)")
        return _template(layout, "bridge-ammp.conf.tpl").substitute(
            DESCRIPTION=desc, CONNECTION=b.connection, ADDRESS=b.address, CAFILE=b.cafile, NODE_ID=b.username,
            ACCESS_KEY=b.password, STATE_TOPIC=b.state_topic)
    if b.tls:
        tls_lines = [f"bridge_cafile {b.cafile}" if b.cafile else f"bridge_capath {b.capath}",
                     f"bridge_insecure {'true' if b.insecure else 'false'}"]
    else:
        tls_lines = ["# no TLS (mqtt_bridge_custom.tls is false)"]
    auth = []
    if b.username is not None:
        auth.append(f"remote_username {b.username}")
    if b.password is not None:
        auth.append(f"remote_password {b.password}")
    return _template(layout, "bridge-custom.conf.tpl").substitute(
        CONNECTION=b.connection, ADDRESS=b.address, CLIENT_ID=b.remote_clientid, TLS_LINES="\n".join(tls_lines),
        PROTOCOL=b.protocol, AUTH_LINES="\n".join(auth) or "# no credentials",
        TOPIC_PREFIX=b.topic_prefix or '""', TOPIC_PREFIX_SHOWN=b.topic_prefix, STATE_TOPIC=b.state_topic)


def render(kv: dict, layout: Layout | None = None, *,
           report: Callable[[int, str], None] | None = None) -> dict[str, str]:
    """{relative file name: text} for the broker: mosquitto.conf, conf.d/bridge-<name>.conf, certs/*.

    Pure apart from reading the templates. Why a bridge is left out goes to `report(level, message)`
    (default: this module's log). Secrets appear in the bridge files, never in the messages.
    """
    layout = layout or Layout.default()
    p = plan(kv, layout)
    for level, message in p.problems:
        (report or log.log)(level, message)
    files: dict[str, str] = {}
    for b in p.bridges:
        files[b.filename] = _render_bridge(b, layout)
        if b.ca_cert:
            files[str(Path(b.cafile).relative_to(layout.conf_dir))] = b.ca_cert
    user_line = ("# Running as root: stay root (mosquitto would otherwise switch to the user 'mosquitto', which\n"
                 "# cannot read this appliance's files). Upstream did the same.\nuser root\n") if layout.as_root else ""
    include = f"include_dir {layout.conf_dir / CONF_D}" if p.bridges else "# no bridges"
    files[MAIN_CONF] = _template(layout, "mosquitto.conf.tpl").substitute(
        PORT=layout.port, USER_LINE=user_line, PERSISTENCE_DIR=str(layout.persistence_dir).rstrip("/"),
        INCLUDE_LINE=include)
    return dict(sorted(files.items()))


def write_if_changed(directory: Path | str, files: dict[str, str]) -> bool:
    """Make `directory` hold exactly `files` (atomic per file, mode 0600). True if anything changed.

    The directory belongs to us: files in it that are not in `files` are removed.
    """
    directory = Path(directory)
    changed = False
    for rel, text in files.items():
        path = directory / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise ValueError(f"{rel}: not a relative path inside {directory}")
        try:
            if path.read_text() == text:
                continue
        except (OSError, UnicodeDecodeError):
            pass
        write_atomic(path, text, 0o600)
        changed = True
    if directory.is_dir():
        for path in sorted(directory.rglob("*"), reverse=True):
            rel = path.relative_to(directory).as_posix()
            if (path.is_file() or path.is_symlink()) and rel not in files:
                path.unlink()
                changed = True
    return changed


# ---------------------------------------------------------------------------------------------
# persistence check (upstream section 4.3, without discarding data)


def check_persistence(directory: Path | None = None) -> list[Path]:
    """If an interrupted save left mosquitto.db.new, move it and mosquitto.db aside; return the new paths.

    Upstream deleted mosquitto.db in this case and lost the whole backlog. Here nothing is deleted:
    both files go to <persistence>/aside/<UTC time>/, and the broker starts with an empty database.
    That loses nothing, because the outbox still holds every readout the cloud has not confirmed.
    Call this only while the broker is stopped.
    """
    directory = Path(directory or paths.mosquitto_persistence_dir())
    new = directory / f"{PERSISTENCE_FILE}.new"
    if not new.exists():
        return []
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = directory / "aside" / stamp
    n = 1
    while target.exists():
        n += 1
        target = directory / "aside" / f"{stamp}-{n}"
    target.mkdir(parents=True)
    moved = []
    for name in (PERSISTENCE_FILE, f"{PERSISTENCE_FILE}.new"):
        src = directory / name
        if src.exists():
            shutil.move(str(src), str(target / name))
            moved.append(target / name)
    log.warning("%s found (an interrupted save, e.g. a power cut): moved %s to %s; the broker starts with "
                "empty persistence (the outbox still holds every unsent readout)",
                new, " and ".join(p.name for p in moved), target)
    return moved


def _broker_listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# supervisord


def restart_broker(program: str = "mosquitto", layout: Layout | None = None, sock: Path | None = None,
                   quiet: bool = False) -> bool:
    """Stop the broker program, check its persistence, start it again. False if that failed.

    quiet: an unreachable supervisord is logged at debug level only (a retry of a failed attempt).
    """
    import xmlrpc.client  # here, not at the top: http.client loads OpenSSL, ~5 MB this program rarely needs

    from supervisor.xmlrpc import Faults

    layout = layout or Layout.default()
    sock = sock or paths.supervisor_socket()
    from ..device.supervise import connect

    proxy = connect(sock)
    try:
        try:
            proxy.supervisor.stopProcess(program, True)
        except xmlrpc.client.Fault as exc:
            if exc.faultCode != Faults.NOT_RUNNING:
                raise
        check_persistence(layout.persistence_dir)
        try:
            proxy.supervisor.startProcess(program, True)
        except xmlrpc.client.Fault as exc:
            if exc.faultCode != Faults.ALREADY_STARTED:
                raise
    except (OSError, xmlrpc.client.ProtocolError) as exc:
        log.log(logging.DEBUG if quiet else logging.WARNING,
                "supervisord not reachable at %s (%s): the broker keeps its old config until it restarts; "
                "retrying", sock, exc)
        return False
    except xmlrpc.client.Fault as exc:
        log.error("supervisord could not restart %r: %s", program, exc.faultString)
        return False
    log.info("broker %r restarted with the new config", program)
    return True


# ---------------------------------------------------------------------------------------------
# the bridge-config program


def _render_current(layout: Layout) -> tuple[dict[str, str], list[tuple[int, str]], list[Bridge]]:
    problems: list[tuple[int, str]] = []
    try:
        kv = read_kv()
    except Exception as exc:  # noqa: BLE001 - a broken KV store still gets a working local broker
        problems.append((logging.ERROR, f"KV store unreadable ({type(exc).__name__}: {exc}): no bridges"))
        kv = {}
    files = render(kv, layout, report=lambda level, msg: problems.append((level, msg)))
    return files, problems, plan(kv, layout).bridges


def run_bridge_config(once: bool = False, interval: float = 5.0, program: str = "mosquitto",
                      stop: threading.Event | None = None, layout: Layout | None = None) -> int:
    """Render now; with once, check persistence and exit. Else keep the rendered files in step with the KV store."""
    layout = layout or Layout.default()
    stop = stop or threading.Event()
    layout.persistence_dir.mkdir(parents=True, exist_ok=True)
    last_problems: list | None = None
    pending_restart = False
    failed_before = False     # say an unreachable supervisord once, not every few seconds
    if not once:
        log.info("bridge-config: rendering %s from the KV store every %g s; supervisord program %r at %s",
                 layout.conf_dir, interval, program, paths.supervisor_socket())
    while True:
        files, problems, bridges = _render_current(layout)
        if problems != last_problems:
            for level, message in problems:
                log.log(level, "%s", message)
            last_problems = problems
        changed = write_if_changed(layout.conf_dir, files)
        if changed or once:
            log.info("broker config %s in %s: listener 127.0.0.1:%d, bridges: %s",
                     "written" if changed else "unchanged", layout.conf_dir, layout.port,
                     "; ".join(b.describe() for b in bridges) or "none")
        if once:
            if _broker_listening(layout.port):
                log.info("a broker is listening on 127.0.0.1:%d: persistence check skipped", layout.port)
            else:
                check_persistence(layout.persistence_dir)
            return 0
        if changed:
            pending_restart = True
        if pending_restart:
            pending_restart = not restart_broker(program, layout, quiet=failed_before)
            failed_before = pending_restart
        if stop.wait(interval):
            log.info("bridge-config stopping")
            return 0
