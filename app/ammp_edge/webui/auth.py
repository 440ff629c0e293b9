"""Web UI security: signed session cookies kept server-side, CSRF tokens, login limits. The password
itself is core.credentials.

Sessions: `ae_session` = payload.HMAC-SHA256, HttpOnly, SameSite=Strict. A token is valid only while
its session id is in the KV store (`webui_sessions`, {id: expiry}): logging out removes it, so a
logged-out cookie stays dead across restarts. The secret (KV `webui_secret`) is replaced when the
password changes, which ends every session.
CSRF: a token derived from the session id, required on every POST (form field `csrf` or header
`X-CSRF-Token`); the login form has its own, tied to a pre-session cookie.
Known browsers: a successful login also sets `ae_known` (signed, path /login, one year), so the
browser's later logins are limited on their own and never share a lockout with anyone (LoginLimiter).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass

from ..core import keys
from ..core.kvs import KVStore

log = logging.getLogger(__name__)

SESSION_COOKIE = "ae_session"
PRE_COOKIE = "ae_pre"
KNOWN_COOKIE = "ae_known"
SESSION_LIFETIME_S = 12 * 3600
KNOWN_LIFETIME_S = 365 * 86400
MAX_SESSIONS = 64  # the oldest go first: a forgotten browser does not keep its session forever
MAX_TOKEN_LEN = 512


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def same(a: str, b: str) -> bool:
    """Constant-time comparison of two texts, any characters (hmac's refuses non-ASCII str)."""
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))


class Sessions:
    """Signed session tokens, the server-side list of live sessions, CSRF and known-browser tokens;
    the secret and the list live in the KV store."""

    def __init__(self, store: KVStore):
        self.store = store
        self._lock = threading.Lock()

    def secret(self) -> bytes:
        value = self.store.get(keys.WEBUI_SECRET)
        if not isinstance(value, str) or len(value) < 32:
            value = secrets.token_hex(32)
            self.store.set(keys.WEBUI_SECRET, value)
        return value.encode()

    def _sign(self, text: str) -> str:
        return _b64(hmac.new(self.secret(), text.encode(), hashlib.sha256).digest())

    def _token(self, kind: str, data: dict) -> str:
        payload = _b64(json.dumps(data).encode())
        return f"{payload}.{self._sign(kind + payload)}"

    def _open(self, kind: str, token: str | None) -> dict | None:
        """The payload of a well-signed, unexpired token, else None."""
        if not token or token.count(".") != 1 or len(token) > MAX_TOKEN_LEN:
            return None
        payload, sig = token.split(".")
        if not same(sig, self._sign(kind + payload)):
            return None
        try:
            data = json.loads(_unb64(payload))
            if int(data["exp"]) < time.time():
                return None
        except (ValueError, KeyError, TypeError):
            return None
        return data if isinstance(data, dict) else None

    def _live(self) -> dict[str, int]:
        value = self.store.get(keys.WEBUI_SESSIONS)
        return {str(k): int(v) for k, v in value.items() if isinstance(v, int)} if isinstance(value, dict) else {}

    def issue(self) -> str:
        sid, exp = secrets.token_hex(16), int(time.time()) + SESSION_LIFETIME_S
        with self._lock:
            now = time.time()
            live = {s: e for s, e in self._live().items() if e > now}
            live[sid] = exp
            if len(live) > MAX_SESSIONS:
                live = dict(sorted(live.items(), key=lambda item: item[1])[-MAX_SESSIONS:])
            self.store.set(keys.WEBUI_SESSIONS, live)
        return self._token("s:", {"sid": sid, "exp": exp})

    def check(self, token: str | None) -> str | None:
        """The session id of a valid token whose session was not logged out, else None."""
        data = self._open("s:", token)
        if data is None:
            return None
        sid = str(data.get("sid"))
        return sid if sid in self._live() else None

    def revoke(self, sid: str) -> None:
        with self._lock:
            live = self._live()
            if live.pop(sid, None) is not None:
                self.store.set(keys.WEBUI_SESSIONS, live)

    def csrf_token(self, sid: str) -> str:
        return self._sign("c:" + sid)

    def csrf_ok(self, sid: str | None, token: str | None) -> bool:
        return bool(sid) and bool(token) and same(self.csrf_token(sid or ""), token or "")

    def issue_known(self, kid: str | None = None) -> str:
        return self._token("k:", {"kid": kid or secrets.token_hex(16), "exp": int(time.time()) + KNOWN_LIFETIME_S})

    def known(self, token: str | None) -> str | None:
        """The id of a browser that logged in here before (its `ae_known` cookie), else None."""
        data = self._open("k:", token)
        return str(data["kid"]) if data and data.get("kid") else None


def client_key(address: str) -> str:
    """Who is counted as one client: an IPv4 address, or an IPv6 /64 (one host can have all of it)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass
class _Client:
    fails: int = 0
    locked_until: float = 0.0
    last_fail: float = 0.0
    in_flight: int = 0


class LoginLimiter:
    """How many passwords are checked, per client and in all.

    - Per client address (IPv6: per /64): 5 failures, then a lockout of 1 s doubling up to 15 minutes.
      Atomic: an attempt reserves its place before the password is checked, so 20 parallel attempts
      get at most 5 checks; once locked out, one attempt at a time.
    - In all: more than GLOBAL_FAILS failures from addresses within GLOBAL_WINDOW_S (many addresses
      guessing) turns on strict mode until the window has no more than that: an address may try only
      while it has no failure in the window, one attempt at a time. So a crowd of addresses gets one
      guess each, and an owner at a fresh address still gets to type the password.
    - A known browser (`ae_known` cookie of an earlier login here) is limited on its own, by its id,
      with the same 5 and doubling, and never by the address or strict mode: nobody else can lock it
      out, not even from the same address.
    """

    FREE = 5
    MAX_LOCK_S = 900
    GLOBAL_WINDOW_S = 600
    GLOBAL_FAILS = 100
    MAX_CLIENTS = 10000
    FORGET_S = 86400  # failures older than a day no longer count

    def __init__(self) -> None:
        self._clients: dict[str, _Client] = {}
        self._recent: deque[float] = deque()  # failures of addresses (not known browsers) in the window
        self._lock = threading.Lock()

    def strict(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        with self._lock:
            return self._strict(now)

    def _strict(self, now: float) -> bool:
        while self._recent and self._recent[0] <= now - self.GLOBAL_WINDOW_S:
            self._recent.popleft()
        return len(self._recent) > self.GLOBAL_FAILS

    def begin(self, address: str, known: str | None = None) -> tuple[str | None, int]:
        """Reserve one password check: (key for end(), 0), or (None, seconds to wait)."""
        key = f"known:{known}" if known else f"addr:{client_key(address)}"
        now = time.time()
        with self._lock:
            c = self._clients.get(key)
            if c is None:
                if len(self._clients) >= self.MAX_CLIENTS and not self._prune(now):
                    return None, 60  # fail closed for newcomers; known browsers with state still work
                c = self._clients[key] = _Client()
            if c.fails and not c.in_flight and c.last_fail < now - self.FORGET_S:
                c.fails, c.locked_until = 0, 0.0
            if now < c.locked_until:
                return None, int(c.locked_until - now + 0.999)
            allowed = self.FREE - c.fails if c.fails < self.FREE else 1
            if not known and self._strict(now):
                if c.fails and c.last_fail > now - self.GLOBAL_WINDOW_S:
                    return None, int(c.last_fail + self.GLOBAL_WINDOW_S - now + 0.999)
                allowed = 1
            if c.in_flight >= allowed:
                return None, 1
            c.in_flight += 1
        return key, 0

    def end(self, key: str, ok: bool) -> None:
        now = time.time()
        with self._lock:
            c = self._clients.get(key)
            if c is None:
                return
            c.in_flight -= 1
            if ok:
                if c.in_flight <= 0:
                    del self._clients[key]
                else:
                    c.fails, c.locked_until = 0, 0.0
                return
            c.fails += 1
            c.last_fail = now
            if c.fails >= self.FREE:
                c.locked_until = now + min(2 ** (c.fails - self.FREE), self.MAX_LOCK_S)
            if key.startswith("addr:"):
                self._recent.append(now)
                if len(self._recent) > 4 * self.GLOBAL_FAILS:
                    self._recent.popleft()  # bounded; the window's count stays above the limit

    def _prune(self, now: float) -> bool:
        """Forget clients with nothing in flight and no failure that still counts; True if room was made."""
        horizon = now - max(self.MAX_LOCK_S, self.GLOBAL_WINDOW_S)
        for key in [
            k for k, c in self._clients.items() if not c.in_flight and c.locked_until < now and c.last_fail < horizon
        ]:
            del self._clients[key]
        return len(self._clients) < self.MAX_CLIENTS
