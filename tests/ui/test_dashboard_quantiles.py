"""The dashboard's live view with a model that has quantile levels: it draws the 95 % interval
forecast for every next reading and rings the readings that fell outside the interval forecast
for them, the same ones the API flags; a model without levels draws neither."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.quantile_model import export_quantile_model, readings
from tests.support.servers import ServiceProcess
from tests.ui.conftest import screenshot

pytestmark = pytest.mark.e2e
N = 120


@pytest.fixture(scope="module")
def probe_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    repository: Path = tmp_path_factory.mktemp("ui-quantile-repo")
    export_quantile_model(repository)
    with ServiceProcess(repository, tmp_path_factory.mktemp("ui-quantile-logs")) as server:
        yield server


def test_live_view_draws_the_band_and_marks_flagged_readings(page, probe_server: ServiceProcess) -> None:
    x = readings(N, seed=9)
    x[40, 0] *= 10.0
    x[90, 0] = -x[90, 0]
    page.goto(f"{probe_server.url}/ui/")
    page.wait_for_selector("body[data-ready='true']", timeout=20_000)
    page.select_option("#live-model", "probe")
    page.select_option("#live-dataset", "__paste__")
    page.fill("#live-paste", "\n".join(f"{v:.6f}" for v in x[:, 0]))
    page.fill("#live-limit", str(N))
    page.select_option("#live-speed", "0")
    page.get_by_role("button", name="Start").click()
    page.wait_for_selector("body[data-live='done']", timeout=60_000)
    chart = page.locator("[data-testid=live-chart]")
    page.wait_for_function(f"() => document.querySelector('#live-chart').dataset.bandPoints === '{N}'")
    # the readings the API flags for the same series (as pasted, to six decimals)
    pasted = [[[float(f"{v:.6f}")] for v in x[:, 0]]]
    answer = httpx.post(f"{probe_server.url}/v1/models/probe/predict", json={"inputs": pasted}, timeout=30).json()
    flagged = [t for t, a in enumerate(answer["anomaly"][0]) if a is not None and a["outside_95"]]
    assert 40 in flagged and 90 in flagged
    assert int(chart.get_attribute("data-flagged-points")) == len(flagged)
    assert page.locator("#live-flagged").get_attribute("data-value") == str(len(flagged))
    screenshot(page, "dashboard-quantiles")
