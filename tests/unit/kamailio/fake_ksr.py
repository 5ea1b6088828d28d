"""A fake of app_python3's `KSR` module for unit-testing the KEMI routing scripts.

Pseudo-variables come from a dict, headers from a dict of lists; every other KSR call is
recorded as ("module.function", args) and answers from `returns` (default 1).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

KEMI_DIR = Path(__file__).resolve().parents[3] / "kamailio" / "kemi"
if str(KEMI_DIR) not in sys.path:
    sys.path.insert(0, str(KEMI_DIR))

_HDR_INDEXED = re.compile(r"^\$\(hdr\((?P<name>[^)]+)\)\[(?P<i>\d+)\]\)$")
_HDR = re.compile(r"^\$hdr\((?P<name>[^)]+)\)$")
_HDRC = re.compile(r"^\$hdrc\((?P<name>[^)]+)\)$")


class _Module:
    def __init__(self, ksr: FakeKsr, name: str) -> None:
        self._ksr = ksr
        self._name = name

    def __getattr__(self, func: str) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            key = f"{self._name}.{func}"
            self._ksr.calls.append((key, args))
            value = self._ksr.returns.get(key, 1)
            return value(*args) if callable(value) else value

        return call


class _Pv:
    def __init__(self, ksr: FakeKsr) -> None:
        self._ksr = ksr

    def get(self, name: str) -> Any:
        ksr = self._ksr
        if m := _HDRC.match(name):
            return len(ksr.headers.get(m["name"].lower(), []))
        if m := _HDR_INDEXED.match(name):
            values = ksr.headers.get(m["name"].lower(), [])
            i = int(m["i"])
            return values[i] if i < len(values) else None
        if m := _HDR.match(name):
            values = ksr.headers.get(m["name"].lower(), [])
            return values[0] if values else None
        return ksr.pvs.get(name)

    def sets(self, name: str, value: str) -> int:
        self._ksr.pvs[name] = value
        self._ksr.calls.append(("pv.sets", (name, value)))
        return 1

    def seti(self, name: str, value: int) -> int:
        return self.sets(name, str(value))


class _Htable:
    def __init__(self, ksr: FakeKsr) -> None:
        self._ksr = ksr

    def sht_get(self, table: str, key: str) -> Any:
        return self._ksr.tables.setdefault(table, {}).get(key)

    def sht_sets(self, table: str, key: str, value: str) -> int:
        self._ksr.tables.setdefault(table, {})[key] = value
        return 1

    def sht_setxs(self, table: str, key: str, value: str, expires: int) -> int:
        self._ksr.expires[(table, key)] = expires
        return self.sht_sets(table, key, value)

    def sht_rm(self, table: str, key: str) -> int:
        self._ksr.tables.setdefault(table, {}).pop(key, None)
        return 1


class FakeKsr:
    def __init__(
        self,
        pvs: dict[str, Any] | None = None,
        headers: dict[str, list[str]] | None = None,
        defines: dict[str, str] | None = None,
    ) -> None:
        self.pvs: dict[str, Any] = dict(pvs or {})
        for name, value in (defines or {}).items():
            self.pvs[f"$def({name})"] = value
        self.headers: dict[str, list[str]] = {
            k.lower(): list(v) for k, v in (headers or {}).items()
        }
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.returns: dict[str, Any] = {"siputils.has_totag": -1, "tm.t_check_trans": -1}
        self.tables: dict[str, dict[str, str]] = {}
        self.expires: dict[tuple[str, str], int] = {}
        self.pv = _Pv(self)
        self.htable = _Htable(self)

    def __getattr__(self, name: str) -> _Module:
        return _Module(self, name)

    def called(self, key: str) -> list[tuple[Any, ...]]:
        return [args for k, args in self.calls if k == key]

    def replies(self) -> list[int]:
        """Status codes sent with sl_send_reply or t_reply."""
        return [int(args[0]) for k, args in self.calls if k in ("sl.sl_send_reply", "tm.t_reply")]
