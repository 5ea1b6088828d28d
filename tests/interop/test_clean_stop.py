"""A stopped MRFC-AS (SIGTERM, as systemd and `make run` stop it) exits 0 and logs no error."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.stack import start_stack

pytestmark = pytest.mark.interop


def test_sigterm_stops_cleanly(tmp_path: Path) -> None:
    stack = start_stack(tmp_path / "stack")
    try:
        mrfc = stack.mrfc
        assert mrfc.stop() == 0
        log = mrfc.output()
        assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
        assert "Application shutdown complete" in log
    finally:
        stack.stop()
