"""mosquitto's persistence file after a power cut (upstream section 4.3, without discarding data)."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from ..core import paths
from .model import PERSISTENCE_FILE

log = logging.getLogger(__name__)


def check_persistence(directory: Path | None = None) -> list[Path]:
    """If an interrupted save left mosquitto.db.new, move it and mosquitto.db aside; return the new paths.

    Upstream deleted mosquitto.db in this case and lost the whole backlog. Here nothing is deleted:
    both files go to <persistence>/aside/<UTC time>/, and the broker starts with an empty database.
    That loses nothing, because the outbox still holds every readout the cloud has not confirmed.
    Call this only while the broker is stopped.
    """
    directory = Path(directory or paths.mosquitto_persistence_dir())
    new = directory / f"{PERSISTENCE_FILE}.new"
    if not new.exists():
        return []
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = directory / "aside" / stamp
    n = 1
    while target.exists():
        n += 1
        target = directory / "aside" / f"{stamp}-{n}"
    target.mkdir(parents=True)
    moved = []
    for name in (PERSISTENCE_FILE, f"{PERSISTENCE_FILE}.new"):
        src = directory / name
        if src.exists():
            shutil.move(str(src), str(target / name))
            moved.append(target / name)
    log.warning(
        "%s found (an interrupted save, e.g. a power cut): moved %s to %s; the broker starts with "
        "empty persistence (the outbox still holds every unsent readout)",
        new,
        " and ".join(p.name for p in moved),
        target,
    )
    return moved
