"""The appliance under a real supervisord: rendering, `up`, bus reconciliation by `node`, restarts,
ordered shutdown; and the watchdog that ends a hung loop so supervisord restarts it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest
from supervisor.options import ServerOptions

from ammp_edge.bus import program as bus
from ammp_edge.core import config as cfg, paths, supervisor, supervisor_conf, watchdog
from ammp_edge.core.configsource import ConfigSource
from ammp_edge.core.kvs import KVStore
from ammp_edge.delivery.outbox import Outbox
from ammp_edge.device import supervise
from helpers.common import AMMP_EDGE, child_env, free_port, write_json


def sma_device(port, unit=3, **extra):
    return {
        "driver": "sma_stp25000",
        "reading_type": "modbustcp",
        "vendor_id": f"inv-{port}",
        "timeout": 1,
        "address": {"host": "127.0.0.1", "port": port, "unit_id": unit},
        **extra,
    }


def site_config(*ports, read_interval=2, **device_extra) -> dict:
    devices = {"lg": {"driver": "sys_generic", "reading_type": "sys", "vendor_id": "lg"}}
    readings = {"mem": {"device": "lg", "var": "memory_usage"}}
    for p in ports:
        devices[f"inv{p}"] = sma_device(p, **device_extra)
        readings[f"p{p}"] = {"device": f"inv{p}", "var": "P_total"}
    return {"devices": devices, "readings": readings, "read_interval": read_interval}


def bus_name(port) -> str:
    return f"bus-tcp_127.0.0.1_{port}"


def parse(conf: Path):
    """The [supervisord] section as supervisord reads it (includes and all)."""
    opts = ServerOptions()
    opts.configfile = str(conf)
    opts.process_config(do_usage=False)
    return opts.configroot.supervisord


# -- rendering --------------------------------------------------------------------------------


def test_rendered_config_is_what_supervisord_reads(tmp_path, builtin_drivers):
    temp = tmp_path / "temp"
    env = {"AE_DATA_DIR": "/data/100%,x y", "MQTT_BRIDGE_PORT": "18830", "HOME": "/root", "AE_ODD": 'a"b'}
    demo = cfg.load(json.loads(Path(paths.PACKAGE_DIR, "defaults", "demo-config.json").read_text()), builtin_drivers)
    (temp / "supervisor.d").mkdir(parents=True)
    (temp / "logs").mkdir()
    (temp / "supervisord.conf").write_text(supervise.render_main(supervise.fixed_programs(demo), temp, env))
    for bus_id in ("sys", "tcp_10.0.0.7_502"):
        prog = supervisor_conf.bus_program(bus_id)
        (temp / "supervisor.d" / f"{prog.name}.conf").write_text(supervisor_conf.render_program(prog, temp, env))

    opts = parse(temp / "supervisord.conf")
    assert (opts.nodaemon, opts.identifier) == (True, "ammp-edge")
    assert opts.nodaemon and opts.logfile == str(temp / "supervisord.log") and opts.childlogdir == str(temp / "logs")
    assert opts.pidfile == str(temp / "supervisord.pid") and opts.logfile_maxbytes == 1024 * 1024
    (server,) = opts.server_configs  # the unix socket only: no inet listener
    assert server["file"] == str(temp / "supervisor.sock") and server["chmod"] == 0o700
    groups = {g.name: g for g in opts.process_group_configs}
    assert set(groups) == {
        "mosquitto",
        "bridge-config",
        "publisher",
        "node",
        "webui",
        "sim-inverter",
        "sim-meter",
        "bus-sys",
        "bus-tcp_10.0.0.7_502",
    }
    # supervisord stops the group with the highest priority first (supervisord.runforever)
    stop_order = [g.name for g in sorted(groups.values(), reverse=True)]
    assert stop_order[:2] == ["bus-sys", "bus-tcp_10.0.0.7_502"] or stop_order[:2] == [
        "bus-tcp_10.0.0.7_502",
        "bus-sys",
    ]
    assert stop_order[2:7] == ["webui", "node", "publisher", "bridge-config", "mosquitto"]
    assert set(stop_order[7:]) == {"sim-inverter", "sim-meter"}

    for g in groups.values():
        p = g.process_configs[0]
        assert (p.autorestart is True or p.autorestart.__name__ == "RestartUnconditionally") and p.startsecs == 1
        assert p.startretries >= 100 and p.stopsignal == signal.SIGTERM and p.stopwaitsecs == 10 and p.killasgroup
        assert p.redirect_stderr and p.stdout_logfile == str(temp / "logs" / f"{g.name}.log")
        assert p.stdout_logfile_maxbytes == 1024 * 1024 and p.stdout_logfile_backups == 2
        assert p.environment["AE_DATA_DIR"] == "/data/100%,x y" and p.environment["MQTT_BRIDGE_PORT"] == "18830"
        assert "HOME" not in p.environment and "AE_ODD" not in p.environment  # not passable: inherited instead
    bus_cmd = groups["bus-tcp_10.0.0.7_502"].process_configs[0].command
    assert bus_cmd == f"{sys.executable} -m ammp_edge bus tcp_10.0.0.7_502"
    assert groups["mosquitto"].process_configs[0].command == f"{sys.executable} -m ammp_edge broker"
    assert (
        groups["sim-inverter"]
        .process_configs[0]
        .command.endswith("simulate --driver sma_stp25000 --host 127.0.0.1 --port 15020 --unit 3")
    )


def test_program_names_are_safe_for_supervisord():
    assert supervisor_conf.bus_program("serial_ttyUSB0").name == "bus-serial_ttyUSB0"
    assert supervisor.program_name("sim-", "my inverter:1/a%") == "sim-my_inverter_1_a_"


def test_every_program_is_a_subcommand_that_exists():
    from ammp_edge.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for prog in supervise.fixed_programs():
        assert prog.command[:3] == [sys.executable, "-m", "ammp_edge"] and prog.command[3] in sub.choices, prog


@pytest.mark.parametrize("command", ["up", "node", "broker", "publisher", "bridge-config"])
def test_help(command):
    r = subprocess.run([*AMMP_EDGE, command, "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and f"usage: ammp-edge {command}" in r.stdout


def test_up_refuses_an_unusable_config_and_keeps_the_stored_one(tmp_path):
    KVStore().set_raw("config", b'{"devices": {}, "readings": {}}')
    bad = write_json(tmp_path / "bad.json", {"devices": [], "read_interval": 0})
    r = subprocess.run([*AMMP_EDGE, "up", "--config", str(bad)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert f"{bad}: devices: missing or not an object" in r.stderr and f"{bad}: read_interval:" in r.stderr
    assert KVStore().get_raw("config") == b'{"devices": {}, "readings": {}}'
    assert not (Path(os.environ["AE_TEMP_DIR"]) / "supervisord.conf").exists()


def test_a_hung_supervisord_does_not_hang_the_client(tmp_path):
    import socket

    with socket.socket(socket.AF_UNIX) as silent:  # accepts, never answers
        silent.bind(str(tmp_path / "s.sock"))
        silent.listen()
        started = time.monotonic()
        with pytest.raises(OSError):
            supervisor.connect(tmp_path / "s.sock", timeout=0.5).supervisor.getState()
        assert time.monotonic() - started < 3


# -- watchdog ---------------------------------------------------------------------------------

HUNG_LOOP = textwrap.dedent("""
    import time
    from ammp_edge.core import watchdog
    wd = watchdog.Watchdog("test loop", 1.0).start()
    for _ in range(8):          # 2.4 s of a healthy loop: longer than the limit, ticked in time
        wd.tick()
        time.sleep(0.3)
    print("hanging now", flush=True)
    def stuck_in_a_read():
        time.sleep(60)
    stuck_in_a_read()
""")


def test_watchdog_ends_a_hung_loop_with_70_and_a_stack_dump():
    started = time.monotonic()
    r = subprocess.run([sys.executable, "-c", HUNG_LOOP], capture_output=True, text=True, timeout=30)
    assert r.returncode == 70, r.stderr
    assert r.stdout == "hanging now\n"  # the ticks kept it alive before the hang
    assert "watchdog: test loop: no progress for" in r.stderr
    assert "Thread 0x" in r.stderr and "in stuck_in_a_read" in r.stderr  # every thread's stack, the hung one too
    assert time.monotonic() - started < 10


HEARTBEAT = textwrap.dedent("""
    import time
    from ammp_edge.core import watchdog
    watchdog.heartbeat("bus x", 1.0)
    time.sleep(3)
""")


@pytest.mark.parametrize("under_supervisord, code", [(True, 70), (False, 0)])
def test_heartbeat_arms_only_under_supervisord(under_supervisord, code):
    env = child_env()
    env.pop("SUPERVISOR_ENABLED", None)
    if under_supervisord:
        env["SUPERVISOR_ENABLED"] = "1"
    r = subprocess.run([sys.executable, "-c", HEARTBEAT], capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == code, r.stderr


def test_bus_silence_limits(builtin_drivers):
    conf = site_config(1502, 1503, read_interval=60)
    conf["devices"]["inv1502"]["deadline"] = 30
    config = cfg.load(conf, builtin_drivers)
    bus_id = "tcp_127.0.0.1_1502"
    assert watchdog.bus_max_silence(config, bus_id) == 3 * 60 + 2 * 30
    assert watchdog.bus_max_silence(config, bus_id, polling=True) == 60
    conf["devices"]["inv1502"]["deadline"] = 45
    assert watchdog.bus_max_silence(cfg.load(conf, builtin_drivers), bus_id, polling=True) == 90
    assert watchdog.bus_max_silence(None, bus_id) == 60


def test_bus_loop_beats_before_sleeping_and_before_polling(builtin_drivers, monkeypatch):
    beats = []
    monkeypatch.setattr(watchdog, "heartbeat", lambda name, limit: beats.append((name, limit)))
    conf = site_config(read_interval=30)
    source = ConfigSource()
    source.config = cfg.load(conf, builtin_drivers)
    monkeypatch.setattr(source, "current", lambda: source.config)
    bus.run_bus("sys", source, lambda readout: None, threading.Event(), once=True)
    assert beats == [("bus sys", 3 * 30 + 2 * 10), ("bus sys", 60)]  # sys device: deadline 2 x 5 s


# -- the appliance under a real supervisord ---------------------------------------------------


class Appliance:
    """`ammp-edge up` as a subprocess in the test's own AE_DATA_DIR / AE_TEMP_DIR."""

    def __init__(self, config: dict, tmp_path: Path):
        self.temp = Path(os.environ["AE_TEMP_DIR"])
        self.config_file = write_json(tmp_path / "site.json", config)
        self.env = child_env(MQTT_BRIDGE_PORT=free_port(), LOGGING_LEVEL="info")
        self.proc = subprocess.Popen(
            [*AMMP_EDGE, "up", "--config", str(self.config_file)],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.seen_pids: set[int] = {self.proc.pid}

    def rpc(self):
        return supervisor.connect(self.temp / "supervisor.sock")

    def info(self) -> dict[str, dict]:
        infos = {i["name"]: i for i in self.rpc().supervisor.getAllProcessInfo()}
        self.seen_pids.update(i["pid"] for i in infos.values() if i["pid"])
        self.seen_pids.add(self.rpc().supervisor.getPID())
        return infos

    def wait_for(self, check, timeout=20.0, what="condition"):
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            assert self.proc.poll() is None, f"up exited ({self.proc.returncode}): {self.proc.stdout.read()}"
            try:
                last = self.info()
                if check(last):
                    return last
            except OSError:
                pass  # supervisord not listening yet
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}: {last}")

    def wait_running(self, names, timeout=20.0) -> dict[str, dict]:
        return self.wait_for(
            lambda i: all(i.get(n, {}).get("statename") == "RUNNING" for n in names),
            timeout,
            f"RUNNING {sorted(names)}",
        )

    def log(self, name: str) -> str:
        path = self.temp / ("supervisord.log" if name == "supervisord" else f"logs/{name}.log")
        return path.read_text() if path.exists() else ""

    def set_config(self, raw: bytes) -> None:
        store = KVStore()
        store.set_raw("config", raw)
        store.close()

    def terminate(self, timeout=15.0) -> tuple[int, float]:
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        return rc, time.monotonic() - started

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


def own_programs(*ports) -> set[str]:
    """Programs this build runs for a config: the fixed ones that exist and one per bus."""
    fixed = {p.name for p in supervise.fixed_programs()}
    return fixed | {"bus-sys"} | {bus_name(p) for p in ports}


def leftovers(temp: Path, pids: set[int]) -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            env = proc.environ()
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            env = {}
        try:
            if proc.pid in pids or env.get("AE_TEMP_DIR") == str(temp):
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(f"{proc.pid} {' '.join(proc.info['cmdline'] or [])}")
        except psutil.NoSuchProcess:
            pass
    for child in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
        except psutil.NoSuchProcess:
            continue
        if any(word in cmd for word in ("ammp_edge", "mosquitto", "supervisord")):
            found.append(f"{child.pid} {cmd} (child of the test)")
    return found


@pytest.fixture
def sma_sims(simulator, builtin_drivers):
    def make(n, **kw):
        return [
            simulator({3: builtin_drivers["sma_stp25000"]}, values={3: {"P_total": 1000.0 + i}}, **kw) for i in range(n)
        ]

    return make


@pytest.mark.slow
def test_node_reconciles_bus_programs_with_the_config(tmp_path, sma_sims):
    a, b, c = (s.port for s in sma_sims(3))
    app = Appliance(site_config(a, b), tmp_path)
    try:
        info = app.wait_running(own_programs(a, b))
        assert not {n for n in info if n.startswith("bus-")} - {"bus-sys", bus_name(a), bus_name(b)}
        pids = {n: info[n]["pid"] for n in ("bus-sys", bus_name(a), bus_name(b))}
        again = subprocess.run([*AMMP_EDGE, "up"], capture_output=True, text=True, timeout=30, env=app.env)
        assert again.returncode == 1 and "already running" in again.stderr

        # a third bus: started within a few seconds, the others keep running untouched
        app.set_config(json.dumps(site_config(a, b, c)).encode())
        t0 = time.monotonic()
        info = app.wait_running([bus_name(c)], timeout=10)
        assert time.monotonic() - t0 < 6
        assert {n: info[n]["pid"] for n in pids} == pids
        assert (app.temp / "supervisor.d" / f"{bus_name(c)}.conf").exists()

        # a bus leaves: stopped and removed, its include deleted; the others untouched
        app.set_config(json.dumps(site_config(a, c)).encode())
        info = app.wait_for(lambda i: bus_name(b) not in i, timeout=15, what=f"{bus_name(b)} removed")
        assert not (app.temp / "supervisor.d" / f"{bus_name(b)}.conf").exists()
        assert all(info[n]["statename"] == "RUNNING" for n in ("bus-sys", bus_name(a), bus_name(c)))
        assert info["bus-sys"]["pid"] == pids["bus-sys"] and info[bus_name(a)]["pid"] == pids[bus_name(a)]
        pids = {n: info[n]["pid"] for n in info}

        # unusable configs in the KV store change nothing
        app.set_config(b"{ not json")
        time.sleep(3)
        app.set_config(json.dumps({"devices": [], "readings": {}}).encode())
        time.sleep(4.5)
        info = app.info()
        assert {n: i["pid"] for n, i in info.items()} == pids
        assert all(i["statename"] == "RUNNING" for n, i in info.items() if n in own_programs(a, c))
        assert "config cannot be used, keeping the previous one" in app.log("node")
        assert app.proc.poll() is None
    finally:
        app.close()


@pytest.mark.slow
def test_killed_bus_is_restarted_and_sigterm_stops_everything_in_order(tmp_path, sma_sims, isolated_dirs):
    data, temp = isolated_dirs
    slow, fast = sma_sims(2, delay=0.8)[0], sma_sims(1)[0]  # the slow device keeps its bus mid-cycle most of the time
    config = site_config(slow.port, fast.port, read_interval=2, timeout=3)
    app = Appliance(config, tmp_path)
    try:
        info = app.wait_running(own_programs(slow.port, fast.port))
        victim = bus_name(fast.port)
        old = info[victim]["pid"]
        os.kill(old, signal.SIGKILL)
        info = app.wait_for(
            lambda i: i[victim]["statename"] == "RUNNING" and i[victim]["pid"] not in (0, old),
            timeout=10,
            what=f"{victim} restarted",
        )
        assert info["bus-sys"]["statename"] == "RUNNING"
        if "publisher" in info:  # keep what the buses commit from now on in the outbox, to look at
            app.rpc().supervisor.stopProcess("publisher")
        time.sleep(4)  # some cycles on every bus
        app.info()

        log_offset = len(app.log("supervisord"))
        sigterm_at = time.time()
        rc, took = app.terminate(timeout=15)
        assert rc == 0, app.proc.stdout.read()
        assert took < 15
    finally:
        app.close()

    sv_log = app.log("supervisord")[log_offset:]
    stopped = [line.split("stopped: ")[1].split()[0] for line in sv_log.splitlines() if "stopped: " in line]
    buses = [n for n in stopped if n.startswith("bus-")]
    assert set(buses) == {"bus-sys", bus_name(slow.port), bus_name(fast.port)}, sv_log
    assert stopped.index("node") > max(stopped.index(n) for n in buses)  # buses first
    order = [n for n in ("node", "publisher", "bridge-config", "mosquitto") if n in stopped]
    assert order == sorted(order, key=stopped.index), stopped
    assert "with SIGKILL" not in sv_log, sv_log  # nobody had to be killed
    for n in buses:
        assert f"stopped: {n} (exit status 0)" in sv_log
        assert "finishing the current cycle and stopping" in app.log(n)

    box = Outbox(data / "outbox")
    records = [r for _, r in box.pending(10_000)]
    box.close()
    last = {}
    for r in records:
        last[r["bus"]] = r
    slow_bus = f"tcp_127.0.0.1_{slow.port}"
    assert set(last) == {"sys", slow_bus, f"tcp_127.0.0.1_{fast.port}"}
    # the slow bus was polling when SIGTERM came (or had just finished): its last cycle is complete and committed
    assert last[slow_bus]["t"] >= sigterm_at - 2 - 0.5 and last[slow_bus]["devices"][0]["P_total"] == 1000.0
    assert not leftovers(temp, app.seen_pids)
