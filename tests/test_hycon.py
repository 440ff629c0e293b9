"""The SMA HyCon CSV backfill: CSV3 files made here in the upstream format, a real FTP/FTPS server
(pyftpdlib) and an SNTP server on loopback, the outbox, and the publisher against real mosquitto."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from ammp_edge.core import config as cfg, drivers as drv
from ammp_edge.core.configsource import ConfigSource
from ammp_edge.delivery import backfill as bf
from ammp_edge.delivery.outbox import Outbox
from ammp_edge.delivery.publisher import Publisher
from ammp_edge.readers import hycon_csv as hc
from helpers.brokers import Mosquitto, Recorder, make_ca, wait_until
from helpers.common import AMMP_EDGE, child_env, write_json
from helpers.hycon import HEAD, HyconFtp, SntpServer, day_csv, local_times, row_line, row_values, zip_of

TZ = "Africa/Johannesburg"  # the upstream test's zone (UTC+2, no DST)
DAY = date(2023, 3, 9)
# "now" for the tests: 01:00 on the day after DAY in the HyCon's zone (inside the window)
NOW = datetime(2023, 3, 10, 1, 0, tzinfo=ZoneInfo(TZ)).timestamp()
FIELDS = {
    k: drv.compile_field(drv.CODE_DRIVERS["sma_hycon_csv"], k, f"f.{k}", [])
    for k in drv.CODE_DRIVERS["sma_hycon_csv"]["fields"]
}


def device(url: str, tz: str = TZ, ntp_port: int = 0, key: str = "hycon1") -> cfg.Device:
    raw = {
        "devices": {
            key: {
                "driver": "sma_hycon_csv",
                "reading_type": "sma_hycon_csv",
                "vendor_id": "sma-hycon-1",
                "address": {"base_url": url, "timezone": tz, "ntp_port": ntp_port},
            }
        },
        "readings": {},
    }
    c = cfg.load(raw, {})
    assert not c.errors, c.errors
    return c.devices[key]


def config_of(dev: cfg.Device) -> cfg.Config:
    return cfg.Config({}, {dev.key: dev}, [], 10, True, [], "", "x")


def upstream_files():
    """As the upstream mock: two zipped days and today's (incomplete) CSV."""
    return {
        "LogDataFast_2023-03-08.zip": zip_of(day_csv(date(2023, 3, 8), TZ)),
        "LogDataFast_2023-03-09.zip": zip_of(day_csv(DAY, TZ)),
        "LogDataFast_2023-03-10.csv": day_csv(date(2023, 3, 10), TZ, rows=360),
    }


# ---------------------------------------------------------------------------------------------
# parsing


def test_a_whole_day_parses_as_upstream_numbers():
    day = hc.parse_csv(day_csv(DAY, TZ), FIELDS, ZoneInfo(TZ), 0.0)
    assert len(day.rows) == 8640 and day.bad_rows == 0 and day.errors == []
    first = day.rows[0]
    # 2023-03-09 00:00:04 in Johannesburg (UTC+2) is 2023-03-08 22:00:04 UTC; kW x 1000 = W
    assert first["t"] == int(datetime(2023, 3, 8, 22, 0, 4, tzinfo=UTC).timestamp())
    v = row_values(0)
    assert first == {
        "t": first["t"],
        "grid_out_P": float(v["LoadPwrAtTot"]) * 1000,
        "genset_P": 1000400.0,
        "pvinv_P_total": 0.0,
        "grid_in_P": -1250.0,
    }
    assert first["grid_out_P"] == 1000970.0  # decimal scaling: 1000.97 kW, not 1000969.9999999999
    assert [r["t"] for r in day.rows] == sorted({r["t"] for r in day.rows})
    assert day.rows[-1]["t"] - first["t"] == 86390


def test_the_clock_offset_is_subtracted():
    plain = hc.parse_csv(day_csv(DAY, TZ, rows=3), FIELDS, ZoneInfo(TZ), 0.0)
    ahead = hc.parse_csv(day_csv(DAY, TZ, rows=3), FIELDS, ZoneInfo(TZ), 7.25)  # HyCon clock 7.25 s fast
    assert [a["t"] for a in ahead.rows] == [p["t"] - 8 for p in plain.rows]  # floor, as upstream


@pytest.mark.parametrize(
    "day, hours",
    [(date(2023, 10, 29), 25), (date(2023, 3, 26), 23), (date(2023, 6, 1), 24)],
    ids=["fall-back", "spring-forward", "summer"],
)
def test_dst_days_in_amsterdam_keep_every_row_in_order(day, hours):
    tz = "Europe/Amsterdam"
    parsed = hc.parse_csv(day_csv(day, tz, step=60), FIELDS, ZoneInfo(tz), 0.0)
    expected = [int(u.timestamp()) for _, u in local_times(day, tz, step=60)]
    assert len(expected) == hours * 60
    assert [r["t"] for r in parsed.rows] == expected  # the repeated hour twice, in order (upstream dropped it)
    assert parsed.bad_rows == 0


def test_a_time_the_dst_change_skips_is_a_row_error():
    tz = "Europe/Amsterdam"
    text = HEAD + row_line(datetime(2023, 3, 26, 1, 59, 50), 0) + row_line(datetime(2023, 3, 26, 2, 30, 0), 1)
    text += row_line(datetime(2023, 3, 26, 3, 0, 0), 2)
    parsed = hc.parse_csv(text.encode(), FIELDS, ZoneInfo(tz), 0.0)
    assert len(parsed.rows) == 2 and parsed.bad_rows == 1
    assert "2023-03-26 02:30:00 does not exist in Europe/Amsterdam" in parsed.errors[0]


def test_bad_rows_are_errors_for_that_row_never_values():
    good = [row_line(datetime(2023, 3, 9, 0, 0, 10 * i), i) for i in range(6)]
    data = HEAD.encode() + good[0].encode()
    data += good[1].encode().replace(b"1001.97", b"1001.9\xff7")  # a bad byte: the row, not a value
    data += (good[2].rsplit(";", 3)[0] + "\r\n").encode()  # short: a row cut off
    data += ("2023-03-09 25:00:00" + good[3][19:]).encode()  # no such time
    data += good[4].replace("1004.40", "n/a").encode()  # a cell that is not a number: left out, as upstream
    data += good[2].encode()  # 00:00:20 again, after 00:00:40
    data += good[5].encode()
    parsed = hc.parse_csv(data, FIELDS, ZoneInfo(TZ), 0.0)
    by_line = "; ".join(parsed.errors)
    assert "line 10: not UTF-8 (byte 0xff" in by_line
    assert "line 11: 21 cells, the header has 24" in by_line
    assert "line 12: timestamp '2023-03-09 25:00:00'" in by_line
    assert "line 14: timestamp 2023-03-09 00:00:20 is not after the row before it" in by_line
    assert parsed.bad_rows == 4
    rows = parsed.rows
    assert [r["grid_out_P"] for r in rows] == [1000970.0, 1004970.0, 1005970.0]
    assert "genset_P" not in rows[1] and rows[2]["genset_P"] == 1005400.0
    assert parsed.skipped_cells == 1


@pytest.mark.parametrize(
    "data, error",
    [
        (b"", "an empty file"),
        (b"Version CSV2|Something else\r\n", "not a HyCon CSV3 file"),
        (b"PK\x03\x04garbage", "not a HyCon CSV3 file"),
        (HEAD.encode()[:200], "no header line"),
    ],
)
def test_files_that_are_not_csv3_are_refused(data, error):
    with pytest.raises(hc.HyconError, match=error):
        hc.parse_csv(data, FIELDS, ZoneInfo(TZ), 0.0)


def test_a_missing_column_is_reported_and_the_rest_read():
    data = day_csv(DAY, TZ, rows=2).replace(b";PvPwrAtTot;", b";PvPwrAtTotX;")
    parsed = hc.parse_csv(data, FIELDS, ZoneInfo(TZ), 0.0)
    assert parsed.errors == ["no column 'PvPwrAtTot' (pvinv_P_total) in the header"]
    assert len(parsed.rows) == 2 and "pvinv_P_total" not in parsed.rows[0] and "genset_P" in parsed.rows[0]


@pytest.mark.parametrize(
    "name, data, error",
    [
        ("d.zip", b"PK\x03\x04 not a zip at all", "is not a readable ZIP"),
        ("d.zip", zip_of(b"x")[:-30], "is not a readable ZIP"),
        ("d.zip", None, "holds no .csv file"),
    ],
)
def test_broken_zips_are_file_errors(name, data, error):
    if data is None:
        import io
        import zipfile

        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("notes.txt", "x")
        data = buf.getvalue()
    with pytest.raises(hc.HyconError, match=error):
        hc.csv_bytes(name, data)


def test_a_zip_gives_its_first_csv():
    assert hc.csv_bytes("a.zip", zip_of(b"Version CSV3|Hybrid Controller|")) == b"Version CSV3|Hybrid Controller|"


@pytest.mark.parametrize(
    "names, today, chosen",
    [
        (
            ["LogDataFast_2023-03-08.zip", "LogDataFast_2023-03-09.zip", "LogDataFast_2023-03-10.csv"],
            DAY.replace(day=10),
            "LogDataFast_2023-03-09.zip",
        ),
        # today's file not there yet: upstream's second-to-last would take the day before yesterday
        (
            ["LogDataFast_2023-03-08.zip", "LogDataFast_2023-03-09.zip"],
            DAY.replace(day=10),
            "LogDataFast_2023-03-09.zip",
        ),
        # only yesterday's: upstream failed (fewer than 2 files; its Rust index underflowed)
        (["LogDataFast_2023-03-09.zip"], DAY.replace(day=10), "LogDataFast_2023-03-09.zip"),
        (["b.csv", "a.csv", "c.csv", "notes.txt"], DAY, "b.csv"),  # no dates: upstream's rule
    ],
)
def test_the_newest_complete_day_is_chosen(names, today, chosen):
    assert hc.select_file(names, today) == chosen


@pytest.mark.parametrize(
    "names, error",
    [([], "no .zip or .csv files"), (["LogDataFast_2023-03-10.csv"], "no file of a day before"), (["a.csv"], "only")],
)
def test_no_complete_day_is_an_error(names, error):
    with pytest.raises(hc.HyconError, match=error):
        hc.select_file(names, DAY.replace(day=10))


def test_the_base_url():
    t = hc.parse_base_url("ftps://User:p%40ss%21@172.16.1.21:900/fsc/log/DataFast/")
    assert (t.host, t.port, t.user, t.password, t.secure, t.path) == (
        "172.16.1.21",
        900,
        "User",
        "p@ss!",
        True,
        "fsc/log/DataFast/",
    )
    assert "p@ss" not in str(t)
    assert hc.parse_base_url("ftp://h/x").port == 21


@pytest.mark.parametrize(
    "address, problem",
    [
        ({"timezone": TZ}, "address.base_url: missing"),
        ({"base_url": "http://h/x", "timezone": TZ}, "must be ftp://host/path/ or ftps://"),
        ({"base_url": "ftp://h:99999/x", "timezone": TZ}, "is not a URL"),
        ({"base_url": "ftp://h/x"}, "address.timezone: missing"),
        ({"base_url": "ftp://h/x", "timezone": "Mars/Olympus"}, "'Mars/Olympus' is not an IANA time zone"),
    ],
)
def test_config_problems_name_their_path(address, problem):
    raw = {
        "devices": {
            "h": {"driver": "sma_hycon_csv", "reading_type": "sma_hycon_csv", "vendor_id": "v", "address": address}
        },
        "readings": {},
    }
    c = cfg.load(raw, {})
    assert "h" not in c.devices and any(problem in str(p) for p in c.errors), [str(p) for p in c.errors]


def test_hycon_devices_have_no_bus_and_a_backfill_program():
    dev = device("ftp://h/x")
    c = config_of(dev)
    assert c.buses() == {} and c.backfill_devices() == [dev]


# ---------------------------------------------------------------------------------------------
# SNTP


def test_sntp_offset_from_a_server_ahead():
    with SntpServer(offset=7.25) as ntp:
        assert abs(hc.sntp_offset("127.0.0.1", ntp.port, 5) - 7.25) < 0.2


@pytest.mark.parametrize(
    "answer, why",
    [
        (b"\x24\x02" + b"\x00" * 20, "48 expected"),
        (b"\x23\x02" + b"\x00" * 46, "mode 3"),
        (b"\x24\x00" + b"\x00" * 46, "stratum 0"),
        (b"\x24\x02" + b"\x00" * 46, "not for our request"),
    ],
)
def test_bad_sntp_answers_are_refused_and_the_offset_is_zero(answer, why):
    with SntpServer(answer=answer) as ntp:
        with pytest.raises(ValueError, match=why):
            hc.sntp_offset("127.0.0.1", ntp.port, 2)
        begun = time.monotonic()
        assert hc.clock_offset("127.0.0.1", ntp.port, retry_for=1.5, timeout=0.5) == 0.0
        assert ntp.queries >= 2 and time.monotonic() - begun < 5


# ---------------------------------------------------------------------------------------------
# FTP end to end, through the outbox


def test_ftp_backfill_puts_one_record_per_row_once(tmp_path, isolated_dirs):
    data, _ = isolated_dirs
    with HyconFtp(tmp_path, upstream_files()) as ftp, SntpServer(offset=3.0) as ntp:
        dev = device(ftp.url, ntp_port=ntp.port)
        box = Outbox(data / "outbox")
        run = bf.HyconBackfill(box, threading.Event(), clock=lambda: NOW)
        begun = time.monotonic()
        assert run.backfill(dev) == 8640
        took = time.monotonic() - begun
        records = [r for _, r in box.read_from(None, 10_000)]
        assert len(records) == 8640 and box.count() == 8640
        r0 = records[0]
        assert r0["data_provider"] == "sma-hycon-csv" and r0["bus"] == dev.bus_id
        assert r0["devices"][0]["_d"] == "hycon1" and r0["devices"][0]["_vid"] == "sma-hycon-1"
        t0 = int(datetime(2023, 3, 8, 22, 0, 4, tzinfo=UTC).timestamp()) - 3  # minus the HyCon's 3 s
        assert r0["t"] in (t0, t0 - 1)  # floor of (t - measured offset) on a loaded machine
        assert box.mark("hycon/hycon1") == {
            "day": "2023-03-09",
            "file": "LogDataFast_2023-03-09.zip",
            "rows": 8640,
            "total": 8640,
            "offset": box.mark("hycon/hycon1")["offset"],
            "finished": True,
        }
        # the program running again (a restart in the window) sends nothing twice
        assert run.backfill(dev) == 0 and box.count() == 8640
        assert took < 60, f"a day's backfill took {took:.0f} s"


class CrashingOutbox(Outbox):
    """Loses power before the n-th chunk is committed."""

    def __init__(self, *a, crash_at: int, **k):
        super().__init__(*a, **k)
        self.crash_at, self.batches = crash_at, 0

    def put_batch(self, records, mark, value):
        self.batches += 1
        if self.batches == self.crash_at:
            raise KeyboardInterrupt("power cut")
        return super().put_batch(records, mark, value)


def test_a_restart_halfway_through_a_day_resumes_and_sends_no_row_twice(tmp_path, isolated_dirs):
    data, _ = isolated_dirs
    with HyconFtp(tmp_path, upstream_files()) as ftp, SntpServer(offset=2.5) as ntp:
        dev = device(ftp.url, ntp_port=ntp.port)
        box = CrashingOutbox(data / "outbox", crash_at=6)
        with pytest.raises(KeyboardInterrupt):
            bf.HyconBackfill(box, threading.Event(), clock=lambda: NOW).backfill(dev)
        box.close()
        box = Outbox(data / "outbox")
        assert box.count() == 5 * bf.CHUNK and box.mark("hycon/hycon1")["rows"] == 5 * bf.CHUNK
        ntp.offset = 60.0  # the clock offset measured again would move every t: the day keeps its own
        assert bf.HyconBackfill(box, threading.Event(), clock=lambda: NOW).backfill(dev) == 8640 - 5 * bf.CHUNK
        ts = [r["t"] for _, r in box.read_from(None, 10_000)]
        assert len(ts) == 8640 and len(set(ts)) == 8640 and ts == sorted(ts)


def test_implicit_ftps(tmp_path, isolated_dirs):
    data, _ = isolated_dirs
    ca = make_ca(tmp_path)
    with HyconFtp(tmp_path, upstream_files(), tls_cert=(ca.server_crt, ca.server_key)) as ftp:
        assert ftp.url.startswith("ftps://")
        dev = device(ftp.url)
        day = hc.read_day(dev, None, NOW)
        assert day.name == "LogDataFast_2023-03-09.zip" and len(day.parsed.rows) == 8640
        # a plain FTP client at an FTPS server: an error naming the server, no value
        with pytest.raises(hc.HyconError, match="ftp://testuser@127.0.0.1"):
            hc.read_day(device(ftp.url.replace("ftps://", "ftp://")), None, NOW)


def test_retries_until_the_server_answers(tmp_path, isolated_dirs):
    data, _ = isolated_dirs
    ftp = HyconFtp(tmp_path, {"LogDataFast_2023-03-10.csv": day_csv(date(2023, 3, 10), TZ, rows=5)}).start()
    try:
        dev = device(ftp.url)
        box = Outbox(data / "outbox")
        run = bf.HyconBackfill(box, threading.Event(), clock=lambda: NOW, retry_for=60, backoff=(0.5, 1.0))
        timer = threading.Timer(2.0, ftp.set_files, args=(upstream_files(),))  # yesterday's file comes late
        timer.start()
        begun = time.monotonic()
        assert run.backfill(dev) == 8640
        assert 2.0 <= time.monotonic() - begun < 30
        # a server that never has the day: given up after retry_for, nothing put
        ftp.set_files({})
        box2 = Outbox(data / "outbox2")
        run2 = bf.HyconBackfill(box2, threading.Event(), clock=lambda: NOW, retry_for=1.5, backoff=(0.2, 0.5))
        begun = time.monotonic()
        with pytest.raises(hc.HyconError, match="no .zip or .csv files"):
            run2.backfill(dev)
        assert 1.5 <= time.monotonic() - begun < 10 and box2.count() == 0
    finally:
        ftp.stop()


# ---------------------------------------------------------------------------------------------
# the window


@pytest.mark.parametrize(
    "local, due",
    [
        ((2023, 3, 10, 0, 29), None),
        ((2023, 3, 10, 0, 46), date(2023, 3, 9)),  # after 00:30 + this device's spread (< 15 min)
        ((2023, 3, 10, 3, 59), date(2023, 3, 9)),
        ((2023, 3, 10, 4, 0), None),
        ((2023, 3, 10, 12, 0), None),
    ],
)
def test_the_window_is_0030_to_0400_in_the_hycons_zone(local, due):
    dev = device("ftp://h/x", tz="America/New_York")
    now = datetime(*local, tzinfo=ZoneInfo("America/New_York")).timestamp()
    assert bf.due_day(dev, now, None) == due
    if due:
        assert bf.due_day(dev, now, {"day": due.isoformat(), "finished": True}) is None
        assert bf.due_day(dev, now, {"day": due.isoformat(), "finished": False, "rows": 500}) == due
    assert 30 * 60 <= bf.start_offset(dev.key) < 45 * 60


# ---------------------------------------------------------------------------------------------
# the program and the publisher: each row its own u/data with m.data_provider and the row's own t


def test_hycon_once_then_the_publisher_sends_each_row_alone(tmp_path, isolated_dirs, monkeypatch):
    data, temp = isolated_dirs
    rows = 40 * 3  # more than the ~40 messages a previous attempt stalled after
    today = datetime.now(ZoneInfo(TZ)).date()  # the program runs on the real clock
    yesterday = today - timedelta(days=1)
    files = {
        f"LogDataFast_{yesterday}.csv": day_csv(yesterday, TZ, rows=rows),
        f"LogDataFast_{today}.csv": day_csv(today, TZ, rows=3),
    }
    with (
        HyconFtp(tmp_path, files) as ftp,
        Mosquitto.from_text(
            tmp_path / "b", "listener {port} 127.0.0.1\nallow_anonymous true\nsys_interval 1\n"
        ) as broker,
    ):
        conf = write_json(
            tmp_path / "config.json",
            {
                "devices": {
                    "hycon1": {
                        "driver": "sma_hycon_csv",
                        "reading_type": "sma_hycon_csv",
                        "vendor_id": "sma-hycon-1",
                        "address": {"base_url": ftp.url, "timezone": TZ, "ntp_port": 0},
                    },
                    "logger": {"driver": "sys_generic", "reading_type": "sys", "vendor_id": "lg"},
                },
                "readings": {"cpu": {"device": "logger", "var": "cpu_load"}},
                "read_interval": 10,
            },
        )
        r = subprocess.run(
            [*AMMP_EDGE, "hycon", "--once", "--config", str(conf)],
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr
        box = Outbox(data / "outbox")
        assert box.count() == rows
        # a live cycle of the logger arrives beside the backfill
        box.put(
            {
                "t": int(time.time()),
                "bus": "sys",
                "devices": [{"_d": "logger", "_vid": "lg", "cpu_load": 0.5}],
                "duration": 0.1,
                "requests": 0,
                "errors": {},
                "config_id": "c1",
            }
        )
        monkeypatch.setenv("MQTT_BRIDGE_PORT", str(broker.port))
        with Recorder(broker.port, "u/data") as rec:
            pub = Publisher(box, ConfigSource(conf), [])
            stop = threading.Event()
            th = threading.Thread(target=pub.run, args=(stop,), daemon=True)
            th.start()
            try:
                wait_until(lambda: len(rec.on("u/data")) >= rows + 1, 60, what=f"{rows + 1} messages")
                wait_until(lambda: box.count() == 0, 30, what="the outbox to empty")
            finally:
                stop.set()
                th.join(10)
        msgs = [json.loads(m.payload) for m in rec.on("u/data")]
        backfill = [m for m in msgs if m["m"].get("data_provider") == "sma-hycon-csv"]
        live = [m for m in msgs if "data_provider" not in m["m"]]
        assert len(backfill) == rows and len(live) == 1
        assert all(m["m"] == {"data_provider": "sma-hycon-csv"} and len(m["r"]) == 1 for m in backfill)
        assert all(m["r"][0]["_d"] == "hycon1" and m["r"][0]["_vid"] == "sma-hycon-1" for m in backfill)
        expected_t = [int(u.timestamp()) for _, u in list(local_times(yesterday, TZ))[:rows]]
        assert [m["t"] for m in backfill] == expected_t  # each row's own t, in order
        assert live[0]["r"] == [{"_d": "logger", "_vid": "lg", "cpu_load": 0.5}]


# ---------------------------------------------------------------------------------------------
# the appliance runs the program while the config has a HyCon


def test_the_appliance_runs_the_backfill_program_while_the_config_has_a_hycon(tmp_path):
    from helpers.appliance import Appliance

    hycon = {
        "driver": "sma_hycon_csv",
        "reading_type": "sma_hycon_csv",
        "vendor_id": "h1",
        "address": {"base_url": "ftp://u:p@127.0.0.1:9/x/", "timezone": TZ, "ntp_port": 0},
    }
    logger = {"driver": "sys_generic", "reading_type": "sys", "vendor_id": "lg"}
    readings = {"mem": {"device": "lg", "var": "memory_usage"}}
    app = Appliance(tmp_path, {"devices": {"lg": logger, "h": hycon}, "readings": readings, "read_interval": 2}, None)
    try:
        app.start(timeout=90)
        wait_until(
            lambda: app.programs().get("backfill-hycon", {}).get("statename") == "RUNNING",
            30,
            what="backfill-hycon RUNNING",
        )
        assert "bus-sys" in app.programs() and not any(n.startswith("bus-sma_hycon") for n in app.programs())
        assert "backfill-hycon" in (app.temp / "supervisor.d" / "backfill-hycon.conf").read_text()
        kv = app.kv()
        kv.set_raw("config", json.dumps({"devices": {"lg": logger}, "readings": readings, "read_interval": 2}).encode())
        kv.close()
        wait_until(lambda: "backfill-hycon" not in app.programs(), 30, what="backfill-hycon removed")
        assert app.programs()["bus-sys"]["statename"] == "RUNNING"
    finally:
        app.stop()


def test_hycon_once_says_why_it_failed(tmp_path):
    with HyconFtp(tmp_path, {}) as ftp:
        conf = write_json(
            tmp_path / "c.json",
            {
                "devices": {
                    "h": {
                        "driver": "sma_hycon_csv",
                        "reading_type": "sma_hycon_csv",
                        "vendor_id": "v",
                        "address": {"base_url": ftp.url, "timezone": TZ, "ntp_port": 0},
                    }
                },
                "readings": {},
            },
        )
        begun = time.monotonic()
        r = subprocess.run(
            [*AMMP_EDGE, "hycon", "--once", "--config", str(conf)],
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 1 and "h: no .zip or .csv files in the directory" in r.stderr, r.stderr
        assert PASSWORD_TEXT not in r.stderr + r.stdout
        assert time.monotonic() - begun < 60  # one attempt by hand, no 30-minute retries


PASSWORD_TEXT = "TestPWD123"


def test_a_backfill_after_the_outbox_emptied_is_delivered(tmp_path, isolated_dirs, monkeypatch):
    """The daily case: live cycles went out and the outbox is empty when the night's rows arrive."""
    data, _ = isolated_dirs
    today = datetime.now(ZoneInfo(TZ)).date()
    yesterday = today - timedelta(days=1)
    files = {f"LogDataFast_{yesterday}.csv": day_csv(yesterday, TZ, rows=150)}
    with (
        HyconFtp(tmp_path, files) as ftp,
        Mosquitto.from_text(tmp_path / "b", "listener {port} 127.0.0.1\nallow_anonymous true\n") as broker,
    ):
        conf = write_json(
            tmp_path / "config.json",
            {
                "devices": {
                    "hycon1": {
                        "driver": "sma_hycon_csv",
                        "reading_type": "sma_hycon_csv",
                        "vendor_id": "h",
                        "address": {"base_url": ftp.url, "timezone": TZ, "ntp_port": 0},
                    },
                    "logger": {"driver": "sys_generic", "reading_type": "sys", "vendor_id": "lg"},
                },
                "readings": {"cpu": {"device": "logger", "var": "cpu_load"}},
                "read_interval": 10,
            },
        )
        monkeypatch.setenv("MQTT_BRIDGE_PORT", str(broker.port))
        box = Outbox(data / "outbox")
        with Recorder(broker.port, "u/data") as rec:
            pub = Publisher(box, ConfigSource(conf), [])
            stop = threading.Event()
            th = threading.Thread(target=pub.run, args=(stop,), daemon=True)
            th.start()
            try:
                for k in range(3):  # live cycles: sent, confirmed, the outbox empty again
                    box.put(
                        {
                            "t": int(time.time()) - 30 + k,
                            "bus": "sys",
                            "duration": 0.1,
                            "requests": 0,
                            "errors": {},
                            "devices": [{"_d": "logger", "_vid": "lg", "cpu_load": k}],
                        }
                    )
                wait_until(lambda: len(rec.on("u/data")) >= 3 and box.count() == 0, 30, what="live cycles out")
                run = bf.HyconBackfill(box, threading.Event())
                assert run.backfill(device(ftp.url, key="hycon1")) == 150
                got = lambda: [m for m in rec.on("u/data") if b"sma-hycon-csv" in m.payload]
                # with issue 11 the first rows get the emptied outbox's old keys, behind the publisher's
                # live cursor, and stay there (outbox (500000000000000, 500000000000149), 147 sent)
                wait_until(lambda: len(got()) >= 150, 45, what="150 backfill messages")
                wait_until(lambda: box.count() == 0, 30, what="the outbox to empty")
            finally:
                stop.set()
                th.join(10)
        ts = [json.loads(m.payload)["t"] for m in got()]
        assert len(ts) == 150 and ts == sorted(set(ts))


def test_the_schedule_fetches_once_a_night_and_waits_for_a_late_file(tmp_path, isolated_dirs):
    data, _ = isolated_dirs
    files = {"LogDataFast_2023-03-08.zip": zip_of(day_csv(date(2023, 3, 8), TZ, rows=10))}
    with HyconFtp(tmp_path, files) as ftp:
        dev = device(ftp.url)
        c = config_of(dev)
        box = Outbox(data / "outbox")
        before = datetime(2023, 3, 9, 2, 0, tzinfo=ZoneInfo(TZ)).timestamp()  # the night after the 8th
        assert bf.HyconBackfill(box, threading.Event(), clock=lambda: before).step(c) == 10
        # the next night the 9th is not there yet: retried (here 2 s) instead of "sent before"
        run = bf.HyconBackfill(box, threading.Event(), clock=lambda: NOW, retry_for=2.0, backoff=(0.3, 0.5))
        timer = threading.Timer(
            1.0, ftp.set_files, args=({**files, "LogDataFast_2023-03-09.zip": zip_of(day_csv(DAY, TZ, rows=20))},)
        )
        timer.start()
        assert run.step(c) == 20
        assert box.mark("hycon/hycon1")["day"] == "2023-03-09"
        begun = time.monotonic()
        assert run.step(c) == 0 and time.monotonic() - begun < 0.5  # done for the night: no FTP at all
        outside = datetime(2023, 3, 10, 12, 0, tzinfo=ZoneInfo(TZ)).timestamp()
        assert bf.HyconBackfill(box, threading.Event(), clock=lambda: outside).step(c) == 0
        assert box.count() == 30


def test_put_batch_commits_records_and_mark_together_or_not_at_all(isolated_dirs):
    data, _ = isolated_dirs
    box = Outbox(data / "outbox")
    box.put_batch([{"t": 1, "bus": "b", "devices": []}], "hycon/x", {"rows": 1})
    with pytest.raises(ValueError):  # the third record cannot be written: the batch is rolled back whole
        box.put_batch([{"t": 2}, {"t": 3}, {"t": float("nan")}], "hycon/x", {"rows": 4})
    assert [r["t"] for _, r in box.read_from(None)] == [1] and box.mark("hycon/x") == {"rows": 1}
    assert box.count() == 1  # the marks are not records
    box.close()
    again = Outbox(data / "outbox")
    assert again.mark("hycon/x") == {"rows": 1} and again.mark("hycon/y") is None


def test_the_web_ui_device_test_says_a_hycon_is_read_once_a_day():
    from ammp_edge.webui import probe

    with pytest.raises(probe.ProbeError, match="read once a day"):
        probe.read_device(device("ftp://h/x"))
