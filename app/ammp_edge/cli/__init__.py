"""`ammp-edge`: one console script; every appliance program is a subcommand (`--help` on each)."""

from __future__ import annotations

import argparse
import logging
import sys

from .. import __version__
from ..core import paths
from . import programs, tools

log = logging.getLogger("ammp_edge")


def setup_logging(level: str | None = None) -> None:
    logging.basicConfig(
        level=getattr(logging, (level or paths.log_level()).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def cmd_selfupdate(args: argparse.Namespace) -> int:
    from ..device import selfupdate  # urllib and OpenSSL: only for this command

    return selfupdate.cmd(args)


def cmd_device_settings(args: argparse.Namespace) -> int:
    from ..device import settings

    return settings.cmd(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ammp-edge", description="Edge data logger for energy systems.")
    p.add_argument("--version", action="version", version=f"ammp-edge {__version__}")
    p.add_argument("--log-level", help="debug, info, warning, error (default: $LOGGING_LEVEL or info)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("read", help="read every device of a config once and print the values")
    s.add_argument("--config", required=True, help="config JSON file")
    s.add_argument("--device", action="append", metavar="ID", help="only this device (repeatable)")
    s.add_argument("--json", action="store_true", help="print the upstream readout message instead of a table")
    s.set_defaults(func=tools.cmd_read)

    s = sub.add_parser("validate", help="check config or driver files; prints FILE: json.path: message")
    s.add_argument("files", nargs="+", metavar="FILE")
    s.set_defaults(func=tools.cmd_validate)

    s = sub.add_parser("bus", help="poll the devices of one bus every cycle and commit each readout to the outbox")
    s.add_argument("bus_id", metavar="BUS_ID", help="e.g. sys, tcp_192.168.1.10_502, serial_ttyUSB0")
    s.add_argument("--config", help="config file (default: the KV store key 'config')")
    s.add_argument("--print", action="store_true", help="also print each readout as a table")
    s.add_argument("--once", action="store_true", help="one cycle now, then exit")
    s.add_argument(
        "--no-outbox", action="store_true", help="do not commit readouts (with --print, for trying a config)"
    )
    s.set_defaults(func=programs.cmd_bus)

    s = sub.add_parser(
        "publisher", help="join each cycle's bus readouts into one u/data message and deliver it at least once"
    )
    s.add_argument("--config", help="config file (default: the KV store key 'config'), for outputs and grouping")
    s.add_argument("--settle", type=float, default=1.0, help="seconds a bridge must stay up after a PUBACK (default 1)")
    s.add_argument(
        "--backlog-rate", type=float, default=1000.0, help="backlog messages per second at most (default 1000)"
    )
    s.set_defaults(func=programs.cmd_publisher)

    s = sub.add_parser("simulate", help="serve a simulated device over Modbus TCP from a driver")
    s.add_argument("--driver", required=True, help="built-in driver name or a driver .json file")
    where = s.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", type=int, help="serve Modbus TCP on this port")
    where.add_argument("--serial", metavar="PATH", help="serve Modbus RTU on this serial port instead")
    where.add_argument(
        "--speedwire",
        nargs="?",
        const="239.12.255.254:9522",
        metavar="GROUP:PORT",
        help="send an SMA Energy Meter's datagrams to this group out of loopback (default 239.12.255.254:9522)",
    )
    s.add_argument("--serial-number", type=int, default=1900000001, help="Speedwire: the meter's serial")
    s.add_argument("--interval", type=float, default=1.0, help="Speedwire: seconds between datagrams (default 1)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--baudrate", type=int, default=9600, help="RTU (default 9600)")
    s.add_argument("--parity", default="none", choices=["none", "even", "odd"], help="RTU (default none)")
    s.add_argument("--stopbits", type=int, default=1, choices=[1, 2], help="RTU (default 1)")
    s.add_argument(
        "--airtime", action="store_true", help="RTU: delay answers by their time on a real line at the baud rate"
    )
    s.add_argument("--unit", type=int, action="append", help="unit id to answer (repeatable; default 1)")
    s.add_argument("--values", help="JSON file {field: value} (default: plausible changing values)")
    s.add_argument("--delay-ms", type=float, default=0.0, help="added to every response")
    s.add_argument(
        "--strict", action="store_true", help="only the driver's registers exist (gaps answer illegal address)"
    )
    s.add_argument(
        "--silent-gaps",
        action="store_true",
        help="only the driver's registers exist, and a read touching any other gets no answer at all",
    )
    s.set_defaults(func=tools.cmd_simulate)

    s = sub.add_parser(
        "bridge-config",
        help="render the local broker and bridge config from the KV store; "
        "restart the broker through supervisord when it changes",
    )
    s.add_argument("--once", action="store_true", help="render (and check the broker's persistence), then exit")
    s.add_argument("--interval", type=float, default=5.0, help="seconds between KV store checks (default 5)")
    s.add_argument("--program", default="mosquitto", help="supervisord program name of the broker (default mosquitto)")
    s.set_defaults(func=programs.cmd_bridge_config)

    s = sub.add_parser("broker", help="run the local mosquitto (after checking its persistence file)")
    s.set_defaults(func=programs.cmd_broker)

    s = sub.add_parser("kvs", help="get or set a key in the KV store (AE_DATA_DIR/kvs-db/kvstore.db)")
    kv = s.add_subparsers(dest="action", required=True)
    g = kv.add_parser("get", help="print a value (strings bare, everything else as JSON)")
    g.add_argument("key")
    st = kv.add_parser("set", help="store a value (as JSON when it parses, else as a string)")
    st.add_argument("key")
    st.add_argument("value")
    s.set_defaults(func=tools.cmd_kvs)

    s = sub.add_parser(
        "up", help="the whole appliance under supervisord, in the foreground (SIGTERM stops it in order)"
    )
    which = s.add_mutually_exclusive_group()
    which.add_argument(
        "--config",
        metavar="FILE",
        help="store this config in the KV store key 'config' first (refused with its problems when unusable)",
    )
    which.add_argument(
        "--demo",
        action="store_true",
        help="store the demo config and simulate its devices; "
        "no activation or HTTP request to any cloud (AE_OFFLINE=1)",
    )
    s.set_defaults(func=programs.cmd_up)

    s = sub.add_parser(
        "node",
        help="activation, config intake (AMMP API, d/config, provisioning file), commands, "
        "metadata, clock; keeps the bus programs in step with the config",
    )
    s.set_defaults(func=programs.cmd_node)

    s = sub.add_parser(
        "webui",
        help="the web UI for commissioning (port $AE_WEBUI_PORT, default 8000, on $AE_WEBUI_HOST, default 0.0.0.0)",
    )
    s.add_argument("--host", help="address to listen on (default $AE_WEBUI_HOST or 0.0.0.0)")
    s.add_argument("--port", type=int, help="port (default $AE_WEBUI_PORT or 8000)")
    s.add_argument(
        "--reset-password",
        action="store_true",
        help="set a new random password, print it and exit (for whoever holds the device)",
    )
    s.set_defaults(func=programs.cmd_webui)

    s = sub.add_parser(
        "self-update",
        help="Pi image: download the app bundle from the KV key image_update_url, "
        "check it, install it on /data/app and restart into it (the image_update command)",
    )
    s.add_argument("--url", help="bundle URL instead of the KV key image_update_url")
    s.add_argument("--app-dir", default=str(paths.DEFAULT_APP_DIR), help="default %(default)s")
    s.add_argument("--no-restart", action="store_true", help="install and switch, but do not restart the service")
    s.set_defaults(func=cmd_selfupdate)

    s = sub.add_parser("update-bundle", help="make an app bundle for self-update from wheels (./build.sh rpi)")
    s.add_argument("--wheels", required=True, help="directory of the app's wheel and its dependencies' wheels")
    s.add_argument("--drivers", required=True)
    s.add_argument("--conf", required=True)
    s.add_argument("--out", required=True, help="the .tar to write (and .tar.sha256 beside it)")
    s.add_argument("--version", required=True)
    s.add_argument("--platform", default="aarch64", help="uname -m of the target (default %(default)s)")
    s.add_argument("--python", default="3.11", help="the target's Python (default %(default)s)")
    s.set_defaults(func=cmd_selfupdate)

    s = sub.add_parser(
        "device-settings",
        help="the Raspberry Pi image's settings file on the boot partition "
        "(network, Wi-Fi, access point, SSH, host name, time zone)",
    )
    ds = s.add_subparsers(dest="action", required=True)
    c = ds.add_parser("check", help="print the problems of a settings file (exit 1 when there are any)")
    c.add_argument("file")
    c.add_argument("--zoneinfo", default=str(paths.ZONEINFO_DIR), help="time zone database (default %(default)s)")
    a = ds.add_parser("apply", help="apply the file at boot (ammp-edge-settings.service); writes to /run")
    a.add_argument("--file", default=str(paths.PI_SETTINGS_FILE), help="default %(default)s")
    a.add_argument("--root", default="/", help="write under this directory instead of / (tests)")
    a.add_argument("--data-dir", help="default $AE_DATA_DIR")
    ds.add_parser("template", help="print the commented settings file the image ships")
    s.set_defaults(func=cmd_device_settings)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
