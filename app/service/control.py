"""What the REST API (and the CLI through it) may ask of the running focus.

The focus service implements `ConferenceControl`; the API depends only on this protocol and
maps the errors below to HTTP statuses in one place (`app.api.errors`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


class ControlError(Exception):
    """Base of the errors an action can raise; `message` is safe to show to API clients."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConferenceNotFoundError(ControlError):
    """No such conference, or it has ended (HTTP 404)."""


class ParticipantNotFoundError(ControlError):
    """No such participant in that conference (HTTP 404)."""


class ConflictError(ControlError):
    """The action contradicts the current state: kick of someone who left, dial-out into a
    locked or full conference (HTTP 409)."""


class MediaUnavailableError(ControlError):
    """The MRFP (or the SIP side) cannot carry the action out now (HTTP 503)."""


@runtime_checkable
class ConferenceControl(Protocol):
    """Actions on live conferences. `actor` names who asked (token name), for the event log."""

    async def end_conference(self, conference_id: str, actor: str) -> None:
        """BYE every participant, final NOTIFY to subscribers (RFC 4575 §4.2)."""

    async def kick(self, conference_id: str, participant_id: str, actor: str) -> None:
        """BYE the UE, drop the MRFP member; NOTIFY with disconnection-method="booted"."""

    async def set_muted(
        self, conference_id: str, participant_id: str, muted: bool, actor: str
    ) -> None:
        """Mute/unmute at the MRFP and in the conference-info (status muted-via-focus)."""

    async def set_locked(self, conference_id: str, locked: bool, actor: str) -> None:
        """A locked conference answers new joins with 403."""

    async def dial_out(self, conference_id: str, uri: str, actor: str) -> str:
        """INVITE `uri` into the conference as if it had been REFERred (RFC 4579 §5.5);
        returns the new participant id (its status starts as dialing-out)."""

    async def health(self) -> dict[str, bool]:
        """Readiness checks, e.g. {"sip": True, "esl": False}; all True means ready."""


class UnavailableControl:
    """Stands in until the focus is running: reads work through the API, actions get 503."""

    def __init__(self, reason: str = "the conference focus is not running") -> None:
        self.reason = reason

    async def end_conference(self, conference_id: str, actor: str) -> None:
        raise MediaUnavailableError(self.reason)

    async def kick(self, conference_id: str, participant_id: str, actor: str) -> None:
        raise MediaUnavailableError(self.reason)

    async def set_muted(
        self, conference_id: str, participant_id: str, muted: bool, actor: str
    ) -> None:
        raise MediaUnavailableError(self.reason)

    async def set_locked(self, conference_id: str, locked: bool, actor: str) -> None:
        raise MediaUnavailableError(self.reason)

    async def dial_out(self, conference_id: str, uri: str, actor: str) -> str:
        raise MediaUnavailableError(self.reason)

    async def health(self) -> dict[str, bool]:
        return {"sip": False, "esl": False}
