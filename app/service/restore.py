"""Restart without loss: rebuild the focus's conferences from the database and reconcile
them with the media processors' member lists.

Dialog state is written through on every participant change (`app.service.persistence`), but
in-dialog requests sent after the last write (NOTIFYs, re-INVITEs) moved the CSeq numbers
on; the restored dialogs therefore jump their local CSeq ahead (RFC 3261 §12.2.1.1 only asks
for it to increase) and accept whatever remote CSeq comes next.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from app.db import models as db
from app.db import repo
from app.db.session import SessionFactory, session_scope
from app.focus.conference_info import (
    ConferenceInfo,
    DisconnectionMethod,
    EndpointStatus,
    JoiningMethod,
)
from app.focus.media import MemberRemovalCause, MemberRemoved
from app.focus.model import Conference, Participant, Phase, Subscription, SubscriptionKind
from app.mrfp.port import ConferenceNotFound, MrfpError
from app.sip.dialog import Dialog

log = logging.getLogger(__name__)

CSEQ_JUMP = 1000


def _dialog(data: Any) -> Dialog | None:
    if not isinstance(data, dict) or not data.get("call_id"):
        return None
    try:
        dialog = Dialog.from_dict(data)
    except (KeyError, ValueError) as exc:
        log.warning("cannot restore a dialog: %s", exc)
        return None
    dialog.local_cseq += CSEQ_JUMP
    dialog.remote_cseq = None
    return dialog


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _participant(row: db.Participant) -> Participant | None:
    state = row.dialog_state or {}
    connected = row.status in (EndpointStatus.CONNECTED, EndpointStatus.MUTED_VIA_FOCUS)
    if not connected or row.left_at is not None:
        return None
    ue = _dialog(state.get("ue"))
    if ue is None:
        return None
    part = Participant(
        id=row.id,
        conference_id=row.conference_id,
        aor=row.uri,
        display_name=row.display_name,
        joining_method=JoiningMethod(row.joining_method or JoiningMethod.DIALED_IN),
        phase=Phase.CONNECTED,
        created_at=_aware(row.created_at) or datetime.now(UTC),
        dialog=ue,
        mrfp_dialog=_dialog(state.get("mrfp")),
        mrfp_call_id=row.mrfp_call_id,
        member_id=row.mrfp_member_id,
        muted=bool(row.muted),
        status=EndpointStatus(row.status),
        joined_at=_aware(row.joined_at),
    )
    ue.owner = part.id
    return part


def _subscription(
    row: db.Subscription, participants: dict[str, Participant], now: float, wall: datetime
) -> Subscription | None:
    if row.state == db.SubscriptionState.TERMINATED:
        return None
    dialog_data = row.dialog_state or {}
    expires_at = _aware(row.expires_at)
    remaining = (expires_at - wall).total_seconds() if expires_at else 600.0
    if remaining <= 0:
        return None
    # A subscription inside a participant's INVITE dialog shares that dialog (RFC 6665 §4.5.2).
    owner = next(
        (
            p
            for p in participants.values()
            if p.dialog is not None
            and p.dialog.call_id == dialog_data.get("call_id")
            and p.dialog.local_tag == dialog_data.get("local_tag")
        ),
        None,
    )
    dialog = owner.dialog if owner is not None else _dialog(dialog_data)
    if dialog is None:
        return None
    return Subscription(
        id=row.id,
        conference_id=row.conference_id,
        kind=SubscriptionKind.CONFERENCE,
        subscriber=row.subscriber_uri,
        dialog=dialog,
        expires_at=now + remaining,
        version=int(row.version or 0) + CSEQ_JUMP,
        participant_id=owner.id if owner is not None else None,
    )


def load_conferences(factory: SessionFactory, now: float) -> list[Conference]:
    """Active conferences as the focus models them, from the database."""
    wall = datetime.now(UTC)
    out: list[Conference] = []
    with session_scope(factory) as session:
        for row in repo.load_active_conferences(session):
            conf = Conference(
                id=row.id,
                uri=row.uri,
                factory_uri=row.factory_uri or None,
                initiator=row.initiator,
                node=row.mrfp_node or "",
                created_at=_aware(row.created_at) or wall,
                info=ConferenceInfo(entity=row.uri, active=True, locked=bool(row.locked)),
                locked=bool(row.locked),
            )
            for prow in row.participants:
                part = _participant(prow)
                if part is not None:
                    conf.participants[part.id] = part
            for srow in row.subscriptions:
                sub = _subscription(srow, conf.participants, now, wall)
                if sub is not None:
                    conf.subscriptions[sub.id] = sub
            out.append(conf)
    return out


async def reconcile(service: Any, conferences: list[Conference], timeout: float = 10.0) -> None:
    """Compare each restored conference with its node's member list (`json_list`): members
    that vanished while the focus was down are treated as gone, so their UEs get BYE and the
    others are notified."""
    pool = service.pool
    for conf in conferences:
        node = pool.node_of(conf.id)
        if node is None:
            continue
        waiter = getattr(node, "wait_connected", None)
        if waiter is not None and not node.connected:
            await waiter(timeout)
        try:
            members = await node.list_members(conf.id)
        except ConferenceNotFound:
            members = []
        except MrfpError as exc:
            log.warning("cannot reconcile %s with %s: %s", conf.id, node.name, exc)
            continue
        present = {m.member_id for m in members}
        for part in list(conf.participants.values()):
            # A member id not yet written down cannot be checked, unless the whole
            # conference is gone from the node.
            unknown = part.member_id is None and bool(members)
            if part.phase is Phase.CONNECTED and not unknown and part.member_id not in present:
                log.info("participant %s vanished from %s during the restart", part.aor, conf.id)
                service.on_restored_member_gone(
                    MemberRemoved(
                        node.name,
                        conf.id,
                        part.member_id or "",
                        part.mrfp_call_id,
                        MemberRemovalCause.UNKNOWN,
                    )
                )
        await asyncio.sleep(0)


__all__ = ["DisconnectionMethod", "load_conferences", "reconcile"]
