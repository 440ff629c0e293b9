# ${DESCRIPTION}
# Rendered by `ammp-edge bridge-config` from conf/bridge-ammp.conf.tpl (upstream section 6.2).
# Local u/... goes out as a/<node_id>/u/..., remote a/<node_id>/d/... comes in as d/...
# The broker publishes a retained 1 on the notification topic (locally and remotely) when the bridge
# connects. It publishes 0 locally when the bridge drops, and the remote broker gets 0 as the bridge's will.
connection ${CONNECTION}
address ${ADDRESS}
remote_clientid ${CONNECTION}
bridge_cafile ${CAFILE}
bridge_insecure false
bridge_protocol_version mqttv50
remote_username ${NODE_ID}
remote_password ${ACCESS_KEY}
topic d/# in 1 "" a/${NODE_ID}/
topic u/# out 1 "" a/${NODE_ID}/
cleansession false
start_type automatic
restart_timeout 10 120
keepalive_interval 90
notifications true
notification_topic ${STATE_TOPIC}
