"""The focus's in-memory model: conferences, participants, subscriptions (sans-IO)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from itertools import islice
from typing import Any

from app.focus.conference_info import (
    ConferenceInfo,
    DisconnectionMethod,
    EndpointStatus,
    JoiningMethod,
)
from app.focus.preconditions import PreconditionTable
from app.sip.dialog import Dialog
from app.sip.message import Request, Response
from app.sip.sdp import SessionDescription
from app.sip.uri import NameAddr, SipUri


class Phase(Enum):
    """Where a participant's call stands, as the focus drives it."""

    MRFP_PENDING = "mrfp-pending"  # INVITE sent to the MRFP, no answer yet
    EARLY = "early"  # 183 with the MRFP's SDP sent to the UE
    ANSWERED = "answered"  # 200 sent to the UE, waiting for its ACK
    DIALING = "dialing"  # dial-out: INVITE sent to the user
    CONNECTED = "connected"
    GONE = "gone"


@dataclass(eq=False)
class Participant:
    id: str
    conference_id: str
    aor: str
    display_name: str | None
    joining_method: JoiningMethod
    phase: Phase
    created_at: datetime
    # The UE side (focus = UAS for dial-in, UAC for dial-out).
    dialog: Dialog | None = None
    invite: Request | None = None  # the UE's INVITE (dial-in) or ours (dial-out)
    invite_txn: object | None = None  # its server transaction while unanswered (dial-in)
    # The dial-in INVITE's (Call-ID, From tag), kept apart from `invite`: the transaction
    # layer drops a settled message's parsed headers, and reading them again re-parses.
    invite_key: tuple[str, str | None] | None = None
    # The MRFP side (focus = UAC).
    mrfp_dialog: Dialog | None = None
    mrfp_invite: Request | None = None
    mrfp_call_id: str | None = None
    member_id: str | None = None
    # Offer/answer.
    ue_offer: SessionDescription | None = None  # the UE's offer, precondition lines stripped
    mrfp_answer: SessionDescription | None = None
    preconditions: PreconditionTable | None = None
    # RFC 3262 reliable provisional responses.
    reliable: bool = False
    rseq: int = 0
    unacked_provisional: Response | None = None
    provisional_interval: float = 0.0
    provisional_deadline: float = 0.0
    # The 2xx to the INVITE, retransmitted until ACK (RFC 3261 §13.3.1.4).
    final_response: Response | None = None
    final_interval: float = 0.0
    final_deadline: float = 0.0
    # A UE request waiting for the MRFP's answer to a renegotiation (PRACK/UPDATE/re-INVITE).
    pending_request: Request | None = None
    pending_txn: object | None = None
    # Session timer (RFC 4028), seconds; None when not negotiated.
    session_expires: int | None = None
    # Dial-out bookkeeping: the REFER subscription to report progress to.
    refer_subscription: str | None = None
    muted: bool = False
    deaf: bool = False
    talking: bool = False
    status: EndpointStatus = EndpointStatus.PENDING
    joined_at: datetime | None = None
    left_at: datetime | None = None
    disconnection_method: DisconnectionMethod | None = None
    signalled_preconditions: bool = False
    # Kinds of this participant's timers now armed ("100rel", "2xx", "session", "mrfp-gone",
    # "ring"): what leaves is cancelled for these only, not for every kind there is.
    # A tuple (of at most five strings) rather than a set: no container for the garbage
    # collector to track per participant.
    armed: tuple[str, ...] = field(default=(), repr=False)

    @property
    def endpoint_entity(self) -> str:
        return self.aor

    def snapshot(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "conference_id": self.conference_id,
            "uri": self.aor,
            "display_name": self.display_name,
            "status": self.status.value,
            "joining_method": self.joining_method.value,
            "disconnection_method": (
                self.disconnection_method.value if self.disconnection_method else None
            ),
            "muted": self.muted,
            "talking": self.talking,
            "member_id": self.member_id,
            "mrfp_call_id": self.mrfp_call_id,
            "call_id": self.dialog.call_id if self.dialog else None,
            "local_tag": self.dialog.local_tag if self.dialog else None,
            "remote_tag": self.dialog.remote_tag if self.dialog else None,
            "dialog": self.dialog.to_dict() if self.dialog else None,
            "mrfp_dialog": self.mrfp_dialog.to_dict() if self.mrfp_dialog else None,
            "joined_at": self.joined_at,
            "left_at": self.left_at,
        }


class SubscriptionKind(Enum):
    CONFERENCE = "conference"  # RFC 4575
    REFER = "refer"  # RFC 3515 implicit subscription


@dataclass(eq=False)
class Subscription:
    id: str
    conference_id: str
    kind: SubscriptionKind
    subscriber: str
    dialog: Dialog
    expires_at: float
    version: int = 0  # RFC 4575 §4.1: the version of the last document sent
    terminated: bool = False
    # The participant whose INVITE dialog this subscription shares, if any (RFC 6665 §4.5.2).
    participant_id: str | None = None

    def snapshot(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "conference_id": self.conference_id,
            "kind": self.kind.value,
            "subscriber": self.subscriber,
            "version": self.version,
            "terminated": self.terminated,
            "dialog": self.dialog.to_dict(),
        }


@dataclass(eq=False)
class Conference:
    id: str
    uri: str
    factory_uri: str | None
    initiator: str | None
    node: str
    created_at: datetime
    info: ConferenceInfo
    locked: bool = False
    active: bool = True
    ended_at: datetime | None = None
    participants: dict[str, Participant] = field(default_factory=dict)
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    # Who is still present, in `participants` order: gone ones stay in `participants` (REST
    # reads them) but leave this through `mark_gone`, so the count is O(1) in a big conference.
    _live: dict[str, Participant] = field(default_factory=dict, init=False, repr=False)
    _seen: int = field(default=0, init=False, repr=False)  # len(participants) at last look
    _last: str | None = field(default=None, init=False, repr=False)  # its last key then
    # (node, the conference's URI there, its To text): see Focus._mrfp_target.
    mrfp_target: tuple[str, SipUri, str] | None = field(default=None, init=False, repr=False)
    # The focus's Contact in this conference's dialogs, parsed (see Focus._focus_contact_addr).
    focus_contact: NameAddr | None = field(default=None, init=False, repr=False)

    def _sync(self) -> dict[str, Participant]:
        participants = self.participants
        count = len(participants)
        last = next(reversed(participants)) if count else None
        if count == self._seen and last == self._last:
            return self._live  # nothing added (additions go last) and so nothing removed
        added = count - self._seen
        tail = list(islice(reversed(participants.items()), added + 1)) if added > 0 else []
        if added > 0 and (self._seen == 0 or tail[added][0] == self._last):
            # Only added since the last look (dicts keep insertion order): take the tail. The
            # key before it must be the last one seen, else one was forgotten meanwhile too.
            for pid, part in reversed(tail[:added]):
                if part.phase is not Phase.GONE:
                    self._live[pid] = part
        else:
            self._live = {k: p for k, p in participants.items() if p.phase is not Phase.GONE}
        self._seen = count
        self._last = last
        return self._live

    def present(self) -> list[Participant]:
        """Participants not gone (the ones that count against the limit)."""
        return list(self._sync().values())

    def present_count(self) -> int:
        return len(self._sync())

    def mark_gone(self, part: Participant) -> None:
        """`part` has left for good (GONE is final)."""
        part.phase = Phase.GONE
        self._sync().pop(part.id, None)

    def add(self, part: Participant) -> None:
        """A new participant (what the focus calls; `participants` may also be filled
        directly, `present()` then catches up)."""
        live = self._sync()
        self.participants[part.id] = part
        if part.phase is not Phase.GONE:
            live[part.id] = part
        self._seen = len(self.participants)
        self._last = part.id

    def forget(self, participant_id: str) -> None:
        """Drop a participant from memory altogether. Through here, not `del`, so that
        `present()` need not look at every participant again: at a steady rate of joins a
        conference holds many gone participants (for 64*T1 each), and one is forgotten as
        often as one joins."""
        live = self._sync()
        del self.participants[participant_id]
        live.pop(participant_id, None)
        participants = self.participants
        self._seen = len(participants)
        self._last = next(reversed(participants)) if participants else None

    def snapshot(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "uri": self.uri,
            "factory_uri": self.factory_uri,
            "initiator": self.initiator,
            "state": "active" if self.active else "ended",
            "locked": self.locked,
            "mrfp_node": self.node,
            "created_at": self.created_at,
            "ended_at": self.ended_at,
            "participant_count": self.present_count(),
        }
