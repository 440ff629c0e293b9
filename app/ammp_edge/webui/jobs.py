"""Background jobs (scans): one thread each, with progress, a cancel button and the result kept for a
while. The scan functions come from `ammp_edge.node.scan` (network_scan, serial_scan, env_scan), each taking
progress(fraction, text) and cancel (a threading.Event). One job of each kind runs at a time."""

from __future__ import annotations

import importlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

KEEP_JOBS = 20
KINDS = {"network": "network_scan", "serial": "serial_scan", "env": "env_scan"}
# upstream's custom actions (also commands from the cloud): give a factory-fresh sensor its address
ACTIONS = {
    "imt_sensor_address": ("imt_sensor_address", ()),
    "holykell_sensor_address_7": ("holykell_sensor_address", (7,)),
    "holykell_sensor_address_8": ("holykell_sensor_address", (8,)),
}


@dataclass
class Job:
    id: str
    kind: str
    args: dict
    state: str = "running"  # running, done, failed, cancelled
    fraction: float = 0.0
    text: str = "starting"
    started: float = field(default_factory=time.time)
    finished: float | None = None
    result: Any = None
    error: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def view(self) -> dict:
        return {
            "id": self.id,
            "kind": self.kind,
            "args": self.args,
            "state": self.state,
            "fraction": round(self.fraction, 3),
            "text": self.text,
            "started": int(self.started),
            "finished": int(self.finished) if self.finished else None,
            "result": self.result,
            "error": self.error,
        }


def scan_function(kind: str) -> Callable | None:
    if kind in ACTIONS:
        return action_function(kind)
    try:
        module = importlib.import_module("ammp_edge.node.scan")
    except ImportError:
        return None
    return getattr(module, KINDS[kind], None)


def action_function(kind: str) -> Callable | None:
    """A sensor addressing action on `port`, with the bus that owns the port paused meanwhile."""
    try:
        module = importlib.import_module("ammp_edge.node.scan.sensor_address")
    except ImportError:
        return None
    name, extra = ACTIONS[kind]
    fn = getattr(module, name, None)
    if fn is None:
        return None

    def run(port: str, progress=None, cancel=None) -> dict:
        from .probe import serial_port_free

        progress(0.1, f"{kind} on {port}")
        with serial_port_free(port) as paused:
            result = fn(port, *extra)
        return {**result, **({"paused meanwhile": paused} if paused else {})}

    return run


class Jobs:
    def __init__(self, resolve: Callable[[str], Callable | None] = scan_function):
        self.resolve = resolve
        self.jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def available(self) -> dict[str, bool]:
        return {k: self.resolve(k) is not None for k in (*KINDS, *ACTIONS)}

    def start(self, kind: str, args: dict) -> Job:
        fn = self.resolve(kind)
        if fn is None:
            raise ValueError(f"the {kind} scan is not available in this version")
        with self._lock:
            if any(j.kind == kind and j.state == "running" for j in self.jobs.values()):
                raise ValueError(f"a {kind} scan is running already")
            job = Job(secrets.token_hex(8), kind, args)
            self.jobs[job.id] = job
            for old in sorted(self.jobs.values(), key=lambda j: j.started)[:-KEEP_JOBS]:
                if old.state != "running":
                    del self.jobs[old.id]
        threading.Thread(target=self._run, args=(job, fn), name=f"job-{kind}", daemon=True).start()
        return job

    def _run(self, job: Job, fn: Callable) -> None:
        def progress(fraction: float, text: str = "") -> None:
            job.fraction = min(max(float(fraction), 0.0), 1.0)
            job.text = str(text)[:300]

        try:
            job.result = fn(**job.args, progress=progress, cancel=job.cancel)
            job.state = "cancelled" if job.cancel.is_set() else "done"
            job.fraction = 1.0 if job.state == "done" else job.fraction
        except Exception as exc:  # noqa: BLE001 - a scan's failure is shown on its page, the UI stays up
            if job.cancel.is_set():  # the scan raised its Cancelled
                job.state = "cancelled"
            else:
                log.warning("%s scan failed: %s: %s", job.kind, type(exc).__name__, exc)
                job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
        job.finished = time.time()
        job.text = {"done": "finished", "cancelled": "cancelled", "failed": "failed"}[job.state]

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def cancel(self, job_id: str) -> bool:
        job = self.jobs.get(job_id)
        if job is None or job.state != "running":
            return False
        job.cancel.set()
        job.text = "cancelling"
        return True

    def recent(self) -> list[Job]:
        return sorted(self.jobs.values(), key=lambda j: j.started, reverse=True)
