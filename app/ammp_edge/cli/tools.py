"""The commands for a person at a console: read, validate, simulate, kvs."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from pathlib import Path

from ..core import config as cfg, drivers, keys, paths
from ..core.kvs import KVStore
from ..core.problems import ConfigUnusable, Problem

log = logging.getLogger("ammp_edge")


def load_config_file(path: Path) -> tuple[bytes, cfg.Config]:
    """The raw bytes and the compiled config of a file, its problems printed; an unreadable or unusable
    one is printed with the reason and ends the command with exit status 2."""
    builtin = drivers.load_builtin_drivers(paths.drivers_dir())
    try:
        raw = path.read_bytes()
        config = cfg.load(cfg.parse_json(raw), builtin)
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
        raise SystemExit(2) from None
    except ConfigUnusable as exc:
        for p in exc.problems:
            print(f"{path}: {p}", file=sys.stderr)
        raise SystemExit(2) from None
    for p in config.problems:
        print(f"{path}: {p}", file=sys.stderr)
    return raw, config


def cmd_validate(args: argparse.Namespace) -> int:
    from ..delivery.outputs import compile_outputs  # JSONata: only for the commands that evaluate outputs

    builtin = drivers.load_builtin_drivers(paths.drivers_dir())
    errors = 0
    for name in args.files:
        try:
            doc = cfg.parse_json(Path(name).read_bytes(), "file")
        except OSError as exc:
            problems = [Problem("$", f"cannot read: {exc.strerror}")]
        except ConfigUnusable as exc:
            problems = exc.problems
        else:
            if isinstance(doc, dict) and ("devices" in doc or "readings" in doc):
                try:
                    config = cfg.load(doc, builtin)
                    problems = list(config.problems) + compile_outputs(config.outputs)[1]
                    for dname, driver in (doc.get("drivers") or {}).items():
                        problems += [p for p in drivers.check_driver(driver, f"drivers.{dname}") if p not in problems]
                except ConfigUnusable as exc:
                    problems = exc.problems
            elif isinstance(doc, dict) and "fields" in doc:
                problems = drivers.check_driver(doc, Path(name).stem)
                problems = [
                    Problem(p.path.split(".", 1)[1] if "." in p.path else "$", p.message, p.severity) for p in problems
                ]
            else:
                problems = [Problem("$", "neither a config (devices, readings) nor a driver (fields)")]
        for p in problems:
            print(f"{name}: {p}")
        n = sum(1 for p in problems if p.severity == "error")
        errors += n
        if not problems:
            print(f"{name}: ok")
    return 1 if errors else 0


def cmd_read(args: argparse.Namespace) -> int:
    from ..bus.poller import BusPoller
    from ..delivery.outputs import compile_outputs
    from ..delivery.readout import build_message, dumps, table
    from .wiring import resolve_mac

    _, config = load_config_file(Path(args.config))
    if args.device:
        unknown = [d for d in args.device if d not in config.devices]
        if unknown:
            print(f"{args.config}: no readable device {', '.join(unknown)}", file=sys.stderr)
            return 2
        config.devices = {k: v for k, v in config.devices.items() if k in args.device}
    if not config.devices:
        print(f"{args.config}: not usable: no device can be read", file=sys.stderr)
        return 2
    outputs, out_problems = compile_outputs(config.outputs)
    for p in out_problems:
        print(f"{args.config}: {p}", file=sys.stderr)
    t = int(time.time())
    readouts: list[dict] = []

    def poll(bus_id: str, devices: list) -> None:
        try:
            poller = BusPoller(bus_id, devices, config.read_interval, resolve_mac)
            try:
                readouts.append(poller.poll(t))
            finally:
                poller.close()
        except Exception as exc:
            log.exception("bus %s failed", bus_id)
            readouts.append(
                {
                    "bus": bus_id,
                    "duration": 0,
                    "devices": [{"_d": d.key, "_vid": d.vendor_id} for d in devices],
                    "errors": {d.key: [f"bus {bus_id} failed: {type(exc).__name__}: {exc}"] for d in devices},
                }
            )

    threads = [threading.Thread(target=poll, args=item) for item in config.buses().items()]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    readouts.sort(key=lambda r: r["bus"])
    for r in readouts:
        for dev, errs in r["errors"].items():
            for e in errs:
                print(f"{dev}: {e}", file=sys.stderr)
    message, warnings = build_message(t, readouts, outputs, config.calc_vendor_id, config.config_id)
    for w in warnings:
        print(w, file=sys.stderr)
    print(dumps(message) if args.json else table(message, config))
    return 0


def _driver_arg(name: str) -> dict:
    path = Path(name)
    if path.suffix == ".json" or path.exists():
        return drivers.load_driver_file(path)
    builtin = drivers.load_builtin_drivers(paths.drivers_dir())
    if name not in builtin:
        raise SystemExit(f"simulate: no driver {name!r} (a built-in name or a .json file)")
    return builtin[name]


def cmd_simulate(args: argparse.Namespace) -> int:
    from ..core.signals import install_signal_handlers
    from ..simulate import Simulator

    driver = _driver_arg(args.driver)
    units = args.unit or [1]
    values: dict = {}
    if args.values:
        try:
            doc = json.loads(Path(args.values).read_text())
        except (OSError, ValueError) as exc:
            raise SystemExit(f"simulate: --values {args.values}: {exc}") from None
        if not isinstance(doc, dict):
            raise SystemExit(f"simulate: --values {args.values}: must be a JSON object of field -> value")
        values = {u: doc for u in units}
    if args.speedwire:
        return _simulate_speedwire(args, driver, values.get(units[0], {}))
    from ..simulate_raw import raw_kind

    if raw_kind(driver):
        return _simulate_raw(args, driver, units, values.get(units[0], {}))
    serial = (
        dict(
            serial_port=args.serial,
            baudrate=args.baudrate,
            parity=args.parity,
            stopbits=args.stopbits,
            emulate_airtime=args.airtime,
        )
        if args.serial
        else {}
    )
    try:
        sim = Simulator(
            {u: driver for u in units},
            args.port,
            args.host,
            values,
            args.delay_ms / 1000,
            args.strict,
            silent_gaps=args.silent_gaps,
            **serial,
        )
    except ValueError as exc:
        raise SystemExit(f"simulate: {exc}") from None
    try:
        sim.start()
    except OSError as exc:
        raise SystemExit(f"simulate: {exc}") from None
    where = f"serial {args.serial} ({args.baudrate} baud)" if args.serial else f"{args.host}:{args.port}"
    print(f"simulating {args.driver} on {where} unit(s) {', '.join(map(str, units))}; Ctrl-C stops", flush=True)
    stop = threading.Event()
    install_signal_handlers(stop)
    stop.wait()
    sim.stop()
    return 0


def _simulate_raw(args: argparse.Namespace, driver: dict, units: list[int], values: dict) -> int:
    """A rawtcp driver on --port (its request schema's unit_id is --unit), a rawserial one on --serial."""
    from ..core.signals import install_signal_handlers
    from ..simulate_raw import RawSimulator

    try:
        sim = RawSimulator(
            driver,
            values,
            port=args.port,
            host=args.host,
            serial_port=args.serial,
            device_args={"unit_id": units[0]},
            delay=args.delay_ms / 1000,
        ).start()
    except (ValueError, OSError) as exc:
        raise SystemExit(f"simulate: {exc}") from None
    where = f"serial {args.serial}" if args.serial else f"{args.host}:{sim.port}"
    print(f"simulating {args.driver} ({sim.kind}) on {where}; Ctrl-C stops", flush=True)
    stop = threading.Event()
    install_signal_handlers(stop)
    stop.wait()
    sim.stop()
    return 0


def _simulate_speedwire(args: argparse.Namespace, driver: dict, values: dict) -> int:
    from ..core.signals import install_signal_handlers
    from ..simulate_speedwire import SpeedwireSender

    group, _, port = str(args.speedwire).rpartition(":")
    try:
        sender = SpeedwireSender(driver, args.serial_number, group, int(port), values, args.interval)
    except (ValueError, OSError) as exc:
        raise SystemExit(f"simulate: {exc}") from None
    sender.start()
    print(
        f"simulating {args.driver} (Speedwire serial {args.serial_number}) to {group}:{port} "
        f"every {args.interval:g} s out of loopback; Ctrl-C stops",
        flush=True,
    )
    stop = threading.Event()
    install_signal_handlers(stop)
    stop.wait()
    sender.stop()
    return 0


def cmd_kvs(args: argparse.Namespace) -> int:
    store = KVStore()
    if args.action == "get":
        raw = store.get_raw(args.key)
        if raw is None:
            print(f"Error: No value set for key '{args.key}'", file=sys.stderr)
            return 1
        value = json.loads(raw)
        print(value if isinstance(value, str) else json.dumps(value))
        return 0
    if args.key == keys.CONFIG:  # the site config goes through the one door, like every config
        from ..core import configdoor
        from ..delivery.outputcheck import output_problems

        verdict = configdoor.submit(
            store, args.value.encode(), "kvs", drivers.load_builtin_drivers(paths.drivers_dir()), output_problems
        )
        for p in verdict.problems:
            print(f"config: {p}", file=sys.stderr)
        if not verdict.accepted:
            print(verdict.message, file=sys.stderr)
            return 2
        return 0
    try:  # as upstream: JSON when it parses, else a string
        value = json.loads(args.value)
    except ValueError:
        value = args.value
    store.set(args.key, value)
    return 0
