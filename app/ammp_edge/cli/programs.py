"""The appliance's programs, each a subcommand run by supervisord (and `up`, which runs supervisord).

Each command imports its program when it runs: every program starts through this package, and a bus
must not load the web UI, JSONata, OpenSSL or the scan code.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import threading
import time
from pathlib import Path

from ..core import paths
from ..core.signals import install_signal_handlers

log = logging.getLogger("ammp_edge")


def cmd_bus(args: argparse.Namespace) -> int:
    from ..bus import status as bus_status
    from ..bus.program import run_bus
    from ..core.configsource import ConfigSource
    from ..core.kvs import cache as kv_cache
    from ..delivery.outbox import Outbox
    from .wiring import resolve_mac

    stop = threading.Event()
    install_signal_handlers(stop)
    if not args.once and not args.no_outbox:
        from ..readers.mqtt import use_stable_client_id  # stdlib and core only

        use_stable_client_id()  # the bus program owns its MQTT broker session (readers/mqtt.py)
    source = ConfigSource(Path(args.config) if args.config else None)
    outbox = None if args.no_outbox else Outbox()
    status_cache = kv_cache() if not args.no_outbox else None

    def sink(readout: dict) -> None:
        if status_cache is not None:  # for the web UI: this bus's last cycle
            bus_status.write(status_cache, args.bus_id, readout)
        if outbox is not None:
            key = outbox.put(readout)  # committed before anything else happens to it
            log.debug(
                "committed t=%d key=%d devices=%s delay=%.4f at=%.3f",
                readout["t"],
                key,
                ",".join(r["_d"] for r in readout["devices"]),
                readout.get("start_delay", 0.0),
                time.time(),  # when the commit returned: what delivery latency is measured from
            )
        if args.print:
            from ..delivery.readout import build_message, table  # JSONata comes with it: only when printing

            message, _ = build_message(readout["t"], [readout], [], "")
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(readout["t"]))
            print(
                f"\n[{args.bus_id}] t={readout['t']} ({when} UTC)  {readout['requests']} requests in "
                f"{readout['duration']:.3f} s",
                flush=True,
            )
            print(table(message, source.config), flush=True)

    try:
        return run_bus(args.bus_id, source, sink, stop, once=args.once, resolve_mac=resolve_mac, plans=status_cache)
    finally:
        if outbox is not None:
            outbox.close()


def cmd_hycon(args: argparse.Namespace) -> int:
    from ..core import watchdog
    from ..core.configsource import ConfigSource
    from ..delivery.backfill import HyconBackfill
    from ..delivery.outbox import Outbox

    stop = threading.Event()
    install_signal_handlers(stop)
    source = ConfigSource(Path(args.config) if args.config else None)
    outbox = Outbox()
    try:
        if args.once:  # by hand: one attempt per device, now
            from ..readers.hycon_csv import HyconError

            config = source.current()
            if config is None or not config.backfill_devices():
                print("hycon: the config has no sma_hycon_csv device", file=sys.stderr)
                return 2
            once, rc = HyconBackfill(outbox, stop, retry_for=0), 0
            for dev in config.backfill_devices():
                try:
                    print(f"{dev.key}: {once.backfill(dev)} rows into the outbox")
                except HyconError as exc:
                    print(f"{dev.key}: {exc}", file=sys.stderr)
                    rc = 1
            return rc
        backfill = HyconBackfill(outbox, stop)
        while not stop.is_set():
            watchdog.heartbeat("hycon", 3 * 3600.0)  # a day's fetch retries for 30 min at most
            backfill.step(source.current())
            stop.wait(30.0)
        return 0
    finally:
        outbox.close()


def cmd_publisher(args: argparse.Namespace) -> int:
    from ..bridge.plan import bridge_state_topics
    from ..core.configsource import ConfigSource
    from ..core.kvs import KVStore, cache
    from ..delivery.outbox import Outbox
    from ..delivery.publisher import Publisher

    stop = threading.Event()
    install_signal_handlers(stop)
    outbox = Outbox()
    kvstore = KVStore()
    pub = Publisher(
        outbox,
        ConfigSource(Path(args.config) if args.config else None),
        bridge_state_topics(kvstore),
        settle=args.settle,
        backlog_rate=args.backlog_rate,
        cache=cache(),
        bridges_fn=lambda: bridge_state_topics(kvstore),
    )
    try:
        pub.run(stop)
    finally:
        outbox.close()
    return 0


def cmd_bridge_config(args: argparse.Namespace) -> int:
    from ..bridge.program import run_bridge_config

    stop = threading.Event()
    install_signal_handlers(stop)
    return run_bridge_config(once=args.once, interval=args.interval, program=args.program, stop=stop)


def cmd_broker(args: argparse.Namespace) -> int:
    """Check mosquitto's persistence file (an interrupted save is moved aside), then become mosquitto."""
    from ..bridge.persistence import check_persistence

    check_persistence()
    conf = paths.mosquitto_conf_path()
    if not conf.exists():
        print(f"broker: {conf} does not exist; run `ammp-edge bridge-config --once` first", file=sys.stderr)
        return 1
    exe = shutil.which("mosquitto", path=paths.executable_search_path())
    if exe is None:
        print("broker: mosquitto is not installed (apt-get install mosquitto)", file=sys.stderr)
        return 1
    os.execv(exe, [exe, "-c", str(conf)])
    return 1  # not reached


def cmd_up(args: argparse.Namespace) -> int:
    from ..device import appliance

    path = Path(args.config) if args.config else appliance.DEMO_CONFIG if args.demo else None
    raw = None
    if path is not None:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
            return 2
    if args.demo:  # the demo reaches no cloud: node makes no HTTP request (paths.offline)
        paths.set_offline()
    try:
        return appliance.run(
            raw, args.demo, str(path) if args.config else None, lambda p: print(f"{path}: {p}", file=sys.stderr)
        )
    except appliance.ConfigRefused as exc:  # through the one door, as every config (core.configdoor)
        for p in exc.verdict.problems:
            print(f"{path}: {p}", file=sys.stderr)
        return 2
    except appliance.SetupError as exc:
        print(f"up: {exc}", file=sys.stderr)
        return 1


def cmd_node(args: argparse.Namespace) -> int:
    from ..node import program as node

    stop = threading.Event()
    install_signal_handlers(stop)
    return node.run(stop)


def cmd_webui(args: argparse.Namespace) -> int:
    from ..core import credentials
    from ..core.kvs import KVStore

    if args.reset_password:
        password = credentials.reset_password(KVStore())
        print(f"new web UI password: {password} (also in {paths.webui_initial_password_path()}; every session ended)")
        return 0
    from ..webui.server import serve

    stop = threading.Event()
    install_signal_handlers(stop)
    return serve(stop, args.host, args.port)
