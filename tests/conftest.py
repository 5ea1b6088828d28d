"""Shared fixtures: the shared/ folder beside the project, free ports, temp dirs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.ports import free_port

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED = PROJECT_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is not beside the project")
    return SHARED


@pytest.fixture
def port() -> int:
    return free_port()
