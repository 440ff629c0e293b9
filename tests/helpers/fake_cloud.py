"""A small stand-in for the AMMP HTTP API (upstream sections 5.2, 5.3) on a free loopback port.

    with FakeCloud(on_activate=register) as api:      # register(node_id, access_key) e.g. on a broker
        api.set_config({"devices": ..., "readings": ...})
        api.fail("GET activate", "500", "garbage")     # the next two GET .../activate answers
        kv.set("http_api_base_url", api.base_url)

Routes: GET/POST /nodes/{id}/activate, GET /nodes/{id} ({"config_id": digest of the config}),
GET /nodes/{id}/config ({"config": <the config bytes exactly as set>}), POST /nodes/{id}/env_scan.
Everything but GET activate needs the node's access key in `Authorization` (401 otherwise).

Faults, consumed one per request of that route: "500" (HTTP 500), "garbage" (200 with bytes that are
not JSON), "invalid_json" (200, truncated JSON), "slow" (answers after `slow_s`), "drop" (closes the
connection without an answer).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ammp_edge.core import config as cfg

ROUTES = (
    ("activate", re.compile(r"^/nodes/([^/]+)/activate$")),
    ("config", re.compile(r"^/nodes/([^/]+)/config$")),
    ("env_scan", re.compile(r"^/nodes/([^/]+)/env_scan$")),
    ("node", re.compile(r"^/nodes/([^/]+)$")),
)


class FakeCloud:
    def __init__(
        self,
        access_key: str | None = None,
        on_activate: Callable[[str, str], None] | None = None,
        slow_s: float = 3.0,
        prefix: str = "/api/v0",
    ):
        self.access_key = access_key
        self.on_activate = on_activate
        self.slow_s = slow_s
        self.prefix = prefix
        self.keys: dict[str, str] = {}  # node_id -> access key handed out
        self.activated: set[str] = set()
        self.config_raw: bytes | None = None
        self.faults: dict[str, list[str]] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Authorization)
        self.env_scans: list[bytes] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake cloud", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{self.prefix}"

    def start(self) -> FakeCloud:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeCloud:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- switches ---------------------------------------------------------------------------------
    def set_config(self, config: dict | bytes | None) -> None:
        """The node's config in the cloud; bytes are served exactly as given."""
        with self.lock:
            self.config_raw = config if isinstance(config, (bytes, type(None))) else json.dumps(config).encode()

    def config_id(self) -> str | None:
        """The digest of the config, as the AMMP cloud computes it; for a config no JSON decoder takes
        (nested too deep, for the limit tests) a digest of its bytes."""
        if not self.config_raw:
            return None
        try:
            return cfg.digest(json.loads(self.config_raw))
        except (ValueError, RecursionError):
            return hashlib.sha1(self.config_raw).hexdigest()[:7]

    def fail(self, route: str, *modes: str) -> None:
        """route: "GET activate", "POST activate", "GET node", "GET config", "POST env_scan"."""
        with self.lock:
            self.faults.setdefault(route, []).extend(modes)

    def calls(self, method: str, route: str) -> int:
        pattern = dict(ROUTES)[route]
        return sum(1 for m, p, _ in self.requests if m == method and pattern.match(p))

    # -- the server -------------------------------------------------------------------------------
    def _handler(self):
        cloud = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?")[0]
                if not path.startswith(cloud.prefix):
                    return self._send(404, b'{"message": "not found"}')
                path = path[len(cloud.prefix) :]
                auth = self.headers.get("Authorization")
                with cloud.lock:
                    cloud.requests.append((method, path, auth))
                for route, pattern in ROUTES:  # noqa: B007 - the matching route is used after the loop
                    m = pattern.match(path)
                    if m:
                        break
                else:
                    return self._send(404, b'{"message": "not found"}')
                with cloud.lock:
                    queue = cloud.faults.get(f"{method} {route}") or []
                    fault = queue.pop(0) if queue else None
                if fault == "500":
                    return self._send(500, b"Internal Server Error", "text/plain")
                if fault == "garbage":
                    return self._send(200, b"\x00\xff<html>garbage", "text/html")
                if fault == "invalid_json":
                    return self._send(200, b'{"access_key": "abc", "config_id": ')
                if fault == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return None
                if fault == "slow":
                    time.sleep(cloud.slow_s)
                return getattr(self, f"_{route}")(method, m.group(1), auth, body)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            # routes
            def _authorized(self, node_id: str, auth: str | None) -> bool:
                if auth is None or cloud.keys.get(node_id) != auth:
                    self._send(401, b'{"message": "not authorized"}')
                    return False
                return True

            def _activate(self, method, node_id, auth, body):
                if method == "GET":
                    key = cloud.keys.get(node_id) or cloud.access_key or secrets.token_hex(16)
                    cloud.keys[node_id] = key
                    if cloud.on_activate is not None:
                        cloud.on_activate(node_id, key)
                    return self._send(200, json.dumps({"access_key": key, "message": "Access key issued"}).encode())
                if not self._authorized(node_id, auth):
                    return None
                cloud.activated.add(node_id)
                return self._send(200, json.dumps({"message": f"Node {node_id} successfully activated"}).encode())

            def _node(self, method, node_id, auth, body):
                if method != "GET" or not self._authorized(node_id, auth):
                    return None if method == "GET" else self._send(405, b"{}")
                meta = {"node_id": node_id}
                if cloud.config_raw:
                    meta["config_id"] = cloud.config_id()
                return self._send(200, json.dumps(meta).encode())

            def _config(self, method, node_id, auth, body):
                if method != "GET" or not self._authorized(node_id, auth):
                    return None if method == "GET" else self._send(405, b"{}")
                if cloud.config_raw is None:
                    return self._send(200, b'{"config": {}}')
                return self._send(200, b'{"node_id": "%s", "config": %s}' % (node_id.encode(), cloud.config_raw))

            def _env_scan(self, method, node_id, auth, body):
                if method != "POST" or not self._authorized(node_id, auth):
                    return None if method == "POST" else self._send(405, b"{}")
                cloud.env_scans.append(body)
                return self._send(204, b"")

        return Handler
