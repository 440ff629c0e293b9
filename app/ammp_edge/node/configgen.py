"""Config generation: by the AMMP cloud, and locally for SunSpec devices.

By the cloud: an environment scan sent back with "generate_new_config" on u/state/env_scan (the
`trigger_config_generation` command and the web UI's scans page); the cloud answers with a new
config, delivered like any config.

Locally: every SunSpec device an environment or network scan found (`sunspec_models` in a host's
`modbustcp` entries, see node/scan/modbus.py) becomes a device with a driver generated from the SunSpec
model definitions (core.sunspec), embedded in the config's `drivers`, and a reading for each field.
Nothing heavy here: the web UI imports it.
"""

from __future__ import annotations

import re
from typing import Any

from ..core import sunspec
from ..core.problems import Problem


def tank_dims(width: float, length: float, height: float) -> dict:
    """The tank dimensions (metres) config generation takes (web UI form)."""
    return {"width": width, "length": length, "height": height, "type": "tank", "shape": "rectangular"}


def generation_request(scan_result: dict, dims: dict | None = None) -> dict:
    """A scan as a config generation request on u/state/env_scan."""
    return dict(scan_result, generate_new_config=True, input_parameters=[dims])


def _hosts(scan: Any) -> list[dict]:
    """The hosts of a scan result: an environment scan ({"network_scan": [{"hosts": [...]}]}), a
    network scan ({"hosts": [...]}, or the list of hosts itself)."""
    if isinstance(scan, dict):
        nets = scan.get("network_scan")
        if isinstance(nets, list):
            scan = [h for n in nets if isinstance(n, dict) for h in (n.get("hosts") or [])]
        else:
            scan = scan.get("hosts")
    return [h for h in scan or [] if isinstance(h, dict)] if isinstance(scan, list) else []


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


def sunspec_devices(host: str, port: int, unit: int, chain: sunspec.Chain, config: dict) -> list[str]:
    """Add the logical devices of a walked chain to `config` (devices, drivers, readings); their keys."""
    keys = []
    for n, gen in enumerate(sunspec.drivers_for(chain)):
        key = _slug(f"sunspec_{host}_{unit}" + (f"_{n + 1}" if n else ""))
        vid = _slug(f"{gen.manufacturer or 'sunspec'}_{gen.serial or f'{host}_{unit}_{n + 1}'}")
        config["drivers"][gen.name] = gen.driver
        config["devices"][key] = {
            "reading_type": "modbustcp",
            "driver": gen.name,
            "vendor_id": vid,
            "name": " ".join(x for x in (gen.manufacturer, gen.model_name, gen.serial) if x) or key,
            "address": {"host": host, "port": port, "unit_id": unit},
        }
        for fld in sunspec.published(gen.driver):  # scale factors and layout checks are read, not published
            config["readings"][f"{key}_{fld}"] = {"device": key, "var": fld}
        keys.append(key)
    return keys


def sunspec_config(scan: Any, read_interval: int = 60) -> tuple[dict, list[Problem]]:
    """A site config for every SunSpec device of a scan result, and what could not be used (a host
    whose chain is broken is named, never configured)."""
    config: dict = {"devices": {}, "drivers": {}, "readings": {}, "read_interval": read_interval}
    problems: list[Problem] = []
    for host in _hosts(scan):
        ip = host.get("ipv4")
        for entry in host.get("modbustcp") or []:
            if not isinstance(entry, dict) or "sunspec_base" not in entry or not isinstance(ip, str):
                continue
            where = f"{ip} unit {entry.get('unit_id')}"
            if "sunspec_problem" in entry:
                problems.append(Problem(where, f"SunSpec chain not usable: {entry['sunspec_problem']}"))
                continue
            try:
                chain = sunspec.from_layout(
                    int(entry["sunspec_base"]), entry.get("sunspec_models"), entry.get("sunspec_identity")
                )
            except (sunspec.SunSpecError, TypeError, ValueError) as exc:
                problems.append(Problem(where, f"SunSpec chain not usable: {exc}"))
                continue
            port = int(host.get("modbus_port") or 502)
            sunspec_devices(ip, port, int(entry.get("unit_id", 1)), chain, config)
    return config, problems
