"""Swagger UI at /docs and ReDoc at /redoc, with their scripts and styles served from the
package (service/api/static/docs, vendored from npm), so the pages work on a cluster with
no route to a CDN. FastAPI's own /docs and /redoc (which load from jsDelivr) are turned
off in create_app and replaced by these."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

ASSETS = Path(__file__).resolve().parent / "static" / "docs"
PREFIX = "/docs-assets"
TITLE = "seqserve"
OPENAPI_URL = "/openapi.json"

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=OPENAPI_URL,
        title=f"{TITLE} - Swagger UI",
        swagger_js_url=f"{PREFIX}/swagger-ui-bundle.js",
        swagger_css_url=f"{PREFIX}/swagger-ui.css",
        swagger_favicon_url=f"{PREFIX}/favicon-32x32.png",
        # The spec validator badge would call validator.swagger.io.
        swagger_ui_parameters={"validatorUrl": None},
    )


@router.get("/redoc")
async def redoc() -> HTMLResponse:
    return get_redoc_html(
        openapi_url=OPENAPI_URL,
        title=f"{TITLE} - ReDoc",
        redoc_js_url=f"{PREFIX}/redoc.standalone.js",
        redoc_favicon_url=f"{PREFIX}/favicon-32x32.png",
        with_google_fonts=False,
    )


def mount_assets(app: Any) -> None:
    """The vendored bundles under /docs-assets (the licences are served alongside them)."""
    app.mount(PREFIX, StaticFiles(directory=ASSETS), name="docs-assets")
