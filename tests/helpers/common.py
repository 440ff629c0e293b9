"""What the tests share besides fixtures: the repository's paths, the upstream copies, running ammp-edge."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The upstream driver and config files the tests compare against, kept in the repository so a clone
# anywhere runs the whole suite (tests/upstream/README.md); test_upstream_copy.py checks them against
# the shared reference when it sits beside the checkout.
REFERENCE = REPO.parent / "shared" / "reference"
UPSTREAM_DRIVERS = REPO / "tests" / "upstream" / "drivers"
UPSTREAM_CONFIGS = REPO / "tests" / "upstream" / "configs"
AMMP_EDGE = [sys.executable, "-m", "ammp_edge"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_json(path: Path, doc) -> Path:
    path.write_text(json.dumps(doc))
    return path


def child_env(**extra) -> dict:
    env = dict(os.environ)
    env.update({k: str(v) for k, v in extra.items()})
    return env
