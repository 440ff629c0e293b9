"""The broker's config text from a plan: mosquitto.conf, passwd and acl (the local lock-down),
conf.d/bridge-<name>.conf, certs/ (pure apart from reading the templates and the local broker
password), and writing it only when it changed."""

from __future__ import annotations

import base64
import hashlib
import logging
import string
from collections.abc import Callable
from pathlib import Path

from ..core import credentials, keys
from ..core.fileio import write_atomic
from .model import CONF_D, MAIN_CONF, Bridge, Layout
from .plan import plan

log = logging.getLogger(__name__)


def _template(layout: Layout, name: str) -> string.Template:
    return string.Template((layout.templates_dir / name).read_text())


PASSWORD_FILE = "passwd"
ACL_FILE = "acl"
ACL = f"""# Rendered by `ammp-edge bridge-config` (bridge/render.py). Clients without a user name (any local
# user, e.g. mosquitto_sub -t u/data): read u/# only.
topic read u/#

# The appliance's own programs.
user {keys.LOCAL_BROKER_USER}
topic readwrite #
topic read $SYS/#
"""


def password_line(user: str, password: str) -> str:
    """A mosquitto 2.0 password_file line (PBKDF2-SHA512, as `mosquitto_passwd` writes it). The salt
    comes from the password, so the rendered text changes only when the password does (bridge-config
    restarts the broker on every change); the password itself is random."""
    salt = hashlib.sha256(b"ammp-edge local broker salt\0" + password.encode()).digest()[:12]
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
    return f"{user}:$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}\n"


def _render_bridge(b: Bridge, layout: Layout) -> str:
    if b.name in ("prod", "stage"):
        desc = (
            "AMMP production bridge (on unless KV mqtt_bridge_prod is false)"
            if b.name == "prod"
            else "AMMP staging bridge (on when KV mqtt_bridge_stage is true)"
        )
        return _template(layout, "bridge-ammp.conf.tpl").substitute(
            DESCRIPTION=desc,
            CONNECTION=b.connection,
            ADDRESS=b.address,
            CAFILE=b.cafile,
            NODE_ID=b.username,
            ACCESS_KEY=b.password,
            STATE_TOPIC=b.state_topic,
        )
    if b.tls:
        tls_lines = [
            f"bridge_cafile {b.cafile}" if b.cafile else f"bridge_capath {b.capath}",
            f"bridge_insecure {'true' if b.insecure else 'false'}",
        ]
    else:
        tls_lines = ["# no TLS (mqtt_bridge_custom.tls is false)"]
    auth = []
    if b.username is not None:
        auth.append(f"remote_username {b.username}")
    if b.password is not None:
        auth.append(f"remote_password {b.password}")
    return _template(layout, "bridge-custom.conf.tpl").substitute(
        CONNECTION=b.connection,
        ADDRESS=b.address,
        CLIENT_ID=b.remote_clientid,
        TLS_LINES="\n".join(tls_lines),
        PROTOCOL=b.protocol,
        AUTH_LINES="\n".join(auth) or "# no credentials",
        TOPIC_PREFIX=b.topic_prefix or '""',
        TOPIC_PREFIX_SHOWN=b.topic_prefix,
        STATE_TOPIC=b.state_topic,
    )


def render(
    kv: dict,
    layout: Layout | None = None,
    *,
    report: Callable[[int, str], None] | None = None,
    password: str | None = None,
) -> dict[str, str]:
    """{relative file name: text} for the broker: mosquitto.conf, passwd, acl, conf.d/bridge-<name>.conf,
    certs/*.

    Pure apart from reading the templates and the local broker password (`password`, default
    credentials.broker_password(), made when there is none). Why a bridge is left out goes to
    `report(level, message)` (default: this module's log). Secrets appear in the files, never in the
    messages.
    """
    layout = layout or Layout.default()
    p = plan(kv, layout)
    for level, message in p.problems:
        (report or log.log)(level, message)
    files: dict[str, str] = {}
    for b in p.bridges:
        files[b.filename] = _render_bridge(b, layout)
        if b.ca_cert and b.cafile:
            files[str(Path(b.cafile).relative_to(layout.conf_dir))] = b.ca_cert
    user_line = (
        (
            "# Running as root: stay root (mosquitto would otherwise switch to the user 'mosquitto', which\n"
            "# cannot read this appliance's files). Upstream did the same.\nuser root\n"
        )
        if layout.as_root
        else ""
    )
    include = f"include_dir {layout.conf_dir / CONF_D}" if p.bridges else "# no bridges"
    files[PASSWORD_FILE] = password_line(keys.LOCAL_BROKER_USER, password or credentials.broker_password())
    files[ACL_FILE] = ACL
    files[MAIN_CONF] = _template(layout, "mosquitto.conf.tpl").substitute(
        PORT=layout.port,
        USER=keys.LOCAL_BROKER_USER,
        PASSWORD_FILE=layout.conf_dir / PASSWORD_FILE,
        ACL_FILE=layout.conf_dir / ACL_FILE,
        USER_LINE=user_line,
        PERSISTENCE_DIR=str(layout.persistence_dir).rstrip("/"),
        INCLUDE_LINE=include,
    )
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
