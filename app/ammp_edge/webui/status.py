"""The status page's facts: node, programs (supervisord), buses, clock, network interfaces, the device."""

from __future__ import annotations

import ctypes
import json
import os
import socket
import time

import psutil

from .. import __version__
from ..core import configdoor, keys, paths
from ..core.supervisor import FATAL, programs

CLOCK_STATES = {
    0: "synchronised",
    1: "synchronised (leap second pending)",
    2: "synchronised (leap second pending)",
    3: "synchronised (leap second)",
    4: "synchronised",
    5: "not synchronised",
}


def clock_state() -> str:
    """The kernel's view (adjtimex, read only): whether an NTP daemon keeps the clock synchronised."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct timex, modes = 0: read only
        rc = libc.adjtimex(buf)
    except (OSError, AttributeError):
        return "unknown"
    return CLOCK_STATES.get(rc, "unknown")


def provisioning(store) -> dict:
    node_id, access_key, activated = store.get(keys.NODE_ID), store.get_raw(keys.ACCESS_KEY), store.get(keys.ACTIVATED)
    if node_id and access_key and activated:
        state = f"activated {activated}"
    elif node_id and access_key:
        state = "node id and access key present"
    elif node_id:
        state = "node id only (not activated)"
    else:
        state = "not provisioned"
    return {"node_id": node_id if isinstance(node_id, str) else None, "state": state}


def interfaces() -> list[dict]:
    stats = psutil.net_if_stats()
    out = []
    for name, addrs in sorted(psutil.net_if_addrs().items()):
        mac = next((a.address for a in addrs if a.family == psutil.AF_LINK), "")
        v4 = [f"{a.address}/{_bits(a.netmask)}" for a in addrs if a.family == socket.AF_INET]
        v6 = [a.address.split("%")[0] for a in addrs if a.family == socket.AF_INET6]
        st = stats.get(name)
        out.append(
            {
                "name": name,
                "mac": mac,
                "ipv4": v4,
                "ipv6": v6,
                "up": bool(st and st.isup),
                "speed": st.speed if st else 0,
            }
        )
    return out


def _bits(netmask: str | None) -> int:
    try:
        return sum(bin(int(x)).count("1") for x in (netmask or "").split("."))
    except ValueError:
        return 0


def system() -> dict:
    """The device: host name, whether the root file system is read-only, the data volume's size and free
    space, memory, and on the Pi image the settings file's outcome and the access point."""
    out: dict = {"hostname": socket.gethostname()}
    try:
        out["root_read_only"] = bool(os.statvfs("/").f_flag & os.ST_RDONLY)
    except OSError:
        out["root_read_only"] = None
    try:
        st = os.statvfs(paths.data_dir())
        out["data_total_bytes"], out["data_free_bytes"] = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
    except OSError:
        out["data_total_bytes"] = out["data_free_bytes"] = None
    mem = psutil.virtual_memory()
    out["memory_total_bytes"], out["memory_available_bytes"] = mem.total, mem.available
    try:
        with open(paths.PI_SETTINGS_SUMMARY) as f:  # written at boot on the Pi image (device.settings)
            out["settings"] = json.load(f)
    except (OSError, ValueError):
        out["settings"] = None
    ap = (out["settings"] or {}).get("access_point")
    if ap:  # hostapd runs and wlan0 carries the access point's address
        running = any(p.info["name"] == "hostapd" for p in psutil.process_iter(["name"]))
        addrs = psutil.net_if_addrs().get("wlan0", [])
        ap["active"] = running and any(a.family == socket.AF_INET and a.address == ap.get("address") for a in addrs)
    return out


def uptime() -> dict:
    return {"system_s": int(time.time() - psutil.boot_time()), "version": __version__}


def summary(state) -> dict:
    progs, prog_error = programs()
    config, unusable = state.config()
    return {
        "node": provisioning(state.store),
        "version": __version__,
        "uptime": uptime(),
        "webui_uptime_s": int(time.time() - state.started),
        "clock": clock_state(),
        "time": int(time.time()),
        "bridges": state.bridge_view(),
        "broker_connected": bool(state.bridges and state.bridges.connected),
        "outbox": state.outbox_info,
        "programs": progs,
        "programs_error": prog_error,
        "buses": {b: vars(s) for b, s in sorted(dict(state.buses).items())},
        "expected_buses": sorted(config.buses()) if config else [],
        "config_id": config.config_id if config else None,
        "config_problems": len(config.problems) if config else len(unusable),
        "config_source": configdoor.state(state.store, config.config_id if config else None),
        "interfaces": interfaces(),
        "system": system(),
    }


def config_story(store, config_id: str | None) -> dict:
    """Which config runs and where it came from, for /health: {config_id, source, from, at, managed,
    kept_locally, cloud_config_id, replaced_local}."""
    st = configdoor.state(store, config_id)
    return {
        "config_id": config_id,
        "source": st["source"],
        "from": st["label"] if config_id else None,
        "at": st["at"],
        "managed_by_cloud": st["managed"],
        "kept_locally": st["keep_local"],
        "cloud_config_id": (st["cloud"] or {}).get("config_id"),
        "replaced_local": st["replaced"],
    }


def health(state) -> tuple[int, dict]:
    """For container health checks: 200 when supervisord answers and no program gave up (FATAL)."""
    progs, err = programs()
    fatal = [p["name"] for p in progs if p["state"] == FATAL]
    ok = err is None and not fatal
    sysinfo = system()
    settings = sysinfo.pop("settings") or {}
    sysinfo["settings_problems"] = len(settings.get("problems", [])) if settings else None
    sysinfo["access_point_active"] = (settings.get("access_point") or {}).get("active")
    config, _ = state.config()
    return (200 if ok else 503), {
        "status": "ok" if ok else "fail",
        "version": __version__,
        "config": config_story(state.store, config.config_id if config else None),
        "programs": {p["name"]: p["state"] for p in progs},
        "error": err,
        "outbox": state.outbox_info,
        "time": int(time.time()),
        "system": sysinfo,
    }
