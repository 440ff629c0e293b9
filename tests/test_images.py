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

Skipped, with the reason, only when the tools are missing and cannot be installed with apt-get.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from ammp_edge.core.kvs import KVStore
from ammp_edge.delivery.outbox import Outbox
from helpers.brokers import wait_until
from helpers.common import AMMP_EDGE, REPO, free_port

pytestmark = [pytest.mark.slow, pytest.mark.images]

COMMITTED = re.compile(r"committed t=(\d+) key=\d+ devices=(\S*)")
NODE_ID = "0242ac11beef"


def _have_tools() -> bool:
    return bool(
        shutil.which("docker")
        and (shutil.which("dockerd") or os.path.exists("/usr/sbin/dockerd"))
        and shutil.which("mmdebstrap")
        and shutil.which("mosquitto_sub")
    )


@pytest.fixture(scope="module")
def docker_image() -> str:
    if not _have_tools():
        if os.geteuid() != 0:
            pytest.skip("docker/mmdebstrap missing and not root to install them")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        rc = subprocess.run(
            "apt-get install -y -qq --no-install-recommends docker.io mmdebstrap mosquitto-clients"
            " || (apt-get update -qq && apt-get install -y -qq --no-install-recommends"
            " docker.io mmdebstrap mosquitto-clients)",
            shell=True,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=600,
        ).returncode
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

    def wait_healthy(self, t0: float, within: float = 60) -> float:
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
        wait_until(
            lambda: len([x for x in _committed(c.temp) if x[1].startswith("tcp_")]) >= 3,
            30,
            0.5,
            what="three committed cycles of the simulated device",
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
        c.wait_healthy(t0)
        sub = subprocess.Popen(
            ["mosquitto_sub", "-p", str(c.mqtt_port), "-t", "u/data", "-C", "3", "-W", "30"],
            stdout=subprocess.PIPE,
            text=True,
        )
        wait_until(
            lambda: not (set(box) & set(_outbox(c.data))),
            60,
            0.5,
            what="every readout kept in the outbox from step 1 delivered to the local broker",
        )
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

RPI_TOOLS = [
    "mmdebstrap",
    "genimage",
    "mkdosfs",
    "mcopy",
    "mdir",
    "mke2fs",
    "xz",
    "arch-test",
    "update-binfmts",
    "qemu-system-aarch64",
    "sfdisk",
    "socat",
    "ssh-keyscan",
    "debugfs",
]
RPI_PACKAGES = (
    "mmdebstrap qemu-user-static binfmt-support arch-test genimage dosfstools mtools fdisk e2fsprogs "
    "xz-utils qemu-system-arm socat openssh-client"
)


@pytest.fixture(scope="module")
def rpi_image() -> Path:
    if os.environ.get("AE_TEST_RPI_IMAGE"):  # iterate on the boot tests with an image already built
        return Path(os.environ["AE_TEST_RPI_IMAGE"])
    if not all(shutil.which(t) for t in RPI_TOOLS):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(
            f"apt-get install -y -qq --no-install-recommends {RPI_PACKAGES} || (apt-get update -qq &&"
            f" apt-get install -y -qq --no-install-recommends {RPI_PACKAGES})",
            shell=True,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=900,
        )
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
        assert _debugfs_cat(root, "/etc/machine-id") == ""
        keys = subprocess.run(["debugfs", "-R", "ls /etc/ssh", str(root)], capture_output=True, text=True).stdout
        assert "ssh_host_" not in keys, keys


class Guest:
    """One boot of a copy of the image under qemu-system-aarch64, with the settings file and a config
    put on the copy's boot partition, the card made larger (the data partition grows into it), the
    guest's web UI and SSH forwarded to host ports, and guest connections to 10.0.2.100:1883 (the
    "cloud" broker), 10.0.2.101:1502 (a simulated inverter) and 10.0.2.102:8080 (the update server)
    carried to host ports by socat."""

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
    ):
        self.tmp, self.web, self.ssh = tmp, free_port(), free_port()
        self.disk = tmp / "disk.img"
        self.serial = tmp / "serial.log"
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
            f"hostfwd=tcp:127.0.0.1:{self.ssh}-{guest_ip}:22"
        )
        if broker_port:
            net += f",guestfwd=tcp:10.0.2.100:1883-cmd:socat - TCP:127.0.0.1:{broker_port}"
        if sim_port:
            net += f",guestfwd=tcp:10.0.2.101:1502-cmd:socat - TCP:127.0.0.1:{sim_port}"
        if update_port:
            net += f",guestfwd=tcp:10.0.2.102:8080-cmd:socat - TCP:127.0.0.1:{update_port}"
        self.net = net

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
                f"root=LABEL=RASPIROOT ro console=ttyAMA0 net.ifnames=0 {extra_append}".strip(),
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
                "console=ttyAMA0,115200 root=LABEL=RASPIROOT ro rootwait net.ifnames=0",
                "-drive",
                f"file={self.disk},format=raw,if=sd",
                "-netdev",
                self.net,
                "-device",
                "usb-net,netdev=n0",
            ]
        )

    def _start(self, args: list[str]) -> None:
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [
                "qemu-system-aarch64",
                *args,
                "-display",
                "none",
                "-serial",
                f"file:{self.serial}",
                "-monitor",
                "none",
                "-no-reboot",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_up(self, within: float) -> dict:
        def up():
            assert self.proc.poll() is None, f"qemu exited: {self.proc.stderr.read()}"
            body = _health(self.web)
            return (
                body if body and body["programs"] and all(s == "RUNNING" for s in body["programs"].values()) else None
            )

        try:
            return wait_until(up, within, 2, what="/health from the booted image with every program RUNNING")
        except AssertionError:
            print(self.serial.read_text(errors="replace")[-5000:])
            raise

    def boot_file(self, name: str) -> str:
        return _mtype(self.disk, name)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def _ssh_keys(port: int) -> str:
    return subprocess.run(
        ["ssh-keyscan", "-T", "10", "-p", str(port), "127.0.0.1"], capture_output=True, text=True
    ).stdout


def _host_key(port: int, kind: str = "ed25519") -> str | None:
    """The guest sshd's public host key of one type (ssh-keyscan, a few tries: the guest is emulated)."""
    for _ in range(3):
        out = subprocess.run(
            ["ssh-keyscan", "-T", "20", "-t", kind, "-p", str(port), "127.0.0.1"], capture_output=True, text=True
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


def test_rpi_image_boots_in_qemu_virt_with_its_settings_file(rpi_image, tmp_path, simulated_inverter, file_server):
    """The image's own kernel and initrd on `-M virt`, on a 3 GiB card, with a settings file (host name,
    time zone, static address, custom TLS bridge to a broker on the host, one wrong line) and a config
    (a Modbus TCP inverter simulated on the host) on the boot partition, and a virtual Wi-Fi radio
    (mac80211_hwsim): the settings are honoured (the web UI answers on the static address), the data
    partition grew, the root file system is read-only, the access point runs, the web UI password on
    the boot partition logs in, SSH answers with keys made on this device, and the inverter's readings
    reach the broker on the host."""
    from helpers.brokers import Recorder, cloud_broker
    from test_webui import login

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
    )
    try:
        with Recorder(cloud.admin_port, "sites/test/#", **cloud.admin_auth) as rec:
            guest.boot_virt("modules-load=mac80211_hwsim")
            body = guest.wait_up(400)
            print(f"qemu -M virt: /health ok {time.monotonic() - guest.t0:.0f} s after launch: {body['programs']}")
            assert {"mosquitto", "node", "publisher", "bridge-config", "webui"} <= set(body["programs"])
            sysinfo = body["system"]
            print(f"guest: {json.dumps(sysinfo)}")
            assert sysinfo["hostname"] == "site-test" and sysinfo["root_read_only"] is True
            assert sysinfo["data_total_bytes"] > 1.0e9, "the data partition did not grow to fill the card"
            assert sysinfo["settings_problems"] == 1
            wait_until(
                lambda: (_health(guest.web) or {}).get("system", {}).get("access_point_active"),
                90,
                2,
                what="hostapd running with 192.168.4.1 on wlan0 (the virtual radio)",
            )

            creds = guest.boot_file("ammp-edge-credentials.txt")
            password = re.search(r"Web UI password: (\S+)", creds).group(1)
            assert re.search(r"Wi-Fi access point: ammp-edge-\w{4}  passphrase: \S{8,}", creds), creds
            session = login(f"http://127.0.0.1:{guest.web}", password)
            assert session.last_login.status_code == 303, "the password on the boot partition does not log in"
            page = session.get(f"http://127.0.0.1:{guest.web}/").text
            assert (
                "WIFI_AP_CHANNEL: &#039;99&#039; is not a channel from 1 to 13" in page
                or "WIFI_AP_CHANNEL: '99' is not a channel" in page
            ), "the settings problem is not on the status page"
            assert "read-only" in page

            assert re.search(r"ssh-(rsa|ed25519) |ecdsa-sha2-", _ssh_keys(guest.ssh)), "no SSH on the static address"

            def data():
                for m in rec.on("sites/test/u/data"):
                    msg = json.loads(m.payload)
                    if any(r.get("_d") == "inv" and isinstance(r.get("P_total"), (int, float)) for r in msg["r"]):
                        return msg
                return None

            try:
                msg = wait_until(data, 180, 1, what="the inverter's readings at the host's broker through the bridge")
            except AssertionError:
                for name in ("node", "publisher", "mosquitto", "bridge-config"):
                    text = session.get(f"http://127.0.0.1:{guest.web}/api/logs/{name}").json().get("text", "")
                    print(f"--- {name}\n{text[-3000:]}")
                raise
            print(f"first u/data at the host's broker {time.monotonic() - guest.t0:.0f} s after launch: t={msg['t']}")
            ssh_before = _host_key(guest.ssh)
            assert ssh_before

            # -- power cut (qemu killed), boot again on the same card: same device, data flows again
            guest.kill()
            first_t = max(json.loads(m.payload)["t"] for m in rec.on("sites/test/u/data"))
            guest.boot_virt("modules-load=mac80211_hwsim")
            body = guest.wait_up(400)
            print(f"second boot after a power cut: /health ok {time.monotonic() - guest.t0:.0f} s after launch")
            assert body["system"]["root_read_only"] is True and body["system"]["hostname"] == "site-test"
            assert abs(body["system"]["data_total_bytes"] - sysinfo["data_total_bytes"]) < 1e6
            ssh_after = _host_key(guest.ssh)
            assert ssh_after == ssh_before, f"SSH host keys changed across boots: {ssh_before} -> {ssh_after}"
            assert (
                re.search(r"Web UI password: (\S+)", guest.boot_file("ammp-edge-credentials.txt")).group(1) == password
            )
            wait_until(
                lambda: any(json.loads(m.payload)["t"] > first_t for m in rec.on("sites/test/u/data")),
                180,
                1,
                what="new readings at the host's broker after the second boot",
            )

            # -- image_update from the cloud: the bundle is fetched from UPDATE_URL, the app restarts into it
            old_version = body["version"]
            t_update = time.monotonic()
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
            answer = wait_until(
                lambda: next(
                    (m.text for m in rec.on("sites/test/u/command_response") if "image_update" in m.text), None
                ),
                900,
                2,
                what="the answer to image_update",
            )
            assert f"installed version {new_version} (was {old_version})" in answer, answer
            after = wait_until(
                lambda: (
                    lambda b: (
                        b
                        if b
                        and b["version"] == new_version
                        and b["programs"]
                        and all(s == "RUNNING" for s in b["programs"].values())
                        else None
                    )
                )(_health(guest.web)),
                300,
                2,
                what=f"the appliance running version {new_version}",
            )
            print(f"image_update: {new_version} running {time.monotonic() - t_update:.0f} s after the command")
            assert after["system"]["root_read_only"] is True
            t_new = time.time()
            wait_until(
                lambda: any(json.loads(m.payload)["t"] > t_new for m in rec.on("sites/test/u/data")),
                120,
                1,
                what="readings from the updated app at the host's broker",
            )
    finally:
        guest.kill()
        cloud.stop()


def test_rpi_image_boots_on_an_emulated_pi_3b(rpi_image, tmp_path):
    """`-M raspi3b`: the Pi 3B device tree, the SD card host and USB network drivers from the trimmed
    initramfs; DHCP by default; SSH=off honoured; the data partition grows on a 4 GiB card."""
    guest = Guest(rpi_image, tmp_path, "SSH=off\n", 4 * GIB)
    try:
        guest.boot_raspi3b()
        body = guest.wait_up(600)
        print(f"qemu -M raspi3b: /health ok {time.monotonic() - guest.t0:.0f} s after launch: {body['system']}")
        assert body["system"]["hostname"] == "ammp-edge" and body["system"]["root_read_only"] is True
        assert body["system"]["data_total_bytes"] > 2.0e9 and body["system"]["settings_problems"] == 0
        assert not re.search(r"ssh-(rsa|ed25519) ", _ssh_keys(guest.ssh)), "SSH=off, yet sshd answers"
    finally:
        guest.kill()
