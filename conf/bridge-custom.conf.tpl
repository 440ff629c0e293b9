# Custom bridge to ${ADDRESS} (KV key mqtt_bridge_custom).
# Rendered by `ammp-edge bridge-config` from conf/bridge-custom.conf.tpl.
# Local u/... goes out as ${TOPIC_PREFIX_SHOWN}u/..., remote ${TOPIC_PREFIX_SHOWN}d/... comes in as d/...
connection ${CONNECTION}
address ${ADDRESS}
remote_clientid ${CLIENT_ID}
${TLS_LINES}
bridge_protocol_version ${PROTOCOL}
${AUTH_LINES}
topic d/# in 1 "" ${TOPIC_PREFIX}
topic u/# out 1 "" ${TOPIC_PREFIX}
cleansession false
start_type automatic
restart_timeout 10 120
keepalive_interval 90
notifications true
notification_topic ${STATE_TOPIC}
