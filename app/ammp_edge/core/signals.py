"""SIGTERM and SIGINT end a program's loop: they set its stop event (the loop finishes its round)."""

from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger(__name__)


def install_signal_handlers(stop: threading.Event) -> None:
    def handler(signum: int, frame: object) -> None:
        log.info("signal %d: finishing the current cycle and stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
