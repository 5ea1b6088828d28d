"""The operator console's pages: server-rendered HTML shells plus one script and one stylesheet.

The shells carry no conference data and need no token: the browser script reads and acts
through the token-protected `/api/v1` calls (the token lives in sessionStorage only), and
follows `GET /api/v1/events` to change what is shown only when the server says so.
"""

from __future__ import annotations

import hashlib
import html
import re
from importlib import resources
from string import Template

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

import app as app_package

CONSOLE_PREFIX = "/console"
API_PREFIX = "/api/v1"

_PACKAGE = resources.files(__package__ or "app.api.console")

# Ids as the focus makes them (URL-safe random); anything else cannot name a conference, and
# keeping it to these characters means it can never break out of the HTML attribute.
_CONFERENCE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

# No inline script or style anywhere, so the policy can forbid both: data shown by the
# script is set as text, and even a slip cannot run injected markup. EventSource and fetch
# go to this origin only.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

_STATIC_TYPES = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}


def _read(folder: str, name: str) -> str:
    return (_PACKAGE / folder / name).read_text(encoding="utf-8")


# Read once: the files are part of the installed package and never change while it runs.
_STATIC = {name: _read("static", name).encode() for name in _STATIC_TYPES}
# Content hashes in the asset URLs: a new release is fetched at once, and the files can be
# cached for long.
_ASSET_VERSION = hashlib.sha256(b"".join(_STATIC[n] for n in sorted(_STATIC))).hexdigest()[:12]
_BASE = Template(_read("templates", "base.html"))
_MAIN = {
    page: _read("templates", f"{page}.html") for page in ("signin", "conferences", "conference")
}

router = APIRouter(prefix=CONSOLE_PREFIX, include_in_schema=False)


def render_page(
    request: Request, page: str, title: str, attrs: dict[str, str] | None = None
) -> HTMLResponse:
    """The shell of one page: `attrs` become data-* attributes of <body> for the script."""
    root = str(request.scope.get("root_path", "")).rstrip("/")
    data = {
        "page": page,
        "base": root + CONSOLE_PREFIX,
        "api": root + API_PREFIX,
        **(attrs or {}),
    }
    body_attrs = " ".join(
        f'data-{name}="{html.escape(value, quote=True)}"' for name, value in data.items()
    )
    text = _BASE.substitute(
        title=html.escape(title),
        base=html.escape(root + CONSOLE_PREFIX, quote=True),
        version=_ASSET_VERSION,
        app_version=html.escape(app_package.__version__),
        body_attrs=body_attrs,
        main=_MAIN[page],
    )
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-store"}
    return HTMLResponse(text, headers=headers)


@router.get("")
def console_root(request: Request) -> RedirectResponse:
    root = str(request.scope.get("root_path", "")).rstrip("/")
    return RedirectResponse(f"{root}{CONSOLE_PREFIX}/", status_code=308)


@router.get("/", response_class=HTMLResponse)
def signin_page(request: Request) -> HTMLResponse:
    return render_page(request, "signin", "Sign in")


@router.get("/conferences", response_class=HTMLResponse)
def conferences_page(request: Request) -> HTMLResponse:
    return render_page(request, "conferences", "Conferences")


@router.get("/conferences/{conference_id}", response_class=HTMLResponse)
def conference_page(request: Request, conference_id: str) -> Response:
    if not _CONFERENCE_ID.match(conference_id):
        return Response("not found", status_code=404, media_type="text/plain")
    # Only the id from the URL goes into the shell; whether it exists, and everything about
    # it, the script asks the API with the operator's token.
    return render_page(request, "conference", "Conference", {"conference": conference_id})


@router.get("/static/{name}")
def static_file(name: str) -> Response:
    body = _STATIC.get(name)
    if body is None:
        return Response("not found", status_code=404, media_type="text/plain")
    headers = {
        "Cache-Control": "public, max-age=3600",
        "X-Content-Type-Options": "nosniff",
        "ETag": f'"{_ASSET_VERSION}"',
    }
    return Response(body, media_type=_STATIC_TYPES[name], headers=headers)
