"""The node's web UI password: generated per node, stored only as a salted scrypt hash.

Generated on first start when none is set (12 characters from an unambiguous alphabet), stored as a
scrypt hash in the KV store (`webui_password`); the clear initial password is kept in
$AE_DATA_DIR/webui-initial-password (mode 0600) for whoever holds the device, until it is changed. A
file put there before the first start (by an image builder) becomes the initial password. Changing or
resetting it replaces the session secret (`webui_secret`), which ends every web UI session. Used by
`up` (printed on the console), the web UI, `webui --reset-password` and the Pi image's credentials file;
the access point's passphrase is generated the same way.

The local broker password (`broker_password`): the appliance's programs log in to the local mosquitto
as keys.LOCAL_BROKER_USER with it; clients without a user may only read u/#. It is made at the first
start of a data directory that has none (an upgraded one too), by whichever program asks first, kept
in $AE_DATA_DIR/broker-password (mode 0600) and never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from . import keys, paths
from .fileio import fsync_dir, write_atomic
from .kvs import KVStore

ALPHABET = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
MIN_PASSWORD_LEN = 10
SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def generate_password(length: int = 12) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def hash_password(password: str, salt: bytes | None = None, params: dict[str, int] | None = None) -> dict[str, Any]:
    salt = salt or secrets.token_bytes(16)
    params = params or SCRYPT
    digest = hashlib.scrypt(password.encode(), salt=salt, n=params["n"], r=params["r"], p=params["p"], dklen=32)
    return {"scheme": "scrypt", **params, "salt": salt.hex(), "hash": digest.hex()}


def verify_password(password: str, stored: Any) -> bool:
    if not isinstance(stored, dict) or stored.get("scheme") != "scrypt":
        return False
    try:
        expected = hash_password(
            password,
            bytes.fromhex(stored["salt"]),
            {"n": int(stored["n"]), "r": int(stored["r"]), "p": int(stored["p"])},
        )
    except (KeyError, ValueError, TypeError):
        return False
    return hmac.compare_digest(expected["hash"], str(stored["hash"]))


def _write_private(path: Path, text: str) -> None:
    """Mode 0600, replaced atomically and on disk before this returns: a power cut right after must not
    leave an empty file while the KV store (SQLite, synchronous) already holds the password's hash."""
    write_atomic(path, text + "\n", 0o600, durable=True)


def ensure_password(store: KVStore, path: Path | None = None) -> str | None:
    """Make sure a password is set. Returns the initial password while it has not been changed.
    `path`: the clear initial password's file (default $AE_DATA_DIR/webui-initial-password)."""
    path = path or paths.webui_initial_password_path()
    initial: str | None = None
    if path.exists():
        initial = path.read_text().strip() or None
    if store.get(keys.WEBUI_PASSWORD) is None:
        if initial is None:
            initial = generate_password()
            _write_private(path, initial)
        store.set(keys.WEBUI_PASSWORD, hash_password(initial))
    elif initial is not None and not verify_password(initial, store.get(keys.WEBUI_PASSWORD)):
        path.unlink(missing_ok=True)  # changed elsewhere: the file no longer tells the truth
        initial = None
    return initial


def reset_password(store: KVStore) -> str:
    """A new initial password (for `ammp-edge webui --reset-password`, by whoever has a console)."""
    password = generate_password()
    _write_private(paths.webui_initial_password_path(), password)
    store.set(keys.WEBUI_PASSWORD, hash_password(password))
    store.set(keys.WEBUI_SECRET, secrets.token_hex(32))
    store.delete(keys.WEBUI_SESSIONS)
    return password


def change_password(store: KVStore, new: str) -> None:
    store.set(keys.WEBUI_PASSWORD, hash_password(new))
    store.set(keys.WEBUI_SECRET, secrets.token_hex(32))  # every session ends
    store.delete(keys.WEBUI_SESSIONS)
    paths.webui_initial_password_path().unlink(missing_ok=True)


def check_new_password(new: str, repeat: str) -> str | None:
    if new != repeat:
        return "the two new passwords differ"
    if len(new) < MIN_PASSWORD_LEN:
        return f"the new password needs at least {MIN_PASSWORD_LEN} characters"
    if len(new) > 256 or any(ord(c) < 32 for c in new):
        return "the new password must be at most 256 printable characters"
    return None


def broker_password(path: Path | None = None) -> str:
    """The local broker password; made (32 random characters, mode 0600, on disk) when there is none.
    Programs starting together agree: the file is created with a hard link, which only one can win."""
    path = path or paths.broker_password_path()
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        text = ""
    if text:
        return text
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, path)
        except FileExistsError:
            if not path.read_text().strip():  # an empty file (someone truncated it): replaced
                os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    fsync_dir(path.parent)
    return path.read_text().strip()
