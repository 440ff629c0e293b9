"""Every path and environment variable the appliance uses, resolved in exactly one place.

Environment (compatible with upstream):
  AE_ROOT_DIR  install root; built-in drivers live in <root>/drivers  (default: the checkout)
  AE_DATA_DIR  persistent data: KV store, outbox, broker persistence   (default: <root>/data)
  AE_TEMP_DIR  volatile: cache, rendered configs, logs, supervisor socket (default: /tmp/ammp-edge)
  LOGGING_LEVEL / LOG_LEVEL  log level (default info)
  MQTT_BRIDGE_HOST / MQTT_BRIDGE_PORT  local broker (default localhost:1883)
  AE_OUTBOX_MAX_COUNT / AE_OUTBOX_MAX_BYTES  outbox bounds (default 525600 readouts, a year of
               one-minute cycles, and 2 GiB)
  AE_PROVISIONING_FILE  initial config, stored when the KV store has none
               (default <root>/provisioning/config.json; upstream: $SNAP/provisioning/config.json)
  AE_OFFLINE   1: node makes no HTTP request (no activation, no config watch); set by `up --demo`
  AE_HTTP_TIMEOUT  seconds per AMMP API request (default 60, as upstream)
  AE_CONFIG_CHECK_INTERVAL  seconds between config checks against the AMMP API (default 3600)
  AE_WEBUI_HOST / AE_WEBUI_PORT  the web UI's listener (default 0.0.0.0:8000)
  AE_APP_UPDATES / AE_APP_DIR  Pi image: app updates are on (1), and where they live (default /data/app)
  SUPERVISOR_ENABLED  set by supervisord in its programs' environment

And the machine's own files the appliance reads (ARP table, ssh host keys, time zones, the Pi image's
settings file and what its settings service wrote, update hooks, container markers). The Pi settings
service's outputs under /run are its own layout (device.settings), relative to a root for tests.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent
_CHECKOUT_ROOT = PACKAGE_DIR.parent.parent


def root_dir() -> Path:
    return Path(os.environ.get("AE_ROOT_DIR") or _CHECKOUT_ROOT)


def data_dir() -> Path:
    return Path(os.environ.get("AE_DATA_DIR") or root_dir() / "data")


def temp_dir() -> Path:
    return Path(os.environ.get("AE_TEMP_DIR") or "/tmp/ammp-edge")


def drivers_dir() -> Path:
    return root_dir() / "drivers"


def schemas_dir() -> Path:
    return PACKAGE_DIR / "schemas"


def sunspec_models_dir() -> Path:
    """The vendored SunSpec model definitions (pysunspec2's JSON; see its README)."""
    return PACKAGE_DIR / "sunspec_models"


def outbox_dir() -> Path:
    return data_dir() / "outbox"


def kvstore_path(data: Path | None = None) -> Path:
    return (data or data_dir()) / "kvs-db" / "kvstore.db"


def legacy_config_db_path() -> Path:
    return data_dir() / "config.db"


def conf_templates_dir() -> Path:
    """Broker and bridge templates, CA certificates (shipped with the app)."""
    return root_dir() / "conf"


def supervisor_conf_path() -> Path:
    return temp_dir() / "supervisord.conf"


def supervisor_include_dir() -> Path:
    return temp_dir() / "supervisor.d"


def supervisor_socket() -> Path:
    return temp_dir() / "supervisor.sock"


def log_dir() -> Path:
    return temp_dir() / "logs"


def mosquitto_rendered_dir() -> Path:
    """The rendered broker config: volatile, rewritten from the KV store at every start."""
    return temp_dir() / "mosquitto"


def mosquitto_conf_path() -> Path:
    return mosquitto_rendered_dir() / "mosquitto.conf"


def mosquitto_persistence_dir() -> Path:
    return data_dir() / "mosquitto"


def kvcache_path() -> Path:
    return temp_dir() / "ae-kvcache.db"


def log_level() -> str:
    return (os.environ.get("LOGGING_LEVEL") or os.environ.get("LOG_LEVEL") or "info").upper()


def mqtt_host() -> str:
    return os.environ.get("MQTT_BRIDGE_HOST") or "localhost"


def mqtt_port() -> int:
    return int(os.environ.get("MQTT_BRIDGE_PORT") or 1883)


def outbox_max_count() -> int:
    return int(os.environ.get("AE_OUTBOX_MAX_COUNT") or 525_600)


def outbox_max_bytes() -> int:
    return int(os.environ.get("AE_OUTBOX_MAX_BYTES") or 2 * 1024**3)


def provisioning_file() -> Path:
    return Path(os.environ.get("AE_PROVISIONING_FILE") or root_dir() / "provisioning" / "config.json")


def offline() -> bool:
    return (os.environ.get("AE_OFFLINE") or "0").strip().lower() not in ("0", "false", "no", "")


def http_timeout() -> float:
    return float(os.environ.get("AE_HTTP_TIMEOUT") or 60)


def config_check_interval() -> float:
    return float(os.environ.get("AE_CONFIG_CHECK_INTERVAL") or 3600)


def webui_host() -> str:
    return os.environ.get("AE_WEBUI_HOST") or "0.0.0.0"


def webui_port() -> int:
    return int(os.environ.get("AE_WEBUI_PORT") or 8000)


def webui_initial_password_path(data: Path | None = None) -> Path:
    """The clear initial web UI password, until it is changed (mode 0600)."""
    return (data or data_dir()) / "webui-initial-password"


def broker_password_path(data: Path | None = None) -> Path:
    """The local broker password of the appliance's own programs (mode 0600, made at the first start)."""
    return (data or data_dir()) / "broker-password"


def under_supervisord() -> bool:
    return bool(os.environ.get("SUPERVISOR_ENABLED"))


def app_updates_enabled() -> bool:
    return os.environ.get("AE_APP_UPDATES") == "1"


DEFAULT_APP_DIR = Path("/data/app")


def app_dir() -> Path:
    """Pi image: where app updates are installed (selfupdate)."""
    return Path(os.environ.get("AE_APP_DIR") or DEFAULT_APP_DIR)


def set_offline() -> None:
    """`up --demo`: this process and every program it starts make no HTTP request."""
    os.environ["AE_OFFLINE"] = "1"


def environment() -> dict[str, str]:
    """This process's environment, for programs started under supervisord."""
    return dict(os.environ)


def executable_search_path() -> str:
    """PATH plus the sbin directories (mosquitto lives in /usr/sbin on Debian)."""
    return os.environ.get("PATH", "") + ":/usr/sbin:/sbin"


ARP_TABLE = Path("/proc/net/arp")
SSH_DIR = Path("/etc/ssh")
SYSTEM_CA_DIR = "/etc/ssl/certs"
ZONEINFO_DIR = Path("/usr/share/zoneinfo")
TIMEDATECTL = "/usr/bin/timedatectl"
SYSTEMD_RUN_DIR = Path("/run/systemd/system")  # present when systemd is the init
CONTAINER_MARKERS = (Path("/.dockerenv"), Path("/run/.containerenv"))
PI_SETTINGS_FILE = Path("/boot/firmware/ammp-edge.txt")
PI_SETTINGS_SUMMARY = Path("/run/ammp-edge-system/settings.json")  # what the settings service applied at boot


def update_hooks() -> list[Path]:
    """The installation's update hook for `image_update`, first found wins (the Pi image's is the second)."""
    return [root_dir() / "bin" / "update", Path("/usr/lib/ammp-edge/update")]
