"""Web UI security: signed session cookies, CSRF tokens, login rate limiting. The password itself is
core.credentials.

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

from ..core import keys
from ..core.kvs import KVStore

log = logging.getLogger(__name__)

SESSION_COOKIE = "ae_session"
PRE_COOKIE = "ae_pre"
SESSION_LIFETIME_S = 12 * 3600


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
        value = self.store.get(keys.WEBUI_SECRET)
        if not isinstance(value, str) or len(value) < 32:
            value = secrets.token_hex(32)
            self.store.set(keys.WEBUI_SECRET, value)
        return value.encode()

    def _sign(self, text: str, secret: bytes | None = None) -> str:
        return _b64(hmac.new(secret or self.secret(), text.encode(), hashlib.sha256).digest())

    def issue(self) -> str:
        payload = _b64(
            json.dumps({"sid": secrets.token_hex(16), "exp": int(time.time()) + SESSION_LIFETIME_S}).encode()
        )
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
        return (
            sid is not None
            and token is not None
            and bool(sid and token)
            and hmac.compare_digest(self.csrf_token(sid), token)
        )


class RateLimiter:
    """Failed logins per client address: 5 free, then a lockout doubling up to 15 minutes; plus a global
    cap so many addresses cannot guess fast either."""

    FREE = 5
    MAX_LOCK_S = 900
    GLOBAL_PER_MIN = 30

    def __init__(self) -> None:
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
