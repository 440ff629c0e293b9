"""Config generation by the AMMP cloud: an environment scan sent back with "generate_new_config" on
u/state/env_scan (the `trigger_config_generation` command and the web UI's scans page); the cloud
answers with a new config, delivered like any config. Nothing heavy here: the web UI imports it."""

from __future__ import annotations


def tank_dims(width: float, length: float, height: float) -> dict:
    """The tank dimensions (metres) config generation takes (web UI form)."""
    return {"width": width, "length": length, "height": height, "type": "tank", "shape": "rectangular"}


def generation_request(scan_result: dict, dims: dict | None = None) -> dict:
    """A scan as a config generation request on u/state/env_scan."""
    return dict(scan_result, generate_new_config=True, input_parameters=[dims])
