"""The AMMP HTTP API client (upstream sections 5.2, 5.3) and the retry policy of every cloud call.

Base URL: the KV key `http_api_base_url`, else https://edge.ammp.io/api/v0, read afresh for each
attempt (an operator may change it while the node runs). Authentication is the raw access key in the
`Authorization` header, no scheme. Every failure is an ApiError with a message that names the call and
what went wrong (HTTP status >= 400, no answer within the timeout, no connection, a body that is not
JSON), never the access key.

Retry: capped exponential backoff (5 s doubling to 5 min by default), logged once when a call starts
failing and once when it works again, not at every attempt.
"""

from __future__ import annotations

import json
import logging
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from ..core import paths

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://edge.ammp.io/api/v0"
RETRY_FIRST_S = 5.0
RETRY_MAX_S = 300.0


class ApiError(Exception):
    """A call to the AMMP API that did not give a usable answer (worth retrying)."""


def base_url(store) -> str:
    value = store.get("http_api_base_url") if store is not None else None
    if value is None:
        return DEFAULT_BASE_URL
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        log.error("http_api_base_url: %r is not an http(s) URL; using %s", value, DEFAULT_BASE_URL)
        return DEFAULT_BASE_URL
    return value


@dataclass(frozen=True)
class Response:
    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


class Api:
    """urllib from the standard library, not requests: measured, `import requests` costs a process about
    18 MB of RSS (urllib3, charset_normalizer, idna, certifi), urllib about 5 MB, for a few calls an hour."""

    def __init__(self, base: str, timeout: float | None = None):
        self.base = base.rstrip("/")
        self.timeout = paths.http_timeout() if timeout is None else timeout

    @classmethod
    def from_store(cls, store, timeout: float | None = None) -> Api:
        return cls(base_url(store), timeout)

    def request(self, method: str, path: str, access_key: str | None = None, body: Any = None) -> Response:
        url = f"{self.base}/{path.lstrip('/')}"
        headers = {"Authorization": access_key} if access_key is not None else {}
        resp = send(method, url, headers, body, self.timeout)
        if resp.status_code >= 400:
            raise ApiError(f"{method} {url}: HTTP {resp.status_code} {_short(resp.text)}")
        return resp

    def json(self, method: str, path: str, access_key: str | None = None, body: Any = None) -> Any:
        resp = self.request(method, path, access_key, body)
        try:
            return json.loads(resp.content)
        except ValueError as exc:
            raise ApiError(
                f"{method} {self.base}/{path}: the answer is not JSON ({exc}): {_short(resp.text)}"
            ) from None


def send(method: str, url: str, headers: dict, body: Any, timeout: float) -> Response:
    """One HTTP request; any status comes back as a Response, no answer at all raises ApiError."""
    headers = dict(headers)
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    elif method == "POST":
        data = b""
    what = f"{method} {url}"
    try:
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        with urllib.request.urlopen(req, timeout=timeout) as answer:
            return Response(answer.status, answer.read())
    except urllib.error.HTTPError as exc:
        return Response(exc.code, exc.read() if exc.fp is not None else b"")
    except TimeoutError:
        raise ApiError(f"{what}: no answer within {timeout:g} s") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:  # ValueError: a malformed URL
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, (TimeoutError, socket.timeout)):
            raise ApiError(f"{what}: no answer within {timeout:g} s") from None
        raise ApiError(f"{what}: {type(reason).__name__}: {_short(reason)}") from None


def _short(text: object, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


class Retry:
    """Capped exponential backoff for one kind of call; logs an episode of failures once."""

    def __init__(self, what: str, first: float = RETRY_FIRST_S, cap: float = RETRY_MAX_S, logger: logging.Logger = log):
        self.what = what
        self.first = first
        self.cap = cap
        self.log = logger
        self.delay = first
        self.failures = 0

    def failed(self, error: object) -> float:
        """Note a failure; returns the seconds to wait before the next attempt."""
        self.failures += 1
        delay = self.delay
        if self.failures == 1:
            self.log.warning(
                "%s failed: %s; retrying in %.0f s, then less and less often (at most every %.0f s)",
                self.what,
                error,
                delay,
                self.cap,
            )
        else:
            self.log.debug("%s failed again (%d): %s; next attempt in %.0f s", self.what, self.failures, error, delay)
        self.delay = min(self.delay * 2, self.cap)
        return delay

    def succeeded(self) -> None:
        if self.failures:
            self.log.info("%s works again after %d failed attempt(s)", self.what, self.failures)
        self.failures = 0
        self.delay = self.first
