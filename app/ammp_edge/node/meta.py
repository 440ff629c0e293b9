"""Start-up metadata on `u/meta/*` (upstream sections 4.1 and 5.9), published by node at each start.

    u/meta/boot_time        boot time, epoch seconds
    u/meta/start_time       node start, epoch seconds
    u/meta/arch             `uname -srvm`
    u/meta/ssh_fingerprint  SHA256 fingerprint of the ECDSA ssh host key without "SHA256:"; empty (MQTT has no
                            null) without a host key, as in a container: upstream's script prints nothing then
    u/meta/version          this software's version
    u/meta/snap_rev         the same version, where upstream published its snap revision (fleet views
                            built on upstream's topic show it); upstream sends it only as a snap

As upstream: first an empty retained message on each topic (clears an old retained value), then the
values with retain false, QoS 1; retried for up to 30 s, then given up (logged).

The messages are sent once the broker has its bridges: a message published before the broker runs
with a bridge never reaches the cloud, one published while the bridge is configured but disconnected
is queued by the broker. So `wait_for_bridges` waits (for at most 5 minutes) until every configured
bridge's local state topic carries its retained state, which the broker publishes when it starts the
bridge.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
import time
from pathlib import Path

from .. import __version__

log = logging.getLogger(__name__)

TOPICS = ("boot_time", "start_time", "snap_rev", "arch", "ssh_fingerprint", "version")
PUBLISH_FOR_S = 30.0
BRIDGE_WAIT_S = 300.0


def ssh_fingerprint(ssh_dir: Path = Path("/etc/ssh")) -> str | None:
    """As `ssh-keygen -l -E sha256 -f ssh_host_ecdsa_key.pub`, without the "SHA256:" prefix, computed here
    (no ssh-keygen needed at run time); None without a readable key."""
    try:
        fields = (ssh_dir / "ssh_host_ecdsa_key.pub").read_text().split()
        blob = base64.b64decode(fields[1], validate=True)
    except (OSError, IndexError, ValueError):
        return None
    return base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def values(start_time: float, ssh_dir: Path = Path("/etc/ssh")) -> dict[str, str]:
    import psutil

    u = os.uname()
    out = {
        "boot_time": str(int(psutil.boot_time())),
        "start_time": str(int(start_time)),
        "arch": f"{u.sysname} {u.release} {u.version} {u.machine}",
        "version": __version__,
        "snap_rev": __version__,
    }
    out["ssh_fingerprint"] = ssh_fingerprint(ssh_dir) or ""
    return out


def publish_meta(link, vals: dict[str, str], stop: threading.Event, within: float = PUBLISH_FOR_S) -> bool:
    """Clear (empty retained) every topic, then publish every value (QoS 1, not retained), until the
    local broker acknowledged the whole sequence, for at most `within` seconds. A sequence not fully
    acknowledged is sent again whole, so a clear never follows its value."""
    steps = [(f"u/meta/{k}", "", True) for k in vals] + [(f"u/meta/{k}", v, False) for k, v in vals.items()]
    end = time.monotonic() + within
    delay = 0.5
    while not stop.is_set() and time.monotonic() < end:
        if link.connected.wait(min(1.0, max(0.0, end - time.monotonic()))):
            tokens = [link.publish(topic, payload, qos=1, retain=retain) for topic, payload, retain in steps]
            if all(t is not None for t in tokens) and _all_acked(link, tokens, min(end, time.monotonic() + 5)):
                log.info("metadata published: %s", ", ".join(f"{k}={v}" for k, v in vals.items()))
                return True
            stop.wait(min(delay, max(0.0, end - time.monotonic())))
            delay = min(delay * 2, 8)
    log.warning("metadata not confirmed by the local broker within %.0f s; given up until the next start", within)
    return False


def _all_acked(link, tokens, until: float) -> bool:
    waiting = list(tokens)
    while waiting and time.monotonic() < until:
        still = []
        for t in waiting:
            state = link.acked(t)
            if state is None:
                return False  # the connection it went out on is gone
            if not state:
                still.append(t)
        waiting = still
        if waiting:
            time.sleep(0.05)
    return not waiting


def wait_for_bridges(topics: list[str], stop: threading.Event, timeout: float = BRIDGE_WAIT_S) -> bool:
    """Wait until each bridge state topic has its retained value on the local broker (the broker runs
    with these bridges); True at once without bridges."""
    if not topics:
        return True
    from ..delivery.mqtt import MqttLink

    seen: set[str] = set()
    ready = threading.Event()

    def on_message(topic: str, payload: bytes, retain: bool) -> None:
        seen.add(topic)
        if seen >= set(topics):
            ready.set()

    link = MqttLink("ammp-edge-node-meta", on_message, tuple((t, 1) for t in topics))
    link.start()
    try:
        end = time.monotonic() + timeout
        while not ready.is_set() and not stop.is_set() and time.monotonic() < end:
            ready.wait(0.5)
    finally:
        link.stop()
    if not ready.is_set() and not stop.is_set():
        log.warning(
            "bridges %s not reported by the broker within %.0f s; publishing metadata anyway",
            ", ".join(topics),
            timeout,
        )
    return ready.is_set()
