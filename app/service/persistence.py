"""Writes the focus's changes through to the database (one writer thread, in order).

Every change also goes to the append-only event log, the call record operators bill and
debug from; talking changes are too frequent and too fleeting for it and are only published.
"""

from __future__ import annotations

from typing import Any

from app.db import repo
from app.db.models import Subscription
from app.db.session import SessionFactory, session_scope
from app.focus.actions import Changed

_NOT_LOGGED = frozenset({"participant.talking", "participant.media"})

_PARTICIPANT_FIELDS = (
    "display_name",
    "call_id",
    "local_tag",
    "remote_tag",
    "mrfp_call_id",
    "status",
    "joining_method",
    "disconnection_method",
    "muted",
    "joined_at",
    "left_at",
)


class DatabaseWriter:
    def __init__(self, session_factory: SessionFactory, owner_node: str | None = None) -> None:
        self.session_factory = session_factory
        self.owner_node = owner_node

    def __call__(self, change: Changed) -> None:
        with session_scope(self.session_factory) as session:
            data = change.data
            kind = change.kind
            if kind.startswith("conference."):
                self._conference(session, change)
            elif kind.startswith("participant.") and change.participant_id is not None:
                self._participant(session, change)
            elif kind.startswith("subscription.") and data.get("id"):
                self._subscription(session, change)
            if kind not in _NOT_LOGGED:
                repo.append_event(
                    session,
                    kind,
                    conference_id=change.conference_id,
                    participant_id=change.participant_id,
                    actor=change.actor,
                    detail=_detail(data),
                )

    def _conference(self, session: Any, change: Changed) -> None:
        data = change.data
        if change.kind == "conference.created":
            repo.create_conference(
                session,
                conference_id=change.conference_id,
                uri=data["uri"],
                factory_uri=data.get("factory_uri") or "",
                initiator=data.get("initiator"),
                mrfp_node=data.get("mrfp_node"),
                owner_node=self.owner_node,
                at=data.get("created_at"),
            )
        elif change.kind == "conference.ended":
            repo.end_conference(session, change.conference_id, at=data.get("ended_at"))
        elif change.kind == "conference.locked":
            repo.update_conference(session, change.conference_id, {"locked": bool(data["locked"])})

    def _participant(self, session: Any, change: Changed) -> None:
        data = change.data
        pid = change.participant_id
        assert pid is not None
        fields: dict[str, Any] = {k: data.get(k) for k in _PARTICIPANT_FIELDS if k in data}
        if data.get("member_id") is not None:
            fields["mrfp_member_id"] = str(data["member_id"])
        fields["dialog_state"] = {"ue": data.get("dialog"), "mrfp": data.get("mrfp_dialog")}
        existing = repo.get_participant(session, change.conference_id, pid)
        if existing is None:
            repo.add_participant(
                session,
                change.conference_id,
                participant_id=pid,
                uri=data.get("uri") or "",
                display_name=data.get("display_name"),
                joining_method=data.get("joining_method"),
            )
        repo.update_participant(session, pid, fields)  # type: ignore[arg-type]

    def _subscription(self, session: Any, change: Changed) -> None:
        data = change.data
        sid = data["id"]
        dialog = data.get("dialog") or {}
        state = "terminated" if data.get("terminated") else "active"
        existing = session.get(Subscription, sid)
        if existing is None:
            repo.add_subscription(
                session,
                change.conference_id,
                subscription_id=sid,
                subscriber_uri=data.get("subscriber") or "",
                call_id=dialog.get("call_id"),
                local_tag=dialog.get("local_tag"),
                remote_tag=dialog.get("remote_tag"),
                state=state,
                version=int(data.get("version") or 0),
                dialog_state=dialog,
            )
        else:
            repo.update_subscription(
                session,
                sid,
                {"state": state, "version": int(data.get("version") or 0), "dialog_state": dialog},
            )


def _detail(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in ("dialog", "mrfp_dialog"):
            continue
        out[key] = value.isoformat() if hasattr(value, "isoformat") else value
    return out
