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

Skipped, with the reason, only when docker or mmdebstrap are missing and cannot be installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from ammp_edge.kvs import KVStore
from ammp_edge.outbox import Outbox
from brokers import wait_until
from conftest import AMMP_EDGE, REPO, free_port

pytestmark = [pytest.mark.slow, pytest.mark.images]

COMMITTED = re.compile(r"committed t=(\d+) key=\d+ devices=(\S*)")
NODE_ID = "0242ac11beef"


def _have_tools() -> bool:
    return bool(shutil.which("docker") and (shutil.which("dockerd") or os.path.exists("/usr/sbin/dockerd"))
                and shutil.which("mmdebstrap") and shutil.which("mosquitto_sub"))


@pytest.fixture(scope="module")
def docker_image() -> str:
    if not _have_tools():
        if os.geteuid() != 0:
            pytest.skip("docker/mmdebstrap missing and not root to install them")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        rc = subprocess.run("apt-get install -y -qq --no-install-recommends docker.io mmdebstrap mosquitto-clients"
                            " || (apt-get update -qq && apt-get install -y -qq --no-install-recommends"
                            " docker.io mmdebstrap mosquitto-clients)", shell=True, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600).returncode
        if rc != 0 or not _have_tools():
            pytest.skip("cannot install docker.io, mmdebstrap and mosquitto-clients with apt-get")
    t0 = time.monotonic()
    out = subprocess.run([str(REPO / "build.sh"), "docker"], capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, f"./build.sh docker failed:\n{out.stderr[-4000:]}"
    tag = out.stdout.strip().splitlines()[-1]
    print(f"built {tag} in {time.monotonic() - t0:.0f} s")
    return tag


def _docker(*args, timeout=120, check=True) -> subprocess.CompletedProcess:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert out.returncode == 0, f"docker {' '.join(args)}: {out.stderr}"
    return out


def _health(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=3) as answer:
            body = json.load(answer)
            return body if answer.status == 200 else None
    except Exception:  # noqa: BLE001 - not up yet
        return None


def _committed(temp: Path) -> set[tuple[int, str]]:
    """(t, bus) of every readout a bus committed to the outbox, from the buses' debug logs."""
    out = set()
    for log in (temp / "logs").glob("bus-*.log*"):
        bus = log.name.split(".log")[0][len("bus-"):]
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
        _docker("run", "-d", "--name", self.name, "--network", "host", "--stop-timeout", "30",
                "-e", f"MQTT_BRIDGE_PORT={self.mqtt_port}", "-e", f"AE_WEBUI_PORT={self.web_port}",
                "-e", "LOGGING_LEVEL=debug", "-v", f"{self.data}:/data", "-v", f"{self.temp}:/run/ammp-edge",
                "-v", f"{self.config}:/etc/ammp-edge-test/config.json:ro", self.image, *args)
        return t0

    def wait_healthy(self, t0: float, within: float = 60) -> float:
        def ok():
            body = _health(self.web_port)
            return body if body and body["status"] == "ok" and body["programs"] and \
                all(s == "RUNNING" for s in body["programs"].values()) else None
        try:
            wait_until(ok, within, 0.5, what="/health ok with every program RUNNING")
        except AssertionError:
            print(_docker("logs", self.name, check=False).stderr[-3000:])
            raise
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
    proc = subprocess.Popen([*AMMP_EDGE, "simulate", "--driver", "sma_stp25000", "--port", str(port), "--unit", "3"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import socket

    def listening():
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    wait_until(listening, 30, 0.2, what="the simulator listening")
    yield port
    proc.terminate()
    proc.wait(10)


def test_docker_image_runs_stops_cleanly_and_keeps_its_volume(docker_image, simulated_inverter, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "devices": {"inv": {"driver": "sma_stp25000", "reading_type": "modbustcp", "vendor_id": "test-inv",
                            "address": {"host": "127.0.0.1", "port": simulated_inverter, "unit_id": 3}, "timeout": 2}},
        "readings": {"pv_P": {"device": "inv", "var": "P_total"}, "pv_E": {"device": "inv", "var": "total_yield"}},
        "read_interval": 1, "read_roundtime": True}))
    c = Container(docker_image, tmp_path, config)
    kv = KVStore(c.data / "kvs-db" / "kvstore.db")
    kv.set("node_id", NODE_ID)
    kv.set("access_key", "node-secret")
    kv.set("http_api_base_url", f"http://127.0.0.1:{free_port()}/api/v0")  # closed: no test talks to AMMP
    kv.set("mqtt_bridge_prod_address", f"127.0.0.1:{free_port()}")  # closed: the bridge stays down
    kv.close()
    try:
        # -- 1. bridge down: everything stays in the outbox; the stop loses nothing
        t0 = c.run("up", "--config", "/etc/ammp-edge-test/config.json")
        took = c.wait_healthy(t0)
        print(f"docker run -> /health ok in {took:.1f} s")
        wait_until(lambda: len([x for x in _committed(c.temp) if x[1].startswith("tcp_")]) >= 3, 30, 0.5,
                   what="three committed cycles of the simulated device")
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
        c.wait_healthy(t0)
        sub = subprocess.Popen(["mosquitto_sub", "-p", str(c.mqtt_port), "-t", "u/data", "-C", "3", "-W", "30"],
                               stdout=subprocess.PIPE, text=True)
        wait_until(lambda: not (set(box) & set(_outbox(c.data))), 60, 0.5,
                   what="every readout kept in the outbox from step 1 delivered to the local broker")
        lines = sub.communicate(timeout=40)[0].splitlines()
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

RPI_TOOLS = ["mmdebstrap", "genimage", "mkdosfs", "mcopy", "mdir", "mke2fs", "xz", "arch-test", "update-binfmts",
             "qemu-system-aarch64", "sfdisk"]
RPI_PACKAGES = ("mmdebstrap qemu-user-static binfmt-support arch-test genimage dosfstools mtools fdisk e2fsprogs "
                "xz-utils qemu-system-arm")


@pytest.fixture(scope="module")
def rpi_image() -> Path:
    if not all(shutil.which(t) for t in RPI_TOOLS):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(f"apt-get install -y -qq --no-install-recommends {RPI_PACKAGES} || (apt-get update -qq &&"
                       f" apt-get install -y -qq --no-install-recommends {RPI_PACKAGES})", shell=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=900)
        if not all(shutil.which(t) for t in RPI_TOOLS):
            pytest.skip(f"cannot install {RPI_PACKAGES} with apt-get")
    t0 = time.monotonic()
    out = subprocess.run([str(REPO / "build.sh"), "rpi"], capture_output=True, text=True, timeout=2400)
    assert out.returncode == 0, f"./build.sh rpi failed:\n{out.stderr[-4000:]}"
    xz = Path(out.stdout.strip().splitlines()[-1])
    print(f"built {xz} in {time.monotonic() - t0:.0f} s")
    assert xz.is_file() and Path(f"{xz}.sha256").is_file()
    check = subprocess.run(["sha256sum", "-c", f"{xz.name}.sha256"], cwd=xz.parent, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    return xz.with_suffix("")  # the uncompressed .img is kept next to it


def test_rpi_image_layout(rpi_image):
    table = subprocess.run(["sfdisk", "-J", str(rpi_image)], capture_output=True, text=True, check=True)
    parts = json.loads(table.stdout)["partitiontable"]["partitions"]
    assert [p["type"] for p in parts] == ["c", "83"] and parts[0]["start"] == 8192 and parts[0].get("bootable")
    files = subprocess.run(["mdir", "-b", "-i", f"{rpi_image}@@4M", "::"], capture_output=True, text=True,
                           check=True).stdout
    for name in ("config.txt", "cmdline.txt", "vmlinuz-", "initrd.img-", "bcm2711-rpi-4-b.dtb",
                 "bcm2837-rpi-3-b.dtb", "start4.elf", "bootcode.bin"):
        assert name in files, f"{name} not on the boot partition:\n{files}"
    cmdline = subprocess.run(["mtype", "-i", f"{rpi_image}@@4M", "::cmdline.txt"], capture_output=True, text=True,
                             check=True).stdout
    assert "root=LABEL=RASPIROOT" in cmdline, cmdline


def test_rpi_image_boots_in_qemu_virt(rpi_image, tmp_path):
    """The image's own kernel and initrd on `-M virt`: systemd starts `ammp-edge up`, the web UI's
    /health (forwarded to the host) shows every program RUNNING."""
    for pattern, name in (("::vmlinuz-*", "vmlinuz"), ("::initrd.img-*", "initrd.img")):
        subprocess.run(["mcopy", "-n", "-i", f"{rpi_image}@@4M", pattern, str(tmp_path / name)], check=True)
    disk = tmp_path / "disk.img"
    subprocess.run(["cp", "--sparse=always", str(rpi_image), str(disk)], check=True)
    web, ssh = free_port(), free_port()
    serial = tmp_path / "serial.log"
    t0 = time.monotonic()
    qemu = subprocess.Popen(
        ["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "1024",
         "-kernel", str(tmp_path / "vmlinuz"), "-initrd", str(tmp_path / "initrd.img"),
         "-append", "root=LABEL=RASPIROOT rw console=ttyAMA0 net.ifnames=0",
         "-drive", f"file={disk},format=raw,if=none,id=hd0", "-device", "virtio-blk-pci,drive=hd0",
         "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{web}-:8000,hostfwd=tcp:127.0.0.1:{ssh}-:22",
         "-device", "virtio-net-pci,netdev=n0,romfile=",
         "-display", "none", "-serial", f"file:{serial}", "-monitor", "none", "-no-reboot"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def up():
            body = _health(web)
            return body if body and body["programs"] and all(s == "RUNNING" for s in body["programs"].values()) else None
        try:
            body = wait_until(up, 400, 2, what="/health from the booted image with every program RUNNING")
        except AssertionError:
            print(serial.read_text(errors="replace")[-4000:])
            raise
        print(f"qemu -M virt: /health ok {time.monotonic() - t0:.0f} s after launch: {body['programs']}")
        assert {"mosquitto", "node", "publisher", "bridge-config", "webui"} <= set(body["programs"])
        if shutil.which("ssh-keyscan"):  # first boot made this device's SSH host keys; sshd runs
            keys = subprocess.run(["ssh-keyscan", "-T", "10", "-p", str(ssh), "127.0.0.1"], capture_output=True,
                                  text=True).stdout
            assert re.search(r"ssh-(rsa|ed25519) |ecdsa-sha2-", keys), serial.read_text(errors="replace")[-3000:]
    finally:
        qemu.kill()
        qemu.wait(10)
