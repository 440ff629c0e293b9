# ammp-edge appliance image: `ammp-edge up` (supervisord and every program) as the main process.
# Build with `./build.sh docker` (see README "Images" and `./build.sh --help`): it puts the app's
# wheels in .build/wheels/ first and, where no Docker registry can be reached, makes the base image
# from Debian packages (mmdebstrap | docker import) under the pinned name below.
# Works with the legacy builder (no BuildKit features: no RUN --mount, no heredocs).
ARG BASE=debian:bookworm-slim

# --- build: the app and its Python dependencies in a venv, from wheels only (no network, no compiler)
FROM ${BASE} AS build
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
COPY .build/wheels/ /wheels/
RUN python3 -m venv /opt/ammp-edge/venv \
 && /opt/ammp-edge/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels ammp-edge \
 && /opt/ammp-edge/venv/bin/pip uninstall -y -q pip setuptools \
 && /opt/ammp-edge/venv/bin/ammp-edge --help >/dev/null
# AE_ROOT_DIR: built-in drivers and the broker templates / CA certificates
COPY drivers/ /opt/ammp-edge/drivers/
COPY conf/ /opt/ammp-edge/conf/

# --- runtime
FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive
# python3 runs the venv; mosquitto is the local broker; nmap the environment scan; iproute2 and
# ca-certificates for the node's network and TLS to the AMMP API; tzdata for zoneinfo (a HyCon's
# CSV is in its local time zone; Python has no zone data of its own).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 mosquitto nmap ca-certificates iproute2 tzdata \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /usr/share/doc/*/changelog* /usr/share/man/*
COPY --from=build /opt/ammp-edge/ /opt/ammp-edge/
# The overlay shared with the Raspberry Pi image: /etc/default/ammp-edge, entry point, health check
COPY image/rootfs/ /
ENV PATH=/opt/ammp-edge/venv/bin:$PATH
# Persistent data (AE_DATA_DIR): KV store with node id and config, outbox, broker persistence.
VOLUME /data
# The commissioning web UI (AE_WEBUI_PORT). The local broker listens on loopback only and is not
# exposed. With `--network host` (recommended: Speedwire multicast, network scans) EXPOSE is moot.
EXPOSE 8000
# /health answers 200 when supervisord runs and no program gave up.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
  CMD ["/usr/lib/ammp-edge/healthcheck"]
# `up` handles SIGTERM: buses finish and commit their cycle, then node, publisher, broker stop in order.
# It reaps orphans as PID 1, so no init is needed. Give it 30 s: `docker run --stop-timeout 30`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/lib/ammp-edge/entrypoint"]
CMD ["up"]
