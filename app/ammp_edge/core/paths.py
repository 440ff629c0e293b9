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


def outbox_dir() -> Path:
    return data_dir() / "outbox"


def kvstore_path() -> Path:
    return data_dir() / "kvs-db" / "kvstore.db"


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
