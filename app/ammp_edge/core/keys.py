"""Every KV key, MQTT topic, client id and shared default, named once.

The names and values are upstream's where upstream has them (reference sections 4 to 6), so an upstream
node's data directory and the AMMP cloud work unchanged. A module that reads or writes one of these uses
the constant, never the string.

KV store ($AE_DATA_DIR/kvs-db/kvstore.db, persistent)
  config                    the current site config, stored as the exact bytes received
  last_good_config          the last usable config (a program that starts after a bad one uses it)
  config_origin             where the stored config came from (core.configdoor writes it with the config):
                            {"source", "label", "at", "config_id", "detail", "problems", "replaced"}
  config_keep_local         while a local edit is kept on a cloud-managed node: {"since", "by",
                            "config_id", "replaced", "cloud_known"}; absent: the cloud's config wins
  config_cloud              the AMMP API's answer at the last config check: {"config_id", "checked"}
  config_check_request      set by the web UI (hand control back): node checks against the API now
  node_id, access_key, activated   the node's identity (activated: RFC 3339)
  http_api_base_url         the AMMP API (default https://edge.ammp.io/api/v0)
  mqtt_bridge_*             the broker's bridges (conf/README.md lists them)
  serial_sensor_port        the RS-485 port of the sensors (default /dev/ttyAMA0)
  image_update_url          where image_update fetches the app bundle (Pi image)
  image_update_proxy        the HTTP proxy image_update downloads through (snap_proxy_on/_off)
  webui_previous_config     the config the last change replaced, whichever door (the web UI's "Restore")
  webui_password, webui_secret, webui_sessions, log_level   the web UI's

KV cache ($AE_TEMP_DIR/ae-kvcache.db, volatile)
  clock_trusted             true once node trusts the clock; buses under supervisord wait for it
  last_readings, last_readings_ts   the last published cycle (publisher -> web UI)
  last_status_info_level/<device>/<content>   the last confirmed level of a status item
  last_env_scan             the last environment scan
  env/net/mac/<mac>         {"ipv4", ...} of a host a network scan saw (MAC -> IP resolution)
  env/net/scan_lock         time until which no other MAC refresh sweep starts
  bus_status/<bus id>       the bus -> web UI protocol: each bus program writes, after every cycle,
                            {"t", "duration", "requests", "errors", "overruns", "start_delay"} of
                            its last readout (`bus.status`); the web UI lists the keys under this
                            prefix and shows each bus's last cycle from them, also while the uplink
                            is down. Readers must accept missing members (older writers).
  modbus_plan/<bus id>/<device>   a Modbus device's working plan as its bus learned it (blocks split
                            after refused or unanswered reads) with the digest of the plan it was
                            learned from: a restarted bus starts with it; a changed driver or config
                            (another digest) plans again

MQTT topics on the local broker (the bridge maps them to a/<node_id>/... at the AMMP cloud)
"""

from __future__ import annotations

# -- KV store -------------------------------------------------------------------------------------
CONFIG = "config"
LAST_GOOD_CONFIG = "last_good_config"
CONFIG_ORIGIN = "config_origin"
CONFIG_KEEP_LOCAL = "config_keep_local"
CONFIG_CLOUD = "config_cloud"
CONFIG_CHECK_REQUEST = "config_check_request"
NODE_ID = "node_id"
ACCESS_KEY = "access_key"
ACTIVATED = "activated"
HTTP_API_BASE_URL = "http_api_base_url"
MQTT_BRIDGE_PROD = "mqtt_bridge_prod"
MQTT_BRIDGE_STAGE = "mqtt_bridge_stage"
MQTT_BRIDGE_CUSTOM = "mqtt_bridge_custom"
SERIAL_SENSOR_PORT = "serial_sensor_port"
IMAGE_UPDATE_URL = "image_update_url"
IMAGE_UPDATE_PROXY = "image_update_proxy"  # set by snap_proxy_on: app updates download through it
WEBUI_PASSWORD = "webui_password"
WEBUI_SECRET = "webui_secret"
WEBUI_PREVIOUS_CONFIG = "webui_previous_config"
WEBUI_SESSIONS = "webui_sessions"  # {session id: expiry}: the sessions not logged out (webui.auth)
LOG_LEVEL = "log_level"

# -- KV cache -------------------------------------------------------------------------------------
CLOCK_TRUSTED = "clock_trusted"
LAST_READINGS = "last_readings"
LAST_READINGS_TS = "last_readings_ts"
LAST_STATUS_LEVEL_PREFIX = "last_status_info_level/"
LAST_ENV_SCAN = "last_env_scan"
MAC_PREFIX = "env/net/mac/"
SCAN_LOCK = "env/net/scan_lock"
BUS_STATUS_PREFIX = "bus_status/"
BUS_STATUS_FIELDS = ("t", "duration", "requests", "errors", "overruns", "start_delay")
MODBUS_PLAN_PREFIX = "modbus_plan/"


def status_level_key(device: str, content: str) -> str:
    return f"{LAST_STATUS_LEVEL_PREFIX}{device}/{content}"


def mac_key(mac: str) -> str:
    return MAC_PREFIX + mac.lower()


def bus_status_key(bus_id: str) -> str:
    return BUS_STATUS_PREFIX + bus_id


def modbus_plan_key(bus_id: str, device: str) -> str:
    return f"{MODBUS_PLAN_PREFIX}{bus_id}/{device}"


# -- MQTT topics ----------------------------------------------------------------------------------
DATA_TOPIC = "u/data"  # one message per cycle
LOG_TOPIC = "u/log/msg"  # plain text a person should see: refused configs, clock trouble
COMMAND_RESPONSE_TOPIC = "u/command_response"
ENV_SCAN_TOPIC = "u/state/env_scan"
META_TOPIC_PREFIX = "u/meta/"
CONFIG_TOPIC = "d/config"
COMMAND_TOPIC = "d/command"
STORE_COUNT_TOPIC = "$SYS/broker/store/messages/count"  # mosquitto's queue length


def ammp_bridge_state_topic(node_id: str) -> str:
    """The AMMP bridge's local state topic (retained "1" while connected), as upstream."""
    return f"a/{node_id}/bridge_state"


# -- MQTT client ids ------------------------------------------------------------------------------
# Programs holding a session use a stable id, so a restarted program takes its session over and two
# programs never kick each other off (an upstream bug).
NODE_CLIENT_ID = "ammp-edge-node"  # persistent session: d/config and d/command wait in the broker
NODE_META_CLIENT_ID = "ammp-edge-node-meta"
PUBLISHER_CLIENT_ID = "ammp-edge-publisher"
WEBUI_CLIENT_ID_PREFIX = "ammp-edge-webui-"  # + start time: a clean session, nothing to take over
# the mqtt reader at a device's broker: + 12 hex digits of a digest of node id and bus id (readers/mqtt.py)
MQTT_READER_CLIENT_ID_PREFIX = "ammp-edge-"
# The local broker's user for every program of the appliance (password: paths.broker_password_path);
# clients without a user may only read u/# (bridge/render.py writes the ACL)
LOCAL_BROKER_USER = "ammp-edge"

# -- shared defaults ------------------------------------------------------------------------------
DEFAULT_API_BASE_URL = "https://edge.ammp.io/api/v0"
DEFAULT_SENSOR_PORT = "/dev/ttyAMA0"  # the Pi's UART with the RS-485 HAT
SNAP_PROXY = "http://10.255.255.254:8888"  # upstream's snap_proxy_on proxy.https
DEFAULT_WEBUI_PORT = 8000
DEFAULT_WEBUI_HOST = "0.0.0.0"
