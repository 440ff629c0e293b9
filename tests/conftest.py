"""Shared fixtures: free loopback ports, temporary data dirs, built-in drivers, simulated devices."""

from __future__ import annotations

import os

import pytest

from ammp_edge.core import drivers
from helpers.common import REPO, free_port


def pytest_collection_modifyitems(config, items):
    """The image tests last (a stable sort), so that their builds, started in the background as soon as
    they are collected, overlap everything else (tests/helpers/image_builds.py)."""
    items.sort(key=lambda item: item.get_closest_marker("images") is not None)


def pytest_collection_finish(session):
    if session.config.option.collectonly:
        return
    targets = []
    for target, fixture in (("docker", "docker_image"), ("rpi", "rpi_image")):
        if any(fixture in getattr(item, "fixturenames", ()) for item in session.items):
            if target == "rpi" and os.environ.get("AE_TEST_RPI_IMAGE"):
                continue
            targets.append(target)
    if targets:
        from helpers import image_builds

        image_builds.start(targets)


def pytest_sessionfinish(session):
    from helpers import image_builds

    image_builds.stop()


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path, monkeypatch):
    """Every test gets its own AE_DATA_DIR and AE_TEMP_DIR (tests run beside a live appliance)."""
    data, temp = tmp_path / "data", tmp_path / "temp"
    data.mkdir()
    temp.mkdir()
    monkeypatch.setenv("AE_DATA_DIR", str(data))
    monkeypatch.setenv("AE_TEMP_DIR", str(temp))
    monkeypatch.setenv("AE_ROOT_DIR", str(REPO))
    monkeypatch.setenv("AE_OFFLINE", "1")  # no test reaches the real AMMP API; tests of the cloud link unset it
    return data, temp


@pytest.fixture(scope="session")
def builtin_drivers() -> dict[str, dict]:
    return drivers.load_builtin_drivers(REPO / "drivers")


@pytest.fixture
def simulator():
    """Factory: simulator({unit: driver_dict}, **kw) -> started Simulator on a free port; stopped after."""
    from ammp_edge.simulate import Simulator

    started = []

    def make(units, **kw):
        sim = Simulator(units, kw.pop("port", None) or free_port(), **kw).start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def file_server(tmp_path):
    """An HTTP server on loopback serving the directory tmp_path/www; yields (www, port)."""
    import http.server
    import threading

    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(www), **kw)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield www, server.server_address[1]
    server.shutdown()
    server.server_close()
