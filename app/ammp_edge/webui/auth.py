"""Web UI security: the node's password, signed session cookies, CSRF tokens, login rate limiting.

Password: generated on first start when none is set (12 characters from an unambiguous alphabet),
stored only as a salted scrypt hash in the KV store (`webui_password`); the clear initial password is
kept in $AE_DATA_DIR/webui-initial-password (mode 0600) for whoever holds the device, until it is
changed. A file put there before the first start (by an image builder) becomes the initial password.
Sessions: `ae_session` = payload.HMAC-SHA256, HttpOnly, SameSite=Strict; the secret (KV
`webui_secret`) is replaced when the password changes, which ends every session.
CSRF: a token derived from the session id, required on every POST (form field `csrf` or header
`X-CSRF-Token`); the login form has its own, tied to a pre-session cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from pathlib import Path

from ..core import paths
from ..core.fileio import write_atomic
from ..core.kvs import KVStore

log = logging.getLogger(__name__)

PASSWORD_KEY = "webui_password"
SECRET_KEY = "webui_secret"
ALPHABET = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
SESSION_COOKIE = "ae_session"
PRE_COOKIE = "ae_pre"
SESSION_LIFETIME_S = 12 * 3600
MIN_PASSWORD_LEN = 10
SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def initial_password_path() -> Path:
    return paths.data_dir() / "webui-initial-password"


def generate_password(length: int = 12) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def hash_password(password: str, salt: bytes | None = None, params: dict | None = None) -> dict:
    salt = salt or secrets.token_bytes(16)
    params = params or SCRYPT
    digest = hashlib.scrypt(password.encode(), salt=salt, n=params["n"], r=params["r"], p=params["p"], dklen=32)
    return {"scheme": "scrypt", **params, "salt": salt.hex(), "hash": digest.hex()}


def verify_password(password: str, stored: dict | None) -> bool:
    if not isinstance(stored, dict) or stored.get("scheme") != "scrypt":
        return False
    try:
        expected = hash_password(password, bytes.fromhex(stored["salt"]),
                                 {"n": int(stored["n"]), "r": int(stored["r"]), "p": int(stored["p"])})
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
    path = path or initial_password_path()
    initial = None
    if path.exists():
        initial = path.read_text().strip() or None
    if store.get(PASSWORD_KEY) is None:
        if initial is None:
            initial = generate_password()
            _write_private(path, initial)
        store.set(PASSWORD_KEY, hash_password(initial))
    elif initial is not None and not verify_password(initial, store.get(PASSWORD_KEY)):
        path.unlink(missing_ok=True)  # changed elsewhere: the file no longer tells the truth
        initial = None
    return initial


def reset_password(store: KVStore) -> str:
    """A new initial password (for `ammp-edge webui --reset-password`, by whoever has a console)."""
    password = generate_password()
    _write_private(initial_password_path(), password)
    store.set(PASSWORD_KEY, hash_password(password))
    store.set(SECRET_KEY, secrets.token_hex(32))
    return password


def change_password(store: KVStore, new: str) -> None:
    store.set(PASSWORD_KEY, hash_password(new))
    store.set(SECRET_KEY, secrets.token_hex(32))  # every session ends
    initial_password_path().unlink(missing_ok=True)


def check_new_password(new: str, repeat: str) -> str | None:
    if new != repeat:
        return "the two new passwords differ"
    if len(new) < MIN_PASSWORD_LEN:
        return f"the new password needs at least {MIN_PASSWORD_LEN} characters"
    if len(new) > 256 or any(ord(c) < 32 for c in new):
        return "the new password must be at most 256 printable characters"
    return None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    """Signed session tokens and CSRF tokens; the secret lives in the KV store."""

    def __init__(self, store: KVStore):
        self.store = store
        self._revoked: dict[str, float] = {}
        self._lock = threading.Lock()

    def secret(self) -> bytes:
        value = self.store.get(SECRET_KEY)
        if not isinstance(value, str) or len(value) < 32:
            value = secrets.token_hex(32)
            self.store.set(SECRET_KEY, value)
        return value.encode()

    def _sign(self, text: str, secret: bytes | None = None) -> str:
        return _b64(hmac.new(secret or self.secret(), text.encode(), hashlib.sha256).digest())

    def issue(self) -> str:
        payload = _b64(json.dumps({"sid": secrets.token_hex(16), "exp": int(time.time()) + SESSION_LIFETIME_S}).encode())
        return f"{payload}.{self._sign('s:' + payload)}"

    def check(self, token: str | None) -> str | None:
        """The session id of a valid token, else None."""
        if not token or token.count(".") != 1 or len(token) > 512:
            return None
        payload, sig = token.split(".")
        if not hmac.compare_digest(sig, self._sign("s:" + payload)):
            return None
        try:
            data = json.loads(_unb64(payload))
            sid, exp = str(data["sid"]), int(data["exp"])
        except (ValueError, KeyError, TypeError):
            return None
        with self._lock:
            if exp < time.time() or sid in self._revoked:
                return None
        return sid

    def revoke(self, sid: str) -> None:
        now = time.time()
        with self._lock:
            self._revoked = {s: t for s, t in self._revoked.items() if t > now}
            self._revoked[sid] = now + SESSION_LIFETIME_S

    def csrf_token(self, sid: str) -> str:
        return self._sign("c:" + sid)

    def csrf_ok(self, sid: str | None, token: str | None) -> bool:
        return bool(sid and token) and hmac.compare_digest(self.csrf_token(sid), token)


class RateLimiter:
    """Failed logins per client address: 5 free, then a lockout doubling up to 15 minutes; plus a global
    cap so many addresses cannot guess fast either."""

    FREE = 5
    MAX_LOCK_S = 900
    GLOBAL_PER_MIN = 30

    def __init__(self):
        self._fails: dict[str, tuple[int, float]] = {}  # ip -> (failures, locked until)
        self._recent: list[float] = []
        self._lock = threading.Lock()

    def retry_after(self, ip: str) -> int:
        now = time.time()
        with self._lock:
            self._recent = [t for t in self._recent if t > now - 60]
            _, until = self._fails.get(ip, (0, 0.0))
            wait = max(until - now, 0.0)
            if len(self._recent) >= self.GLOBAL_PER_MIN:
                wait = max(wait, self._recent[0] + 60 - now)
        return int(wait + 0.999)

    def failed(self, ip: str) -> None:
        now = time.time()
        with self._lock:
            n, _ = self._fails.get(ip, (0, 0.0))
            n += 1
            until = now + min(2 ** (n - self.FREE), self.MAX_LOCK_S) if n >= self.FREE else 0.0
            self._fails[ip] = (n, until)
            self._recent.append(now)
            if len(self._fails) > 10000:
                self._fails.clear()

    def succeeded(self, ip: str) -> None:
        with self._lock:
            self._fails.pop(ip, None)
