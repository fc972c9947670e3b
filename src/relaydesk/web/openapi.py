"""The OpenAPI document and its viewer at ``/api/docs``, served without any outside host.

Self-hosted networks often have no internet, so the Swagger UI page loads its script,
style sheet and icon from this node: the files come from the ``swagger-ui-py`` package
(pinned in pyproject.toml), read once and served from memory by a handler that knows
exactly those names.  The document declares the credentials each API takes as security
schemes; each router names the ones it accepts (docs/desk.md, "Errors and credentials").
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Final

from litestar import Response, Router, get
from litestar.exceptions import NotFoundException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components
from litestar.params import FromPath

from relaydesk.server.security_schemes import SECURITY_SCHEMES

DOCS_PATH: Final = "/api/docs"
VIEWER_ASSETS: Final = "/api/docs-viewer"

#: The only files the viewer page needs, with their media types.
_ASSETS: Final = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui-standalone-preset.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}


@cache
def _asset(name: str) -> bytes:
    return resources.files("swagger_ui").joinpath("static", name).read_bytes()


@get(VIEWER_ASSETS + "/{name:str}", include_in_schema=False, sync_to_thread=False)
def viewer_asset(name: FromPath[str]) -> Response[bytes]:
    """One file of the API viewer, from the installed package."""
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise NotFoundException(f"no viewer file {name!r}")
    return Response(
        _asset(name), media_type=media_type, headers={"Cache-Control": "public, max-age=86400"}
    )


def viewer_router() -> Router:
    return Router(path="/", route_handlers=[viewer_asset], include_in_schema=False)


def openapi_config(title: str, description: str | None) -> OpenAPIConfig:
    """The node's OpenAPI document at ``/api/docs/openapi.json``, Swagger UI at ``/api/docs``."""
    viewer = SwaggerRenderPlugin(
        path="/",
        js_url=f"{VIEWER_ASSETS}/swagger-ui-bundle.js",
        css_url=f"{VIEWER_ASSETS}/swagger-ui.css",
        standalone_preset_js_url=f"{VIEWER_ASSETS}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{VIEWER_ASSETS}/favicon-32x32.png'>",
    )
    return OpenAPIConfig(
        title=title,
        version="1",
        path=DOCS_PATH,
        description=description,
        components=Components(security_schemes=dict(SECURITY_SCHEMES)),
        render_plugins=[viewer],
    )
