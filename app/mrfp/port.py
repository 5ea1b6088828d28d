"""The asyncio interface the MRFC-AS uses to control one media processor node.

`app.mrfp.freeswitch.FreeSwitchNode` implements it over ESL; the built-in media processor
speaks the same ESL, so the same class drives it too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from app.focus.media import MediaEvent, MemberInfo


class MrfpError(Exception):
    """A media-processor command failed."""


class MrfpUnavailable(MrfpError):
    """No control connection to the node (ESL down), or the command timed out."""


class ConferenceNotFound(MrfpError):
    """`-ERR Conference <id> not found`."""


class MemberNotFound(MrfpError):
    """`-ERR Non-Existant ID <n>` (FreeSWITCH's spelling)."""


class CommandFailed(MrfpError):
    """Any other `-ERR ...` reply."""


EventSink = Callable[[MediaEvent], None]


class MediaNode(Protocol):
    """One MRFP node. Commands raise `MrfpError` subclasses; events go to the sink."""

    name: str

    @property
    def connected(self) -> bool: ...

    async def start(self, sink: EventSink) -> None: ...

    async def stop(self) -> None: ...

    async def list_members(self, conference: str) -> list[MemberInfo]: ...

    async def conference_count(self) -> int: ...

    async def kick(self, conference: str, member_id: str) -> None: ...

    async def hup(self, conference: str, member_id: str) -> None: ...

    async def mute(self, conference: str, member_id: str) -> None: ...

    async def unmute(self, conference: str, member_id: str) -> None: ...

    async def deaf(self, conference: str, member_id: str) -> None: ...

    async def undeaf(self, conference: str, member_id: str) -> None: ...

    async def lock(self, conference: str) -> None: ...

    async def unlock(self, conference: str) -> None: ...

    async def play(self, conference: str, path: str, member_id: str | None = None) -> None: ...

    async def record_start(self, conference: str, path: str) -> None: ...

    async def record_stop(self, conference: str, path: str) -> None: ...
