"""Commands from the cloud (`d/command`, reference section 5.6): a JSON list of names, each run in
turn by one background worker, each answered on `u/command_response`.

    service = CommandService(publish)          # publish(topic, text), e.g. MqttLink.publish
    service.handle(payload)                    # from the d/command subscription; returns at once

A payload is checked whole before anything runs: at most 4 KiB, a JSON list of 1..10 non-empty
strings. Otherwise one error text names what was wrong and nothing runs. A name only selects an
entry of COMMANDS; nothing from a payload reaches a shell or an argument list. Unknown names answer
`Unrecognized command: X`. Each command has a timeout (a scan is cancelled then); the answer is
upstream's text, `Command: <name>\\nexit status: <n>\\nstdout: ...stderr: ...`, or an error text
(`Could not run <name>; error: ...`).

| name | what it does |
|---|---|
| `env_scan` | full environment scan (scan.env_scan): stored in the KV cache `last_env_scan`, published on `u/state/env_scan`, POSTed to `{base}/nodes/{id}/env_scan` when the node is activated (not with AE_OFFLINE) |
| `trigger_config_generation` | scans if no scan is cached, then publishes the cached scan plus `"generate_new_config": true, "input_parameters": [null]` on `u/state/env_scan` |
| `sys_reboot` | reboots the machine (`systemctl reboot`, else `reboot`); refused in a container |
| `app_restart` | restarts every program under supervisord (XML-RPC `supervisor.restart`), after answering |
| `image_update` | runs the installation's update hook, `$AE_ROOT_DIR/bin/update` or `/usr/lib/ammp-edge/update` (the Pi image's: `ammp-edge self-update`, selfupdate.py); without one answers that updates are not supported here (Docker: pull a new image) |
| `snap_refresh`, `snap_refresh_stable`, `_beta`, `_edge` | upstream refreshed its snap: here as `image_update`, the answer saying so (there are no channels: the bundle comes from `image_update_url`) |
| `snap_proxy_on`, `snap_proxy_off` | upstream set snapd's HTTPS proxy: here app updates download through upstream's proxy (KV `image_update_proxy`), or directly again |
| `sys_remount_ro` | Pi image: the root file system read-only again (`mount -o remount,ro /`) if something made it writable; elsewhere: not applicable, answered |
| `sys_remount_rw`, `sys_start_snapd`, `sys_stop_snapd` | not applicable, answered with why (the Pi image's root is read-only by design, its state on /data; there is no snapd); nothing runs |
| `imt_sensor_address` | IMT irradiance sensor on the sensor port: slave 1 -> 2 (scan.sensor_address) |
| `holykell_sensor_address_7`, `_8` | Holykell level sensor on the sensor port: slave 1 -> 7 / 8 |

The sensor port is the KV store key `serial_sensor_port` (default /dev/ttyAMA0); a bus that holds
the port makes these commands fail with "cannot open".
"""  # noqa: E501 - the table above: one row per command

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import subprocess
import threading
import time
import xmlrpc.client
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import jsontext, keys, paths, supervisor as supervisord
from ..core.host import in_container
from ..core.kvs import KVStore, cache as kv_cache
from ..core.paths import update_hooks
from ..core.problems import ConfigUnusable
from . import cloudapi, scan as scanning
from .configgen import generation_request
from .scan import sensor_address, serial as serial_scan

log = logging.getLogger(__name__)

MAX_PAYLOAD = 4096
MAX_NAMES = 10
MAX_QUEUED = 50
PAUSE_S = 5.0  # between commands, as upstream


@dataclass
class Result:
    status: int = 0
    stdout: str = ""
    stderr: str = ""
    after: Callable[[], None] | None = None  # runs after the answer was published (app_restart)


Runner = Callable[[list[str], float], tuple[int, str, str]]
HttpPost = Callable[[str, Any, dict, float], int]


def run_argv(argv: list[str], timeout: float) -> tuple[int, str, str]:
    """A fixed argument list, no shell; (exit status, stdout, stderr)."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return 124, "", f"{argv[0]} timed out after {timeout:.0f} s\n"
    except OSError as exc:
        return 127, "", f"cannot run {argv[0]}: {exc}\n"
    return r.returncode, r.stdout, r.stderr


def http_post_json(url: str, body: Any, headers: dict, timeout: float) -> int:
    """POST JSON; the HTTP status (raises cloudapi.ApiError when there is no answer)."""
    return cloudapi.send("POST", url, headers, body, timeout).status_code


def root_read_only(mounts: Path = Path("/proc/self/mounts")) -> bool:
    """Is / mounted read-only (its last mount entry, the one in effect)?"""
    options = ""
    try:
        for line in mounts.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 4 and fields[1] == "/":
                options = fields[3]
    except OSError:
        return False
    return "ro" in options.split(",")


def validate(payload: bytes) -> list[str]:
    """The command names of a payload; raises ValueError naming what is wrong."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes is larger than {MAX_PAYLOAD} bytes")
    try:  # the one parser: a deep nesting must not take node down (the default recursion limit is 1000)
        names = jsontext.parse(payload, "the payload", MAX_PAYLOAD)
    except jsontext.OverLimit as exc:
        raise ValueError(exc.problems[0].message) from None
    except ConfigUnusable as exc:
        raise ValueError(f"not JSON ({exc.problems[0].message})") from None
    if not isinstance(names, list):
        raise ValueError(f"expected a JSON list of command names, got {type(names).__name__}")
    if not names:
        raise ValueError("the list of command names is empty")
    if len(names) > MAX_NAMES:
        raise ValueError(f"{len(names)} commands, at most {MAX_NAMES} per message")
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise ValueError(f"item {i} is {json.dumps(name)[:40]}, not a command name (a string)")
        if not name.strip():
            raise ValueError(f"item {i} is an empty string")
    return names


def printable(name: str, limit: int = 80) -> str:
    text = name.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[:limit] + "..."


def response_text(name: str, result: Result) -> str:
    out = result.stdout if not result.stdout or result.stdout.endswith("\n") else result.stdout + "\n"
    return f"Command: {name}\nexit status: {result.status}\nstdout: {out}stderr: {result.stderr}"


def sensor_text(result: dict) -> Result:
    lines = "".join(f"{k}: {v}\n" for k, v in result.items() if k != "Error")
    return Result(1 if "Error" in result else 0, lines, f"{result['Error']}\n" if "Error" in result else "")


class CommandService:
    def __init__(
        self,
        publish: Callable[[str, str], None],
        *,
        kvstore: KVStore | None = None,
        cache: KVStore | None = None,
        env_scan: Callable[..., dict] = scanning.env_scan,
        http_post: HttpPost = http_post_json,
        runner: Runner = run_argv,
        supervisor: Callable[[], Any] = supervisord.connect,
        pause: float = PAUSE_S,
        timeouts: dict[str, float] | None = None,
        hooks: Callable[[], list[Path]] = update_hooks,
        container: Callable[[], bool] = in_container,
        offline: Callable[[], bool] = paths.offline,
        pi_image: Callable[[], bool] = paths.app_updates_enabled,
        root_read_only: Callable[[], bool] = root_read_only,
    ):
        self.publish = publish
        self.kvstore = kvstore or KVStore()
        self.cache = cache or kv_cache()
        self.env_scan_fn, self.http_post, self.runner, self.supervisor = env_scan, http_post, runner, supervisor
        self.pause, self.hooks, self.container, self.offline = pause, hooks, container, offline
        self.pi_image, self.root_read_only = pi_image, root_read_only
        self.commands: dict[str, tuple[Callable[[threading.Event], Result], float]] = {
            "env_scan": (self.env_scan, 1200.0),
            "trigger_config_generation": (self.trigger_config_generation, 1200.0),
            "sys_reboot": (self.sys_reboot, 60.0),
            "app_restart": (self.app_restart, 60.0),
            "image_update": (self.image_update, 1800.0),
            "snap_refresh": (self._refresher("snap_refresh", None), 1800.0),
            **{
                f"snap_refresh_{ch}": (self._refresher(f"snap_refresh_{ch}", ch), 1800.0)
                for ch in ("stable", "beta", "edge")
            },
            "snap_proxy_on": (lambda cancel: self.snap_proxy(True), 10.0),
            "snap_proxy_off": (lambda cancel: self.snap_proxy(False), 10.0),
            "sys_remount_rw": (lambda cancel: self.sys_remount(False), 10.0),
            "sys_remount_ro": (lambda cancel: self.sys_remount(True), 90.0),
            "sys_start_snapd": (lambda cancel: self.snapd("sys_start_snapd"), 10.0),
            "sys_stop_snapd": (lambda cancel: self.snapd("sys_stop_snapd"), 10.0),
            "imt_sensor_address": (
                lambda cancel: sensor_text(sensor_address.imt_sensor_address(self.sensor_port())),
                60.0,
            ),
            "holykell_sensor_address_7": (lambda cancel: self.holykell(7), 60.0),
            "holykell_sensor_address_8": (lambda cancel: self.holykell(8), 60.0),
        }
        for name, seconds in (timeouts or {}).items():
            self.commands[name] = (self.commands[name][0], seconds)
        self._queue: queue.Queue[str] = queue.Queue(MAX_QUEUED)
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="commands", daemon=True)
        self._worker.start()

    # -- intake -------------------------------------------------------------------------------
    def handle(self, payload: bytes, retained: bool = False) -> None:
        """Check a d/command payload and queue its commands; returns at once. A retained message is
        refused: it would run again at every reconnection (a reboot loop with `sys_reboot`)."""
        if retained:
            log.warning("ignored a retained d/command message (%d bytes)", len(payload))
            self._answer(
                "Invalid command payload: a retained message is not run (it would repeat at every "
                "connection); nothing was run"
            )
            return
        try:
            names = validate(bytes(payload))
        except ValueError as exc:
            log.warning("refused a command payload: %s", exc)
            self._answer(f"Invalid command payload: {exc}; nothing was run")
            return
        log.info("commands received: %s", ", ".join(printable(n) for n in names))
        for name in names:
            try:
                self._queue.put_nowait(name)
            except queue.Full:
                self._answer(f"Could not run {printable(name)}; error: {MAX_QUEUED} commands are already waiting")

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._worker.join(timeout)

    def _answer(self, text: str) -> None:
        try:
            self.publish(keys.COMMAND_RESPONSE_TOPIC, text)
        except Exception:
            log.exception("cannot publish a command response")

    # -- the worker ---------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                name = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            entry = self.commands.get(name)
            if entry is None:
                log.warning("unrecognized command %s", printable(name))
                self._answer(f"Unrecognized command: {printable(name)}")
                continue
            self._run(name, *entry)
            self._stop.wait(self.pause)

    def _run(self, name: str, fn: Callable[[threading.Event], Result], timeout: float) -> None:
        cancel, box = threading.Event(), {}

        def call():
            try:
                box["result"] = fn(cancel)
            except scanning.Cancelled:
                box["error"] = "cancelled"
            except Exception as exc:
                log.exception("command %s failed", name)
                box["error"] = f"{type(exc).__name__}: {exc}"

        log.info("running command %s (timeout %.0f s)", name, timeout)
        started = time.monotonic()
        t = threading.Thread(target=call, name=f"command:{name}", daemon=True)
        t.start()
        t.join(timeout)
        if t.is_alive():
            cancel.set()
            self._answer(f"Could not run {name}; error: timed out after {timeout:g} s")
            t.join(10)  # a scan stops within seconds once cancelled; anything else is left behind
            return
        if "error" in box:
            self._answer(f"Could not run {name}; error: {box['error']}")
            return
        result: Result = box["result"]
        log.info("command %s: exit status %d after %.1f s", name, result.status, time.monotonic() - started)
        self._answer(response_text(name, result))
        if result.after is not None:
            try:
                result.after()
            except (OSError, xmlrpc.client.Error) as exc:
                log.error("command %s: the follow-up step failed: %s", name, exc)

    # -- the commands -------------------------------------------------------------------------
    def sensor_port(self) -> str:
        return serial_scan.default_port(self.kvstore)

    def holykell(self, target: int) -> Result:
        return sensor_text(sensor_address.holykell_sensor_address(self.sensor_port(), target))

    def _scan(self, cancel: threading.Event) -> dict:
        result = self.env_scan_fn(cancel=cancel)
        self.cache.set(keys.LAST_ENV_SCAN, result)
        return result

    def _post_scan(self, result: dict) -> str:
        node_id, key = self.kvstore.get(keys.NODE_ID), self.kvstore.get(keys.ACCESS_KEY)
        if not node_id or not key:
            return "not posted to the API: the node is not activated"
        if self.offline():
            return "not posted to the API: offline (AE_OFFLINE)"
        url = f"{cloudapi.base_url(self.kvstore).rstrip('/')}/nodes/{node_id}/env_scan"
        try:
            status = self.http_post(url, result, {"Authorization": key}, paths.http_timeout())
        except Exception as exc:  # noqa: BLE001 - the poster is injectable; whatever it raises, the scan stands
            return f"POST {url} failed: {type(exc).__name__}: {exc}"
        return f"POST {url}: HTTP {status}" + ("" if status in (200, 204) else " (not accepted)")

    def env_scan(self, cancel: threading.Event) -> Result:
        result = self._scan(cancel)
        self.publish(keys.ENV_SCAN_TOPIC, json.dumps(result))
        posted = self._post_scan(result)
        net = (result.get("network_scan") or [{}])[0]
        found = sum(1 for _, text in result.get("serial_scan", []) if "SUCCESS" in text)
        lines = [
            f"network: {len(net.get('hosts') or [])} host(s) on {net.get('ifname')} "
            f"{net.get('ipv4')}/{net.get('netmask')}" + (f" (scan failed: {net['error']})" if net.get("error") else ""),
            f"serial: {found} device(s) found",
            f"speedwire: {result.get('speedwire_serials')}",
            f"published on {keys.ENV_SCAN_TOPIC}",
            posted,
        ]
        return Result(0, "\n".join(lines) + "\n")

    def trigger_config_generation(self, cancel: threading.Event, tank_dims: dict | None = None) -> Result:
        cached = self.cache.get(keys.LAST_ENV_SCAN)
        note = "used the cached scan"
        if not isinstance(cached, dict):
            cached, note = self._scan(cancel), "scanned (no scan was cached)"
        self.publish(keys.ENV_SCAN_TOPIC, json.dumps(generation_request(cached, tank_dims)))
        return Result(0, f"{note} from {cached.get('time')}; config generation requested on {keys.ENV_SCAN_TOPIC}\n")

    def sys_reboot(self, cancel: threading.Event) -> Result:
        if self.container():
            return Result(1, "", "sys_reboot is not available in a container; restart the container on its host\n")
        argv = ["systemctl", "reboot"] if shutil.which("systemctl") and paths.SYSTEMD_RUN_DIR.is_dir() else ["reboot"]
        return Result(*self.runner(argv, 30.0))

    def app_restart(self, cancel: threading.Event) -> Result:
        server = self.supervisor()
        state = server.supervisor.getState()  # fails here (OSError) when supervisord is not there

        def restart() -> None:
            time.sleep(1.0)
            server.supervisor.restart()

        return Result(0, f"supervisord {state.get('statename')}: restarting all programs\n", after=restart)

    def _update_hook(self) -> Path | None:
        for hook in self.hooks():
            if hook.is_file() and os.access(hook, os.X_OK):
                return hook
        return None

    def image_update(self, cancel: threading.Event, note: str = "") -> Result:
        hook = self._update_hook()
        if hook is not None:
            status, out, err = self.runner([str(hook)], 1700.0)
            return Result(status, note + out, err)
        how = (
            "pull a new image and re-create the container"
            if self.container()
            else "update the checkout or the package by hand"
        )
        return Result(1, note, f"updates are not supported in this installation (no update hook); {how}\n")

    # -- upstream's snap and system commands, mapped to what this appliance has -------------------
    def _refresher(self, name: str, channel: str | None) -> Callable[[threading.Event], Result]:
        return lambda cancel: self.snap_refresh(name, channel)

    def snap_refresh(self, name: str, channel: str | None) -> Result:
        note = (
            f"{name}: this appliance is not a snap{f' and has no {channel} channel' if channel else ''}; "
            f"updating the app as image_update does (the app bundle at the KV key {keys.IMAGE_UPDATE_URL})\n"
        )
        return self.image_update(threading.Event(), note)

    def snap_proxy(self, on: bool) -> Result:
        if on:
            self.kvstore.set(keys.IMAGE_UPDATE_PROXY, keys.SNAP_PROXY)
            text = f"app updates (image_update, snap_refresh) now download through the proxy {keys.SNAP_PROXY}"
        else:
            self.kvstore.delete(keys.IMAGE_UPDATE_PROXY)
            text = "app updates (image_update, snap_refresh) download without a proxy again"
        out = f"this appliance is not a snap (no snapd to configure); {text} (KV key {keys.IMAGE_UPDATE_PROXY})\n"
        if self._update_hook() is None:
            out += (
                "this installation has no in-app updates (a container is updated by pulling a new image): "
                "the proxy is not used here\n"
            )
        return Result(0, out)

    def _not_here(self, what: str) -> str:
        if self.container():
            return f"{what}: not available in a container (the host's file systems and services are the host's)\n"
        return f"{what}: this installation does not manage the host's file systems\n"

    def sys_remount(self, read_only: bool) -> Result:
        if not self.pi_image():
            return Result(
                1, "", self._not_here("sys_remount_ro" if read_only else "sys_remount_rw") + "not remounted\n"
            )
        now = "read-only" if self.root_read_only() else "writable"
        if not read_only:
            return Result(
                1,
                f"the root file system is {now}\n",
                "the root file system of this image is read-only by design and is not remounted from the cloud: "
                "settings are in ammp-edge.txt on the boot partition, data and app updates (image_update) on "
                "/data\n",
            )
        if now == "read-only":
            return Result(0, "the root file system is already read-only; nothing to do\n")
        status, out, err = self.runner(["mount", "-o", "remount,ro", "/"], 60.0)
        after = "read-only" if self.root_read_only() else "still writable"
        return Result(status, f"{out}the root file system was writable and is now {after}\n", err)

    def snapd(self, name: str) -> Result:
        return Result(
            1,
            "",
            f"{name}: this appliance does not use snapd (it is not a snap; it updates with snap_refresh or "
            "image_update); nothing was started or stopped\n",
        )
