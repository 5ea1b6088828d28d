"""Helpers for the API tests that drive a running MRFC-AS with SIPp participants.

`LiveApi` is an httpx client with a token; `EslProbe` asks the media processor over ESL what
its conference looks like (`conference <id> json_list`); `SseCollector` follows `GET /events`
in a thread; `notifies()` reads the NOTIFYs a SIPp watcher has received from its trace.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from app.focus.media import MemberInfo
from app.mrfp.esl.conference import ConferenceInfo, parse_json_list
from app.mrfp.esl.frames import API_RESPONSE, AUTH_REQUEST, EslClientParser, Frame, render_command
from tests.support.ports import free_port_range
from tests.support.sipp import SippProcess, start_sipp
from tests.support.stack import Stack

SCENARIOS = Path(__file__).resolve().parents[1] / "interop" / "scenarios" / "api"
CONF_DOMAIN = "mrfc1.home1.net"
CI_NS = {"ci": "urn:ietf:params:xml:ns:conference-info"}

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30.0) -> T:
    """Poll `probe` until it returns something truthy (generous: a loaded 2-core machine)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        else:
            if last:
                return last  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


class LiveApi:
    def __init__(self, stack: Stack, token: str) -> None:
        self.stack = stack
        self.token = token
        self.client = httpx.Client(
            base_url=f"{stack.api}/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=15.0,
        )

    def get(self, path: str, **params: str) -> Any:
        resp = self.client.get(path, params=params)
        assert resp.status_code == 200, (path, resp.status_code, resp.text)
        return resp.json()

    def participants(self, conf_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get(f"/conferences/{conf_id}/participants")["items"]
        return items

    def participant(self, conf_id: str, uri: str) -> dict[str, Any] | None:
        return next((p for p in self.participants(conf_id) if p["uri"] == uri), None)

    def close(self) -> None:
        self.client.close()


# --- ESL ------------------------------------------------------------------------------------


class EslProbe:
    """A bare inbound ESL connection: auth, then `api` commands (mod_event_socket framing)."""

    def __init__(self, port: int, password: str = "ClueCon") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.parser = EslClientParser()
        self.frames: list[Frame] = []
        first = self._next()
        assert first.content_type == AUTH_REQUEST, first
        self.sock.sendall(render_command(f"auth {password}"))
        reply = self._next()
        assert (reply.reply_text or "").startswith("+OK"), reply

    def _next(self) -> Frame:
        while not self.frames:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("ESL connection closed")
            self.frames.extend(self.parser.feed(data))
        return self.frames.pop(0)

    def api(self, command: str) -> str:
        self.sock.sendall(render_command(f"api {command}"))
        while True:
            frame = self._next()
            if frame.content_type == API_RESPONSE:
                return frame.text

    def members(self, conf_id: str) -> list[MemberInfo]:
        info = self.conference(conf_id)
        assert info is not None, f"the media processor has no conference {conf_id}"
        return info.members

    def conference(self, conf_id: str) -> ConferenceInfo | None:
        body = self.api(f"conference {conf_id} json_list")
        if body.startswith("-ERR"):
            return None
        infos = parse_json_list(body)
        return infos[0] if infos else None

    def close(self) -> None:
        self.sock.close()


# --- SSE ------------------------------------------------------------------------------------


class SseCollector:
    """Reads `GET /events` in a daemon thread; `events` grows as the server sends them."""

    def __init__(self, stack: Stack, token: str) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.connected = threading.Event()
        self._url = f"{stack.api}/api/v1/events"
        self._token = token
        self._thread = threading.Thread(target=self._run, daemon=True, name="sse")
        self._thread.start()

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self._token}"}
        kind = ""
        try:
            with httpx.stream(
                "GET", self._url, headers=headers, timeout=httpx.Timeout(10, read=None)
            ) as resp:
                for line in resp.iter_lines():
                    self.connected.set()
                    if line.startswith("event: "):
                        kind = line.removeprefix("event: ")
                    elif line.startswith("data: "):
                        self.events.append((kind, json.loads(line.removeprefix("data: "))))
        except httpx.HTTPError:
            return  # the server stopped

    def kinds(self, conf_id: str) -> list[tuple[str, str | None]]:
        return [
            (kind, data.get("participant_id"))
            for kind, data in list(self.events)
            if data.get("conference_id") == conf_id
        ]


# --- SIPp -----------------------------------------------------------------------------------


def start_ue(
    scenario: str, log_dir: Path, stack: Stack | None, keys: dict[str, str], **kwargs: Any
) -> SippProcess:
    """A SIPp UE with its own media port (so parallel UEs never share one)."""
    media = free_port_range(4)
    return start_sipp(
        SCENARIOS / scenario,
        log_dir,
        remote=f"127.0.0.1:{stack.sip_port}" if stack is not None else None,
        keys=keys,
        extra=["-mp", str(media)],
        **kwargs,
    )


def notifies(watcher: SippProcess) -> list[str]:
    """The NOTIFYs the watcher has received so far, in order (SIPp flushes its trace)."""
    return watcher.result().received_requests("NOTIFY")


def notify_body(message: str) -> ET.Element:
    body = re.split(r"\r?\n\r?\n", message, maxsplit=1)[1]
    return ET.fromstring(body.strip().encode())


def endpoint_states(message: str) -> dict[str, dict[str, str | None]]:
    """user entity -> {status, disconnection-method} of its endpoint in one NOTIFY body."""
    doc = notify_body(message)
    out: dict[str, dict[str, str | None]] = {}
    for user in doc.iterfind("ci:users/ci:user", CI_NS):
        for endpoint in user.iterfind("ci:endpoint", CI_NS):
            out[str(user.get("entity"))] = {
                "status": endpoint.findtext("ci:status", namespaces=CI_NS),
                "disconnection-method": endpoint.findtext(
                    "ci:disconnection-method", namespaces=CI_NS
                ),
                "state": endpoint.get("state"),
            }
    return out
