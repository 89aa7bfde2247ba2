"""The dashboard with API keys configured: the page itself is public (it holds no data), every
call it makes carries the key typed into it (kept in this tab's sessionStorage), and the live
view's WebSocket, which cannot carry headers from a browser, offers it as a subprotocol."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.servers import ServiceProcess
from tests.ui.conftest import screenshot

pytestmark = pytest.mark.e2e

KEY = "ui-test-key-0123456789"


@pytest.fixture(scope="module")
def keyed_server(ui_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    env = {"SEQSERVE_API_KEYS": KEY, "SEQSERVE_ADMIN_KEY": "ui-test-admin-key-0123456789"}
    with ServiceProcess(ui_repository, tmp_path_factory.mktemp("ui-keyed-logs"), env) as server:
        yield server


def test_page_is_public_and_data_is_not(keyed_server):
    assert httpx.get(f"{keyed_server.url}/ui/", timeout=10).status_code == 200
    assert httpx.get(f"{keyed_server.url}/v1/models", timeout=10).status_code == 401
    ok = httpx.get(f"{keyed_server.url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    assert ok.status_code == 200


def test_without_a_key_the_page_asks_for_one(page, page_errors, keyed_server, request):
    request.node.expects_page_errors = True  # the browser logs each refused request
    page.goto(f"{keyed_server.url}/ui/")
    page.wait_for_selector("#notice:not([hidden])")
    assert "API key" in page.locator("#notice").inner_text()
    assert page_errors and all("401" in e for e in page_errors), list(page_errors)


def test_with_the_key_the_page_lists_and_streams(page, keyed_server):
    page.add_init_script(f"sessionStorage.setItem('seqserve.apiKey', '{KEY}')")
    page.goto(f"{keyed_server.url}/ui/")
    page.wait_for_selector("body[data-ready='true']", timeout=20_000)
    assert page.locator("[data-testid=model-card]").count() == 2
    page.select_option("#live-model", "demand")
    page.select_option("#live-dataset", "electricity_halfhourly")
    page.fill("#live-limit", "120")
    page.select_option("#live-speed", "0")
    page.get_by_role("button", name="Start").click()
    page.wait_for_selector("body[data-live='done']", timeout=60_000)
    assert page.locator("#live-status").inner_text().startswith("Done")
    assert page.locator("#live-position").get_attribute("data-value") == "120"
    screenshot(page, "dashboard-with-key")
