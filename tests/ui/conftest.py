"""A real server with models that have manifests and plots, and a real headless Chromium
(Debian's package, driven by Playwright; nothing is downloaded at test time).

Every page a test opens records console errors and uncaught exceptions; the `page` fixture
fails the test if any occurred. Screenshots go to test-artifacts/ (git-ignored)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.demand import export_demand_model, write_manifest
from tests.support.models import export_model
from tests.support.servers import ROOT, ServiceProcess, require
from tests.support.tier import starts

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

DEMAND_MANIFEST = {
    "name": "demand",
    "created": "2026-01-05T10:00:00+00:00",
    "task": "forecast",
    "metrics": {
        "streaming": {"mae": 812.25, "rmse": 1040.5, "mase": 0.875},
        "windowed": {"mae": 901.5, "rmse": 1150.0, "mase": 0.97},
        "naive": {"mae": 636.0, "rmse": 790.0, "mase": 1.0},
        "seasonal_naive_48": {"mae": 1012.0, "rmse": 1400.0, "mase": 1.59},
        "test_pairs": 604,
    },
    "gate": {
        "promoted": True,
        "reason": "MASE 0.875 beats the best baseline naive (1.0)",
        "metric": "mase",
        "model": 0.875,
        "best_baseline": "naive",
        "best_baseline_value": 1.0,
    },
    "verdict": {
        "text": "the network improved on its baseline (the value one season ago) by 12.5 % on test",
        "ratio_to_best_baseline": 1.277,
        "best_baseline": "naive",
        "warning": None,
    },
    "seasons": {"setting": "auto", "seasons": [48, 336], "source": "calendar", "candidates": [48, 336], "evidence": {}},
    "time": {"column": "timestamp", "frequency": "half-hourly", "period_seconds": 1800.0},
    "data": {"path": "/home/someone/private/demand.csv", "rows": 4032},
    "training_args": {"repository": "/srv/models", "data": "/home/someone/private/demand.csv"},
}


@pytest.fixture(scope="session")
def ui_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ui-repo")
    write_manifest(export_demand_model(root), DEMAND_MANIFEST)
    held = {**DEMAND_MANIFEST, "gate": {**DEMAND_MANIFEST["gate"], "promoted": False, "reason": "worse than naive"}}
    write_manifest(export_demand_model(root, version=2, seed=8), held)
    export_model(root, "gru", 1, "gru", seed=3)  # three features, no manifest at all
    return root


@pytest.fixture(scope="session")
@starts("a service process")
def ui_server(ui_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    with ServiceProcess(ui_repository, tmp_path_factory.mktemp("ui-logs")) as server:
        yield server


@pytest.fixture(scope="module")
@starts("chromium")
def browser() -> Iterator[object]:
    """Module-scoped: Playwright's sync API keeps an event loop running in this thread while it
    is started, which would stop later asyncio tests from running theirs."""
    executable = require("chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


class PageErrors(list):
    def attach(self, page) -> None:
        page.on("console", lambda m: self.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.append(f"uncaught: {e}"))


@pytest.fixture
def page_errors() -> PageErrors:
    return PageErrors()


@pytest.fixture
def page(browser, page_errors: PageErrors, request: pytest.FixtureRequest):
    size = getattr(request, "param", {"width": 1280, "height": 900})
    context = browser.new_context(viewport=size, device_scale_factor=1)
    page = context.new_page()
    page_errors.attach(page)
    yield page
    context.close()
    if not getattr(request.node, "expects_page_errors", False):
        assert list(page_errors) == [], f"the page reported JavaScript errors: {list(page_errors)}"


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000  # a rendered page, not a blank one
    return path
