"""The fast tier cannot take in a slow test unmarked (tests/support/tier.py): checked on a
throwaway test directory run by a real pytest, with this suite's hooks."""

from __future__ import annotations

import pytest

from tests.support.servers import ROOT

pytest_plugins = ["pytester"]

CONFTEST = "from tests.conftest import pytest_collection_modifyitems, pytest_runtest_protocol  # noqa: F401\n"
FIXTURE = """
import pytest
from tests.support.tier import heavy, starts

@pytest.fixture
@starts("a pretend server")
def pretend_server():
    yield "started"
"""


@pytest.fixture
def probe(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makeconftest(CONFTEST)
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\nmarkers =\n    e2e: real servers\n    slow: heavy\n"
    )
    return pytester


def test_an_unmarked_test_using_a_starting_fixture_stops_collection(probe: pytest.Pytester) -> None:
    probe.makepyfile(test_probe=FIXTURE + "\ndef test_sneaks_in(pretend_server):\n    pass\n")
    result = probe.runpytest_inprocess("-m", "not slow and not e2e")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_probe.py::test_sneaks_in: a pretend server (fixture pretend_server)*"])


def test_through_another_fixture_it_is_still_found(probe: pytest.Pytester) -> None:
    body = "\n@pytest.fixture\ndef wrapper(pretend_server):\n    return pretend_server\n"
    probe.makepyfile(test_probe=FIXTURE + body + "\ndef test_sneaks_in(wrapper):\n    pass\n")
    assert probe.runpytest_inprocess().ret == pytest.ExitCode.USAGE_ERROR


def test_a_marked_test_runs(probe: pytest.Pytester) -> None:
    probe.makepyfile(test_probe=FIXTURE + "\n@pytest.mark.e2e\ndef test_marked(pretend_server):\n    heavy('x')\n")
    result = probe.runpytest_inprocess()
    result.assert_outcomes(passed=1)
    result = probe.runpytest_inprocess("-m", "not slow and not e2e")
    result.assert_outcomes(deselected=1)


def test_starting_a_component_directly_fails_an_unmarked_test(probe: pytest.Pytester) -> None:
    probe.makepyfile(test_probe=FIXTURE + "\ndef test_direct():\n    heavy('redis-server')\n")
    result = probe.runpytest_inprocess()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*test_direct starts redis-server but is not marked slow or e2e*"])


def test_this_suite_runs_with_strict_markers(request: pytest.FixtureRequest) -> None:
    assert request.config.option.strict_markers
    assert {"slow", "e2e"} <= {line.split(":")[0] for line in request.config.getini("markers")}
