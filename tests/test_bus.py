"""Bus scheduling, min_read_interval and backoff, without waiting for wall-clock cycles."""

from __future__ import annotations

import pytest

from ammp_edge.bus.poller import MAX_BACKOFF_SECONDS, BusPoller
from ammp_edge.bus.program import next_cycle
from ammp_edge.core import config as cfg
from helpers.common import free_port


@pytest.mark.parametrize(
    "now,interval,roundtime,last_t,expected",
    [
        (1000.3, 10, True, None, (1010, 0)),  # aligned to the next multiple
        (1000.0, 10, True, None, (1000, 0)),  # exactly on a boundary: that one
        (1011.5, 10, True, 1000, (1010, 0)),  # the previous cycle ran 1.5 s over: this one starts a bit late
        (1012.9, 10, True, 1000, (1020, 1)),  # later than the grace period (2.5 s): skipped, counted
        (1065.0, 60, True, 1010, (1080, 0)),  # interval changed from 10 to 60: back onto the 60 s grid
        (1009.99, 10, True, 1000, (1010, 0)),
        (1035.2, 10, True, 1000, (1040, 3)),  # overran: 1010, 1020, 1030 were missed, counted, not burst
        (1000.3, 60, False, None, (1001, 0)),  # no roundtime: start now, then a fixed grid
        (1061.1, 60, False, 1001, (1061, 0)),
        (1190.0, 60, False, 1001, (1241, 3)),  # late by more than the grace: skips 1061, 1121, 1181
        (1182.0, 60, False, 1001, (1181, 2)),  # 1181 is within the grace period
    ],
)
def test_next_cycle(now, interval, roundtime, last_t, expected):
    assert next_cycle(now, interval, roundtime, last_t) == expected


def _dead_device_config(interval=10, **dev):
    return {
        "devices": {
            "d": {
                "driver": "sma_stp25000",
                "reading_type": "modbustcp",
                "vendor_id": "d",
                "timeout": 0.3,
                "address": {"host": "127.0.0.1", "port": free_port(), "unit_id": 3},
                **dev,
            }
        },
        "readings": {"p": {"device": "d", "var": "P_total"}},
        "read_interval": interval,
    }


def test_backoff_grows_and_is_capped(builtin_drivers):
    config = cfg.load(_dead_device_config(interval=60), builtin_drivers)
    ((bus_id, devices),) = config.buses().items()
    poller = BusPoller(bus_id, devices, config.read_interval)
    attempts = []
    for cycle in range(40):
        r = poller.poll(cycle * 60)
        if "backed off" not in r["errors"]["d"][0]:
            attempts.append(cycle)
        assert r["devices"] == [{"_d": "d", "_vid": "d"}]  # always published, even when skipped
    gaps = [b - a for a, b in zip(attempts, attempts[1:])]
    cap = MAX_BACKOFF_SECONDS // 60 + 1
    assert gaps[:3] == [1, 2, 4]  # skipped 0, 1, 3 cycles ...
    assert max(gaps) == cap and gaps[-1] == cap  # ... at most 5 minutes
    poller.close()


def test_min_read_interval_counts_from_the_last_successful_read(builtin_drivers, simulator):
    sim = simulator({3: builtin_drivers["sma_stp25000"]}, values={3: {"P_total": 1.0}})
    raw = _dead_device_config(min_read_interval=30)
    raw["devices"]["d"]["address"]["port"] = sim.port
    config = cfg.load(raw, builtin_drivers)
    ((bus_id, devices),) = config.buses().items()
    poller = BusPoller(bus_id, devices, 10)
    read_at = [t for t in range(0, 100, 10) if poller.poll(t)["devices"]]
    assert read_at == [0, 30, 60, 90]
    # a failed read does not count as a read (upstream defect 11.3.6)
    sim.silent_units.add(3)
    assert poller.poll(120)["errors"]["d"]
    sim.silent_units.discard(3)
    r = poller.poll(130)
    assert r["devices"] and r["devices"][0]["P_total"] == 1.0
    poller.close()
