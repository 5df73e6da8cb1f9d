"""The interactive API docs, `/docs` (Swagger UI) and `/redoc`, served whole from this server.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so offline (or behind a firewall)
they stay blank. Here the pages point at `/docs-assets/...`, served from the files the pinned
`fastapi-offline` wheel ships (its static folder only: the package's FastAPI subclass is not
used), with this server's favicon and no web fonts.
"""

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

ASSETS_URL = "/docs-assets"
ASSET_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js")
FAVICON_URL = "/static/favicon.svg"  # the dashboard's, served by routes/dashboard.py
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"


def assets_dir() -> Path:
    """The folder of Swagger UI's and ReDoc's files in the installed fastapi-offline wheel."""
    folder = Path(str(files("fastapi_offline") / "static"))
    missing = [name for name in ASSET_FILES if not (folder / name).is_file()]
    if missing:
        raise RuntimeError(f"fastapi-offline at {folder} lacks {missing}: reinstall the package")
    return folder


def install(app: FastAPI) -> None:
    """Serve /docs, /redoc and their assets; the app must be created with both URLs None."""
    assert app.docs_url is None and app.redoc_url is None, "FastAPI would serve CDN pages too"
    openapi_url = app.openapi_url or "/openapi.json"
    router = APIRouter(include_in_schema=False)

    @router.get("/docs", response_class=HTMLResponse)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=FAVICON_URL,
            oauth2_redirect_url=OAUTH2_REDIRECT_URL,
            # No badge that sends the schema to an online validator.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @router.get(OAUTH2_REDIRECT_URL, response_class=HTMLResponse)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @router.get("/redoc", response_class=HTMLResponse)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=FAVICON_URL,
            with_google_fonts=False,
        )

    app.include_router(router)
    app.mount(ASSETS_URL, StaticFiles(directory=assets_dir()), name="docs-assets")
