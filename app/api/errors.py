"""Every error leaves the API as `{"error": {"code", "message"}}` (CONVENTIONS.md).

This is the one place where domain errors become HTTP statuses.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.db.repo import DuplicateError, InvalidCursorError, RepositoryError
from app.service.control import (
    ConferenceNotFoundError,
    ConflictError,
    ControlError,
    MediaUnavailableError,
    ParticipantNotFoundError,
)

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class ApiError(Exception):
    """Raised by routes for an HTTP error with a machine-readable code."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


# Domain error -> (HTTP status, error code). Order matters: first isinstance match wins.
ERROR_MAP: tuple[tuple[type[Exception], int, str], ...] = (
    (ConferenceNotFoundError, 404, "conference_not_found"),
    (ParticipantNotFoundError, 404, "participant_not_found"),
    (ConflictError, 409, "conflict"),
    (MediaUnavailableError, 503, "media_unavailable"),
    (InvalidCursorError, 400, "invalid_cursor"),
    (DuplicateError, 409, "duplicate"),
    (RepositoryError, 400, "bad_request"),
)


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _code_for(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, headers=exc.headers)


async def _domain_error(_: Request, exc: Exception) -> JSONResponse:
    for kind, status, code in ERROR_MAP:
        if isinstance(exc, kind):
            message = exc.message if isinstance(exc, ControlError) else str(exc)
            return error_response(status, code, message)
    raise exc


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, _code_for(exc.status_code), message, headers=headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [
        {"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", ""))}
        for err in exc.errors()
    ]
    if details:
        loc = ".".join(details[0]["loc"])
        message = f"{loc}: {details[0]['msg']}" if loc else str(details[0]["msg"])
    else:
        message = "invalid request"
    return error_response(422, "validation_error", message, details=details)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error in API", exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(ControlError, _domain_error)
    app.add_exception_handler(RepositoryError, _domain_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)


# For the OpenAPI document: what each error status looks like.
def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorBody, "description": HTTPStatus(s).phrase} for s in statuses}
