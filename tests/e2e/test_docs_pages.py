"""/docs and /redoc load everything from the service itself (no CDN), so they work on an
air-gapped cluster; the vendored assets answer with the right content types."""

from __future__ import annotations

import re

import httpx
import pytest

pytestmark = pytest.mark.e2e

# Every URL a page would fetch: src/href/spec-url attributes and the url(...)s in inline script.
REFERENCE = re.compile(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']|url\s*:\s*["']([^"']+)["']""")
ASSET_TYPES = {
    ".js": "javascript",
    ".css": "text/css",
    ".png": "image/png",
}


def _references(html: str) -> list[str]:
    return [a or b for a, b in REFERENCE.findall(html)]


@pytest.mark.parametrize(("page", "marker"), [("/docs", "SwaggerUIBundle"), ("/redoc", "<redoc")])
def test_page_references_only_this_host(client: httpx.Client, page: str, marker: str) -> None:
    r = client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert marker in r.text
    assert "://" not in r.text.replace("http://www.w3.org", ""), "the page names an external host"
    references = _references(r.text)
    assets = [u for u in references if u.startswith("/docs-assets/")]
    assert len(assets) >= (3 if page == "/docs" else 2), references
    assert "/openapi.json" in references
    for url in references:
        assert url.startswith("/"), f"{page} references {url}"
        fetched = client.get(url)
        assert fetched.status_code == 200, url
        suffix = url[url.rfind(".") :]
        if suffix in ASSET_TYPES:
            assert ASSET_TYPES[suffix] in fetched.headers["content-type"], (url, fetched.headers["content-type"])
            assert len(fetched.content) > 500, url


def test_asset_licences_are_served_and_unknown_assets_are_404(client: httpx.Client) -> None:
    assert "Apache License" in client.get("/docs-assets/LICENSE-swagger-ui").text
    assert "MIT" in client.get("/docs-assets/LICENSE-redoc").text
    assert client.get("/docs-assets/nothing.js").status_code == 404
    assert client.get("/docs-assets/../settings.py").status_code == 404


def test_docs_routes_stay_out_of_the_schema(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not {"/docs", "/redoc"} & set(paths)
