"""The appliance images, built for real and run: `./build.sh docker` (README "Images").

Docker: the image is built with build.sh (the base image from Debian packages when no registry can
be reached), then run with host networking against a device simulated in this test process, with the
data directory (/data) and the volatile directory bind-mounted from a temporary directory so the test
can read the KV store, the outbox and the programs' logs:

1. with the AMMP bridge pointed at a closed port, nothing leaves the outbox: /health is healthy
   within 60 s, buses commit cycles, `docker stop` exits 0 within 15 s, and every cycle a bus
   committed is in the outbox afterwards (nothing lost at the stop);
2. a new container on the same data directory, bridge off: same node id and web UI password, every
   readout left in the outbox from step 1 is delivered to the container's local broker, live data
   (with the simulated device's values) is on that broker (mosquitto_sub), a second stop is clean.

Raspberry Pi: `./build.sh rpi`, the partition table and file systems checked, then copies of the image
booted under qemu-system-aarch64 with a settings file and a config on their boot partition: `-M virt`
with the image's own kernel (settings honoured, data partition grown, read-only root, access point on a
virtual radio, password on the boot partition, data at a TLS broker on the host) and `-M raspi3b` with
the Pi 3B device tree.

Each image is built once per session, in the background from the start of the session (tests/
helpers/image_builds.py; conftest.py runs these tests last so the builds overlap the rest of the suite).

Every wait is derived from a speed this run measures (none is tuned to one machine): for Docker, from
the image build's time and the first container's time to /health; for the Pi, from `Pace`, a short
calibration of this machine's arm64 emulation (the image's kernel booted to its panic for want of a
root file system), and, once the first boot is up, from that boot's own time. The factors carry a
margin of 4x or more over the ratios measured on a fast and on a slowed-down run (README "Raspberry
Pi"); a longer wait costs time only on failure. When a wait runs out, the test prints what the guest
logged: the serial console (the journal is forwarded to it) and, over SSH, the failed units, the
journal, supervisord's log and every program's log. The measured times are written to
test-artifacts/image-timings.json.

Skipped, with the reason, only outside CI when the tools are missing and cannot be installed
(`scripts/setup --test --images`, which scripts/test runs); under CI (CI=true) that is a failure.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from ammp_edge.core.kvs import KVStore
from ammp_edge.delivery.outbox import Outbox
from helpers import image_builds
from helpers.brokers import wait_until
from helpers.common import AMMP_EDGE, REPO, free_port

pytestmark = [pytest.mark.slow, pytest.mark.images]

COMMITTED = re.compile(r"committed t=(\d+) key=\d+ devices=(\S*)")
NODE_ID = "0242ac11beef"


TIMINGS: dict[str, float] = {}  # what this run measured, written to test-artifacts/image-timings.json


@pytest.fixture(scope="module", autouse=True)
def _timings():
    yield
    if TIMINGS:
        image_builds.ARTIFACTS.mkdir(exist_ok=True)
        (image_builds.ARTIFACTS / "image-timings.json").write_text(json.dumps(TIMINGS, indent=1) + "\n")


def _built(target: str) -> image_builds.Build:
    t0 = time.monotonic()
    build = image_builds.result(target)
    waited = time.monotonic() - t0
    if build.skipped:
        if os.environ.get("CI"):
            pytest.fail(f"CI cannot build the {target} image: {build.skipped}")
        pytest.skip(build.skipped)
    assert not build.error, build.error
    steps = re.findall(r"build.sh: \[ *(\d+) s\] (.*)", build.log.read_text())
    print(
        f"built {build.output} in {build.seconds:.0f} s in the background; this test waited {waited:.0f} s for it;"
        f" steps (s from the start): " + "; ".join(f"{t} {what[:60]}" for t, what in steps)
    )
    TIMINGS[f"build_{target}_s"] = round(build.seconds, 1)
    TIMINGS[f"build_{target}_waited_s"] = round(waited, 1)
    return build


@pytest.fixture(scope="module")
def docker_image() -> tuple[str, float]:
    """The image's tag and how long it took to build (the scale of the Docker waits)."""
    build = _built("docker")
    return build.output, build.seconds


def _docker(*args, timeout=120, check=True) -> subprocess.CompletedProcess:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert out.returncode == 0, f"docker {' '.join(args)}: {out.stderr}"
    return out


def _health(port: int, timeout: float = 3) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=timeout) as answer:
            body = json.load(answer)
            return body if answer.status == 200 else None
    except Exception:  # noqa: BLE001 - not up yet
        return None


def _committed(temp: Path) -> set[tuple[int, str]]:
    """(t, bus) of every readout a bus committed to the outbox, from the buses' debug logs."""
    out = set()
    for log in (temp / "logs").glob("bus-*.log*"):
        bus = log.name.split(".log")[0][len("bus-") :]
        for m in COMMITTED.finditer(log.read_text(errors="replace")):
            out.add((int(m.group(1)), bus))
    return out


def _outbox(data: Path) -> dict[int, tuple[int, str]]:
    box = Outbox(data / "outbox")
    try:
        return {k: (int(r["t"]), str(r.get("bus"))) for k, r in box.read_from(None, limit=100000)}
    finally:
        box.close()


class Container:
    def __init__(self, image: str, root: Path, config: Path):
        self.image, self.root, self.config = image, root, config
        self.data, self.temp = root / "data", root / "run"
        self.data.mkdir(exist_ok=True)
        self.mqtt_port, self.web_port = free_port(), free_port()
        self.name: str | None = None
        self.names: list[str] = []

    def run(self, *args: str) -> float:
        if self.temp.exists():
            shutil.rmtree(self.temp)
        self.temp.mkdir()
        self.name = f"ae-test-{uuid.uuid4().hex[:8]}"
        self.names.append(self.name)
        t0 = time.monotonic()
        _docker(
            "run",
            "-d",
            "--name",
            self.name,
            "--network",
            "host",
            "--stop-timeout",
            "30",
            "-e",
            f"MQTT_BRIDGE_PORT={self.mqtt_port}",
            "-e",
            f"AE_WEBUI_PORT={self.web_port}",
            "-e",
            "LOGGING_LEVEL=debug",
            "-v",
            f"{self.data}:/data",
            "-v",
            f"{self.temp}:/run/ammp-edge",
            "-v",
            f"{self.config}:/etc/ammp-edge-test/config.json:ro",
            self.image,
            *args,
        )
        return t0

    def wait(self, predicate, timeout: float, what: str, interval: float = 0.5):
        """wait_until, and when it runs out: print the container's output and every program's log."""
        try:
            return wait_until(predicate, timeout, interval, what=what)
        except AssertionError:
            print(f"--- docker logs {self.name}\n" + _docker("logs", self.name, check=False).stderr[-4000:])
            for log in sorted((self.temp / "logs").glob("*.log")):
                print(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}")
            raise

    def wait_healthy(self, t0: float, within: float) -> float:
        def ok():
            body = _health(self.web_port)
            return (
                body
                if body
                and body["status"] == "ok"
                and body["programs"]
                and all(s == "RUNNING" for s in body["programs"].values())
                else None
            )

        self.wait(ok, within, "/health ok with every program RUNNING")
        return time.monotonic() - t0

    def stop(self) -> tuple[float, int]:
        t0 = time.monotonic()
        _docker("stop", "--time", "30", self.name, timeout=60)
        took = time.monotonic() - t0
        rc = int(_docker("inspect", "-f", "{{.State.ExitCode}}", self.name).stdout.strip())
        return took, rc

    def remove(self) -> None:
        for name in self.names:
            _docker("rm", "-f", name, check=False)


@pytest.fixture
def simulated_inverter():
    port = free_port()
    proc = subprocess.Popen(
        [*AMMP_EDGE, "simulate", "--driver", "sma_stp25000", "--port", str(port), "--unit", "3"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import socket

    def listening():
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_until(listening, 30, 0.2, what="the simulator listening")
    yield port
    proc.terminate()
    proc.wait(10)


def test_docker_image_runs_stops_cleanly_and_keeps_its_volume(docker_image, simulated_inverter, tmp_path):
    image, build_s = docker_image
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "devices": {
                    "inv": {
                        "driver": "sma_stp25000",
                        "reading_type": "modbustcp",
                        "vendor_id": "test-inv",
                        "address": {"host": "127.0.0.1", "port": simulated_inverter, "unit_id": 3},
                        "timeout": 2,
                    }
                },
                "readings": {
                    "pv_P": {"device": "inv", "var": "P_total"},
                    "pv_E": {"device": "inv", "var": "total_yield"},
                },
                "read_interval": 1,
                "read_roundtime": True,
            }
        )
    )
    c = Container(image, tmp_path, config)
    kv = KVStore(c.data / "kvs-db" / "kvstore.db")
    kv.set("node_id", NODE_ID)
    kv.set("access_key", "node-secret")
    kv.set("http_api_base_url", f"http://127.0.0.1:{free_port()}/api/v0")  # closed: no test talks to AMMP
    kv.set("mqtt_bridge_prod_address", f"127.0.0.1:{free_port()}")  # closed: the bridge stays down
    kv.close()
    try:
        # -- 1. bridge down: everything stays in the outbox; the stop loses nothing
        t0 = c.run("up", "--config", "/etc/ammp-edge-test/config.json")
        # the first start: at most as long as the build took, and never less than a minute
        start_s = c.wait_healthy(t0, within=max(60.0, build_s))
        print(f"docker run -> /health ok in {start_s:.1f} s")
        TIMINGS["docker_first_health_s"] = round(start_s, 1)
        # then: the product's own timers (1 s cycles) plus multiples of the start just measured
        c.wait(
            lambda: len([x for x in _committed(c.temp) if x[1].startswith("tcp_")]) >= 3,
            10 + 10 * start_s,
            "three committed cycles of the simulated device",
        )
        health = _docker("inspect", "-f", "{{.State.Health.Status}}", c.name).stdout.strip()
        assert health in ("starting", "healthy"), health
        took, rc = c.stop()
        print(f"docker stop took {took:.1f} s, exit {rc}")
        assert rc == 0, _docker("logs", c.name, check=False).stderr[-3000:]
        assert took < 15
        committed = _committed(c.temp)
        box = _outbox(c.data)
        missing = committed - set(box.values())
        assert committed and not missing, f"committed but not in the outbox: {sorted(missing)}"
        print(f"{len(committed)} readouts committed, all in the outbox ({len(box)} records) after the stop")
        password = (c.data / "webui-initial-password").read_text()

        # -- 2. same volume, new container, bridge off: node id kept, the outbox delivered, live data
        kv = KVStore(c.data / "kvs-db" / "kvstore.db")
        kv.set("mqtt_bridge_prod", False)
        kv.close()
        t0 = c.run("up")  # the config stored in step 1 is in the KV store
        c.wait_healthy(t0, within=10 * start_s + 30)
        live_s = int(10 + 10 * start_s)  # three 1 s cycles, delivered
        sub = subprocess.Popen(
            ["mosquitto_sub", "-p", str(c.mqtt_port), "-t", "u/data", "-C", "3", "-W", str(live_s)],
            stdout=subprocess.PIPE,
            text=True,
        )
        c.wait(
            lambda: not (set(box) & set(_outbox(c.data))),
            10 + 10 * start_s,
            "every readout kept in the outbox from step 1 delivered to the local broker",
        )
        lines = sub.communicate(timeout=live_s + 10)[0].splitlines()
        assert sub.returncode == 0 and len(lines) == 3, lines
        msg = json.loads(lines[-1])
        inv = [r for r in msg["r"] if r.get("_d") == "inv"]
        assert inv and isinstance(inv[0].get("P_total"), (int, float)), msg
        kv = KVStore(c.data / "kvs-db" / "kvstore.db")
        assert kv.get("node_id") == NODE_ID
        kv.close()
        assert (c.data / "webui-initial-password").read_text() == password
        took, rc = c.stop()
        assert rc == 0 and took < 15, (took, rc)
    finally:
        c.remove()


# -- Raspberry Pi image -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rpi_image() -> Path:
    if os.environ.get("AE_TEST_RPI_IMAGE"):  # iterate on the boot tests with an image already built
        return Path(os.environ["AE_TEST_RPI_IMAGE"])
    build = _built("rpi")
    xz = Path(build.output)
    assert xz.is_file() and Path(f"{xz}.sha256").is_file()
    check = subprocess.run(["sha256sum", "-c", f"{xz.name}.sha256"], cwd=xz.parent, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    return xz.with_suffix("")  # the uncompressed .img is kept next to it


def _mtype(image: Path, name: str) -> str:
    return subprocess.run(
        ["mtype", "-i", f"{image}@@4M", f"::{name}"], capture_output=True, text=True, check=True
    ).stdout


def _debugfs_cat(fs: Path, path: str) -> str:
    return subprocess.run(["debugfs", "-R", f"cat {path}", str(fs)], capture_output=True, text=True, check=True).stdout


def test_rpi_image_layout(rpi_image):
    """Boot (FAT), root (ext4, mounted read-only) and data (ext4, /data, last so it can grow) partitions;
    the Pi boot files; no SSH host keys or machine id baked in; the commented settings file."""
    table = subprocess.run(["sfdisk", "-J", str(rpi_image)], capture_output=True, text=True, check=True)
    parts = json.loads(table.stdout)["partitiontable"]["partitions"]
    assert [p["type"] for p in parts] == ["c", "83", "83"] and parts[0]["start"] == 8192 and parts[0].get("bootable")
    files = subprocess.run(
        ["mdir", "-b", "-i", f"{rpi_image}@@4M", "::"], capture_output=True, text=True, check=True
    ).stdout
    for name in (
        "config.txt",
        "cmdline.txt",
        "vmlinuz-",
        "initrd.img-",
        "bcm2711-rpi-4-b.dtb",
        "bcm2837-rpi-3-b.dtb",
        "start4.elf",
        "bootcode.bin",
        "ammp-edge.txt",
    ):
        assert name in files, f"{name} not on the boot partition:\n{files}"
    cmdline = _mtype(rpi_image, "cmdline.txt")
    assert "root=LABEL=RASPIROOT" in cmdline and " ro " in cmdline and " rw " not in cmdline, cmdline
    assert _mtype(rpi_image, "ammp-edge.txt") == (REPO / "image/rpi/boot/ammp-edge.txt").read_text()
    from ammp_edge import __version__

    bundle = rpi_image.parent / f"ammp-edge-app-{__version__}-aarch64.tar"  # what image_update installs
    with tarfile.open(bundle) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
    assert manifest["version"] == __version__ and manifest["platform"] == "aarch64" and manifest["python"] == "3.11"
    assert any(n.startswith("ammp_edge-") for n in manifest["wheels"]), manifest
    assert Path(f"{bundle}.sha256").read_text().split()[0] == hashlib.sha256(bundle.read_bytes()).hexdigest()
    root = rpi_image.parent / "root.ext4"  # genimage's partition images, next to the .img
    if shutil.which("debugfs") and root.is_file():
        fstab = _debugfs_cat(root, "/etc/fstab")
        assert re.search(r"LABEL=RASPIROOT\s+/\s+ext4\s+ro,", fstab) and "LABEL=AMMPDATA" in fstab, fstab
        for label in ("RASPIFIRM", "AMMPDATA"):  # not systemd's 90 s: a slow card, a busy emulating host
            assert re.search(rf"LABEL={label}\s.*x-systemd.device-timeout=10min", fstab), fstab
        assert _debugfs_cat(root, "/etc/machine-id") == ""
        keys = subprocess.run(["debugfs", "-R", "ls /etc/ssh", str(root)], capture_output=True, text=True).stdout
        assert "ssh_host_" not in keys, keys


# -- how fast this machine emulates -------------------------------------------------------------------

# A wait of the boot tests is a Budget: seconds of a free clock and seconds of CPU time that QEMU got.
# The free clock is wall time less the share of the CPUs that other processes held meanwhile (the rest
# of the machine's work is not the guest's fault). A wait runs out when both are spent, or at
# HARD_FACTOR x the free seconds whatever the CPU (a guest that idles and never gets there), or at
# CAP_FACTOR x them in plain wall time (a machine that others keep full). So a host that gets busier
# after the calibration stretches the waits by as much.
#
# Before a first boot a budget is a multiple of Pace's unit (free seconds, and twice as many of its CPU
# seconds); after it, of that boot's own time T1. Ratios measured (README "Raspberry Pi"; calm to
# loaded): -M virt first boot to /health 16-60 units of wall time; -M raspi3b about 120 units of CPU
# time (4 vCPUs), 1.6-3 x the virt boot's wall time; a second boot 0.8-1.1 x T1; image_update to the new
# version running 2.2-2.8 x T1 (the answer comes first). The factors are 3x or more the ratios.
# FIXED_S is the product's own timers inside a wait (wall time only): the 10 s reading grid plus a
# publish, the 5 s restart delay after an update.
BOOT_UNITS = 60
PI3B_BOOT_UNITS = 200
AFTER_BOOT = {
    "access point": 2,
    "data": 3,
    "second boot": 4,
    "update answer": 6,
    "update running": 4,
    "updated data": 3,
    "ssh": 0.5,
}
FIXED_S = 25
HARD_FACTOR = 3
CAP_FACTOR = 10

# A command put before every qemu-system-aarch64 of these tests, to show that the waits follow a slower
# machine: e.g. AE_TEST_QEMU_PREFIX="taskset -c 1" with that core kept busy (README "Raspberry Pi").
QEMU = [*shlex.split(os.environ.get("AE_TEST_QEMU_PREFIX", "")), "qemu-system-aarch64"]


def _die_with_us() -> None:
    """In a QEMU child before exec: SIGKILL when this test process dies, even by SIGKILL (no guest is left
    running after an interrupted run)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class Budget:
    wall: float  # seconds
    cpu: float  # seconds of QEMU's CPU time

    def __str__(self) -> str:
        return f"{self.wall:.0f} s and {self.cpu:.0f} CPU-s of QEMU"


class Pace:
    """How fast this machine emulates arm64 now, measured by the run itself: the unit is a fixed TCG
    workload, the image's own kernel on `-M virt` (as the boot tests run it, no initrd, no disk) from
    launch to its panic for want of a root file system and QEMU's exit (`panic=-1`, `-no-reboot`), in
    wall seconds and in QEMU's CPU seconds, the larger of two runs each. Here that is a few seconds; it
    grows with a slower or a busier machine, and so does every wait derived from it."""

    RUNS = 2

    def __init__(self, kernel: Path, tmp: Path, cap_s: float):
        self.runs: list[tuple[float, float]] = []
        for i in range(self.RUNS):
            log = tmp / f"pace-{i}.log"
            t0, busy0 = time.monotonic(), _host_busy()
            proc = subprocess.Popen(
                [
                    *QEMU,
                    "-M",
                    "virt",
                    "-cpu",
                    "cortex-a72",
                    "-smp",
                    "2",
                    "-m",
                    "1024",
                    "-kernel",
                    str(kernel),
                    "-append",
                    "console=ttyAMA0 panic=-1 root=/dev/vda",
                    "-display",
                    "none",
                    "-serial",
                    f"file:{log}",
                    "-monitor",
                    "none",
                    "-no-reboot",
                    "-nic",
                    "none",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=_die_with_us,
            )
            try:
                _, status, usage = _wait4(proc, cap_s)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    proc.wait()
            wall, cpu = time.monotonic() - t0, usage.ru_utime + usage.ru_stime
            self.runs.append((wall * _free_share(wall, _host_busy() - busy0, cpu), cpu))
            text = log.read_text(errors="replace")
            assert status == 0 and "Kernel panic" in text and "Unable to mount root" in text, (
                f"the calibration boot did not end in the expected panic (status {status}):\n{text[-3000:]}"
            )
        self.unit = Budget(max(w for w, _ in self.runs), max(c for _, c in self.runs))
        TIMINGS["pace_unit_s"] = round(self.unit.wall, 2)
        TIMINGS["pace_unit_cpu_s"] = round(self.unit.cpu, 2)
        print(
            "pace: the kernel's run to its panic took "
            + ", ".join(f"{w:.1f} free s ({c:.1f} CPU-s)" for w, c in self.runs)
            + f": unit {self.unit}"
        )

    def boot(self, units: float = BOOT_UNITS) -> Budget:
        """A first boot: `units` of the calibration's wall time, twice as many of its CPU time."""
        return Budget(units * self.unit.wall, 2 * units * self.unit.cpu)

    @staticmethod
    def after(t1: Budget, what: str) -> Budget:
        """A wait after a first boot that took t1."""
        return Budget(FIXED_S + AFTER_BOOT[what] * t1.wall, 2 * AFTER_BOOT[what] * t1.cpu)


def _record(name: str, guest: Guest, took: Budget) -> None:
    TIMINGS[f"{name}_s"] = round(time.monotonic() - guest.t0, 1)
    TIMINGS[f"{name}_free_s"], TIMINGS[f"{name}_cpu_s"] = round(took.wall, 1), round(took.cpu, 1)


def _host_busy() -> float:
    """CPU seconds the whole machine has been busy (all CPUs; idle and I/O wait not counted)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _free_share(wall: float, host_busy: float, qemu_cpu: float) -> float:
    """The share of the machine other processes left to QEMU over `wall` seconds (0..1)."""
    others = max(0.0, host_busy - qemu_cpu)
    return min(1.0, max(0.0, 1.0 - others / ((os.cpu_count() or 1) * wall)))


def _wait4(proc: subprocess.Popen, timeout: float):
    """os.wait4 of a Popen child with a timeout: (pid, exit status, its resource usage)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return pid, proc.returncode, usage
        time.sleep(0.1)
    raise AssertionError(f"{proc.args[0]} still running after {timeout:.0f} s")


@pytest.fixture(scope="module")
def pace(rpi_image, tmp_path_factory) -> Pace:
    tmp = tmp_path_factory.mktemp("pace")
    subprocess.run(["mcopy", "-n", "-i", f"{rpi_image}@@4M", "::vmlinuz-*", str(tmp / "vmlinuz")], check=True)
    # a cap, not a wait: the image build ran mostly under the same emulation, for minutes
    return Pace(tmp / "vmlinuz", tmp, cap_s=max(TIMINGS.get("build_rpi_s", 0), 900))


# -- one boot of the image ------------------------------------------------------------------------------

GUEST_LOGS = (
    "systemctl --failed --no-pager; echo; journalctl -b --no-pager -n 150 -o short-monotonic; echo;"
    " echo '== /run/ammp-edge/supervisord.log'; tail -n 60 /run/ammp-edge/supervisord.log;"
    ' for f in /run/ammp-edge/logs/*.log; do echo "== $f"; tail -n 40 "$f"; done'
)


class Guest:
    """One boot of a copy of the image under qemu-system-aarch64, with the settings file and a config
    put on the copy's boot partition, the card made larger (the data partition grows into it), the
    guest's web UI and SSH forwarded to host ports, and guest connections to 10.0.2.100:1883 (the
    "cloud" broker), 10.0.2.101:1502 (a simulated inverter) and 10.0.2.102:8080 (the update server)
    carried to host ports by socat. The journal is forwarded to the serial console, so the console log
    says what happened even where SSH does not answer; with `ssh_key` (its public half given to the
    guest as SSH_AUTHORIZED_KEY) a failed wait also prints the programs' logs from the guest."""

    def __init__(
        self,
        image: Path,
        tmp: Path,
        settings: str,
        card_bytes: int,
        guest_ip: str = "",
        broker_port: int | None = None,
        sim_port: int | None = None,
        config: dict | None = None,
        update_port: int | None = None,
        ssh_key: Path | None = None,
    ):
        self.tmp, self.web, self.ssh_port, self.ssh_key = tmp, free_port(), free_port(), ssh_key
        self.disk = tmp / "disk.img"
        self.serial = tmp / "serial.log"
        self.proc: subprocess.Popen | None = None
        self._cpu = 0.0
        self.http_timeout = 10.0
        self.start_timeout_s = 90.0  # systemd's default; the tests set it from Pace
        subprocess.run(["cp", "--sparse=always", str(image), str(self.disk)], check=True)
        for pattern, name in (
            ("::vmlinuz-*", "vmlinuz"),
            ("::initrd.img-*", "initrd.img"),
            ("::bcm2837-rpi-3-b.dtb", "rpi3b.dtb"),
        ):
            subprocess.run(["mcopy", "-n", "-i", f"{self.disk}@@4M", pattern, str(tmp / name)], check=True)
        (tmp / "ammp-edge.txt").write_text(settings)
        subprocess.run(
            ["mcopy", "-o", "-i", f"{self.disk}@@4M", str(tmp / "ammp-edge.txt"), "::ammp-edge.txt"], check=True
        )
        if config is not None:
            (tmp / "config.json").write_text(json.dumps(config))
            subprocess.run(
                ["mcopy", "-o", "-i", f"{self.disk}@@4M", str(tmp / "config.json"), "::ammp-edge-config.json"],
                check=True,
            )
        os.truncate(self.disk, card_bytes)
        net = (
            f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{self.web}-{guest_ip}:8000,"
            f"hostfwd=tcp:127.0.0.1:{self.ssh_port}-{guest_ip}:22"
        )
        if broker_port:
            net += f",guestfwd=tcp:10.0.2.100:1883-cmd:socat - TCP:127.0.0.1:{broker_port}"
        if sim_port:
            net += f",guestfwd=tcp:10.0.2.101:1502-cmd:socat - TCP:127.0.0.1:{sim_port}"
        if update_port:
            net += f",guestfwd=tcp:10.0.2.102:8080-cmd:socat - TCP:127.0.0.1:{update_port}"
        self.net = net

    def systemd_timeouts(self) -> str:
        """systemd's start timeout for a unit (90 s) scaled like the boot's wait: on a slow or busy host an
        emulated boot is 10-40x slower than a Pi's, and a unit that times out breaks the boot whatever the
        test waits. (The image's fstab waits 10 minutes for the boot and data partitions. Not rootdelay:
        the initramfs sleeps that long before it mounts the root.)"""
        return f"systemd.default_timeout_start_sec={int(max(90, self.start_timeout_s))}"

    def boot_virt(self, extra_append: str = "") -> None:
        self._start(
            [
                "-M",
                "virt",
                "-cpu",
                "cortex-a72",
                "-smp",
                "2",
                "-m",
                "1024",
                "-kernel",
                str(self.tmp / "vmlinuz"),
                "-initrd",
                str(self.tmp / "initrd.img"),
                "-append",
                f"root=LABEL=RASPIROOT ro console=ttyAMA0 net.ifnames=0 "
                f"systemd.journald.forward_to_console=1 {self.systemd_timeouts()} {extra_append}".strip(),
                "-drive",
                f"file={self.disk},format=raw,if=none,id=hd0",
                "-device",
                "virtio-blk-pci,drive=hd0",
                "-netdev",
                self.net,
                "-device",
                "virtio-net-pci,netdev=n0,romfile=",
            ]
        )

    def boot_raspi3b(self) -> None:
        self._start(
            [
                "-M",
                "raspi3b",
                "-kernel",
                str(self.tmp / "vmlinuz"),
                "-initrd",
                str(self.tmp / "initrd.img"),
                "-dtb",
                str(self.tmp / "rpi3b.dtb"),
                "-append",
                "console=ttyAMA0,115200 root=LABEL=RASPIROOT ro rootwait net.ifnames=0"
                f" systemd.journald.forward_to_console=1 {self.systemd_timeouts()}",
                "-drive",
                f"file={self.disk},format=raw,if=sd",
                "-netdev",
                self.net,
                "-device",
                "usb-net,netdev=n0",
            ]
        )

    def _start(self, args: list[str]) -> None:
        if self.serial.exists():  # keep the previous boot's console beside
            self.serial.rename(self.serial.with_suffix(f".{int(time.time())}.log"))
        self.t0, self._cpu, self.free = time.monotonic(), 0.0, 0.0
        self._last = (self.t0, _host_busy(), 0.0)
        self.proc = subprocess.Popen(
            [*QEMU, *args, "-display", "none", "-serial", f"file:{self.serial}", "-monitor", "none", "-no-reboot"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_die_with_us,
        )

    def health(self) -> dict | None:
        assert self.proc.poll() is None, f"qemu exited ({self.proc.returncode}): {self.proc.stderr.read()}"
        return _health(self.web, self.http_timeout)

    def cpu(self) -> float:
        """CPU seconds QEMU has had since its launch (every thread)."""
        try:
            t = psutil.Process(self.proc.pid).cpu_times()
            self._cpu = t.user + t.system
        except psutil.Error:
            pass  # gone: the last value
        return self._cpu

    def tick(self) -> None:
        """Advance the free clock: wall time, less the share of the CPUs that other processes held."""
        now, busy, cpu = time.monotonic(), _host_busy(), self.cpu()
        wall, last = now - self._last[0], self._last
        if wall > 0:
            self.free += wall * _free_share(wall, busy - last[1], cpu - last[2])
        self._last = (now, busy, cpu)

    def elapsed(self) -> Budget:
        """Free-clock and CPU time since the launch."""
        self.tick()
        return Budget(self.free, self._cpu)

    def wait(self, predicate, budget: Budget, what: str, interval: float = 2, since_launch: bool = False):
        """Poll until predicate() is truthy and return its value; when `budget` (from now, or from the
        launch) runs out, or qemu is gone: print what the guest logged, then fail. The budget's seconds
        are free-clock seconds (tick)."""
        self.tick()
        t0, f0, c0 = (self.t0, 0.0, 0.0) if since_launch else (time.monotonic(), self.free, self._cpu)
        while True:
            try:
                value = predicate()
            except AssertionError:
                print(self.diagnose())
                raise
            if value:
                return value
            self.tick()
            wall, free, cpu = time.monotonic() - t0, self.free - f0, self._cpu - c0
            if (
                (free >= budget.wall and cpu >= budget.cpu)
                or free >= HARD_FACTOR * budget.wall
                or wall >= CAP_FACTOR * budget.wall
            ):
                print(self.diagnose())
                raise AssertionError(
                    f"timed out after {wall:.0f} s ({free:.0f} s of free clock, {cpu:.0f} CPU-s of"
                    f" QEMU; the budget: {budget}) waiting for {what}"
                )
            time.sleep(interval)

    def wait_up(self, budget: Budget) -> dict:
        """/health ok with every program RUNNING, within `budget` from the launch."""

        def up():
            body = self.health()
            return (
                body if body and body["programs"] and all(s == "RUNNING" for s in body["programs"].values()) else None
            )

        return self.wait(up, budget, "/health from the booted image with every program RUNNING", since_launch=True)

    def ssh(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                "ssh",
                "-i",
                str(self.ssh_key),
                "-p",
                str(self.ssh_port),
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                "-o",
                f"ConnectTimeout={int(timeout)}",
                "root@127.0.0.1",
                command,
            ],
            capture_output=True,
            text=True,
            timeout=timeout + 10,
        )

    def diagnose(self) -> str:
        """What the guest logged: the serial console (kernel, systemd, the journal) and, over SSH, the
        failed units, the journal, supervisord's log and the programs' logs."""
        alive = self.proc is not None and self.proc.poll() is None
        out = [
            f"--- qemu {'running' if alive else f'exited ({self.proc.returncode})'},"
            f" {time.monotonic() - self.t0:.0f} s after launch"
        ]
        if not alive and self.proc is not None:
            out.append(self.proc.stderr.read()[-2000:])
        out += [
            f"--- serial console {self.serial} (last 12000 characters)",
            self.serial.read_text(errors="replace")[-12000:] if self.serial.exists() else "(none)",
        ]
        if self.ssh_key and alive:
            try:
                r = self.ssh(GUEST_LOGS, timeout=120)
                out += [f"--- from the guest over SSH (status {r.returncode})", r.stdout[-20000:], r.stderr[-2000:]]
            except subprocess.TimeoutExpired:
                out.append("--- SSH to the guest did not answer within 120 s")
        return "\n".join(out)

    def boot_file(self, name: str) -> str:
        return _mtype(self.disk, name)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


def _ssh_keys(port: int, timeout: float) -> str:
    return subprocess.run(
        ["ssh-keyscan", "-T", str(int(timeout)), "-p", str(port), "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=timeout * 3 + 10,
    ).stdout


def _host_key(port: int, timeout: float, kind: str = "ed25519") -> str | None:
    """The guest sshd's public host key of one type (ssh-keyscan, a few tries: the guest is emulated)."""
    for _ in range(3):
        out = subprocess.run(
            ["ssh-keyscan", "-T", str(int(timeout)), "-t", kind, "-p", str(port), "127.0.0.1"],
            capture_output=True,
            text=True,
            timeout=timeout * 3 + 10,
        ).stdout
        keys = [line.split()[2] for line in out.splitlines() if len(line.split()) >= 3 and not line.startswith("#")]
        if keys:
            return keys[0]
    return None


GIB = 1024**3


def _update_bundle(image: Path, www: Path, tmp: Path) -> str:
    """An app bundle one version ahead of the image's (the ammp_edge wheel rebuilt with a bumped version,
    the image's aarch64 dependency wheels), as ./build.sh rpi makes it; returns the new version."""
    from ammp_edge import __version__

    new = f"{__version__}.post1"
    src = tmp / "src"
    shutil.copytree(REPO / "app", src / "app", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(REPO / "README.md", src)
    (src / "pyproject.toml").write_text(
        (REPO / "pyproject.toml").read_text().replace(f'version = "{__version__}"', f'version = "{new}"', 1)
    )
    init = src / "app/ammp_edge/__init__.py"
    init.write_text(init.read_text().replace(f'__version__ = "{__version__}"', f'__version__ = "{new}"'))
    wheels = tmp / "wheels"
    wheels.mkdir()
    for whl in (image.parent / "wheels").glob("*.whl"):
        if not whl.name.startswith("ammp_edge-"):
            shutil.copy(whl, wheels)
    env = {**os.environ}
    if Path("/etc/ssl/certs/ca-certificates.crt").is_file():
        env["PIP_CERT"] = "/etc/ssl/certs/ca-certificates.crt"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--disable-pip-version-check",
            "--wheel-dir",
            str(wheels),
            str(src),
        ],
        check=True,
        env=env,
        timeout=600,
    )
    subprocess.run(
        [
            *AMMP_EDGE,
            "update-bundle",
            "--wheels",
            str(wheels),
            "--drivers",
            str(REPO / "drivers"),
            "--conf",
            str(REPO / "conf"),
            "--out",
            str(www / "app.tar"),
            "--version",
            new,
        ],
        check=True,
    )
    return new


def test_rpi_image_boots_in_qemu_virt_with_its_settings_file(
    rpi_image, pace, tmp_path, simulated_inverter, file_server
):
    """The image's own kernel and initrd on `-M virt`, on a 3 GiB card, with a settings file (host name,
    time zone, static address, custom TLS bridge to a broker on the host, one wrong line, an SSH key)
    and a config (a Modbus TCP inverter simulated on the host) on the boot partition, and a virtual
    Wi-Fi radio (mac80211_hwsim): the settings are honoured (the web UI answers on the static address),
    the data partition grew, the root file system is read-only, the access point runs, the web UI
    password on the boot partition logs in, SSH answers with keys made on this device and lets the
    key in, and the inverter's readings reach the broker on the host."""
    from helpers.brokers import Recorder, cloud_broker
    from test_webui import login

    key = tmp_path / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ae-test", "-f", str(key)], check=True, timeout=60
    )
    cloud = cloud_broker(tmp_path, node_user="site-test", node_password="site-secret")
    bridge = {
        "host": "10.0.2.100",
        "port": 1883,
        "tls": True,
        "ca_cert": cloud.ca.ca_crt.read_text(),
        "insecure": True,
        "username": "site-test",
        "password": "site-secret",
        "topic_prefix": "sites/test/",
    }
    settings = (
        "# test settings\nHOSTNAME=site-test\nTIMEZONE=Africa/Nairobi\nETH_ADDRESS=10.0.2.50/24\n"
        "ETH_GATEWAY=10.0.2.2\nDNS=10.0.2.3\nWIFI_AP_CHANNEL=99\nUPDATE_URL=http://10.0.2.102:8080/app.tar\n"
        f"SSH_AUTHORIZED_KEY={(tmp_path / 'id_ed25519.pub').read_text().strip()}\n"
        f"MQTT_BRIDGE_CUSTOM={json.dumps(bridge)}\n"
    )
    config = {
        "devices": {
            "inv": {
                "driver": "sma_stp25000",
                "reading_type": "modbustcp",
                "vendor_id": "test-inv",
                "address": {"host": "10.0.2.101", "port": 1502, "unit_id": 3},
                "timeout": 5,
            }
        },
        "readings": {"pv_P": {"device": "inv", "var": "P_total"}},
        "read_interval": 10,
        "read_roundtime": True,
    }
    www, update_port = file_server
    new_version = _update_bundle(rpi_image, www, tmp_path)
    guest = Guest(
        rpi_image,
        tmp_path,
        settings,
        3 * GIB,
        guest_ip="10.0.2.50",
        broker_port=cloud.tls_port,
        sim_port=simulated_inverter,
        config=config,
        update_port=update_port,
        ssh_key=key,
    )
    guest.http_timeout = max(10.0, pace.unit.wall * 2)
    guest.start_timeout_s = pace.boot().wall
    try:
        with Recorder(cloud.admin_port, "sites/test/#", **cloud.admin_auth) as rec:
            guest.boot_virt("modules-load=mac80211_hwsim")
            body = guest.wait_up(pace.boot())
            t1 = guest.elapsed()
            _record("virt_first_boot_health", guest, t1)
            print(
                f"qemu -M virt: /health ok {time.monotonic() - guest.t0:.0f} s after launch ({t1.wall:.0f} s free,"
                f" {t1.wall / pace.unit.wall:.1f} units; {t1.cpu:.0f} CPU-s, {t1.cpu / pace.unit.cpu:.1f} units):"
                f" {body['programs']}"
            )
            wait = lambda what: pace.after(t1, what)
            guest.http_timeout = max(10.0, t1.wall / 4)
            assert {"mosquitto", "node", "publisher", "bridge-config", "webui"} <= set(body["programs"])
            sysinfo = body["system"]
            print(f"guest: {json.dumps(sysinfo)}")
            assert sysinfo["hostname"] == "site-test" and sysinfo["root_read_only"] is True
            assert sysinfo["data_total_bytes"] > 1.0e9, "the data partition did not grow to fill the card"
            assert sysinfo["settings_problems"] == 1
            guest.wait(
                lambda: (guest.health() or {}).get("system", {}).get("access_point_active"),
                wait("access point"),
                "hostapd running with 192.168.4.1 on wlan0 (the virtual radio)",
            )

            creds = guest.boot_file("ammp-edge-credentials.txt")
            password = re.search(r"Web UI password: (\S+)", creds).group(1)
            assert re.search(r"Wi-Fi access point: ammp-edge-\w{4}  passphrase: \S{8,}", creds), creds
            session = login(f"http://127.0.0.1:{guest.web}", password, timeout=wait("ssh").wall)
            assert session.last_login.status_code == 303, "the password on the boot partition does not log in"
            page = session.get(f"http://127.0.0.1:{guest.web}/").text
            assert (
                "WIFI_AP_CHANNEL: &#039;99&#039; is not a channel from 1 to 13" in page
                or "WIFI_AP_CHANNEL: '99' is not a channel" in page
            ), "the settings problem is not on the status page"
            assert "read-only" in page

            assert re.search(r"ssh-(rsa|ed25519) |ecdsa-sha2-", _ssh_keys(guest.ssh_port, wait("ssh").wall)), (
                "no SSH on the static address"
            )
            who = guest.ssh("hostname; id -un", timeout=wait("ssh").wall)  # /etc/hostname is the image's (ro)
            assert who.returncode == 0 and who.stdout.split() == ["site-test", "root"], (
                f"SSH_AUTHORIZED_KEY does not let its key in: {who.returncode} {who.stdout} {who.stderr}"
            )

            def data():
                for m in rec.on("sites/test/u/data"):
                    msg = json.loads(m.payload)
                    if any(r.get("_d") == "inv" and isinstance(r.get("P_total"), (int, float)) for r in msg["r"]):
                        return msg
                return None

            msg = guest.wait(data, wait("data"), "the inverter's readings at the host's broker through the bridge", 1)
            TIMINGS["virt_first_data_s"] = round(time.monotonic() - guest.t0, 1)
            print(f"first u/data at the host's broker {time.monotonic() - guest.t0:.0f} s after launch: t={msg['t']}")
            ssh_before = _host_key(guest.ssh_port, wait("ssh").wall)
            assert ssh_before

            # -- power cut (qemu killed), boot again on the same card: same device, data flows again
            guest.kill()
            first_t = max(json.loads(m.payload)["t"] for m in rec.on("sites/test/u/data"))
            guest.boot_virt("modules-load=mac80211_hwsim")
            body = guest.wait_up(wait("second boot"))
            t2 = guest.elapsed()
            _record("virt_second_boot_health", guest, t2)
            print(
                f"second boot after a power cut: /health ok {time.monotonic() - guest.t0:.0f} s after launch"
                f" ({t2.wall / t1.wall:.2f} x the first in free time, {t2.cpu / t1.cpu:.2f} x in CPU time)"
            )
            assert body["system"]["root_read_only"] is True and body["system"]["hostname"] == "site-test"
            assert abs(body["system"]["data_total_bytes"] - sysinfo["data_total_bytes"]) < 1e6
            ssh_after = _host_key(guest.ssh_port, wait("ssh").wall)
            assert ssh_after == ssh_before, f"SSH host keys changed across boots: {ssh_before} -> {ssh_after}"
            assert (
                re.search(r"Web UI password: (\S+)", guest.boot_file("ammp-edge-credentials.txt")).group(1) == password
            )
            guest.wait(
                lambda: any(json.loads(m.payload)["t"] > first_t for m in rec.on("sites/test/u/data")),
                wait("data"),
                "new readings at the host's broker after the second boot",
                1,
            )

            # -- image_update from the cloud: the bundle is fetched from UPDATE_URL, the app restarts into it
            old_version = body["version"]
            t_update, c_update = time.monotonic(), guest.cpu()
            subprocess.run(
                [
                    "mosquitto_pub",
                    "-p",
                    str(cloud.admin_port),
                    "-u",
                    "admin",
                    "-P",
                    "admin-secret",
                    "-q",
                    "1",
                    "-t",
                    "sites/test/d/command",
                    "-m",
                    '["image_update"]',
                ],
                check=True,
                timeout=30,
            )
            answer = guest.wait(
                lambda: next(
                    (m.text for m in rec.on("sites/test/u/command_response") if "image_update" in m.text), None
                ),
                wait("update answer"),
                "the answer to image_update",
            )
            TIMINGS["virt_update_answer_s"] = round(time.monotonic() - t_update, 1)
            assert f"installed version {new_version} (was {old_version})" in answer, answer
            after = guest.wait(
                lambda: (
                    lambda b: (
                        b
                        if b
                        and b["version"] == new_version
                        and b["programs"]
                        and all(s == "RUNNING" for s in b["programs"].values())
                        else None
                    )
                )(guest.health()),
                wait("update running"),
                f"the appliance running version {new_version}",
            )
            t_up, c_up = time.monotonic() - t_update, guest.cpu() - c_update
            TIMINGS["virt_update_running_s"], TIMINGS["virt_update_running_cpu_s"] = round(t_up, 1), round(c_up, 1)
            print(
                f"image_update: {new_version} running {t_up:.0f} s after the command ({t_up / t1.wall:.2f} x the first"
                f" boot), {c_up:.0f} CPU-s ({c_up / t1.cpu:.2f} x)"
            )
            assert after["system"]["root_read_only"] is True
            t_new = time.time()
            guest.wait(
                lambda: any(json.loads(m.payload)["t"] > t_new for m in rec.on("sites/test/u/data")),
                wait("updated data"),
                "readings from the updated app at the host's broker",
                1,
            )
            TIMINGS["virt_updated_data_s"] = round(time.monotonic() - t_update, 1)
    finally:
        guest.kill()
        cloud.stop()


def test_rpi_image_boots_on_an_emulated_pi_3b(rpi_image, pace, tmp_path):
    """`-M raspi3b`: the Pi 3B device tree, the SD card host and USB network drivers from the trimmed
    initramfs; DHCP by default; SSH=off honoured; the data partition grows on a 4 GiB card."""
    guest = Guest(rpi_image, tmp_path, "SSH=off\n", 4 * GIB)
    guest.http_timeout = max(10.0, pace.unit.wall * 2)
    guest.start_timeout_s = pace.boot(PI3B_BOOT_UNITS).wall
    try:
        guest.boot_raspi3b()
        body = guest.wait_up(pace.boot(PI3B_BOOT_UNITS))
        took = guest.elapsed()
        _record("pi3b_boot_health", guest, took)
        print(
            f"qemu -M raspi3b: /health ok {time.monotonic() - guest.t0:.0f} s after launch ({took.wall:.0f} s free,"
            f" {took.wall / pace.unit.wall:.1f} units; {took.cpu:.0f} CPU-s, {took.cpu / pace.unit.cpu:.1f} units)"
        )
        assert body["system"]["hostname"] == "ammp-edge" and body["system"]["root_read_only"] is True
        assert body["system"]["data_total_bytes"] > 2.0e9 and body["system"]["settings_problems"] == 0
        assert not re.search(r"ssh-(rsa|ed25519) ", _ssh_keys(guest.ssh_port, max(10.0, 2 * pace.unit.wall))), (
            "SSH=off, yet sshd answers"
        )
    finally:
        guest.kill()
