"""`ammp-edge`: one console script; every appliance program is a subcommand (`--help` on each)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from pathlib import Path

from . import __version__
from .core import paths

log = logging.getLogger("ammp_edge")


def setup_logging(level: str | None = None) -> None:
    logging.basicConfig(
        level=getattr(logging, (level or paths.log_level()).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# ---------------------------------------------------------------------------------------------
# validate


def cmd_validate(args) -> int:
    from .core import config as cfg, drivers
    from .delivery.outputs import compile_outputs
    from .core.problems import ConfigUnusable, Problem

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
                problems = [Problem(p.path.split(".", 1)[1] if "." in p.path else "$", p.message, p.severity) for p in problems]
            else:
                problems = [Problem("$", "neither a config (devices, readings) nor a driver (fields)")]
        for p in problems:
            print(f"{name}: {p}")
        n = sum(1 for p in problems if p.severity == "error")
        errors += n
        if not problems:
            print(f"{name}: ok")
    return 1 if errors else 0


# ---------------------------------------------------------------------------------------------
# read


def _load_config_or_exit(path: str):
    from .core import config as cfg, drivers
    from .core.problems import ConfigUnusable

    builtin = drivers.load_builtin_drivers(paths.drivers_dir())
    try:
        raw = cfg.parse_json(Path(path).read_bytes())
        return cfg.load(raw, builtin)
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
    except ConfigUnusable as exc:
        for p in exc.problems:
            print(f"{path}: {p}", file=sys.stderr)
    sys.exit(2)


def cmd_read(args) -> int:
    from .bus.poller import BusPoller
    from .delivery.outputs import compile_outputs
    from .delivery.readout import build_message, dumps, table

    config = _load_config_or_exit(args.config)
    for p in config.problems:
        print(f"{args.config}: {p}", file=sys.stderr)
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

    def poll(bus_id, devices):
        try:
            poller = BusPoller(bus_id, devices, config.read_interval)
            try:
                readouts.append(poller.poll(t))
            finally:
                poller.close()
        except Exception as exc:  # noqa: BLE001 - report the bus, keep the others' values
            log.exception("bus %s failed", bus_id)
            readouts.append({"bus": bus_id, "duration": 0, "devices": [{"_d": d.key, "_vid": d.vendor_id} for d in devices],
                             "errors": {d.key: [f"bus {bus_id} failed: {type(exc).__name__}: {exc}"] for d in devices}})

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


# ---------------------------------------------------------------------------------------------
# bus


def cmd_bus(args) -> int:
    from .bus.poller import ConfigSource, install_signal_handlers, run_bus
    from .core.kvs import cache as kv_cache
    from .delivery.outbox import Outbox

    stop = threading.Event()
    install_signal_handlers(stop)
    source = ConfigSource(Path(args.config) if args.config else None)
    outbox = None if args.no_outbox else Outbox()
    status = kv_cache() if not args.no_outbox else None

    def sink(readout: dict) -> None:
        if status is not None:  # for the web UI: this bus's last cycle
            status.set(f"bus_status/{args.bus_id}", {k: readout.get(k) for k in
                                                     ("t", "duration", "requests", "errors", "overruns", "start_delay")})
        if outbox is not None:
            key = outbox.put(readout)  # committed before anything else happens to it
            log.debug("committed t=%d key=%d devices=%s delay=%.4f", readout["t"], key,
                      ",".join(r["_d"] for r in readout["devices"]), readout.get("start_delay", 0.0))
        if args.print:
            from .delivery.readout import build_message, table  # JSONata comes with it: only when printing

            message, _ = build_message(readout["t"], [readout], [], "")
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(readout["t"]))
            print(f"\n[{args.bus_id}] t={readout['t']} ({when} UTC)  {readout['requests']} requests in "
                  f"{readout['duration']:.3f} s", flush=True)
            print(table(message, source.config), flush=True)

    try:
        return run_bus(args.bus_id, source, sink, stop, once=args.once)
    finally:
        if outbox is not None:
            outbox.close()


# ---------------------------------------------------------------------------------------------
# publisher


def cmd_publisher(args) -> int:
    from .bus.poller import ConfigSource, install_signal_handlers
    from .core.kvs import KVStore, cache
    from .delivery.outbox import Outbox
    from .delivery.publisher import Publisher, bridge_state_topics

    stop = threading.Event()
    install_signal_handlers(stop)
    outbox = Outbox()
    kvstore = KVStore()
    pub = Publisher(outbox, ConfigSource(Path(args.config) if args.config else None), bridge_state_topics(kvstore),
                    settle=args.settle, backlog_rate=args.backlog_rate, cache=cache(),
                    bridges_fn=lambda: bridge_state_topics(kvstore))
    try:
        pub.run(stop)
    finally:
        outbox.close()
    return 0


# ---------------------------------------------------------------------------------------------
# simulate


def _driver_arg(name: str) -> dict:
    from .core import drivers

    path = Path(name)
    if path.suffix == ".json" or path.exists():
        return drivers.load_driver_file(path)
    builtin = drivers.load_builtin_drivers(paths.drivers_dir())
    if name not in builtin:
        raise SystemExit(f"simulate: no driver {name!r} (a built-in name or a .json file)")
    return builtin[name]


def cmd_simulate(args) -> int:
    from .simulate import Simulator

    driver = _driver_arg(args.driver)
    units = args.unit or [1]
    values = {}
    if args.values:
        try:
            doc = json.loads(Path(args.values).read_text())
        except (OSError, ValueError) as exc:
            raise SystemExit(f"simulate: --values {args.values}: {exc}") from None
        if not isinstance(doc, dict):
            raise SystemExit(f"simulate: --values {args.values}: must be a JSON object of field -> value")
        values = {u: doc for u in units}
    serial = dict(serial_port=args.serial, baudrate=args.baudrate, parity=args.parity, stopbits=args.stopbits,
                  emulate_airtime=args.airtime) if args.serial else {}
    sim = Simulator({u: driver for u in units}, args.port, args.host, values, args.delay_ms / 1000, args.strict,
                    **serial)
    try:
        sim.start()
    except OSError as exc:
        raise SystemExit(f"simulate: {exc}") from None
    where = f"serial {args.serial} ({args.baudrate} baud)" if args.serial else f"{args.host}:{args.port}"
    print(f"simulating {args.driver} on {where} unit(s) {', '.join(map(str, units))}; Ctrl-C stops", flush=True)
    stop = threading.Event()
    from .bus.poller import install_signal_handlers

    install_signal_handlers(stop)
    stop.wait()
    sim.stop()
    return 0


# ---------------------------------------------------------------------------------------------
# bridge-config


def cmd_bridge_config(args) -> int:
    from .bridge.broker import run_bridge_config
    from .bus.poller import install_signal_handlers

    stop = threading.Event()
    install_signal_handlers(stop)
    return run_bridge_config(once=args.once, interval=args.interval, program=args.program, stop=stop)


def cmd_broker(args) -> int:
    """Check mosquitto's persistence file (an interrupted save is moved aside), then become mosquitto."""
    import os
    import shutil

    from .bridge import broker

    broker.check_persistence()
    conf = paths.mosquitto_conf_path()
    if not conf.exists():
        print(f"broker: {conf} does not exist; run `ammp-edge bridge-config --once` first", file=sys.stderr)
        return 1
    exe = shutil.which("mosquitto", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if exe is None:
        print("broker: mosquitto is not installed (apt-get install mosquitto)", file=sys.stderr)
        return 1
    os.execv(exe, [exe, "-c", str(conf)])
    return 1  # not reached


# ---------------------------------------------------------------------------------------------
# kvs


def cmd_kvs(args) -> int:
    from .core.kvs import KVStore

    store = KVStore()
    if args.action == "get":
        raw = store.get_raw(args.key)
        if raw is None:
            print(f"Error: No value set for key '{args.key}'", file=sys.stderr)
            return 1
        value = json.loads(raw)
        print(value if isinstance(value, str) else json.dumps(value))
        return 0
    try:  # as upstream: JSON when it parses, else a string
        value = json.loads(args.value)
    except ValueError:
        value = args.value
    store.set(args.key, value)
    return 0


# ---------------------------------------------------------------------------------------------
# up, node


def cmd_up(args) -> int:
    from .device import appliance
    from .core import config as cfg, drivers
    from .core.problems import ConfigUnusable

    raw = config = None
    if args.config or args.demo:
        path = Path(args.config) if args.config else appliance.DEMO_CONFIG
        try:
            raw = path.read_bytes()
            config = cfg.load(cfg.parse_json(raw), drivers.load_builtin_drivers(paths.drivers_dir()))
        except OSError as exc:
            print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
            return 2
        except ConfigUnusable as exc:
            for p in exc.problems:
                print(f"{path}: {p}", file=sys.stderr)
            return 2
        for p in config.problems:
            print(f"{path}: {p}", file=sys.stderr)
    if args.demo:  # the demo reaches no cloud: node makes no HTTP request (paths.offline)
        import os

        os.environ["AE_OFFLINE"] = "1"
    try:
        return appliance.run(raw, config if args.demo else None)
    except appliance.SetupError as exc:
        print(f"up: {exc}", file=sys.stderr)
        return 1


def cmd_node(args) -> int:
    from .node import program as node
    from .bus.poller import install_signal_handlers

    stop = threading.Event()
    install_signal_handlers(stop)
    return node.run(stop)


# ---------------------------------------------------------------------------------------------
# webui


def cmd_webui(args) -> int:
    from .bus.poller import install_signal_handlers
    from .core.kvs import KVStore
    from .webui import auth

    if args.reset_password:
        password = auth.reset_password(KVStore())
        print(f"new web UI password: {password} (also in {auth.initial_password_path()}; every session ended)")
        return 0
    from .webui.server import serve

    stop = threading.Event()
    install_signal_handlers(stop)
    return serve(stop, args.host, args.port)


# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ammp-edge", description="Edge data logger for energy systems.")
    p.add_argument("--version", action="version", version=f"ammp-edge {__version__}")
    p.add_argument("--log-level", help="debug, info, warning, error (default: $LOGGING_LEVEL or info)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("read", help="read every device of a config once and print the values")
    s.add_argument("--config", required=True, help="config JSON file")
    s.add_argument("--device", action="append", metavar="ID", help="only this device (repeatable)")
    s.add_argument("--json", action="store_true", help="print the upstream readout message instead of a table")
    s.set_defaults(func=cmd_read)

    s = sub.add_parser("validate", help="check config or driver files; prints FILE: json.path: message")
    s.add_argument("files", nargs="+", metavar="FILE")
    s.set_defaults(func=cmd_validate)

    s = sub.add_parser("bus", help="poll the devices of one bus every cycle and commit each readout to the outbox")
    s.add_argument("bus_id", metavar="BUS_ID", help="e.g. sys, tcp_192.168.1.10_502, serial_ttyUSB0")
    s.add_argument("--config", help="config file (default: the KV store key 'config')")
    s.add_argument("--print", action="store_true", help="also print each readout as a table")
    s.add_argument("--once", action="store_true", help="one cycle now, then exit")
    s.add_argument("--no-outbox", action="store_true", help="do not commit readouts (with --print, for trying a config)")
    s.set_defaults(func=cmd_bus)

    s = sub.add_parser("publisher", help="join each cycle's bus readouts into one u/data message and deliver it at least once")
    s.add_argument("--config", help="config file (default: the KV store key 'config'), for outputs and grouping")
    s.add_argument("--settle", type=float, default=1.0, help="seconds a bridge must stay up after a PUBACK (default 1)")
    s.add_argument("--backlog-rate", type=float, default=1000.0, help="backlog messages per second at most (default 1000)")
    s.set_defaults(func=cmd_publisher)

    s = sub.add_parser("simulate", help="serve a simulated device over Modbus TCP from a driver")
    s.add_argument("--driver", required=True, help="built-in driver name or a driver .json file")
    where = s.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", type=int, help="serve Modbus TCP on this port")
    where.add_argument("--serial", metavar="PATH", help="serve Modbus RTU on this serial port instead")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--baudrate", type=int, default=9600, help="RTU (default 9600)")
    s.add_argument("--parity", default="none", choices=["none", "even", "odd"], help="RTU (default none)")
    s.add_argument("--stopbits", type=int, default=1, choices=[1, 2], help="RTU (default 1)")
    s.add_argument("--airtime", action="store_true", help="RTU: delay answers by their time on a real line at the baud rate")
    s.add_argument("--unit", type=int, action="append", help="unit id to answer (repeatable; default 1)")
    s.add_argument("--values", help="JSON file {field: value} (default: plausible changing values)")
    s.add_argument("--delay-ms", type=float, default=0.0, help="added to every response")
    s.add_argument("--strict", action="store_true", help="only the driver's registers exist (gaps answer illegal address)")
    s.set_defaults(func=cmd_simulate)

    s = sub.add_parser("bridge-config", help="render the local broker and bridge config from the KV store; "
                       "restart the broker through supervisord when it changes")
    s.add_argument("--once", action="store_true", help="render (and check the broker's persistence), then exit")
    s.add_argument("--interval", type=float, default=5.0, help="seconds between KV store checks (default 5)")
    s.add_argument("--program", default="mosquitto", help="supervisord program name of the broker (default mosquitto)")
    s.set_defaults(func=cmd_bridge_config)

    s = sub.add_parser("broker", help="run the local mosquitto (after checking its persistence file)")
    s.set_defaults(func=cmd_broker)

    s = sub.add_parser("kvs", help="get or set a key in the KV store (AE_DATA_DIR/kvs-db/kvstore.db)")
    kv = s.add_subparsers(dest="action", required=True)
    g = kv.add_parser("get", help="print a value (strings bare, everything else as JSON)")
    g.add_argument("key")
    st = kv.add_parser("set", help="store a value (as JSON when it parses, else as a string)")
    st.add_argument("key")
    st.add_argument("value")
    s.set_defaults(func=cmd_kvs)

    s = sub.add_parser("up", help="the whole appliance under supervisord, in the foreground (SIGTERM stops it in order)")
    which = s.add_mutually_exclusive_group()
    which.add_argument("--config", metavar="FILE", help="store this config in the KV store key 'config' first "
                       "(refused with its problems when unusable)")
    which.add_argument("--demo", action="store_true", help="store the demo config and simulate its devices; "
                       "no activation or HTTP request to any cloud (AE_OFFLINE=1)")
    s.set_defaults(func=cmd_up)

    s = sub.add_parser("node", help="activation, config intake (AMMP API, d/config, provisioning file), commands, "
                       "metadata, clock; keeps the bus programs in step with the config")
    s.set_defaults(func=cmd_node)

    s = sub.add_parser("webui", help="the web UI for commissioning (port $AE_WEBUI_PORT, default 8000, on "
                       "$AE_WEBUI_HOST, default 0.0.0.0)")
    s.add_argument("--host", help="address to listen on (default $AE_WEBUI_HOST or 0.0.0.0)")
    s.add_argument("--port", type=int, help="port (default $AE_WEBUI_PORT or 8000)")
    s.add_argument("--reset-password", action="store_true", help="set a new random password, print it and exit "
                   "(for whoever holds the device)")
    s.set_defaults(func=cmd_webui)

    s = sub.add_parser("self-update", help="Pi image: download the app bundle from the KV key image_update_url, "
                       "check it, install it on /data/app and restart into it (the image_update command)")
    s.add_argument("--url", help="bundle URL instead of the KV key image_update_url")
    s.add_argument("--app-dir", default="/data/app", help="default %(default)s")
    s.add_argument("--no-restart", action="store_true", help="install and switch, but do not restart the service")
    s.set_defaults(func=lambda args: __import__("ammp_edge.device.selfupdate", fromlist=["cmd"]).cmd(args))

    s = sub.add_parser("update-bundle", help="make an app bundle for self-update from wheels (./build.sh rpi)")
    s.add_argument("--wheels", required=True, help="directory of the app's wheel and its dependencies' wheels")
    s.add_argument("--drivers", required=True)
    s.add_argument("--conf", required=True)
    s.add_argument("--out", required=True, help="the .tar to write (and .tar.sha256 beside it)")
    s.add_argument("--version", required=True)
    s.add_argument("--platform", default="aarch64", help="uname -m of the target (default %(default)s)")
    s.add_argument("--python", default="3.11", help="the target's Python (default %(default)s)")
    s.set_defaults(func=lambda args: __import__("ammp_edge.device.selfupdate", fromlist=["cmd"]).cmd(args))

    s = sub.add_parser("device-settings", help="the Raspberry Pi image's settings file on the boot partition "
                       "(network, Wi-Fi, access point, SSH, host name, time zone)")
    ds = s.add_subparsers(dest="action", required=True)
    c = ds.add_parser("check", help="print the problems of a settings file (exit 1 when there are any)")
    c.add_argument("file")
    c.add_argument("--zoneinfo", default="/usr/share/zoneinfo", help="time zone database (default %(default)s)")
    a = ds.add_parser("apply", help="apply the file at boot (ammp-edge-settings.service); writes to /run")
    a.add_argument("--file", default="/boot/firmware/ammp-edge.txt", help="default %(default)s")
    a.add_argument("--root", default="/", help="write under this directory instead of / (tests)")
    a.add_argument("--data-dir", help="default $AE_DATA_DIR")
    ds.add_parser("template", help="print the commented settings file the image ships")
    s.set_defaults(func=lambda args: __import__("ammp_edge.device.settings", fromlist=["cmd"]).cmd(args))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
