"""The dashboard at /ui in a real browser: it loads without JavaScript errors, lists what the
API serves with the numbers the API gives, streams a bundled series live over the WebSocket
and draws forecast against actual, with the running error the API's outputs imply."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest

from tests.support.demand import electricity
from tests.ui.conftest import DEMAND_MANIFEST, screenshot

pytestmark = pytest.mark.e2e


def open_dashboard(page, server) -> None:
    page.goto(f"{server.url}/ui/")
    page.wait_for_selector("body[data-ready='true']", timeout=20_000)


def test_ui_routes_are_read_only_and_leak_no_paths(ui_server):
    with httpx.Client(base_url=ui_server.url, timeout=10) as api:
        r = api.get("/ui", follow_redirects=False)
        assert r.status_code in (301, 307) and r.headers["location"].endswith("/ui/")
        assert "LineChart" in api.get("/ui/chart.js").text
        manifest = api.get("/v1/models/demand/versions/1/manifest").json()
        assert manifest["gate"] == DEMAND_MANIFEST["gate"] and manifest["metrics"] == DEMAND_MANIFEST["metrics"]
        assert manifest["verdict"] == DEMAND_MANIFEST["verdict"] and manifest["seasons"] == DEMAND_MANIFEST["seasons"]
        assert manifest["data"] == {"rows": 4032}
        assert "/home/" not in r.text and "training_args" not in manifest
        png = api.get("/v1/models/demand/versions/1/files/forecast.png")
        assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
        for bad in ("model.onnx", "manifest.json", "..%2Fmodel.onnx", "missing.png"):
            r = api.get(f"/v1/models/demand/versions/1/files/{bad}")
            assert r.status_code == 404 and r.json()["code"] == "not_found", bad
        assert api.get("/v1/models/nope/versions/1/manifest").json()["code"] == "model_not_found"
        sets = {d["name"]: d for d in api.get("/v1/ui/datasets").json()["datasets"]}
        assert sets["electricity_halfhourly"]["length"] == len(electricity()) and "japanese_vowels" not in sets
        series = api.get("/v1/ui/datasets/electricity_halfhourly").json()
        assert series["values"][:2] == [22262.0, 21756.0] and series["column"] == "demand_mw"
        assert api.get("/v1/ui/datasets/..").status_code == 404
        assert api.post("/v1/ui/stats").status_code == 405


def test_page_lists_models_with_the_api_numbers(page, ui_server):
    open_dashboard(page, ui_server)
    api = httpx.get(f"{ui_server.url}/v1/models", timeout=10).json()["models"]
    cards = page.locator("[data-testid=model-card]")
    assert cards.evaluate_all("cs => cs.map(c => c.dataset.model)") == [m["name"] for m in api]
    demand = page.locator("[data-testid=model-card][data-model=demand]")
    versions = demand.locator("tr[data-version]").evaluate_all("rs => rs.map(r => r.dataset.version)")
    assert versions == ["2", "1"]
    gates = demand.locator("[data-gate]").evaluate_all("bs => bs.map(b => b.dataset.gate)")
    assert gates == ["held", "promoted"]
    # the metrics table shows the default version's manifest, every number as the API gives it
    default = next(m for m in api if m["name"] == "demand").get("default", 2)
    manifest = httpx.get(f"{ui_server.url}/v1/models/demand/versions/{default}/manifest", timeout=10).json()
    shown = demand.locator("td[data-metric]").evaluate_all(
        "cs => cs.map(c => [c.closest('tr').dataset.row, c.dataset.metric, c.dataset.value])"
    )
    expected = [
        [row, metric, str(value)]
        for row, values in manifest["metrics"].items()
        if isinstance(values, dict)
        for metric, value in values.items()
    ]
    assert sorted(shown) == sorted([*e[:2], _js_number(e[2])] for e in expected)
    assert demand.locator("tr.best").get_attribute("data-row") == "naive"
    assert demand.locator("tr.best td").first.get_attribute("title") == (
        "the naive baseline the quality gate was decided against"
    )
    # what training found and learned, in words (manifest seasons, time, verdict)
    assert demand.locator("[data-testid=seasons]").inner_text() == (
        "Seasons: [48, 336] found from the sampling period · time column timestamp, half-hourly"
    )
    verdict = demand.locator("[data-testid=verdict]").inner_text()
    assert (
        verdict.startswith("Verdict: the network improved on its baseline")
        and "1.28× the best baseline (naive)" in verdict
    )
    # the gru model has no manifest: it is listed, without metrics or plots
    gru = page.locator("[data-testid=model-card][data-model=gru]")
    assert gru.locator("td[data-metric]").count() == 0 and gru.locator("[data-gate=none]").count() == 1
    # live counters: a row per model with the session counts the API reports
    page.wait_for_selector("#stats-models tr[data-model=demand]")
    stats = httpx.get(f"{ui_server.url}/v1/ui/stats", timeout=10).json()
    rows = page.locator("#stats-models tr[data-model]").evaluate_all(
        "rs => rs.map(r => [r.dataset.model, Number(r.dataset.sessions)])"
    )
    assert rows == [[m["name"], m["sessions"]] for m in stats["models"]]
    screenshot(page, "dashboard-models")


def _js_number(text: str) -> str:
    """How JavaScript's String(number) writes a value Python wrote with str()."""
    value = float(text)
    return str(int(value)) if value.is_integer() else text


def test_plots_are_shown(page, ui_server):
    open_dashboard(page, ui_server)
    images = page.locator("[data-model=demand] .plots img")
    images.first.wait_for()
    assert images.count() == 1  # the newest version's plots
    assert images.first.evaluate("img => img.complete && img.naturalWidth > 100")


def test_live_view_streams_and_draws_forecast_against_actual(page, ui_server):
    open_dashboard(page, ui_server)
    n = 300
    page.select_option("#live-model", "demand")
    page.select_option("#live-dataset", "electricity_halfhourly")
    page.fill("#live-limit", str(n))
    page.select_option("#live-speed", "0")
    page.get_by_role("button", name="Start").click()
    page.wait_for_selector("body[data-live='done']", timeout=60_000)
    status = page.locator("#live-status").inner_text()
    assert status.startswith("Done"), status
    chart = page.locator("[data-testid=live-chart]")
    page.wait_for_function("() => document.querySelector('#live-chart').dataset.forecastPoints === '300'")
    assert int(chart.get_attribute("data-actual-points")) == n
    assert int(chart.get_attribute("data-forecast-points")) == n
    assert page.locator("#live-position").get_attribute("data-value") == str(n)

    # the same readings through the API: the page's running errors are what these outputs give
    x = electricity()[:n]
    version = int(page.locator("#live-model option:checked").get_attribute("data-version"))
    body = {"inputs": [x.tolist()], "version": version}
    whole = httpx.post(f"{ui_server.url}/v1/models/demand/predict", json=body, timeout=30).json()
    forecast = np.asarray(whole["outputs"][0], dtype=np.float64)[:, 0]
    actual = x[:, 0].astype(np.float64)
    mae = np.mean(np.abs(forecast[:-1] - actual[1:]))
    naive = np.mean(np.abs(actual[:-1] - actual[1:]))
    shown_mae = float(page.locator("#live-mae").get_attribute("data-value"))
    shown_naive = float(page.locator("#live-naive").get_attribute("data-value"))
    assert shown_mae == pytest.approx(mae, rel=1e-6)
    assert shown_naive == pytest.approx(naive, rel=1e-9)
    assert float(page.locator("#live-naive").inner_text().replace(",", "")) == pytest.approx(naive, rel=1e-3)
    screenshot(page, "dashboard-live")
    # the page deleted its session when done
    deadline = time.monotonic() + 10
    while _sessions(ui_server, "demand") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _sessions(ui_server, "demand") == 0


def _sessions(server, model: str) -> int:
    stats = httpx.get(f"{server.url}/v1/ui/stats", timeout=10).json()
    return next(m["sessions"] for m in stats["models"] if m["name"] == model)


@pytest.mark.parametrize("page", [{"width": 390, "height": 844}], indirect=True)
def test_readable_on_a_phone(page, ui_server):
    open_dashboard(page, ui_server)
    page.select_option("#live-model", "demand")
    page.fill("#live-limit", "150")
    page.select_option("#live-speed", "0")
    page.get_by_role("button", name="Start").click()
    page.wait_for_selector("body[data-live='done']", timeout=60_000)
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"the page is {overflow}px wider than the phone's screen"
    assert page.locator("#live-chart").bounding_box()["width"] > 300
    screenshot(page, "dashboard-phone")


def test_api_key_is_kept_in_this_tab_only_and_sent(page, ui_server):
    sent: list[str | None] = []
    page.on("request", lambda r: sent.append(r.headers.get("authorization")) if "/v1/models" in r.url else None)
    open_dashboard(page, ui_server)
    page.fill("#api-key", "secret-key-1")
    page.get_by_role("button", name="Use").click()
    page.wait_for_function("() => sessionStorage.getItem('seqserve.apiKey') === 'secret-key-1'")
    assert page.evaluate("() => localStorage.length") == 0
    page.wait_for_timeout(300)
    assert "Bearer secret-key-1" in sent and sent[0] is None


def test_a_javascript_error_fails_the_page_check(page, page_errors, ui_server, request):
    request.node.expects_page_errors = True
    open_dashboard(page, ui_server)
    page.evaluate("() => setTimeout(() => { throw new Error('boom from a test') }, 0)")
    page.wait_for_timeout(200)
    assert any("boom from a test" in e for e in page_errors)
