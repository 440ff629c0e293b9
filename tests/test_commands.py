"""Commands from d/command through a real local mosquitto: a small MQTT glue (as node wires it)
feeds payloads to CommandService; answers are read back from u/command_response. Scans, the
process runner, the HTTP poster and supervisord are injected and record what they were asked to
do, so nothing here reboots, restarts or scans anything. The serial sensor commands run against
scripted slaves on a socat pty pair."""

from __future__ import annotations

import json
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from ammp_edge.core import paths
from ammp_edge.core.kvs import KVStore
from ammp_edge.node import commands, configgen
from ammp_edge.node.commands import CommandService
from ammp_edge.node.scan import sensor_address
from helpers.brokers import Mosquitto, Recorder, publish, wait_until
from helpers.serial_lines import FakeSlave, crc16, exception_response, pty_pair, read_response

SCAN = {
    "time": "2026-11-26T19:00:00Z",
    "network_scan": [
        {
            "ifname": "eth0",
            "ipv4": "192.168.1.5",
            "netmask": 24,
            "hosts": [{"ipv4": "192.168.1.111", "mac": "00:40:AD:12:34:56", "ports": ["502"]}],
        }
    ],
    "serial_scan": [
        [
            "Testing slave ID 2 for IMT irradiation sensor at baud rate 9600",
            "Got test response for irradiance (W/m2) = 850 ==> SUCCESS: ...",
        ]
    ],
    "speedwire_serials": [3004123456],
}


class Recording:
    """The injected side effects."""

    def __init__(self):
        self.scans = 0
        self.running = 0
        self.max_running = 0
        self.argv: list[list[str]] = []
        self.posts: list[tuple] = []
        self.restarts = 0
        self.scan_delay = 0.0
        self._lock = threading.Lock()

    def env_scan(self, progress=None, cancel=None):
        with self._lock:
            self.scans += 1
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            if self.scan_delay and cancel is not None and cancel.wait(self.scan_delay):
                from ammp_edge.node.scan import Cancelled

                raise Cancelled("scan cancelled")
            return json.loads(json.dumps(SCAN))
        finally:
            with self._lock:
                self.running -= 1

    def runner(self, argv, timeout):
        self.argv.append(list(argv))
        return 0, "ran\n", ""

    def http_post(self, url, body, headers, timeout):
        self.posts.append((url, body, headers, timeout))
        return 200

    def supervisor(self):
        rec = self

        class Rpc:
            def getState(self):
                return {"statecode": 1, "statename": "RUNNING"}

            def restart(self):
                rec.restarts += 1
                return True

        class Server:
            supervisor = Rpc()

        return Server()


class Glue:
    """d/command -> CommandService.handle; its publish -> the broker (QoS 1)."""

    def __init__(self, port: int, **kw):
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-node")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("d/command", 2)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.handle_times: list[float] = []
        self.client.on_message = self._message
        self.service = CommandService(lambda topic, text: self.client.publish(topic, text, qos=1), **kw)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(10)

    def _message(self, client, userdata, msg):
        started = time.monotonic()
        self.service.handle(msg.payload, retained=bool(msg.retain))
        self.handle_times.append(time.monotonic() - started)

    def close(self):
        self.service.stop()
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path):
    with Mosquitto.from_text(tmp_path / "broker", "listener {port} 127.0.0.1\nallow_anonymous true\n") as b:
        yield b


@pytest.fixture
def rec():
    return Recording()


@pytest.fixture
def node(broker, rec, tmp_path):
    """(glue, recorder of u/#, send(payload)) with the recording deps and no pause between commands."""
    made = []

    def make(**kw):
        deps = dict(
            env_scan=rec.env_scan,
            runner=rec.runner,
            http_post=rec.http_post,
            supervisor=rec.supervisor,
            pause=0.0,
            hooks=lambda: [tmp_path / "no-hook"],
            container=lambda: False,
            offline=lambda: False,
        )
        deps.update(kw)
        glue = Glue(broker.port, **deps)
        made.append(glue)
        return glue

    with Recorder(broker.port, "u/#") as recorder:

        def send(payload):
            publish(broker.port, "d/command", payload)

        yield make, recorder, send
    for g in made:
        g.close()


def responses(recorder, n, timeout=10.0) -> list[str]:
    wait_until(lambda: len(recorder.on("u/command_response")) >= n, timeout, what=f"{n} command responses")
    time.sleep(0.2)  # nothing more should come
    return [m.text for m in recorder.on("u/command_response")]


# -- payload checks ------------------------------------------------------------------------

BAD_PAYLOADS = [
    (b"env_scan", "not JSON"),
    (b"\xff\xfe[]", "not JSON"),
    (b'{"command": "env_scan"}', "expected a JSON list of command names, got dict"),
    (b'"env_scan"', "got str"),
    (b"[1, 2]", "item 0 is 1, not a command name"),
    (b'["env_scan", 3.5]', "item 1 is 3.5, not a command name"),
    (b'[["env_scan"]]', 'item 0 is ["env_scan"], not a command name'),
    (b'["env_scan", null]', "item 1 is null"),
    (b'["env_scan", ""]', "item 1 is an empty string"),
    (b"[]", "is empty"),
    (json.dumps(["env_scan"] * 11).encode(), "11 commands, at most 10"),
    (json.dumps(["x" * 5000]).encode(), "larger than 4096 bytes"),
    (b"[" * 2000 + b"]" * 2000, "nests arrays and objects more than 64 levels deep"),  # took node down once
]


@pytest.mark.parametrize("payload,why", BAD_PAYLOADS)
def test_bad_payload_answers_what_is_wrong_and_runs_nothing(node, rec, payload, why):
    make, recorder, send = node
    make()
    send(payload)
    (text,) = responses(recorder, 1)
    assert text.startswith("Invalid command payload: ") and why in text and text.endswith("nothing was run")
    assert rec.scans == 0 and rec.argv == [] and rec.posts == []


def test_a_retained_command_is_not_run(node, rec, broker):
    make, recorder, send = node
    publish(broker.port, "d/command", b'["sys_reboot"]', retain=True)
    make()  # subscribes after the retained message was stored: the broker delivers it with retain set
    (text,) = responses(recorder, 1)
    assert text.startswith("Invalid command payload: a retained message is not run")
    assert rec.argv == []
    publish(broker.port, "d/command", b"", retain=True)  # clear it


def test_unknown_names_and_shell_metacharacters_are_only_names(node, rec, tmp_path):
    make, recorder, send = node
    make()
    marker = tmp_path / "pwned"
    names = [
        "snap_install",
        f"env_scan; touch {marker}",
        "$(reboot)",
        "`reboot`",
        "sys_reboot && reboot",
        "../../bin/sh",
        "env_scan\nsys_reboot",
    ]
    send(json.dumps(names))
    texts = responses(recorder, len(names))
    assert texts == [f"Unrecognized command: {commands.printable(n)}" for n in names]
    assert texts[-1] == "Unrecognized command: env_scan\\nsys_reboot"  # a line break cannot forge a second line
    assert rec.scans == 0 and rec.argv == [] and rec.restarts == 0
    assert not marker.exists()


# -- env_scan and config generation --------------------------------------------------------


def test_env_scan_caches_publishes_and_posts(node, rec):
    make, recorder, send = node
    store = KVStore()
    store.set("node_id", "0123456789ab")
    store.set("access_key", "secret-key")
    store.set("http_api_base_url", "http://127.0.0.1:9/api/v0")
    make()
    send(b'["env_scan"]')
    (text,) = responses(recorder, 1)
    assert text.startswith("Command: env_scan\nexit status: 0\nstdout: network: 1 host(s) on eth0 192.168.1.5/24\n")
    assert "POST http://127.0.0.1:9/api/v0/nodes/0123456789ab/env_scan: HTTP 200" in text
    assert text.endswith("stderr: ")
    assert "secret-key" not in text
    assert json.loads(recorder.last("u/state/env_scan").payload) == SCAN
    assert KVStore(paths.kvcache_path()).get("last_env_scan") == SCAN
    ((url, body, headers, timeout),) = rec.posts
    assert url == "http://127.0.0.1:9/api/v0/nodes/0123456789ab/env_scan"
    assert body == SCAN and headers == {"Authorization": "secret-key"} and timeout > 0


def test_env_scan_without_activation_is_not_posted(node, rec):
    make, recorder, send = node
    make()
    send(b'["env_scan"]')
    (text,) = responses(recorder, 1)
    assert "not posted to the API: the node is not activated" in text and rec.posts == []


def test_trigger_config_generation_scans_only_when_nothing_is_cached(node, rec):
    make, recorder, send = node
    make()
    send(b'["trigger_config_generation"]')
    (text,) = responses(recorder, 1)
    assert text.startswith("Command: trigger_config_generation\nexit status: 0\nstdout: scanned (no scan was cached)")
    request = json.loads(recorder.last("u/state/env_scan").payload)
    assert request == dict(SCAN, generate_new_config=True, input_parameters=[None])
    assert rec.scans == 1
    send(b'["trigger_config_generation"]')
    assert "used the cached scan" in responses(recorder, 2)[1]
    assert rec.scans == 1
    assert configgen.generation_request(SCAN, configgen.tank_dims(2.0, 3.0, 1.5))["input_parameters"] == [
        {"width": 2.0, "length": 3.0, "height": 1.5, "type": "tank", "shape": "rectangular"}
    ]


# -- one at a time, timeouts -----------------------------------------------------------------


def test_commands_run_one_at_a_time_in_order_and_handle_returns_at_once(node, rec):
    make, recorder, send = node
    rec.scan_delay = 0.3
    glue = make()
    send(b'["env_scan", "nope", "env_scan", "trigger_config_generation"]')
    send(b'["env_scan"]')
    texts = responses(recorder, 5)
    assert [t.split("\n")[0] for t in texts] == [
        "Command: env_scan",
        "Unrecognized command: nope",
        "Command: env_scan",
        "Command: trigger_config_generation",
        "Command: env_scan",
    ]
    assert rec.max_running == 1 and rec.scans == 3
    assert max(glue.handle_times) < 0.1


def test_a_command_over_its_timeout_is_cancelled_and_answered(node, rec):
    make, recorder, send = node
    rec.scan_delay = 30.0
    make(timeouts={"env_scan": 0.5})
    started = time.monotonic()
    send(b'["env_scan", "sys_reboot"]')
    texts = responses(recorder, 2)
    assert texts[0] == "Could not run env_scan; error: timed out after 0.5 s"
    assert texts[1].startswith("Command: sys_reboot\nexit status: 0")
    assert time.monotonic() - started < 5
    assert recorder.on("u/state/env_scan") == []


def test_a_failing_command_is_answered_and_the_worker_goes_on(node, rec):
    make, recorder, send = node

    def broken(**kw):
        raise RuntimeError("disk on fire")

    make(env_scan=broken)
    send(b'["env_scan", "sys_reboot"]')
    texts = responses(recorder, 2)
    assert texts[0] == "Could not run env_scan; error: RuntimeError: disk on fire"
    assert texts[1].startswith("Command: sys_reboot")


# -- system commands -----------------------------------------------------------------------


def test_sys_reboot_goes_through_the_injected_runner(node, rec):
    make, recorder, send = node
    make()
    send(b'["sys_reboot"]')
    (text,) = responses(recorder, 1)
    assert text == "Command: sys_reboot\nexit status: 0\nstdout: ran\nstderr: "
    assert rec.argv in ([["systemctl", "reboot"]], [["reboot"]])


def test_sys_reboot_is_refused_in_a_container(node, rec):
    make, recorder, send = node
    make(container=lambda: True)
    send(b'["sys_reboot"]')
    (text,) = responses(recorder, 1)
    assert text.startswith("Command: sys_reboot\nexit status: 1\n") and "not available in a container" in text
    assert rec.argv == []


def test_app_restart_answers_first_then_restarts_supervisord(node, rec):
    make, recorder, send = node
    make()
    send(b'["app_restart"]')
    (text,) = responses(recorder, 1)
    assert text.startswith("Command: app_restart\nexit status: 0\nstdout: supervisord RUNNING: restarting all programs")
    wait_until(lambda: rec.restarts == 1, 5, what="supervisor.restart()")


def test_app_restart_without_supervisord(node, rec, tmp_path):
    from ammp_edge.core import supervisor

    make, recorder, send = node
    make(supervisor=lambda: supervisor.connect(tmp_path / "no.sock", timeout=1))
    send(b'["app_restart"]')
    (text,) = responses(recorder, 1)
    assert text.startswith("Could not run app_restart; error: ")


def test_image_update_without_a_hook(node, rec):
    make, recorder, send = node
    make(container=lambda: True)
    send(b'["image_update"]')
    (text,) = responses(recorder, 1)
    assert text.startswith("Command: image_update\nexit status: 1\n")
    assert "updates are not supported in this installation" in text and "pull a new image" in text
    assert rec.argv == []


def test_image_update_runs_the_hook(node, rec, tmp_path):
    make, recorder, send = node
    hook = tmp_path / "update"
    hook.write_text("#!/bin/sh\necho updating to 1.2.3\necho warning >&2\nexit 3\n")
    hook.chmod(0o755)
    not_executable = tmp_path / "update-noexec"
    not_executable.write_text("#!/bin/sh\nexit 0\n")
    make(hooks=lambda: [not_executable, hook], runner=commands.run_argv)
    send(b'["image_update"]')
    (text,) = responses(recorder, 1)
    assert text == "Command: image_update\nexit status: 3\nstdout: updating to 1.2.3\nstderr: warning\n"


# -- upstream's snap and system commands --------------------------------------------------------


def update_hook(tmp_path):
    """An update hook that says what it did and leaves a marker, as the Pi image's would install."""
    marker = tmp_path / "hook-ran"
    hook = tmp_path / "update"
    hook.write_text(f'#!/bin/sh\necho "$0 $#" >> {marker}\necho "installed version 9.9.9 (was 0.1.0)"\n')
    hook.chmod(0o755)
    return hook, marker


@pytest.mark.parametrize(
    "name, channel",
    [
        ("snap_refresh", None),
        ("snap_refresh_stable", "stable"),
        ("snap_refresh_beta", "beta"),
        ("snap_refresh_edge", "edge"),
    ],
)
def test_snap_refresh_updates_the_app_as_image_update_does(node, rec, tmp_path, name, channel):
    make, recorder, send = node
    hook, marker = update_hook(tmp_path)
    make(hooks=lambda: [tmp_path / "none", hook], runner=commands.run_argv)
    send(json.dumps([name]))
    (text,) = responses(recorder, 1)
    no_channel = f" and has no {channel} channel" if channel else ""
    assert text == (
        f"Command: {name}\nexit status: 0\n"
        f"stdout: {name}: this appliance is not a snap{no_channel}; updating the app as image_update does "
        "(the app bundle at the KV key image_update_url)\ninstalled version 9.9.9 (was 0.1.0)\nstderr: "
    )
    assert marker.read_text() == f"{hook} 0\n"  # the hook ran once, with no arguments


def test_snap_refresh_in_a_container_says_to_pull_a_new_image(node, rec):
    make, recorder, send = node
    make(container=lambda: True)
    send(b'["snap_refresh_stable"]')
    (text,) = responses(recorder, 1)
    assert text.startswith("Command: snap_refresh_stable\nexit status: 1\nstdout: snap_refresh_stable: this appliance")
    assert text.endswith(
        "stderr: updates are not supported in this installation (no update hook); "
        "pull a new image and re-create the container\n"
    )
    assert rec.argv == []


def test_snap_proxy_on_and_off_set_the_proxy_app_updates_use(node, rec, tmp_path):
    make, recorder, send = node
    hook, _ = update_hook(tmp_path)
    make(hooks=lambda: [hook])
    store = KVStore()
    send(b'["snap_proxy_on"]')
    (on,) = responses(recorder, 1)
    assert on == (
        "Command: snap_proxy_on\nexit status: 0\nstdout: this appliance is not a snap (no snapd to configure); "
        "app updates (image_update, snap_refresh) now download through the proxy http://10.255.255.254:8888 "
        "(KV key image_update_proxy)\nstderr: "
    )
    assert store.get("image_update_proxy") == "http://10.255.255.254:8888"
    send(b'["snap_proxy_off"]')
    off = responses(recorder, 2)[1]
    assert off.startswith("Command: snap_proxy_off\nexit status: 0\nstdout: this appliance is not a snap")
    assert "download without a proxy again" in off
    assert store.get("image_update_proxy") is None
    assert rec.argv == []


def test_snap_proxy_where_there_are_no_in_app_updates_says_so(node, rec):
    make, recorder, send = node
    make(container=lambda: True)
    send(b'["snap_proxy_on"]')
    (text,) = responses(recorder, 1)
    assert "the proxy is not used here" in text and "pulling a new image" in text
    assert KVStore().get("image_update_proxy") == "http://10.255.255.254:8888"


@pytest.mark.parametrize("pi, container", [(True, False), (False, True), (False, False)])
def test_sys_remount_rw_is_answered_and_never_runs(node, rec, pi, container):
    make, recorder, send = node
    make(pi_image=lambda: pi, container=lambda: container, root_read_only=lambda: True)
    send(b'["sys_remount_rw"]')
    (text,) = responses(recorder, 1)
    assert text.startswith("Command: sys_remount_rw\nexit status: 1\n")
    if pi:
        assert "stdout: the root file system is read-only\n" in text
        assert "read-only by design and is not remounted from the cloud" in text and "/data" in text
    elif container:
        assert "not available in a container" in text and "not remounted" in text
    else:
        assert "does not manage the host's file systems" in text and "not remounted" in text
    assert rec.argv == []


def test_sys_remount_ro_on_the_pi_makes_a_writable_root_read_only_again(node, rec):
    make, recorder, send = node
    state = {"ro": False}

    def runner(argv, timeout):
        rec.argv.append(list(argv))
        state["ro"] = True
        return 0, "", ""

    make(pi_image=lambda: True, root_read_only=lambda: state["ro"], runner=runner)
    send(b'["sys_remount_ro"]')
    (text,) = responses(recorder, 1)
    assert text == (
        "Command: sys_remount_ro\nexit status: 0\nstdout: the root file system was writable and is now read-only\n"
        "stderr: "
    )
    assert rec.argv == [["mount", "-o", "remount,ro", "/"]]
    send(b'["sys_remount_ro"]')  # read-only already: nothing runs
    again = responses(recorder, 2)[1]
    assert (
        again == "Command: sys_remount_ro\nexit status: 0\nstdout: the root file system is already read-only; "
        "nothing to do\nstderr: "
    )
    assert len(rec.argv) == 1


def test_sys_remount_ro_outside_the_pi_image_does_nothing(node, rec):
    make, recorder, send = node
    make(pi_image=lambda: False, root_read_only=lambda: False)
    send(b'["sys_remount_ro"]')
    (text,) = responses(recorder, 1)
    assert text.startswith("Command: sys_remount_ro\nexit status: 1\n") and "not remounted" in text
    assert rec.argv == []


@pytest.mark.parametrize("name", ["sys_start_snapd", "sys_stop_snapd"])
def test_snapd_commands_do_not_apply(node, rec, name):
    make, recorder, send = node
    make()
    send(json.dumps([name]))
    (text,) = responses(recorder, 1)
    assert text == (
        f"Command: {name}\nexit status: 1\nstdout: stderr: {name}: this appliance does not use snapd (it is not a "
        "snap; it updates with snap_refresh or image_update); nothing was started or stopped\n"
    )
    assert rec.argv == [] and rec.restarts == 0


def test_root_read_only_reads_the_mount_in_effect(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/root / ext4 ro,noatime 0 0\nproc /proc proc rw 0 0\n")
    assert commands.root_read_only(mounts)
    mounts.write_text("/dev/root / ext4 ro,noatime 0 0\n/dev/root / ext4 rw,noatime 0 0\n")  # remounted
    assert not commands.root_read_only(mounts)
    assert not commands.root_read_only(tmp_path / "none")


def test_default_update_hooks_follow_the_root_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("AE_ROOT_DIR", str(tmp_path))
    assert commands.update_hooks()[0] == tmp_path / "bin" / "update"


# -- serial sensor addressing on a pty pair ------------------------------------------------


@pytest.fixture
def line(tmp_path):
    with pty_pair(tmp_path) as ends:
        yield ends


def echo(frame_unit, fncode, address, value) -> bytes:
    body = bytes([frame_unit, fncode]) + address.to_bytes(2, "big") + value.to_bytes(2, "big")
    return body + crc16(body)


class Holykell:
    """A level sensor at slave 1 that moves to the address written to `address_register` and keeps it
    once `save_register` is written with `save_value`; answers level 1234 mm on register 2."""

    def __init__(self, address_register=80, save_register=64, save_value=49087):
        self.address, self.saved = 1, False
        self.regs = (address_register, save_register, save_value)
        self.writes: list[tuple[int, int, int]] = []

    def __call__(self, req, index):
        unit, fncode, address, count = req
        if unit != self.address:
            return None
        if fncode == 6:
            self.writes.append((unit, address, count))
            addr_reg, save_reg, save_value = self.regs
            if address == addr_reg:
                self.address = count
                return echo(unit, 6, address, count)
            if address == save_reg and count == save_value:
                self.saved = True
                return echo(unit, 6, address, count)
            return exception_response(unit, 6, 2)
        if fncode == 3 and address == 2:
            return read_response(unit, 3, [1234])
        if fncode == 3 and address == 0:
            return read_response(unit, 3, [0] * count)
        return exception_response(unit, fncode, 2)


def test_holykell_address_7_through_the_command(node, line):
    make, recorder, send = node
    KVStore().set("serial_sensor_port", line[0])
    sensor = Holykell()
    with FakeSlave(line[1], sensor):
        make()
        send(b'["holykell_sensor_address_7"]')
        (text,) = responses(recorder, 1, timeout=20)
    assert text.startswith("Command: holykell_sensor_address_7\nexit status: 0\n"), text
    assert "Check on slave 7: Slave available" in text and "fuel level read from slave 7 (mm): [1234]" in text
    assert sensor.writes == [(1, 80, 7), (7, 64, 49087)] and sensor.address == 7 and sensor.saved


def test_holykell_falls_back_to_registers_18_and_78(line):
    sensor = Holykell(address_register=18, save_register=78, save_value=1)
    with FakeSlave(line[1], sensor):
        result = sensor_address.holykell_sensor_address(line[0], 8, timeout=0.5, settle=0.05)
    assert "Error" not in result, result
    assert sensor.writes == [(1, 80, 8), (1, 18, 8), (8, 78, 1)] and sensor.address == 8 and sensor.saved
    assert result["Success, fuel level read from slave 8 (mm)"] == [1234]


def test_holykell_refuses_a_target_address_in_use(line):
    sensor = Holykell()
    sensor.address = 7  # something already answers at 7
    with FakeSlave(line[1], sensor):
        result = sensor_address.holykell_sensor_address(line[0], 7, timeout=0.5, settle=0.05)
    assert result == {"Error": "Other device already detected on slave 7"}
    assert sensor.writes == []


def test_imt_sensor_address_sends_the_exact_frames(line):
    import os
    import select

    seen = bytearray()
    stop = threading.Event()

    def imt():
        fd = os.open(line[1], os.O_RDWR | os.O_NOCTTY)
        try:
            address = 1
            while not stop.is_set():
                if not select.select([fd], [], [], 0.05)[0]:
                    continue
                seen.extend(os.read(fd, 256))
                if seen.endswith(bytes.fromhex("01460402630c")):
                    address = 2
                    os.write(fd, bytes.fromhex("01460402630c"))
                elif seen.endswith(bytes.fromhex("010800010000b1cb")):
                    os.write(fd, bytes.fromhex("010800010000b1cb"))
                elif len(seen) >= 8 and seen[-8:-2] == bytes.fromhex("020400000001") and address == 2:
                    os.write(fd, read_response(2, 4, [850]))
        finally:
            os.close(fd)

    t = threading.Thread(target=imt, daemon=True)
    t.start()
    try:
        result = sensor_address.imt_sensor_address(line[0], timeout=1.0)
    finally:
        stop.set()
        t.join(5)
    assert bytes(seen) == bytes.fromhex("01460402630c010800010000b1cb") + bytes.fromhex("020400000001") + crc16(
        bytes.fromhex("020400000001")
    )
    assert result == {
        "Address change response (expect 01460402630c)": "01460402630c",
        "Comms restart response (expect 010800010000b1cb)": "010800010000b1cb",
        "Data read test from address 2": [850],
    }


def test_sensor_command_on_a_missing_port(node, tmp_path):
    make, recorder, send = node
    KVStore().set("serial_sensor_port", str(tmp_path / "ttyNONE"))
    make()
    send(b'["imt_sensor_address"]')
    (text,) = responses(recorder, 1)
    assert text.startswith("Command: imt_sensor_address\nexit status: 1\n") and "cannot open" in text
