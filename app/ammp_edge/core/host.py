"""Facts about the machine the appliance runs on."""

from __future__ import annotations

from pathlib import Path

from . import paths


def in_container(root: Path = Path("/")) -> bool:
    """Docker (/.dockerenv) or podman (/run/.containerenv): the host owns the clock and reboots."""
    return any((root / marker.relative_to("/")).exists() for marker in paths.CONTAINER_MARKERS)
