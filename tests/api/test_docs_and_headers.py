"""/docs serves Swagger UI from the service itself (no CDN), and every answer carries browser security headers."""

from __future__ import annotations

import re

from tests.api.conftest import auth

HEADERS = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer", "x-frame-options": "DENY"}


def _assets(html: str) -> list[str]:
    return re.findall(r'<script[^>]*\bsrc="([^"]+)"', html) + re.findall(r'<link[^>]*\bhref="([^"]+)"', html)


def test_docs_load_swagger_ui_from_the_service_only(service):
    _, client, _ = service
    page = client.get("/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assets = _assets(page.text)
    assert len(assets) >= 3                                     # bundle, initializer, stylesheet
    assert not [a for a in assets if "//" in a], "an asset is loaded from another origin"
    assert "cdn.jsdelivr.net" not in page.text and "unpkg.com" not in page.text
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page.text), "an inline script would need 'unsafe-inline'"
    bodies = {a: client.get(a) for a in assets}
    assert all(r.status_code == 200 for r in bodies.values()), {a: r.status_code for a, r in bodies.items()}
    bundle = next(r for a, r in bodies.items() if a.endswith("swagger-ui-bundle.js"))
    assert "SwaggerUIBundle" in bundle.text and "javascript" in bundle.headers["content-type"]
    init = next(r for a, r in bodies.items() if a.endswith("init.js"))
    assert '"/openapi.json"' in init.text
    assert client.get("/openapi.json").json()["info"]["title"] == "Pushwise"


def test_redoc_is_not_served_from_a_cdn(service):
    _, client, _ = service
    assert client.get("/redoc").status_code == 404


def test_every_answer_carries_the_security_headers(service):
    _, client, keys = service
    answers = [client.get("/v1/health"), client.get("/openapi.json"),
               client.post("/v1/triggers", json={}),                        # 401
               client.post("/v1/events", json={"events": "x"}, headers=auth(keys["ingest"])),  # 422
               client.get("/no/such/route")]                                # 404
    for r in answers:
        assert {k: r.headers.get(k) for k in HEADERS} == HEADERS, (r.request.url, r.status_code)
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp


def test_the_docs_page_policy_allows_its_own_scripts_only(service):
    _, client, _ = service
    page = client.get("/docs")
    assert {k: page.headers.get(k) for k in HEADERS} == HEADERS
    policy = dict(d.strip().split(" ", 1) for d in page.headers["content-security-policy"].split(";") if d.strip())
    assert policy["script-src"] == "'self'"
    assert policy["connect-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
    assert policy["default-src"] == "'none'"
