"""The local mosquitto broker and its bridges, rendered from the KV store (upstream section 6).

- model.py: a Bridge, the Layout of the broker's files, the checks every value shares;
- custom.py: the custom bridge (`mqtt_bridge_custom`) checked key by key;
- plan.py: which bridges exist (`plan`, `configured_bridges`: the one place that says so, with each
  bridge's local state topic; the publisher gates delivery on them);
- render.py: mosquitto config text from a plan, written only when it changed;
- persistence.py: mosquitto.db after an interrupted save;
- program.py: `ammp-edge bridge-config`, which keeps the rendered files in step with the KV store and
  restarts the broker through supervisord when they change.

KV keys (store):
  node_id, access_key       bridge credentials. Without both, no AMMP bridge is rendered.
  mqtt_bridge_prod          the AMMP production bridge is on unless this is literally false
  mqtt_bridge_stage         the AMMP staging bridge is on only if this is literally true
  mqtt_bridge_prod_address  "host:port" that replaces mqtt.ammp.io:8883 (for tests and private deployments)
  mqtt_bridge_prod_cafile   CA file that replaces conf/certs/ammp-ca.crt (same purpose)
  mqtt_bridge_stage_address, mqtt_bridge_stage_cafile   the same for the staging bridge
  mqtt_bridge_custom        a bridge to any broker: {"host", "port", "tls", "ca_file" | "ca_cert",
                            "username", "password", "topic_prefix", "client_id", "protocol", "insecure"}
"Literally" means what upstream's shell check saw in `kvs-get` output: JSON false or the string "false"
(and true or "true" for stage).

Bridge state: with `notifications true`, Debian's mosquitto 2.0.11 publishes a retained "0" on the
local notification topic when the bridge starts, a retained "1" when it connects, and "0" again (also
retained) as soon as the connection drops. The remote broker gets "1" on connect and "0" as the
bridge's will. tests/test_broker.py checks this against the real broker. Each bridge has its own
local state topic (see `plan`). conf/README.md documents all of this for operators.
"""
