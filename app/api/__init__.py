"""The REST API (FastAPI): routes, schemas, token auth, one error shape."""

from app.api.app import API_PREFIX, create_app

__all__ = ["API_PREFIX", "create_app"]
