# ammp-edge local MQTT broker.
# Rendered by `ammp-edge bridge-config` from conf/mosquitto.conf.tpl into
# $$AE_TEMP_DIR/mosquitto/mosquitto.conf. Edit the template or the KV store, never the rendered file:
# it is rewritten whenever the KV store changes.

# Loopback only. Never bind this listener to all interfaces.
listener ${PORT} 127.0.0.1
# Any local user may read the data (`mosquitto_sub -t u/data`): a client without a user name may only
# read u/#. The appliance's own programs (node, publisher, web UI) log in as ${USER} with the password
# in $$AE_DATA_DIR/broker-password (mode 0600) and may do everything, so nobody else on this host can
# publish d/config or d/command, or read them. Messages arriving over a bridge are not subject to the ACL.
allow_anonymous true
password_file ${PASSWORD_FILE}
acl_file ${ACL_FILE}
${USER_LINE}
# Persistence: a full snapshot every 60 s (never on every change: SD cards wear out). On start,
# bridge-config moves an interrupted save (mosquitto.db.new) aside together with mosquitto.db.
persistence true
persistence_location ${PERSISTENCE_DIR}/
autosave_interval 60
autosave_on_changes false

# Queues. mosquitto is a transit hop here, not the buffer. The outbox ($$AE_DATA_DIR/outbox) keeps
# every readout on disk until the local broker acknowledged it and the bridge stayed connected long
# enough to forward it. Bridge state comes from the notification topic of each bridge. So mosquitto
# only needs a small in-flight window. Upstream made mosquitto the buffer (525600 queued messages,
# held in RAM and snapshotted every 5 min). Large mosquitto backlogs are known to stall or OOM the
# broker and to keep bridges from reconnecting.
max_inflight_messages 20
max_queued_messages 1000
# The publisher watches $$SYS/broker/store/messages/count (published when it changes, at most every
# sys_interval seconds) to see that the broker's queue has drained before a message leaves the outbox,
# and to slow the backlog down when the uplink is slower than we are.
sys_interval 1

log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
log_timestamp true
log_timestamp_format %Y-%m-%dT%H:%M:%S
${INCLUDE_LINE}
