"""tests/upstream/ is an unchanged copy of the shared reference's upstream drivers and configs."""

from __future__ import annotations

import filecmp

import pytest

from helpers.common import REFERENCE, UPSTREAM_CONFIGS, UPSTREAM_DRIVERS


@pytest.mark.parametrize(
    "ours, theirs", [(UPSTREAM_DRIVERS, "upstream-drivers"), (UPSTREAM_CONFIGS, "upstream-configs")]
)
def test_the_copy_matches_the_shared_reference(ours, theirs):
    reference = REFERENCE / theirs
    if not reference.is_dir():
        pytest.skip(f"{reference} is not beside this checkout; the copy in {ours} is what the tests use")
    names = sorted(p.name for p in reference.iterdir())
    assert sorted(p.name for p in ours.iterdir()) == names
    match, mismatch, errors = filecmp.cmpfiles(reference, ours, names, shallow=False)
    assert not mismatch and not errors, (mismatch, errors)


def test_every_upstream_driver_is_there():
    assert len(list(UPSTREAM_DRIVERS.glob("*.json"))) == 47 and (UPSTREAM_DRIVERS / "LICENSE").is_file()
    assert (UPSTREAM_CONFIGS / "docker-test-config.json").is_file()
