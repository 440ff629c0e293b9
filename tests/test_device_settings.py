"""The Pi image's settings file on the boot partition (app/ammp_edge/device_settings.py): parsing with
problems that name the line, what apply writes under a root directory, the KV store and the credentials
file. The boot of a real image with a settings file is in tests/test_images.py."""

from __future__ import annotations

import json
import subprocess

import pytest

from ammp_edge.core import credentials
from ammp_edge.core.kvs import KVStore
from ammp_edge.device import settings as ds
from helpers.common import AMMP_EDGE, REPO

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk5xOhBz3GfkPpXe7C4xV0mW4b8wJfUu0cO8b7yM1Nn engineer@laptop"


def test_a_full_file_parses_without_problems():
    s = ds.parse(
        "\ufeffHOSTNAME=site-7\r\nTIMEZONE=Africa/Nairobi\r\n# comment\r\n\r\nSSH=off\r\n"
        f'SSH_AUTHORIZED_KEY={KEY}\nSSH_AUTHORIZED_KEY="{KEY}"\n'
        "ETH_ADDRESS=192.168.1.50/24\nETH_GATEWAY=192.168.1.1\nDNS=1.1.1.1, 8.8.8.8\n"
        "WIFI_SSID=\"Site 7 Wi-Fi\"\nWIFI_PASSWORD='pass word #1'\nWIFI_COUNTRY=ke\nWIFI_HIDDEN=yes\n"
        "NTP=ntp.example.com,10.0.0.1\nMQTT_BRIDGE_PROD=off\n"
        'MQTT_BRIDGE_CUSTOM={"host": "broker.example.com", "port": 8883, "username": "u", "password": "p"}\n'
    )
    assert s.problems == []
    assert s.get("HOSTNAME") == "site-7" and s.get("TIMEZONE") == "Africa/Nairobi" and not s.flag("SSH")
    assert s.ssh_keys == [KEY, KEY]
    assert s.get("WIFI_PASSWORD") == "pass word #1" and s.get("WIFI_COUNTRY") == "KE"
    assert not ds.ap_enabled(s)  # auto: a Wi-Fi client is configured


@pytest.mark.parametrize(
    "line, expected",
    [
        ("HOSTNAME=-bad-", "line 1: HOSTNAME: '-bad-' is not a host name"),
        ("HOSTNAME=" + "a" * 64, "is not a host name"),
        ("TIMEZONE=Mars/Olympus", "line 1: TIMEZONE: 'Mars/Olympus' is not a known time zone"),
        ("TIMEZONE=../../etc/passwd", "is not a known time zone"),
        ("SSH=maybe", "line 1: SSH: 'maybe' is not on or off"),
        ("SSH_AUTHORIZED_KEY=hello", "line 1: SSH_AUTHORIZED_KEY: not an SSH public key"),
        ("ETH_ADDRESS=192.168.1.50", "line 1: ETH_ADDRESS: '192.168.1.50' is not dhcp or an address with its prefix"),
        ("ETH_ADDRESS=192.168.1.0/24", "is not dhcp or an address with its prefix"),
        ("ETH_ADDRESS=300.1.1.1/24", "is not dhcp or an address"),
        ("ETH_GATEWAY=192.168.1.1", "ETH_GATEWAY: a gateway needs a static ETH_ADDRESS"),
        (
            "ETH_ADDRESS=10.0.0.5/24\nETH_GATEWAY=10.0.1.1",
            "line 2: ETH_GATEWAY: 10.0.1.1 is not in the network of ETH_ADDRESS (10.0.0.0/24)",
        ),
        ("DNS=1.1.1.1,dns.example", "DNS: not IP addresses: dns.example"),
        ("NTP=good.example,bad_name!", "NTP: not host names or IP addresses: bad_name!"),
        ("WIFI_SSID=" + "x" * 33, "WIFI_SSID: longer than 32 bytes"),
        ("WIFI_SSID=a\nWIFI_PASSWORD=short", "line 2: WIFI_PASSWORD: must be 8 to 63 ASCII characters (it has 5)"),
        ("WIFI_COUNTRY=Kenya", "WIFI_COUNTRY: 'Kenya' is not a two-letter country code"),
        ("WIFI_AP=sometimes", "WIFI_AP: 'sometimes' is not auto, on or off"),
        ("WIFI_AP=on\nWIFI_SSID=home", "the Wi-Fi client wins, no access point"),
        ("WIFI_AP_PASSWORD=1234567", "WIFI_AP_PASSWORD: must be 8 to 63 ASCII characters (it has 7)"),
        ("WIFI_AP_CHANNEL=14", "WIFI_AP_CHANNEL: '14' is not a channel from 1 to 13"),
        ("MQTT_BRIDGE_CUSTOM={host: x}", "line 1: MQTT_BRIDGE_CUSTOM: not valid JSON"),
        ('MQTT_BRIDGE_CUSTOM={"host": "b.example", "port": 70000}', "70000 is outside 1..65535"),
        ('MQTT_BRIDGE_CUSTOM=["b.example"]', "must be an object"),
        ("MQTT_BRIDGE_PROD=perhaps", "MQTT_BRIDGE_PROD: 'perhaps' is not on or off"),
        ("just some words", "line 1: expected KEY=value"),
        ("WIFI_SIDD=home", "line 1: unknown setting 'WIFI_SIDD' (known: HOSTNAME"),
        ("HOSTNAME=a\x07b", "line 1: HOSTNAME: control characters are not allowed"),
        ("HOSTNAME=a\nHOSTNAME=b", "line 2: HOSTNAME is set again (line 1); the last one counts"),
    ],
)
def test_each_bad_line_is_named_and_left_out(line, expected):
    s = ds.parse(line)
    assert any(expected in p for p in s.problems), s.problems
    files = ds.render(s, "ammp-edge-test", "passphrase")  # still renders: defaults fill what was left out
    assert "run/systemd/network/10-ammp-eth.network" in files


def test_garbage_bytes_give_problems_not_a_crash(tmp_path):
    f = tmp_path / "ammp-edge.txt"
    f.write_bytes(bytes(range(256)) * 4 + b"\nHOSTNAME=ok-name\n")
    s = ds.apply(f, tmp_path / "root", tmp_path / "data")
    assert s.problems and s.get("HOSTNAME") == "ok-name"
    info = json.loads((tmp_path / "root/run/ammp-edge-system/settings.json").read_text())
    assert info["problems"] == s.problems and info["hostname"] == "ok-name"


def test_static_address_wifi_client_and_ntp_render_for_networkd_and_wpa_supplicant():
    s = ds.parse(
        'ETH_ADDRESS=192.168.1.50/24\nETH_GATEWAY=192.168.1.1\nDNS=1.1.1.1,8.8.8.8\nWIFI_SSID=Site "7"\n'
        "WIFI_PASSWORD=password\nWIFI_ADDRESS=dhcp\nNTP=a.example, b.example\nSSH=on\n"
        f"SSH_AUTHORIZED_KEY={KEY}\n"
    )
    assert s.problems == []
    files = ds.render(s, "unused", "unused")
    eth = files["run/systemd/network/10-ammp-eth.network"]
    assert (
        "Name=eth* en* usb*" in eth and "Address=192.168.1.50/24\nGateway=192.168.1.1\nDNS=1.1.1.1\nDNS=8.8.8.8" in eth
    )
    assert "DHCP=yes" in files["run/systemd/network/20-ammp-wlan.network"]
    wpa = files["run/ammp-edge-system/wpa_supplicant-wlan0.conf"]
    ssid = 'Site "7"'
    assert f"ssid={ssid.encode().hex()}" in wpa and "password" not in wpa
    assert f"psk={ds.wpa_psk(ssid, 'password')}" in wpa and "country=US" in wpa
    assert "run/ammp-edge-system/hostapd.conf" not in files
    assert files["run/systemd/timesyncd.conf.d/ammp-edge.conf"].endswith("NTP=a.example b.example\n")
    assert files["run/ammp-edge-system/ssh/authorized_keys_root"] == KEY + "\n"
    assert "run/ammp-edge-system/ssh-enabled" in files


def test_wpa_psk_is_the_ieee_802_11i_test_vector():
    # IEEE 802.11i-2004, H.4.3: passphrase "password", SSID "IEEE"
    assert ds.wpa_psk("IEEE", "password") == "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"


def test_access_point_when_no_wifi_is_configured():
    s = ds.parse("")
    assert ds.ap_enabled(s)
    files = ds.render(s, "ammp-edge-beef", "secret-pass")
    hostapd = files["run/ammp-edge-system/hostapd.conf"]
    assert "interface=wlan0" in hostapd and f"ssid2={b'ammp-edge-beef'.hex()}" in hostapd
    assert f"wpa_psk={ds.wpa_psk('ammp-edge-beef', 'secret-pass')}" in hostapd and "secret-pass" not in hostapd
    wlan = files["run/systemd/network/20-ammp-wlan.network"]
    assert "Address=192.168.4.1/24" in wlan and "DHCPServer=yes" in wlan and "PoolOffset=100" in wlan
    assert not ds.ap_enabled(ds.parse("WIFI_AP=off"))
    assert "run/ammp-edge-system/ssh-enabled" not in ds.render(ds.parse("SSH=off"), "x", "x")


def test_apply_writes_under_root_keeps_secrets_private_and_removes_what_the_file_no_longer_asks(tmp_path):
    boot, root, data = tmp_path / "boot", tmp_path / "root", tmp_path / "data"
    boot.mkdir()
    f = boot / "ammp-edge.txt"
    f.write_text(
        "HOSTNAME=site-9\nTIMEZONE=Europe/Berlin\nETH_ADDRESS=10.0.2.50/24\nETH_GATEWAY=10.0.2.2\n"
        'MQTT_BRIDGE_CUSTOM={"host": "10.0.2.100", "port": 1883, "tls": false, "topic_prefix": "s/9/"}\n'
    )
    s = ds.apply(f, root, data)
    assert s.problems == []
    run = root / "run"
    assert (run / "ammp-edge-system/hostname").read_text() == "site-9\n"
    assert str((run / "ammp-edge-system/localtime").readlink()) == "/usr/share/zoneinfo/Europe/Berlin"
    hostapd = run / "ammp-edge-system/hostapd.conf"
    assert hostapd.is_file() and hostapd.stat().st_mode & 0o077 == 0
    kv = KVStore(data / "kvs-db" / "kvstore.db")
    assert kv.get("mqtt_bridge_custom") == {"host": "10.0.2.100", "port": 1883, "tls": False, "topic_prefix": "s/9/"}
    kv.close()
    creds = (boot / ds.CREDENTIALS_NAME).read_text()
    password = (data / "webui-initial-password").read_text().strip()
    ap_pass = (data / "system/wifi-ap-passphrase").read_text().strip()
    assert f"Web UI password: {password}" in creds and f"passphrase: {ap_pass}" in creds
    assert "ammp-edge-" in creds

    # next boot: a Wi-Fi client instead of the access point, SSH off, the custom bridge removed
    f.write_text("WIFI_SSID=site\nWIFI_PASSWORD=12345678\nSSH=off\nMQTT_BRIDGE_CUSTOM=\n")
    ds.apply(f, root, data)
    assert not hostapd.exists() and not (run / "ammp-edge-system/ssh-enabled").exists()
    assert (run / "ammp-edge-system/wpa_supplicant-wlan0.conf").is_file()
    assert "DHCP=yes" in (run / "systemd/network/10-ammp-eth.network").read_text()
    kv = KVStore(data / "kvs-db" / "kvstore.db")
    assert kv.get("mqtt_bridge_custom") is None
    # the password was changed in the web UI: the boot partition no longer shows it
    credentials.change_password(kv, "a new long password")
    kv.close()
    ds.apply(f, root, data)
    creds = (boot / ds.CREDENTIALS_NAME).read_text()
    assert password not in creds and "changed in the web UI" in creds and "access point" not in creds
    assert (data / "system/wifi-ap-passphrase").read_text().strip() == ap_pass  # generated once per device


def test_the_shipped_file_is_the_template_and_every_default_is_valid():
    shipped = (REPO / "image/rpi/boot/ammp-edge.txt").read_text()
    assert shipped == ds.commented_file(), "image/rpi/boot/ammp-edge.txt is stale: ammp-edge device-settings template"
    uncommented = "\n".join(
        line[1:]
        for line in shipped.splitlines()
        if line.startswith("#") and "=" in line and line[1:].split("=")[0] in ds.KEYS
    )
    s = ds.parse(uncommented)
    assert s.problems == [] and set(s.lines) == set(ds.KEYS) - ds.REPEATABLE


def test_check_command_exit_codes(tmp_path):
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_text("HOSTNAME=site-1\n")
    bad.write_text("HOSTNAME=site 1\nETH_ADDRESS=dhcp\nWIFI_AP=maybe\n")
    out = subprocess.run([*AMMP_EDGE, "device-settings", "check", str(good)], capture_output=True, text=True)
    assert out.returncode == 0 and "OK (1 settings" in out.stdout
    out = subprocess.run([*AMMP_EDGE, "device-settings", "check", str(bad)], capture_output=True, text=True)
    assert out.returncode == 1
    assert "line 1: HOSTNAME: 'site 1' is not a host name" in out.stdout and "line 3: WIFI_AP" in out.stdout


def test_an_oversized_or_missing_file_is_refused_with_its_reason(tmp_path):
    big = tmp_path / "boot" / "ammp-edge.txt"
    big.parent.mkdir()
    big.write_bytes(b"HOSTNAME=x\n" * 100000)  # 1.1 MB
    s = ds.apply(big, tmp_path / "root", tmp_path / "data")
    info = json.loads((tmp_path / "root/run/ammp-edge-system/settings.json").read_text())
    assert s.get("HOSTNAME") == "ammp-edge" and info["found"] is False  # defaults; the boot goes on
    out = subprocess.run([*AMMP_EDGE, "device-settings", "check", str(big)], capture_output=True, text=True)
    assert out.returncode == 2 and "larger than 256 KiB" in out.stdout
    out = subprocess.run(
        [*AMMP_EDGE, "device-settings", "check", str(tmp_path / "nope.txt")], capture_output=True, text=True
    )
    assert out.returncode == 2 and "cannot be read" in out.stdout and "Traceback" not in out.stderr
