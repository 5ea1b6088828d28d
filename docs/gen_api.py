"""Write docs/api.md, the REST API reference, from the OpenAPI document the app serves.

    .venv/bin/python docs/gen_api.py           # rewrite docs/api.md
    .venv/bin/python docs/gen_api.py --check   # exit 1 if docs/api.md is out of date

The reference is generated, never edited by hand, so it cannot drift from `/openapi.json`
(a test runs `--check`). The token scope each call needs is read from the route's
dependencies, since OpenAPI only says that a bearer token is needed.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fastapi import FastAPI  # noqa: E402
from fastapi.dependencies.models import Dependant  # noqa: E402
from fastapi.routing import APIRoute  # noqa: E402

OUTPUT = ROOT / "docs" / "api.md"
METHODS = ("get", "post", "put", "patch", "delete")


def build_app() -> FastAPI:
    """The real app over stand-ins: the OpenAPI document needs no database or focus."""
    from app.api import create_app
    from app.db import make_engine, make_session_factory
    from app.service.control import UnavailableControl
    from app.service.events import EventBus
    from app.settings import Settings

    # An in-memory engine connects lazily: building the spec never opens it.
    factory = make_session_factory(make_engine("sqlite://"))
    return create_app(Settings(), factory, UnavailableControl(), EventBus())


def _calls(dependant: Dependant) -> set[str]:
    names = {getattr(dependant.call, "__name__", "")}
    for sub in dependant.dependencies:
        names |= _calls(sub)
    return names


def _routes() -> list[APIRoute]:
    """Every route of the modules in app.api.routes (each has a `router`)."""
    import app.api.routes as package

    out: list[APIRoute] = []
    for module in pkgutil.iter_modules(package.__path__):
        found = importlib.import_module(f"{package.__name__}.{module.name}")
        router = getattr(found, "router", None)  # a helper module may have none
        if router is not None:
            out += [r for r in router.routes if isinstance(r, APIRoute)]
    return out


def _need(route: APIRoute) -> str:
    calls = _calls(route.dependant)
    if "require_admin" in calls:
        return "`admin` token"
    if "require_read_stream" in calls:
        return "`read` or `admin` token (header, or `?token=`)"
    if "require_read" in calls:
        return "`read` or `admin` token"
    return "none"


def scopes(spec: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(METHOD, path) -> the access a call needs, from its route's auth dependency.

    A module's route path lacks the prefix it is mounted under (`/api/v1`): the longest route
    path that ends the spec's path, with the same method, is the one."""
    routes = _routes()
    out: dict[tuple[str, str], str] = {}
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method not in item:
                continue
            found = [
                r for r in routes if method.upper() in (r.methods or ()) and path.endswith(r.path)
            ]
            if not found:
                raise SystemExit(f"no route for {method.upper()} {path}")
            out[(method.upper(), path)] = _need(max(found, key=lambda r: len(r.path)))
    return out


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def type_of(schema: dict[str, Any]) -> str:
    """A short, readable type: `string`, `integer (1..500)`, `ConferenceOut`, `string | null`."""
    if "$ref" in schema:
        name = _ref_name(schema["$ref"])
        return f"[{name}](#{name.lower()})"
    if "anyOf" in schema:
        return " | ".join(type_of(s) for s in schema["anyOf"])
    if "enum" in schema:
        return " | ".join(f"`{v}`" for v in schema["enum"])
    if "const" in schema:
        return f"`{schema['const']}`"
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {type_of(schema.get('items', {}))}"
    if kind == "object" and "additionalProperties" in schema:
        extra = schema["additionalProperties"]
        return f"object of {type_of(extra) if isinstance(extra, dict) else 'any'}"
    text = str(kind)
    if "format" in schema:
        text += f" ({schema['format']})"
    bounds = []
    if "minimum" in schema or "maximum" in schema:
        bounds.append(f"{schema.get('minimum', '')}..{schema.get('maximum', '')}")
    if "minLength" in schema or "maxLength" in schema:
        bounds.append(f"length {schema.get('minLength', 0)}..{schema.get('maxLength', '')}")
    if "pattern" in schema:
        bounds.append(f"pattern `{schema['pattern']}`")
    if bounds:
        text += " (" + ", ".join(bounds) + ")"
    return text


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def _body_schema(content: dict[str, Any]) -> str | None:
    for media, spec in content.items():
        schema = spec.get("schema")
        return f"`{media}`" + (f": {type_of(schema)}" if schema else "")
    return None


def render_operation(path: str, method: str, op: dict[str, Any], need: str) -> list[str]:
    lines = [f"### `{method.upper()} {path}`", ""]
    if op.get("summary"):
        lines += [op["summary"] + ".", ""]
    if op.get("description"):
        lines += [op["description"].strip(), ""]
    lines += [f"Access: {need}.", ""]
    params = op.get("parameters", [])
    if params:
        lines += [
            "| parameter | in | type | required | default | description |",
            "|---|---|---|---|---|---|",
        ]
        for p in params:
            schema = p.get("schema", {})
            default = f"`{schema['default']}`" if "default" in schema else ""
            lines.append(
                f"| `{p['name']}` | {p['in']} | {_cell(type_of(schema))} | "
                f"{'yes' if p.get('required') else 'no'} | {default} | "
                f"{_cell(p.get('description', ''))} |"
            )
        lines.append("")
    body = op.get("requestBody")
    if body:
        lines += [f"Request body: {_body_schema(body.get('content', {}))}.", ""]
    lines += ["| status | meaning | body |", "|---|---|---|"]
    for code in sorted(op.get("responses", {})):
        resp = op["responses"][code]
        shown = _body_schema(resp.get("content", {})) or ""
        lines.append(f"| {code} | {_cell(resp.get('description', ''))} | {_cell(shown)} |")
    lines.append("")
    return lines


def render_schema(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"### {name}", ""]
    if schema.get("description"):
        lines += [schema["description"].strip(), ""]
    props = schema.get("properties", {})
    if not props:
        return [*lines, f"Type: {type_of(schema)}.", ""]
    required = set(schema.get("required", []))
    lines += ["| field | type | required | description |", "|---|---|---|---|"]
    for field, spec in props.items():
        lines.append(
            f"| `{field}` | {_cell(type_of(spec))} | {'yes' if field in required else 'no'} | "
            f"{_cell(spec.get('description', ''))} |"
        )
    return [*lines, ""]


def render(app: FastAPI | None = None) -> str:
    app = app or build_app()
    spec = app.openapi()
    need = scopes(spec)
    info = spec["info"]
    lines = [
        "# REST API reference",
        "",
        "<!-- Generated from /openapi.json by docs/gen_api.py; do not edit by hand. -->",
        "",
        f"{info['title']}, API version {info['version']} (OpenAPI {spec['openapi']}). "
        "The running server also serves this as `/openapi.json` and browsable at `/docs`.",
        "",
        info.get("description", "").strip(),
        "",
        "## Calls",
        "",
        "| call | summary | access |",
        "|---|---|---|",
    ]
    ops: list[tuple[str, str, dict[str, Any]]] = []
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method in item:
                ops.append((path, method, item[method]))
    for path, method, op in ops:
        anchor = f"{method} {path}".lower()
        anchor = "".join(c for c in anchor if c.isalnum() or c in " -_").replace(" ", "-")
        lines.append(
            f"| [`{method.upper()} {path}`](#{anchor}) | {_cell(op.get('summary', ''))} | "
            f"{need.get((method.upper(), path), 'none')} |"
        )
    lines.append("")
    tags: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, method, op in ops:
        tags.setdefault((op.get("tags") or ["other"])[0], []).append((path, method, op))
    for tag, tagged in tags.items():
        lines += [f"## {tag.capitalize()}", ""]
        for path, method, op in tagged:
            lines += render_operation(path, method, op, need.get((method.upper(), path), "none"))
    lines += ["## Schemas", ""]
    for name, schema in spec.get("components", {}).get("schemas", {}).items():
        lines += render_schema(name, schema)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if docs/api.md is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} is out of date: run docs/gen_api.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
