"""The settings file on the Raspberry Pi image's boot partition (`/boot/firmware/ammp-edge.txt`).

A field engineer edits it on a laptop (the boot partition is FAT and opens on any computer) before
the first boot or at any later time; `ammp-edge-settings.service` applies it at every boot, before the
network starts (`ammp-edge device-settings apply`). `ammp-edge device-settings check FILE` finds the
problems on the laptop. The image ships a commented copy (image/rpi/boot/ammp-edge.txt) that lists
every setting.

Format: `KEY=value` lines, `#` comments, blank lines; a value may be quoted ("..." or '...'); Windows
line ends and a UTF-8 byte order mark are accepted. Each problem names its line and what is wrong; a
wrong value is left out and its default applies, the rest of the file is still applied, and the boot
goes on (the problems are logged and shown in the web UI and on /health).

What apply writes (the root file system is read-only; everything goes to /run, rebuilt every boot):
- /run/systemd/network/10-ammp-eth.network, 20-ammp-wlan.network (systemd-networkd): DHCP or a
  static address on the wired interfaces and on wlan0; the access point's 192.168.4.1/24 with a DHCP
  server (pool .100-.200) on wlan0;
- /run/ammp-edge-system/: wpa_supplicant-wlan0.conf (the Wi-Fi client; the PSK derived, the password
  not stored), hostapd.conf (the access point), ssh-enabled (the SSH unit's condition),
  ssh/authorized_keys_root, localtime (the link /etc/localtime points to), hostname, settings.json
  (what was applied, no secrets, and the problems);
- /run/systemd/timesyncd.conf.d/ammp-edge.conf (NTP servers);
- the KV store: mqtt_bridge_custom, mqtt_bridge_prod and image_update_url when the file sets them (the file wins at
  each boot for what it sets; what it does not set is left as it is);
- the boot partition: ammp-edge-credentials.txt with the web UI's initial password (until it is
  changed) and the access point's name and passphrase (generated once per device, kept on /data).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import re
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..bridge.custom import check_custom
from ..core import credentials, keys, paths
from ..core.fileio import write_atomic
from ..core.kvs import KVStore

log = logging.getLogger(__name__)

CREDENTIALS_NAME = "ammp-edge-credentials.txt"
MAX_FILE_BYTES = 256 * 1024
AP_ADDRESS = "192.168.4.1/24"
AP_POOL_OFFSET, AP_POOL_SIZE = 100, 101  # 192.168.4.100 .. 192.168.4.200, as upstream's wifi-ap
BOOL_WORDS = {"on": True, "yes": True, "true": True, "1": True, "off": False, "no": False, "false": False, "0": False}
HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
SSH_KEY = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|"
    r"sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,3}( [^\r\n]*)?$"
)
NTP_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
TZ_NAME = re.compile(r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$")

# key -> (default, help); the order is the order of the commented file
KEYS: dict[str, tuple[str, str]] = {
    "HOSTNAME": ("ammp-edge", "the device's name on the network (letters, digits and '-', at most 63)"),
    "TIMEZONE": ("UTC", "local time zone for logs and the console, e.g. Africa/Nairobi (readings are UTC)"),
    "SSH": ("on", "on or off"),
    "SSH_AUTHORIZED_KEY": ("", "a public key allowed to log in as root; repeat the line for more keys"),
    "ETH_ADDRESS": ("dhcp", "dhcp, or a static address with its prefix, e.g. 192.168.1.50/24"),
    "ETH_GATEWAY": ("", "with a static ETH_ADDRESS: the router, e.g. 192.168.1.1"),
    "DNS": ("", "with a static address: DNS servers, comma-separated, e.g. 1.1.1.1,8.8.8.8"),
    "WIFI_SSID": ("", "the Wi-Fi network to join (empty: no Wi-Fi client)"),
    "WIFI_PASSWORD": ("", "its password, 8 to 63 characters (empty: an open network)"),
    "WIFI_HIDDEN": ("off", "on when the network does not broadcast its name"),
    "WIFI_COUNTRY": ("US", "two-letter country code (radio rules)"),
    "WIFI_ADDRESS": ("dhcp", "dhcp, or a static address with its prefix"),
    "WIFI_GATEWAY": ("", "with a static WIFI_ADDRESS: the router"),
    "WIFI_AP": ("auto", "commissioning access point: auto (on when no WIFI_SSID is set), on or off"),
    "WIFI_AP_SSID": ("", "its name (default ammp-edge-XXXX, the last 4 digits of the node id)"),
    "WIFI_AP_PASSWORD": (
        "",
        "its passphrase, 8 to 63 characters (default: generated on the first boot and "
        "written to ammp-edge-credentials.txt next to this file)",
    ),
    "WIFI_AP_CHANNEL": ("6", "1 to 13"),
    "NTP": ("", "time servers, comma-separated (default: Debian's pool)"),
    "MQTT_BRIDGE_PROD": ("", "off turns the AMMP cloud bridge off (on turns it back on)"),
    "UPDATE_URL": (
        "",
        "where the image_update command fetches the app bundle (http:// or https://, a .tar "
        "made by ./build.sh rpi, with .tar.sha256 beside it)",
    ),
    "MQTT_BRIDGE_CUSTOM": (
        "",
        'a bridge to your own broker, one line of JSON, e.g. {"host": "broker.example.com", '
        '"port": 8883, "username": "site7", "password": "..."}',
    ),
}
REPEATABLE = {"SSH_AUTHORIZED_KEY"}


@dataclass
class Settings:
    values: dict[str, str] = field(default_factory=dict)  # valid values given in the file
    ssh_keys: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)  # key -> line number

    def get(self, key: str) -> str:
        return self.values.get(key, KEYS[key][0])

    def flag(self, key: str) -> bool:
        return BOOL_WORDS[self.get(key).lower()]

    def given(self, key: str) -> bool:
        return key in self.values

    def problem(self, key: str, message: str) -> None:
        where = f"line {self.lines[key]}: " if key in self.lines else ""
        self.problems.append(f"{where}{key}: {message}")
        self.values.pop(key, None)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def parse(text: str, zoneinfo: Path = paths.ZONEINFO_DIR) -> Settings:
    """The settings in `text`; every problem found (with its line) in `Settings.problems`."""
    s = Settings()
    if text.startswith("\ufeff"):
        text = text[1:]
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            s.problems.append(f"line {number}: expected KEY=value, got {line[:60]!r}")
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        key = key.upper()
        value = _unquote(value)
        if key not in KEYS:
            s.problems.append(f"line {number}: unknown setting {key[:40]!r} (known: {', '.join(KEYS)})")
            continue
        if any(ord(c) < 32 for c in value):
            s.problems.append(f"line {number}: {key}: control characters are not allowed")
            continue
        if key in REPEATABLE:
            if value:
                if SSH_KEY.match(value):
                    s.ssh_keys.append(value)
                else:
                    s.problems.append(
                        f"line {number}: {key}: not an SSH public key (expected 'ssh-ed25519 AAAA... "
                        f"comment', as in ~/.ssh/id_ed25519.pub)"
                    )
            continue
        if key in s.lines:
            s.problems.append(f"line {number}: {key} is set again (line {s.lines[key]}); the last one counts")
        s.lines[key] = number
        s.values[key] = value
    _validate(s, zoneinfo)
    return s


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def _validate(s: Settings, zoneinfo: Path) -> None:
    v = s.values
    for key in [k for k, value in v.items() if value == "" and k != "MQTT_BRIDGE_CUSTOM"]:
        del v[key]  # KEY= (empty) means the default; for MQTT_BRIDGE_CUSTOM it removes the bridge
    for key in ("SSH", "WIFI_HIDDEN", "MQTT_BRIDGE_PROD"):
        if key in v and v[key].lower() not in BOOL_WORDS:
            s.problem(key, f"{v[key]!r} is not on or off")
    if "HOSTNAME" in v and not HOSTNAME.match(v["HOSTNAME"]):
        s.problem(
            "HOSTNAME",
            f"{v['HOSTNAME'][:70]!r} is not a host name (letters, digits and '-', 1 to 63, "
            f"not starting or ending with '-')",
        )
    if "TIMEZONE" in v:
        tz = v["TIMEZONE"]
        if not TZ_NAME.match(tz) or ".." in tz or not (zoneinfo / tz).is_file():
            s.problem("TIMEZONE", f"{tz[:60]!r} is not a known time zone (e.g. UTC, Africa/Nairobi, Europe/Berlin)")
    for prefix in ("ETH", "WIFI"):
        addr_key, gw_key = f"{prefix}_ADDRESS", f"{prefix}_GATEWAY"
        network = None
        if addr_key in v and v[addr_key].lower() != "dhcp":
            text = v[addr_key]
            try:
                if "/" not in text:
                    raise ValueError("no prefix")
                iface = ipaddress.ip_interface(text)
                if iface.network.prefixlen == iface.max_prefixlen or iface.ip == iface.network.network_address:
                    raise ValueError("not a host address")
                network = iface.network
            except ValueError:
                s.problem(addr_key, f"{text[:60]!r} is not dhcp or an address with its prefix, e.g. 192.168.1.50/24")
        elif addr_key in v:
            v[addr_key] = "dhcp"
        if gw_key in v and v[gw_key]:
            gw = _ip(v[gw_key])
            if gw is None:
                s.problem(gw_key, f"{v[gw_key][:60]!r} is not an IP address")
            elif network is None:
                s.problem(gw_key, f"a gateway needs a static {addr_key} (it is dhcp)")
            elif gw not in network:
                s.problem(gw_key, f"{gw} is not in the network of {addr_key} ({network})")
    if v.get("DNS"):
        bad = [d for d in (x.strip() for x in v["DNS"].split(",")) if _ip(d) is None]
        if bad:
            s.problem("DNS", f"not IP addresses: {', '.join(b[:40] for b in bad)}")
    if v.get("NTP"):
        bad = [n for n in (x.strip() for x in v["NTP"].split(",")) if not (NTP_NAME.match(n) or _ip(n))]
        if bad:
            s.problem("NTP", f"not host names or IP addresses: {', '.join(b[:40] for b in bad)}")
    if "WIFI_SSID" in v and len(v["WIFI_SSID"].encode()) > 32:
        s.problem("WIFI_SSID", "longer than 32 bytes")
    if v.get("WIFI_PASSWORD"):
        pw = v["WIFI_PASSWORD"]
        if not (8 <= len(pw) <= 63 and pw.isascii() or re.fullmatch(r"[0-9a-fA-F]{64}", pw)):
            s.problem("WIFI_PASSWORD", f"must be 8 to 63 ASCII characters (it has {len(pw)})")
    if "WIFI_COUNTRY" in v and not re.fullmatch(r"[A-Za-z]{2}", v["WIFI_COUNTRY"]):
        s.problem("WIFI_COUNTRY", f"{v['WIFI_COUNTRY'][:20]!r} is not a two-letter country code such as KE or DE")
    elif "WIFI_COUNTRY" in v:
        v["WIFI_COUNTRY"] = v["WIFI_COUNTRY"].upper()
    if "WIFI_AP" in v:
        if v["WIFI_AP"].lower() == "auto":
            v["WIFI_AP"] = "auto"
        elif v["WIFI_AP"].lower() in BOOL_WORDS:
            v["WIFI_AP"] = "on" if BOOL_WORDS[v["WIFI_AP"].lower()] else "off"
        else:
            s.problem("WIFI_AP", f"{v['WIFI_AP'][:20]!r} is not auto, on or off")
    if v.get("WIFI_AP") == "on" and v.get("WIFI_SSID"):
        s.problems.append(
            f"line {s.lines['WIFI_AP']}: WIFI_AP: on and WIFI_SSID both need wlan0; the Wi-Fi "
            f"client wins, no access point"
        )
        v["WIFI_AP"] = "off"
    if "WIFI_AP_SSID" in v and not 1 <= len(v["WIFI_AP_SSID"].encode()) <= 32:
        s.problem("WIFI_AP_SSID", "must be 1 to 32 bytes")
    if v.get("WIFI_AP_PASSWORD") and not (8 <= len(v["WIFI_AP_PASSWORD"]) <= 63 and v["WIFI_AP_PASSWORD"].isascii()):
        s.problem("WIFI_AP_PASSWORD", f"must be 8 to 63 ASCII characters (it has {len(v['WIFI_AP_PASSWORD'])})")
    if "WIFI_AP_CHANNEL" in v and not (v["WIFI_AP_CHANNEL"].isdigit() and 1 <= int(v["WIFI_AP_CHANNEL"]) <= 13):
        s.problem("WIFI_AP_CHANNEL", f"{v['WIFI_AP_CHANNEL'][:10]!r} is not a channel from 1 to 13")
    if v.get("UPDATE_URL") and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", v["UPDATE_URL"]):
        s.problem("UPDATE_URL", f"{v['UPDATE_URL'][:80]!r} is not an http:// or https:// URL")
    if v.get("MQTT_BRIDGE_CUSTOM"):
        try:
            value = json.loads(v["MQTT_BRIDGE_CUSTOM"])
        except json.JSONDecodeError as exc:
            s.problem("MQTT_BRIDGE_CUSTOM", f"not valid JSON ({exc.msg} at column {exc.colno})")
        except ValueError as exc:  # e.g. an integer of more than 4300 digits
            s.problem("MQTT_BRIDGE_CUSTOM", f"not valid JSON ({exc})")
        else:
            usable, messages = check_custom(value)
            if not usable:
                s.problem("MQTT_BRIDGE_CUSTOM", "; ".join(messages) or "not a usable bridge")
            else:
                v["MQTT_BRIDGE_CUSTOM"] = json.dumps(value)


# -- rendering (pure: settings in, file texts out) ------------------------------------------------------


def wpa_psk(ssid: str, password: str) -> str:
    """The WPA2 pre-shared key (what wpa_passphrase computes), so the password itself is not written."""
    if re.fullmatch(r"[0-9a-fA-F]{64}", password):
        return password.lower()
    return hashlib.pbkdf2_hmac("sha1", password.encode(), ssid.encode(), 4096, 32).hex()


def _network_file(match: str, address: str, gateway: str, dns: str, *, comment: str) -> str:
    lines = [
        f"# {comment} (written at boot by ammp-edge device-settings from the boot partition's settings file)",
        "[Match]",
        f"Name={match}",
        "",
        "[Network]",
    ]
    if address == "dhcp":
        lines.append("DHCP=yes")
    else:
        lines.append(f"Address={address}")
        if gateway:
            lines.append(f"Gateway={gateway}")
        lines += [f"DNS={d.strip()}" for d in dns.split(",") if d.strip()]
    return "\n".join(lines) + "\n"


def ap_enabled(s: Settings) -> bool:
    mode = s.get("WIFI_AP")
    return mode == "on" or (mode == "auto" and not s.get("WIFI_SSID"))


def render(s: Settings, ap_ssid: str, ap_passphrase: str) -> dict[str, str]:
    """Relative path (under the root) -> content of every file apply writes to /run."""
    files = {
        "run/systemd/network/10-ammp-eth.network": _network_file(
            "eth* en* usb*",
            s.get("ETH_ADDRESS"),
            s.get("ETH_GATEWAY"),
            s.get("DNS"),
            comment="Wired interfaces: ETH_ADDRESS",
        ),
        "run/ammp-edge-system/hostname": s.get("HOSTNAME") + "\n",
    }
    if s.get("WIFI_SSID"):
        ssid = s.get("WIFI_SSID")
        network = [f"    ssid={ssid.encode().hex()}", "    scan_ssid=1" if s.flag("WIFI_HIDDEN") else None]
        if s.get("WIFI_PASSWORD"):
            network += ["    key_mgmt=WPA-PSK", f"    psk={wpa_psk(ssid, s.get('WIFI_PASSWORD'))}"]
        else:
            network.append("    key_mgmt=NONE")
        files["run/ammp-edge-system/wpa_supplicant-wlan0.conf"] = (
            "\n".join(
                [
                    "# WIFI_SSID from the settings file",
                    f"country={s.get('WIFI_COUNTRY')}",
                    "ap_scan=1",
                    "network={",
                    *[x for x in network if x],
                    "}",
                ]
            )
            + "\n"
        )
        files["run/systemd/network/20-ammp-wlan.network"] = _network_file(
            "wlan0", s.get("WIFI_ADDRESS"), s.get("WIFI_GATEWAY"), s.get("DNS"), comment="Wi-Fi client: WIFI_ADDRESS"
        )
    elif ap_enabled(s):
        files["run/ammp-edge-system/hostapd.conf"] = (
            "\n".join(
                [
                    "# the commissioning access point (WIFI_AP in the settings file)",
                    "interface=wlan0",
                    "driver=nl80211",
                    f"ssid2={ap_ssid.encode().hex()}",
                    "hw_mode=g",
                    f"channel={s.get('WIFI_AP_CHANNEL')}",
                    f"country_code={s.get('WIFI_COUNTRY')}",
                    "ieee80211d=1",
                    "wmm_enabled=1",
                    "auth_algs=1",
                    "wpa=2",
                    "wpa_key_mgmt=WPA-PSK",
                    "rsn_pairwise=CCMP",
                    f"wpa_psk={wpa_psk(ap_ssid, ap_passphrase)}",
                    "ctrl_interface=/run/ammp-edge-system/hostapd",
                ]
            )
            + "\n"
        )
        files["run/systemd/network/20-ammp-wlan.network"] = (
            "\n".join(
                [
                    "# the commissioning access point: the device is 192.168.4.1 (web UI http://192.168.4.1:8000)",
                    "[Match]",
                    "Name=wlan0",
                    "",
                    "[Network]",
                    f"Address={AP_ADDRESS}",
                    "DHCPServer=yes",
                    "ConfigureWithoutCarrier=yes",
                    "",
                    "[DHCPServer]",
                    f"PoolOffset={AP_POOL_OFFSET}",
                    f"PoolSize={AP_POOL_SIZE}",
                    "EmitDNS=no",
                    "EmitRouter=no",
                ]
            )
            + "\n"
        )
    if s.flag("SSH"):
        files["run/ammp-edge-system/ssh-enabled"] = "SSH=on in the settings file\n"
        if s.ssh_keys:
            files["run/ammp-edge-system/ssh/authorized_keys_root"] = "\n".join(s.ssh_keys) + "\n"
    if s.get("NTP"):
        servers = " ".join(n.strip() for n in s.get("NTP").split(",") if n.strip())
        files["run/systemd/timesyncd.conf.d/ammp-edge.conf"] = f"# NTP from the settings file\n[Time]\nNTP={servers}\n"
    return files


def summary(s: Settings, ap_ssid: str, file: str, found: bool) -> dict[str, Any]:
    """What was applied, without secrets (settings.json; the web UI and /health show it)."""
    return {
        "file": file,
        "found": found,
        "problems": s.problems,
        "hostname": s.get("HOSTNAME"),
        "timezone": s.get("TIMEZONE"),
        "ssh": s.flag("SSH"),
        "ssh_keys": len(s.ssh_keys),
        "eth": s.get("ETH_ADDRESS"),
        "wifi": {"ssid": s.get("WIFI_SSID"), "address": s.get("WIFI_ADDRESS")} if s.get("WIFI_SSID") else None,
        "access_point": {"ssid": ap_ssid, "address": AP_ADDRESS.split("/")[0]} if ap_enabled(s) else None,
        "ntp": s.get("NTP") or None,
    }


# -- apply ----------------------------------------------------------------------------------------------


def _write_boot(path: Path, content: str) -> None:
    """A file on the FAT boot partition, only when it changes (few writes on the card), written in place
    and synced: FAT has no atomic rename, and a rename left the new entry unwritten in the boot test."""
    try:
        if path.read_text() == content:
            return
    except OSError:
        pass
    with open(path, "w") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())


def _ap_passphrase(data_dir: Path) -> str:
    path = data_dir / "system" / "wifi-ap-passphrase"
    try:
        value = path.read_text().strip()
        if 8 <= len(value) <= 63:
            return value
    except OSError:
        pass
    value = credentials.generate_password(12)
    write_atomic(path, value + "\n", 0o600, durable=True)  # on disk before the boot partition shows it
    return value


def apply(file: Path, root: Path = Path("/"), data_dir: Path | None = None, *, system: bool = False) -> Settings:
    """Apply the settings file. `system`: also set the running host name (the service does; tests don't).
    Never raises for a bad file: the problems are logged and kept in settings.json."""
    data_dir = data_dir or paths.data_dir()
    found = file.is_file()
    try:
        text = _read(file) if found else ""
    except (OSError, ValueError) as exc:
        text, found = "", False
        log.error("settings file %s cannot be read, defaults apply: %s", file, exc)
    s = parse(text)
    if not found:
        log.info("no settings file at %s: defaults (DHCP on the wired interfaces, SSH on, access point auto)", file)
    for p in s.problems:
        log.error("%s: %s", file, p)

    store = KVStore(paths.kvstore_path(data_dir))
    try:
        node_id = store.get(keys.NODE_ID)
        ap_ssid = s.get("WIFI_AP_SSID") or f"ammp-edge-{(node_id or _mac_suffix(root))[-4:]}"
        ap_pass = s.get("WIFI_AP_PASSWORD") or _ap_passphrase(data_dir)
        files = render(s, ap_ssid, ap_pass)
        run = root / "run"
        owned = [
            run / "systemd/network/10-ammp-eth.network",
            run / "systemd/network/20-ammp-wlan.network",
            run / "ammp-edge-system/wpa_supplicant-wlan0.conf",
            run / "ammp-edge-system/hostapd.conf",
            run / "ammp-edge-system/ssh-enabled",
            run / "ammp-edge-system/ssh/authorized_keys_root",
            run / "systemd/timesyncd.conf.d/ammp-edge.conf",
        ]
        for path in owned:
            if str(path.relative_to(root)) not in files:
                path.unlink(missing_ok=True)
        for rel, content in files.items():
            secret = rel.endswith(("wpa_supplicant-wlan0.conf", "hostapd.conf"))
            write_atomic(root / rel, content, 0o600 if secret else 0o644)
        localtime = run / "ammp-edge-system/localtime"
        localtime.unlink(missing_ok=True)
        localtime.symlink_to(paths.ZONEINFO_DIR / s.get("TIMEZONE"))
        if system:
            try:
                socket.sethostname(s.get("HOSTNAME"))
            except OSError as exc:
                log.error("cannot set the host name %s: %s", s.get("HOSTNAME"), exc)
        _apply_kv(s, store)
        _credentials(s, store, data_dir, file.parent, ap_ssid, ap_pass, found or file.parent.is_dir())
        info = summary(s, ap_ssid, str(file), found)
        write_atomic(run / "ammp-edge-system/settings.json", json.dumps(info, indent=1) + "\n")
    finally:
        store.close()
    log.info("settings applied: %s", json.dumps({k: v for k, v in info.items() if k != "problems"}))
    return s


def _read(file: Path) -> str:
    if file.stat().st_size > MAX_FILE_BYTES:
        raise ValueError(f"larger than {MAX_FILE_BYTES // 1024} KiB; not a settings file")
    return file.read_text(encoding="utf-8", errors="replace")


def _mac_suffix(root: Path) -> str:
    for name in ("eth0", "wlan0", "end0", "usb0"):
        try:
            return (root / "sys/class/net" / name / "address").read_text().strip().replace(":", "")
        except OSError:
            continue
    return secrets.token_hex(2)


def _apply_kv(s: Settings, store) -> None:
    if s.given("MQTT_BRIDGE_CUSTOM"):
        value = json.loads(s.get("MQTT_BRIDGE_CUSTOM")) if s.get("MQTT_BRIDGE_CUSTOM") else None
        if store.get(keys.MQTT_BRIDGE_CUSTOM) != value:
            if value is None:
                store.delete(keys.MQTT_BRIDGE_CUSTOM)
            else:
                store.set(keys.MQTT_BRIDGE_CUSTOM, value)
            log.info("mqtt_bridge_custom %s from the settings file", "set" if value else "removed")
    if s.given("UPDATE_URL") and store.get(keys.IMAGE_UPDATE_URL) != s.get("UPDATE_URL"):
        store.set(keys.IMAGE_UPDATE_URL, s.get("UPDATE_URL"))
        log.info("image_update_url %s from the settings file", s.get("UPDATE_URL"))
    if s.given("MQTT_BRIDGE_PROD") and s.get("MQTT_BRIDGE_PROD"):
        value = s.flag("MQTT_BRIDGE_PROD")
        if store.get(keys.MQTT_BRIDGE_PROD) != value:
            store.set(keys.MQTT_BRIDGE_PROD, value)
            log.info("mqtt_bridge_prod %s from the settings file", value)


def _credentials(
    s: Settings, store, data_dir: Path, boot_dir: Path, ap_ssid: str, ap_pass: str, writable: bool
) -> None:
    """The web UI's initial password and the access point's passphrase, readable on the boot partition
    by whoever holds the card (as a label on a router); the web UI password line goes once it is changed."""
    initial = credentials.ensure_password(store, paths.webui_initial_password_path(data_dir))
    lines = ["# ammp-edge: this device's credentials (written at boot; keep the card safe)"]
    lines.append(
        f"Web UI password: {initial}"
        if initial
        else "Web UI password: changed in the web UI (Settings); not shown here"
    )
    if ap_enabled(s):
        lines.append(f"Wi-Fi access point: {ap_ssid}  passphrase: {ap_pass}  web UI: http://192.168.4.1:8000")
    if writable:
        try:
            _write_boot(boot_dir / CREDENTIALS_NAME, "\n".join(lines) + "\n")
        except OSError as exc:
            log.error("cannot write %s on the boot partition: %s", CREDENTIALS_NAME, exc)


def commented_file() -> str:
    """The commented settings file the image ships (image/rpi/boot/ammp-edge.txt is this text)."""
    out = [
        "# ammp-edge settings, read at every boot of the Raspberry Pi image.",
        "# Edit on any computer (this is the SD card's FAT boot partition), put the card back, power on.",
        "# One KEY=value a line; '#' starts a comment; remove the '#' in front of a line to use it.",
        "# Check a file on a laptop with: ammp-edge device-settings check ammp-edge.txt",
        "# Problems are also shown in the web UI (port 8000) and in the system log. A wrong value is",
        "# left out (its default applies); the rest is still applied.",
        "# Without any network setting: DHCP on Ethernet, and the commissioning Wi-Fi access point",
        "# (its name and passphrase are in ammp-edge-credentials.txt next to this file after the first",
        "# boot; the web UI is then at http://192.168.4.1:8000).",
        "",
    ]
    for key, (default, help_text) in KEYS.items():
        out.append(f"# {help_text}")
        out.append(f"#{key}={default}")
        out.append("")
    return "\n".join(out)


def cmd(args) -> int:
    if args.action == "check":
        try:
            text = _read(Path(args.file))
        except (OSError, ValueError) as exc:
            print(f"{args.file}: cannot be read: {exc}")
            return 2
        s = parse(text, Path(args.zoneinfo))
        for p in s.problems:
            print(f"{args.file}: {p}")
        if not s.problems:
            print(f"{args.file}: OK ({len(s.values)} settings, {len(s.ssh_keys)} SSH keys)")
        return 1 if s.problems else 0
    if args.action == "template":
        print(commented_file(), end="")
        return 0
    apply(
        Path(args.file),
        Path(args.root),
        Path(args.data_dir) if args.data_dir else None,
        system=Path(args.root) == Path("/"),
    )
    return 0
