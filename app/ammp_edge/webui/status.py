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
from ..core.supervisor import RUNNING, bus_program_name, programs

# /health's thresholds (webui/README.md): a program restarted more than MAX_RESTARTS times within
# RESTART_WINDOW_S is crash-looping; a bus is silent when it has had no readout for NO_DATA_CYCLES read
# intervals (at least NO_DATA_MIN_S), or none of its devices gave a value for NO_DATA_CYCLES of its own
# interval (read_interval, or min_read_interval when longer; at least NO_DATA_MIN_S), counted from when
# its program, the web UI or the bus in the config began, whichever is latest.
MAX_RESTARTS = 3
RESTART_WINDOW_S = 300
NO_DATA_CYCLES = 3
NO_DATA_MIN_S = 30
DOWN_STATES = ("BACKOFF", "FATAL", "STOPPED", "UNKNOWN")

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


def problems(state, now: float | None = None) -> tuple[list[dict], str | None]:
    """What keeps the appliance from doing its job: each {program, bus, problem, why}; and an error
    text when supervisord cannot be asked. `problem` is one of "process down" (not running: exits at
    start, gave up, stopped), "crash loop" (restarted too often lately), "no readout" (the bus process
    runs but commits no cycle) and "no data" (cycles come, but no device of the bus answers)."""
    now = time.time() if now is None else now
    watch = state.programs
    watch.sample()
    if watch.error:
        return [], watch.error
    out: list[dict] = []
    config, _ = state.config()
    buses = config.buses() if config else {}
    by_program = {bus_program_name(b): b for b in buses}
    for name, info in sorted(watch.infos.items()):
        bus = by_program.get(name)
        st = info.get("statename")
        restarts = watch.restarts_since(name, now - RESTART_WINDOW_S)
        if st in DOWN_STATES:
            why = f"{st}: {info.get('description') or info.get('spawnerr') or 'not running'}"
            if st == "BACKOFF":
                why = f"exits at start, supervisord keeps retrying ({info.get('description') or 'see its log'})"
            out.append({"program": name, "bus": bus, "problem": "process down", "why": why})
        elif restarts > MAX_RESTARTS:
            out.append(
                {
                    "program": name,
                    "bus": bus,
                    "problem": "crash loop",
                    "why": f"restarted {restarts} times in the last {RESTART_WINDOW_S // 60} minutes "
                    f"(last exit status {info.get('exitstatus')}); see its log",
                }
            )
    interval = config.read_interval if config else 60
    limit = max(NO_DATA_CYCLES * interval, NO_DATA_MIN_S)
    down = {p["program"] for p in out}
    for bus, devices in sorted(buses.items()):
        name = bus_program_name(bus)
        info = watch.infos.get(name)
        since = max(state.started, state.expected_since.get(bus, now))
        if info is None:
            if now - since > limit:
                out.append({"program": name, "bus": bus, "problem": "process down", "why": "no such program"})
            continue
        if name in down or info.get("statename") != RUNNING:
            continue
        since = max(since, float(info.get("start") or 0))
        if now - since <= limit:
            continue
        seen = state.buses.get(bus)
        last = seen.t if seen else None
        if last is None or now - last > limit:
            ago = f"for {int(now - last)} s" if last else f"since it started {int(now - since)} s ago"
            out.append(
                {
                    "program": name,
                    "bus": bus,
                    "problem": "no readout",
                    "why": f"the bus process runs but committed no cycle {ago} (read interval {interval} s)",
                }
            )
            continue
        answered = max((state.answered.get(d.key, 0) for d in devices), default=0)
        if all(now - max(state.answered.get(d.key, 0), since) > _device_limit(d, interval) for d in devices):
            errors = "; ".join(f"{d}: {', '.join(map(str, e))}" for d, e in sorted((seen.errors or {}).items()))
            ago = f"for {int(now - answered)} s" if answered else f"in {int(now - since)} s"
            out.append(
                {
                    "program": name,
                    "bus": bus,
                    "problem": "no data",
                    "why": f"cycles come, but no device answered {ago}" + (f" ({errors[:500]})" if errors else ""),
                }
            )
    return out, None


def _device_limit(dev, interval: int) -> float:
    """How long a device may give no value: NO_DATA_CYCLES of its own interval (a device read at most
    every min_read_interval is left out of the cycles in between), at least NO_DATA_MIN_S."""
    return max(NO_DATA_CYCLES * max(interval, dev.min_read_interval or 0), NO_DATA_MIN_S)


def summary(state) -> dict:
    progs, prog_error = programs()
    config, unusable = state.config()
    found, _ = problems(state)
    return {
        "problems": found,
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
    """For container health checks: 200 when supervisord answers and problems() finds nothing, else
    503 with each problem (program, bus, what, why)."""
    found, err = problems(state)
    progs = [{"name": n, "state": i.get("statename")} for n, i in sorted(state.programs.infos.items())]
    ok = err is None and not found
    sysinfo = system()
    settings = sysinfo.pop("settings") or {}
    sysinfo["settings_problems"] = len(settings.get("problems", [])) if settings else None
    sysinfo["access_point_active"] = (settings.get("access_point") or {}).get("active")
    config, _ = state.config()
    return (200 if ok else 503), {
        "status": "ok" if ok else "fail",
        "problems": found,
        "version": __version__,
        "config": config_story(state.store, config.config_id if config else None),
        "programs": {p["name"]: p["state"] for p in progs},
        "error": err,
        "outbox": state.outbox_info,
        "time": int(time.time()),
        "system": sysinfo,
    }
