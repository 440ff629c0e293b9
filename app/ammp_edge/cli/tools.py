"""The commands for a person at a console: read, validate, simulate, kvs."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from pathlib import Path

from ..core import config as cfg, drivers, keys, paths, yamltext
from ..core.kvs import KVStore
from ..core.problems import ConfigUnusable, Problem

log = logging.getLogger("ammp_edge")


def load_config_file(path: Path) -> tuple[bytes, cfg.Config]:
    """The raw bytes and the compiled config of a file, its problems printed; an unreadable or unusable
    one is printed with the reason and ends the command with exit status 2."""
    builtin = drivers.load_builtin_drivers(paths.drivers_dir())
    try:
        raw = path.read_bytes()
        config = cfg.load(yamltext.load(raw, "config", path.name), builtin)
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
            doc = yamltext.load(Path(name).read_bytes(), "file", Path(name).name)  # JSON or YAML
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


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def cmd_drivers(args: argparse.Namespace) -> int:
    """`ammp-edge drivers [NAME] [--search WORDS]`: the catalogue (core.catalogue)."""
    from ..core import catalogue

    builtin = drivers.load_builtin_drivers(paths.drivers_dir())
    extra: dict = {}
    if args.config:
        try:
            doc = yamltext.load(Path(args.config).read_bytes(), "config", Path(args.config).name)
        except OSError as exc:
            print(f"{args.config}: cannot read: {exc.strerror}", file=sys.stderr)
            return 2
        except ConfigUnusable as exc:
            print(f"{args.config}: {exc}", file=sys.stderr)
            return 2
        extra = doc.get("drivers") or {} if isinstance(doc, dict) else {}
        extra = extra if isinstance(extra, dict) else {}
    entries = catalogue.catalogue(builtin, extra)
    if args.name:
        found = next((e for e in entries if e.name == args.name), None)
        if found is None:
            near = [e.name for e in catalogue.search(entries, args.name.replace("_", " "))][:5]
            hint = f"; similar: {', '.join(near)}" if near else ""
            print(f"drivers: no driver {args.name!r}{hint}", file=sys.stderr)
            return 1
        driver: dict = extra.get(args.name) or builtin.get(args.name) or {}
        rows = catalogue.field_rows(driver)
        if args.json:
            print(json.dumps({**found.as_dict(), "field_rows": rows}, indent=2, ensure_ascii=False))
            return 0
        print(f"{found.name} ({found.origin})")
        print(f"device:        {found.device}")
        print(f"source:        {found.source}")
        print(f"reading type:  {', '.join(found.reading_types)}")
        print(f"fields:        {found.fields}" + (f"; test vectors: {found.vectors}" if found.vectors else ""))
        if isinstance(driver.get("description"), str):
            print(f"description:   {driver['description']}")
        print()
        table_rows = []
        for r in rows:
            what = r.get("problem") and f"problem: {r['problem']}"
            if what is None and "register" in r:
                what = f"fc{r['fncode']} {r['register']} x{r['words']} {r['datatype']}"
                if r.get("multiplier") is not None:
                    what += f" x {r['multiplier']:g}"
                if r.get("scale_factor"):
                    what += f" x 10^{r['scale_factor']}"
            elif what is None and "oid" in r:
                what = f"snmp {r['oid']}"
            elif what is None and "obis_channel" in r:
                what = f"obis {r['obis_channel']}:{r['obis_type']}"
            elif what is None:
                what = r.get("call") or r.get("kind") or ""
            table_rows.append([r["field"], what, r.get("unit") or "", (r.get("description") or "")[:60]])
        print(_table(table_rows, ["field", "reads", "unit", "description"]))
        return 0
    if args.search:
        entries = catalogue.search(entries, args.search)
    if args.json:
        print(json.dumps([e.as_dict() for e in entries], indent=2, ensure_ascii=False))
        return 0
    listing = [[e.name, e.device[:60], e.source[:40], str(e.fields), ", ".join(e.reading_types)] for e in entries]
    print(_table(listing, ["name", "device", "source", "fields", "reading type"]))
    print(f"{len(entries)} driver(s)" + (f" matching {args.search!r}" if args.search else ""))
    return 0 if entries else 1


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

    for dev in config.backfill_devices():
        print(
            f"{dev.key}: {dev.reading_type} is a daily backfill of the previous day, not read in a cycle "
            "(`ammp-edge hycon --once` runs it now)",
            file=sys.stderr,
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
    if path.suffix in drivers.DRIVER_SUFFIXES or path.exists():
        return drivers.load_driver_file(path)
    builtin = drivers.load_builtin_drivers(paths.drivers_dir())
    if name not in builtin:
        raise SystemExit(f"simulate: no driver {name!r} (a built-in name or a .json or .yaml file)")
    return builtin[name]


def cmd_simulate(args: argparse.Namespace) -> int:
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
    return _until_stopped(sim)


def _simulate_raw(args: argparse.Namespace, driver: dict, units: list[int], values: dict) -> int:
    """A rawtcp driver on --port (its request schema's unit_id is --unit), a rawserial one on --serial."""
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
    return _until_stopped(sim)


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


def _until_stopped(sim) -> int:
    """Serve until SIGINT or SIGTERM, then stop the simulator."""
    from ..core.signals import install_signal_handlers

    stop = threading.Event()
    install_signal_handlers(stop)
    stop.wait()
    sim.stop()
    return 0
