"""What a browser gets from the API: Swagger UI served by the service itself, and security headers on every answer.

FastAPI's default ``/docs`` and ``/redoc`` load their scripts from a public CDN, so whoever serves (or
intercepts) that CDN runs script in a page that holds an operator's API key. Here Swagger UI comes from the
``swagger-ui-bundle-v2`` package (the Swagger UI dist files, maintained by the Connexion project), its start-up
script is a file rather than inline (so the page's policy can forbid inline script), and ReDoc is off.
"""

from __future__ import annotations

import html
import json

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

__all__ = ["API_POLICY", "DOCS_POLICY", "SecurityHeaders", "mount_docs"]

#: JSON answers load nothing and may not be framed.
API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
#: The docs page: its own scripts only; Swagger UI sets inline styles and draws icons from data: URLs.
DOCS_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
_COMMON = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
           (b"x-frame-options", b"DENY")]
DOCS = "/docs"
ASSETS = DOCS + "/assets"


class SecurityHeaders:
    """ASGI middleware: CSP, nosniff, no referrer and no framing on every HTTP answer (plain ASGI, like _Measure)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        policy = DOCS_POLICY if path == DOCS or path.startswith(DOCS + "/") else API_POLICY

        async def with_headers(message):
            if message["type"] == "http.response.start":
                own = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(b"content-security-policy", policy.encode())] + _COMMON
                message["headers"] = list(message.get("headers", [])) + [(k, v) for k, v in extra if k not in own]
            await send(message)

        await self.app(scope, receive, with_headers)


def _page(title: str) -> str:
    t = html.escape(title)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{t} - API docs</title>
<link rel="stylesheet" href="{ASSETS}/swagger-ui.css">
<link rel="icon" type="image/png" href="{ASSETS}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{ASSETS}/swagger-ui-bundle.js"></script>
<script src="{DOCS}/init.js"></script>
</body>
</html>
"""


def _init_script(openapi_url: str) -> str:
    return f"""window.addEventListener("load", function () {{
  window.ui = SwaggerUIBundle({{
    url: {json.dumps(openapi_url)},
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
    layout: "BaseLayout",
    validatorUrl: null
  }});
}});
"""


def mount_docs(app: FastAPI) -> None:
    """Serve Swagger UI at ``/docs`` from the installed package; build ``app`` with ``docs_url=None, redoc_url=None``."""
    page, init = _page(app.title), _init_script(app.openapi_url or "/openapi.json")

    @app.get(DOCS, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get(DOCS + "/init.js", include_in_schema=False)
    async def docs_init() -> Response:
        return Response(init, media_type="text/javascript")

    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")
