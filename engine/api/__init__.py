"""The HTTP API of ``pushwise serve`` (FastAPI; OpenAPI at /openapi.json, docs at /docs)."""

from engine.api.app import MAX_BODY_BYTES, ServiceContext, create_app

__all__ = ["MAX_BODY_BYTES", "ServiceContext", "create_app"]
