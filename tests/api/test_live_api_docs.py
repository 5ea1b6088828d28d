"""docs/api.md is what docs/gen_api.py makes of the live /openapi.json: regenerate on change."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[2]


def _gen_api() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_api", ROOT / "docs" / "gen_api.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_reference_is_current() -> None:
    gen = _gen_api()
    committed = (ROOT / "docs" / "api.md").read_text()
    assert committed == gen.render(), "docs/api.md is stale: run .venv/bin/python docs/gen_api.py"


def test_reference_is_built_from_the_served_spec() -> None:
    gen = _gen_api()
    app = gen.build_app()
    served = TestClient(app).get("/openapi.json").json()
    text = gen.render(app)
    for path, item in served["paths"].items():
        for method in item:
            assert f"### `{method.upper()} {path}`" in text
    for name in served["components"]["schemas"]:
        assert f"### {name}\n" in text
    # The scope each call needs comes from its auth dependency.
    assert "| `admin` token |" in text.split("PATCH /api/v1/conferences/{conference_id}`](")[1]
    assert "`read` or `admin` token" in text.split("GET /api/v1/conferences`](")[1]


def test_check_mode_fails_on_a_stale_file(tmp_path: Path) -> None:
    gen = _gen_api()
    assert gen.main(["--check"]) == 0
    out = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "gen_api.py"), "--check"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    stale = tmp_path / "api.md"
    stale.write_text("# stale\n")
    setattr(gen, "OUTPUT", stale)  # noqa: B010 (a module loaded from a path: mypy sees no attributes)
    assert gen.main(["--check"]) == 1
