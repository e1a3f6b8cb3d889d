"""The heavy tests that ``tests/conftest.py`` names and starts first: each name is a test that exists (a
renamed test would silently fall back to the end of the queue), and they sort first, slowest first."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from tests.conftest import HEAVY_TESTS, pytest_collection_modifyitems
from tests.helpers.paths import REPO


@pytest.mark.parametrize("nodeid", list(HEAVY_TESTS))
def test_each_heavy_test_exists(nodeid):
    path, name = nodeid.split("::")
    function = re.sub(r"\[.*\]$", "", name)
    source = (REPO / path).read_text()
    assert re.search(rf"^def {function}\(", source, re.M), f"{nodeid}: no test {function} in {path}"
    if "[" in name:
        param = name[name.index("[") + 1 : -1]
        assert param in source, f"{nodeid}: the parameter {param!r} is not in {path}"


def test_heavy_tests_are_listed_slowest_first():
    seconds = [value[0] for value in HEAVY_TESTS.values()]
    assert seconds == sorted(seconds, reverse=True)
    assert all(len(reason) > 40 for _, reason in HEAVY_TESTS.values())


def test_heavy_tests_sort_first_and_the_rest_keep_their_order():
    heavy = list(HEAVY_TESTS)
    items = [
        SimpleNamespace(nodeid=n)
        for n in ["tests/a.py::x", heavy[2], "tests/b.py::y", heavy[0], "tests/a.py::z"]
    ]
    pytest_collection_modifyitems(None, items)
    assert [i.nodeid for i in items] == [
        heavy[0],
        heavy[2],
        "tests/a.py::x",
        "tests/b.py::y",
        "tests/a.py::z",
    ]
