"""The conference focus (RFC 4353, RFC 4579, 3GPP TS 24.147) as a sans-IO state machine.

Inputs: SIP requests and responses (already through the transaction layer), client
transaction timeouts, MRFP events, operator commands, timer expiries, and the current time.
Outputs: `app.focus.actions` — SIP to send, media commands, timers, and change records.

For each participant the focus is a B2BUA between the UE and the media processor (MRFP):
the UE's offer goes to the MRFP in an INVITE naming the conference (`X-Conference`), and the
MRFP's answer comes back to the UE in a 183 (reliable when the UE supports 100rel, RFC 3262)
and the 200, whose Contact is the conference URI with `isfocus` (RFC 4579 §5.1). RTP flows
between the UE and the MRFP directly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from app.focus.actions import (
    Action,
    CancelTimer,
    Changed,
    MediaCommand,
    Respond,
    SendAck,
    SendRequest,
    SetTimer,
)
from app.focus.conference_info import (
    CONTENT_TYPE as CONFERENCE_INFO_TYPE,
)
from app.focus.conference_info import (
    Change,
    ConferenceInfo,
    DisconnectionMethod,
    Endpoint,
    EndpointStatus,
    Execution,
    JoiningMethod,
    Media,
    MediaStatus,
    User,
    full_template,
    partial_template,
    state_changed,
    user_added,
    user_removed,
    user_updated,
)
from app.focus.media import (
    ConferenceDestroyed,
    ConferenceLockChanged,
    MediaEvent,
    MemberAdded,
    MemberMuteChanged,
    MemberRemovalCause,
    MemberRemoved,
    MemberTalkingChanged,
    NodeConnectionChanged,
)
from app.focus.model import Conference, Participant, Phase, Subscription, SubscriptionKind
from app.focus.preconditions import (
    PreconditionTable,
    add_preconditions,
    preconditions_met,
    strip_preconditions,
    uses_preconditions,
)
from app.sip.dialog import Dialog, DialogState
from app.sip.errors import SipError
from app.sip.message import Request, Response, make_response
from app.sip.sdp import SdpError, SessionDescription, needs_renegotiation
from app.sip.transaction import build_cancel
from app.sip.uri import NameAddr, SipUri

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, PRACK, UPDATE, REFER, SUBSCRIBE, NOTIFY"
ALLOW_EVENTS = "conference, refer"
SUPPORTED = "100rel, precondition, timer, norefersub"
# RFC 3261 §8.2.2.3: option tags a UAS understands; anything else in Require gets 420.
UNDERSTOOD = frozenset({"100rel", "precondition", "timer", "norefersub", "replaces", "path"})
MIN_SE = 90  # RFC 4028 §4: the smallest session interval we accept
MRFP_GONE_GRACE = 1.0  # seconds to wait for the ESL event that explains an MRFP's BYE
SERVER = "ims-conference-focus"


class IdSource(Protocol):
    """Randomness the core needs, injected (deterministic in tests)."""

    def conference_id(self) -> str: ...

    def participant_id(self) -> str: ...

    def tag(self) -> str: ...

    def call_id(self) -> str: ...

    def via(self, transport: str) -> str: ...


@dataclass
class FocusConfig:
    factory_uris: list[str]
    conference_domain: str
    local_contact: str  # our own address for the MRFP legs, e.g. sip:mrfc@127.0.0.1:5070
    mrfp_uri: dict[str, str]  # node name -> SIP URI of the node (e.g. sip:127.0.0.1:5080)
    participant_limit: int = 50
    outbound_proxy: str | None = None  # S-CSCF for dial-out (RFC 4579 §5.5)
    subscription_default_expires: int = 3600
    subscription_max_expires: int = 86400
    subscription_min_expires: int = 60
    t1: float = 0.5
    t2: float = 4.0
    focus_user: str = "mrfc"
    ring_timeout: float = 60.0  # how long a dialed-out user's phone may ring


@dataclass(frozen=True, slots=True)
class LegContext:
    """What a client transaction of ours belongs to, handed back with its responses."""

    kind: str  # "mrfp-invite", "mrfp-bye", "mrfp-ack", "ue-bye", "notify", "dialout-invite", ...
    conference_id: str
    participant_id: str | None = None
    subscription_id: str | None = None
    request: Request | None = field(default=None, compare=False)


class FocusError(Exception):
    """A command could not be carried out (unknown conference or participant, conflict)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class NoMediaNode(Exception):
    """No MRFP node can take a new conference now (503, RFC 3261 §21.5.4)."""


class Focus:
    def __init__(
        self,
        config: FocusConfig,
        ids: IdSource,
        choose_node: Callable[[str], str] | None = None,
    ) -> None:
        self.config = config
        self.ids = ids
        # Picks the MRFP node for a new conference (raises NoMediaNode when none can take it).
        self.choose_node = choose_node
        self.conferences: dict[str, Conference] = {}
        self.ended: set[str] = set()
        self._factory = {self._aor_key(u) for u in config.factory_uris}
        self._by_dialog: dict[tuple[str, str, str], tuple[str, str]] = {}  # -> (conf, pid)
        self._by_mrfp_call: dict[str, tuple[str, str]] = {}
        self._subs_by_dialog: dict[tuple[str, str, str], tuple[str, str]] = {}
        # Dial-in participants by their INVITE's (Call-ID, From tag), which a CANCEL repeats
        # (RFC 3261 §9.1), so that a CANCEL finds its join without a walk of every participant.
        # Dropped when the participant goes.
        self._by_invite: dict[tuple[str, str | None], tuple[str, str]] = {}
        self._now_wall: datetime = datetime.now().astimezone()
        # Forget a participant or an ended conference once no transaction can still need it.
        self._prune_after = 64 * config.t1 + 8.0
        self.node_for_new: str = next(iter(config.mrfp_uri))

    # ===================================================================== helpers =========

    @staticmethod
    def _aor_key(uri: str) -> str:
        parsed = NameAddr.parse(uri).uri
        if isinstance(parsed, SipUri):
            return f"{(parsed.user_unescaped or '').lower()}@{parsed.host.lower()}"
        return str(parsed).lower()

    def conference_uri(self, conf_id: str) -> str:
        return f"sip:conf-{conf_id}@{self.config.conference_domain}"

    def _conference_for_uri(self, uri: SipUri) -> str | None:
        user = uri.user_unescaped or ""
        if user.startswith("conf-") and uri.host.lower() == self.config.conference_domain.lower():
            return user[len("conf-") :]
        if user.startswith("conf-"):
            # Reached directly (no CSCF rewrote the host): still ours by the user part.
            return user[len("conf-") :]
        return None

    def _is_factory(self, uri: SipUri) -> bool:
        return f"{(uri.user_unescaped or '').lower()}@{uri.host.lower()}" in self._factory

    def _respond(
        self,
        txn: object,
        request: Request,
        status: int,
        reason: str | None = None,
        *,
        to_tag: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> Respond:
        extra = [("Server", SERVER), *headers]
        tag = to_tag if to_tag is not None else (self.ids.tag() if status > 100 else None)
        return Respond(
            txn, make_response(request, status, reason, to_tag=tag, headers=extra, body=body)
        )

    def _focus_contact(self, conf_id: str) -> str:
        # RFC 4579 §5.1: the focus's Contact is the conference URI with the isfocus parameter.
        return f"<{self.conference_uri(conf_id)}>;isfocus"

    def _focus_contact_addr(self, conf: Conference) -> NameAddr:
        """`_focus_contact` parsed, for a dialog's local Contact: parsed once per conference,
        a copy (copy-on-write, so cheap) per dialog."""
        parsed = conf.focus_contact
        if parsed is None:
            parsed = conf.focus_contact = NameAddr.parse(self._focus_contact(conf.id))
        return parsed.copy()

    def _via(self, uri: SipUri) -> str:
        return self.ids.via((uri.transport or "udp").upper())

    @staticmethod
    def _arm(conf: Conference, part: Participant, kind: str, at: float, out: list[Action]) -> None:
        """Set (or move) one of a participant's timers, remembering that it is armed."""
        if kind not in part.armed:
            part.armed += (kind,)
        out.append(SetTimer((kind, conf.id, part.id), at))

    @staticmethod
    def _disarm(conf: Conference, part: Participant, kind: str, out: list[Action]) -> None:
        """Cancel one of a participant's timers if it is armed (nothing to do otherwise)."""
        armed = part.armed
        if kind in armed:
            part.armed = _without(armed, kind)
            out.append(CancelTimer((kind, conf.id, part.id)))

    def _wall(self, now_wall: datetime | None) -> datetime:
        if now_wall is not None:
            self._now_wall = now_wall
        return self._now_wall

    # ===================================================================== SIP requests =====

    def on_request(
        self, request: Request, txn: object | None, now: float, now_wall: datetime | None = None
    ) -> list[Action]:
        self._wall(now_wall)
        out: list[Action] = []
        try:
            self._dispatch_request(request, txn, now, out)
        except (SipError, SdpError) as exc:
            log.info("refusing %s: %s", request.method, exc)
            if txn is not None and request.method != "ACK":
                status = getattr(exc, "status", 400) if isinstance(exc, SipError) else 488
                out.append(self._respond(txn, request, status, str(exc)[:100]))
        return out

    def _dispatch_request(
        self, request: Request, txn: object | None, now: float, out: list[Action]
    ) -> None:
        method = request.method
        if method == "ACK":
            self._on_ack(request, now, out)
            return
        assert txn is not None
        if method == "CANCEL":
            return  # handled through on_cancel by the driver, which knows the INVITE txn
        unsupported = request.require - UNDERSTOOD
        if unsupported and method not in ("BYE",):
            # RFC 3261 §8.2.2.3.
            out.append(
                self._respond(
                    txn,
                    request,
                    420,
                    headers=[("Unsupported", ", ".join(sorted(unsupported)))],
                )
            )
            return
        if request.to.tag is not None:
            self._in_dialog(request, txn, now, out)
            return
        if method == "INVITE":
            self._on_initial_invite(request, txn, now, out)
        elif method == "SUBSCRIBE":
            self._on_subscribe(request, txn, now, out, dialog=None)
        elif method == "REFER":
            self._on_refer(request, txn, now, out, dialog=None)
        elif method == "OPTIONS":
            out.append(
                self._respond(
                    txn,
                    request,
                    200,
                    headers=[
                        ("Allow", ALLOW),
                        ("Allow-Events", ALLOW_EVENTS),
                        ("Supported", SUPPORTED),
                        ("Accept", "application/sdp"),
                    ],
                )
            )
        elif method in ("BYE", "PRACK", "UPDATE", "NOTIFY", "INFO"):
            out.append(self._respond(txn, request, 481))  # §12.2.2: no such dialog
        else:
            out.append(self._respond(txn, request, 501, headers=[("Allow", ALLOW)]))

    # ---------------------------------------------------------------- INVITE (dial-in) ------

    def _on_initial_invite(
        self, request: Request, txn: object, now: float, out: list[Action]
    ) -> None:
        uri = request.sip_uri
        conf: Conference | None = None
        factory_uri: str | None = None
        if self._is_factory(uri):
            factory_uri = str(uri)
        else:
            conf_id = self._conference_for_uri(uri)
            if conf_id is None:
                out.append(self._respond(txn, request, 404, "No such conference factory"))
                return
            conf = self.conferences.get(conf_id)
            if conf is None or not conf.active:
                out.append(self._respond(txn, request, 404, "Conference not found"))
                return
            if conf.locked:
                out.append(self._respond(txn, request, 403, "Conference locked"))
                return
            if conf.present_count() >= self.config.participant_limit:
                out.append(self._respond(txn, request, 486, "Conference full"))
                return
        if request.content_type != "application/sdp" or not request.body:
            out.append(self._respond(txn, request, 488, "An SDP offer is required"))
            return
        offer = SessionDescription.parse(request.body)
        se = self._session_expires(request, txn, out)
        if se == -1:
            return
        if conf is None:
            try:
                conf = self._create_conference(request, factory_uri, out)
            except NoMediaNode as exc:
                out.append(
                    self._respond(txn, request, 503, str(exc)[:80], headers=[("Retry-After", "5")])
                )
                return
        part = self._new_participant(conf, request, JoiningMethod.DIALED_IN)
        tag = self.ids.tag()
        contact = self._focus_contact_addr(conf)
        part.dialog = Dialog.uas(request, tag, contact)
        part.dialog.owner = part.id
        part.invite = request
        part.invite_txn = txn
        part.session_expires = se
        part.reliable = "100rel" in request.supported or "100rel" in request.require
        if uses_preconditions(offer):
            part.preconditions = PreconditionTable.from_offer(offer)
        part.ue_offer = strip_preconditions(offer)
        part.status = EndpointStatus.DIALING_IN
        self._by_dialog[self._dialog_key(part.dialog)] = (conf.id, part.id)
        part.invite_key = (request.call_id, request.from_.tag)
        self._by_invite[part.invite_key] = (conf.id, part.id)
        self._invite_mrfp(conf, part, part.ue_offer, out)

    def _session_expires(self, request: Request, txn: object, out: list[Action]) -> int | None:
        """RFC 4028 §9: take the UE's Session-Expires, or refuse one below Min-SE (422)."""
        se = request.session_expires
        if se is None:
            return None
        try:
            value = int(se.value)
        except ValueError:
            out.append(self._respond(txn, request, 400, "Bad Session-Expires"))
            return -1
        if value < MIN_SE:
            out.append(self._respond(txn, request, 422, headers=[("Min-SE", str(MIN_SE))]))
            return -1
        return value

    def _create_conference(
        self, request: Request, factory_uri: str | None, out: list[Action]
    ) -> Conference:
        conf_id = self.ids.conference_id()
        node = self.choose_node(conf_id) if self.choose_node else self.node_for_new
        uri = self.conference_uri(conf_id)
        initiator = _identity(request)
        conf = Conference(
            id=conf_id,
            uri=uri,
            factory_uri=factory_uri,
            initiator=initiator,
            node=node,
            created_at=self._now_wall,
            info=ConferenceInfo(entity=uri, active=True, locked=False),
        )
        self.conferences[conf_id] = conf
        out.append(Changed("conference.created", conf_id, data=conf.snapshot(), actor=initiator))
        return conf

    def _new_participant(
        self, conf: Conference, request: Request | None, method: JoiningMethod, aor: str = ""
    ) -> Participant:
        pid = self.ids.participant_id()
        display = None
        if request is not None:
            aor = _identity(request)
            display = request.from_.display_name
        part = Participant(
            id=pid,
            conference_id=conf.id,
            aor=aor,
            display_name=display,
            joining_method=method,
            phase=Phase.MRFP_PENDING,
            created_at=self._now_wall,
        )
        conf.add(part)
        return part

    def _mrfp_target(self, conf: Conference) -> tuple[SipUri, str]:
        """The conference's URI at its MRFP node, and its To header text (made once per
        conference and node, not once per participant)."""
        cached = conf.mrfp_target
        if cached is None or cached[0] != conf.node:
            target = SipUri.parse(self.config.mrfp_uri[conf.node]).copy()
            target.user = f"conf-{conf.id}"
            cached = conf.mrfp_target = (conf.node, target, f"<{target}>")
        return cached[1].copy(), cached[2]

    def _invite_mrfp(
        self,
        conf: Conference,
        part: Participant,
        offer: SessionDescription | None,
        out: list[Action],
    ) -> None:
        """The MRFP leg (focus = UAC): the offer and the conference's name (X-Conference)."""
        target, to = self._mrfp_target(conf)
        call_id = self.ids.call_id()
        tag = self.ids.tag()
        headers = [
            ("Via", self._via(target)),
            ("Max-Forwards", "70"),
            ("From", f"<sip:{self.config.focus_user}@{self.config.conference_domain}>;tag={tag}"),
            ("To", to),
            ("Call-ID", call_id),
            ("CSeq", "1 INVITE"),
            ("Contact", f"<{self.config.local_contact}>"),
            ("X-Conference", conf.id),
            ("X-Participant", part.id),
            ("Allow", ALLOW),
        ]
        body = b""
        if offer is not None:
            headers.append(("Content-Type", "application/sdp"))
            body = bytes(offer)
        invite = Request("INVITE", target, headers, body)
        part.mrfp_invite = invite
        part.mrfp_call_id = call_id
        self._by_mrfp_call[call_id] = (conf.id, part.id)
        out.append(
            SendRequest(invite, target, LegContext("mrfp-invite", conf.id, part.id, request=invite))
        )

    # ---------------------------------------------------------------- responses -------------

    def on_response(
        self, response: Response, context: object, now: float, now_wall: datetime | None = None
    ) -> list[Action]:
        self._wall(now_wall)
        out: list[Action] = []
        if not isinstance(context, LegContext):
            return out
        try:
            handler = getattr(self, "_resp_" + context.kind.replace("-", "_"), None)
            if handler is not None:
                handler(response, context, now, out)
        except (SipError, SdpError) as exc:
            log.warning("bad %s response %s: %s", context.kind, response.status, exc)
        return out

    def on_stray_2xx(self, response: Response, now: float) -> list[Action]:
        """A retransmitted 2xx after our INVITE transaction ended: ACK it again (§13.2.2.4)."""
        out: list[Action] = []
        entry = self._by_mrfp_call.get(response.call_id)
        if entry is None:
            return out
        part = self._participant(*entry)
        if part is not None and part.mrfp_dialog is not None and part.mrfp_invite is not None:
            self._ack_mrfp(part, out, body=None)
        return out

    def _participant(self, conf_id: str, pid: str | None) -> Participant | None:
        conf = self.conferences.get(conf_id)
        if conf is None or pid is None:
            return None
        return conf.participants.get(pid)

    def _resp_mrfp_invite(
        self, response: Response, ctx: LegContext, now: float, out: list[Action]
    ) -> None:
        part = self._participant(ctx.conference_id, ctx.participant_id)
        conf = self.conferences.get(ctx.conference_id)
        if part is None or conf is None or ctx.request is None:
            return
        status = response.status
        if status < 200:
            return  # the MRFP's 18x: we answer the UE once the MRFP has answered
        if status >= 300:
            if part.phase is Phase.GONE:
                return
            log.warning("MRFP refused the leg of %s: %s", part.id, status)
            self._fail_participant(conf, part, 503 if status >= 500 else status, now, out)
            return
        # 2xx: ACK it (late-offer dial-out: the ACK carries the user's answer).
        if part.mrfp_dialog is None:
            part.mrfp_dialog = Dialog.uac(ctx.request, response)
        else:
            part.mrfp_dialog.accept_response(ctx.request, response)
        if part.phase is Phase.GONE:
            self._ack_mrfp(part, out, body=None)
            self._bye_mrfp(conf, part, out)
            return
        if part.joining_method is JoiningMethod.DIALED_OUT:
            self._dialout_mrfp_answered(conf, part, response, now, out)
            return
        self._ack_mrfp(part, out, body=None)
        if not response.body:
            self._fail_participant(conf, part, 500, now, out)
            return
        part.mrfp_answer = SessionDescription.parse(response.body)
        if part.pending_request is not None:
            self._finish_renegotiation(conf, part, now, out)
            return
        self._answer_ue_early(conf, part, now, out)

    def _ack_mrfp(self, part: Participant, out: list[Action], body: bytes | None) -> None:
        dialog = part.mrfp_dialog
        invite = part.mrfp_invite
        if dialog is None or invite is None:
            return
        headers: list[tuple[str, str]] = []
        if body:
            headers.append(("Content-Type", "application/sdp"))
        ack, hop = dialog.create_request(
            "ACK",
            self._via(dialog.remote_target),
            cseq=invite.cseq.number,
            headers=headers,
            body=body or b"",
        )
        out.append(SendAck(ack, hop))

    def _answer_ue_early(
        self, conf: Conference, part: Participant, now: float, out: list[Action]
    ) -> None:
        """The MRFP has answered: 183 with its SDP to the UE, then the 200 when allowed."""
        assert part.dialog is not None and part.invite is not None and part.mrfp_answer
        answer = part.mrfp_answer
        if part.preconditions is not None:
            answer = add_preconditions(answer, part.preconditions)
            part.signalled_preconditions = True
        headers: list[tuple[str, str]] = [
            ("Contact", self._focus_contact(conf.id)),
            ("Allow", ALLOW),
            ("Content-Type", "application/sdp"),
        ]
        if part.reliable:
            # RFC 3262 §3: Require: 100rel and a fresh RSeq; retransmit until PRACK.
            part.rseq += 1
            headers += [("Require", "100rel"), ("RSeq", str(part.rseq))]
        if part.preconditions is not None:
            headers.append(("Require" if part.reliable else "Supported", "precondition"))
        resp = make_response(
            part.invite,
            183,
            to_tag=part.dialog.local_tag,
            headers=[("Server", SERVER), *headers],
            body=bytes(answer),
        )
        part.phase = Phase.EARLY
        out.append(Respond(part.invite_txn, resp))
        if part.reliable:
            part.unacked_provisional = resp
            part.provisional_interval = self.config.t1
            part.provisional_deadline = now + 64 * self.config.t1
            self._arm(conf, part, "100rel", now + self.config.t1, out)
        else:
            self._maybe_final(conf, part, now, out)

    def _maybe_final(
        self, conf: Conference, part: Participant, now: float, out: list[Action]
    ) -> None:
        """Send the 200 to the INVITE once nothing holds it: an unacknowledged reliable 183
        (RFC 3262 §3) or unmet preconditions (RFC 3312 §8)."""
        if part.phase is not Phase.EARLY or part.invite is None or part.dialog is None:
            return
        if part.unacked_provisional is not None:
            return
        if part.preconditions is not None and not preconditions_met(part.preconditions):
            return
        headers: list[tuple[str, str]] = [
            ("Contact", self._focus_contact(conf.id)),
            ("Allow", ALLOW),
            ("Allow-Events", ALLOW_EVENTS),
            ("Supported", SUPPORTED),
        ]
        body = b""
        if not part.reliable and part.mrfp_answer is not None:
            # Without 100rel the 183 was unreliable: the 200 carries the answer again.
            answer = part.mrfp_answer
            if part.preconditions is not None:
                answer = add_preconditions(answer, part.preconditions)
            headers.append(("Content-Type", "application/sdp"))
            body = bytes(answer)
        if part.session_expires is not None:
            # RFC 4028 §9: the UE refreshes (refresher=uac); we watch for its refreshes.
            headers += [
                ("Session-Expires", f"{part.session_expires};refresher=uac"),
                ("Require", "timer"),
            ]
        resp = make_response(
            part.invite,
            200,
            to_tag=part.dialog.local_tag,
            headers=[("Server", SERVER), *headers],
            body=body,
        )
        part.final_response = resp
        part.phase = Phase.ANSWERED
        part.dialog.state = DialogState.CONFIRMED
        out.append(Respond(part.invite_txn, resp))
        part.invite_txn = None
        # RFC 3261 §13.3.1.4: retransmit the 2xx (T1 doubling to T2) until the ACK.
        part.final_interval = self.config.t1
        part.final_deadline = now + 64 * self.config.t1
        self._arm(conf, part, "2xx", now + self.config.t1, out)

    def _on_ack(self, request: Request, now: float, out: list[Action]) -> None:
        entry = self._by_dialog.get(_request_dialog_key(request))
        if entry is None:
            return
        conf = self.conferences.get(entry[0])
        part = self._participant(*entry)
        if conf is None or part is None:
            return
        if part.phase is Phase.ANSWERED:
            self._disarm(conf, part, "2xx", out)
            part.final_response = None
            self._connected(conf, part, now, out)
        elif part.pending_request is not None and part.pending_request.method == "INVITE":
            pass

    def _connected(
        self, conf: Conference, part: Participant, now: float, out: list[Action]
    ) -> None:
        part.phase = Phase.CONNECTED
        part.status = EndpointStatus.MUTED_VIA_FOCUS if part.muted else EndpointStatus.CONNECTED
        part.joined_at = self._now_wall
        conf.info.users[part.aor] = self._user_of(part)
        if self._listening(conf):
            self._notify_change(conf, user_added(conf.info, part.aor), now, out)
        out.append(Changed("participant.joined", conf.id, part.id, part.snapshot(), part.aor))
        if part.session_expires is not None:
            self._arm(conf, part, "session", now + _expiry_margin(part.session_expires), out)

    def _user_of(self, part: Participant) -> User:
        media = Media(id="1", type="audio", status=MediaStatus.SENDRECV)
        endpoint = Endpoint(
            entity=part.endpoint_entity,
            display_text=part.display_name,
            status=part.status,
            joining_method=part.joining_method,
            joining_info=Execution(when=part.joined_at),
            media={"1": media},
        )
        return User(
            entity=part.aor,
            display_text=part.display_name,
            roles=["participant"],
            endpoints={endpoint.entity: endpoint},
        )

    # ---------------------------------------------------------------- in-dialog -------------

    def _in_dialog(self, request: Request, txn: object, now: float, out: list[Action]) -> None:
        key = _request_dialog_key(request)
        entry = self._by_dialog.get(key)
        if entry is not None:
            conf = self.conferences.get(entry[0])
            part = self._participant(*entry)
            if conf is not None and part is not None and part.dialog is not None:
                self._participant_request(conf, part, request, txn, now, out)
                return
        mrfp_entry = self._by_mrfp_call.get(request.call_id)
        if mrfp_entry is not None:
            conf = self.conferences.get(mrfp_entry[0])
            part = self._participant(*mrfp_entry)
            if conf is not None and part is not None and part.mrfp_dialog is not None:
                self._mrfp_request(conf, part, request, txn, now, out)
                return
        sub_entry = self._subs_by_dialog.get(key)
        if sub_entry is not None:
            conf = self.conferences.get(sub_entry[0])
            sub = conf.subscriptions.get(sub_entry[1]) if conf else None
            if conf is not None and sub is not None:
                # RFC 3261 §12.2.2: check the CSeq, then record it and refresh the target
                # (SUBSCRIBE is a target refresh request, RFC 6665 §4.1.2.1).
                refused = sub.dialog.check_request(request)
                if refused is not None:
                    out.append(
                        self._respond(
                            txn, request, refused[0], refused[1], to_tag=sub.dialog.local_tag
                        )
                    )
                    return
                sub.dialog.accept_request(request)
                if request.method == "SUBSCRIBE":
                    self._on_subscribe(request, txn, now, out, dialog=sub.dialog, existing=sub)
                    return
                if request.method == "REFER":
                    self._on_refer(request, txn, now, out, dialog=sub.dialog)
                    return
        # RFC 3261 §12.2.2: a request for a dialog we don't have.
        out.append(self._respond(txn, request, 481, to_tag=request.to.tag))

    def _mrfp_request(
        self,
        conf: Conference,
        part: Participant,
        request: Request,
        txn: object,
        now: float,
        out: list[Action],
    ) -> None:
        """A request from the media processor on a participant's MRFP leg."""
        dialog = part.mrfp_dialog
        assert dialog is not None
        tag = dialog.local_tag
        if request.method == "BYE":
            # The MRFP hung the member up (kick at the MRFP, media timeout, shutdown). Its ESL
            # del-member/kick-member says why; wait a moment for it before calling it a failure.
            out.append(self._respond(txn, request, 200, to_tag=tag))
            dialog.state = DialogState.TERMINATED
            if part.phase is not Phase.GONE:
                self._arm(conf, part, "mrfp-gone", now + MRFP_GONE_GRACE, out)
        elif request.method in ("UPDATE", "INVITE") and request.body:
            # The focus passes the UE's offers to the MRFP, never the other way round.
            out.append(self._respond(txn, request, 488, "Offers come from the focus", to_tag=tag))
        else:
            out.append(self._respond(txn, request, 200, to_tag=tag))

    def _participant_request(
        self,
        conf: Conference,
        part: Participant,
        request: Request,
        txn: object,
        now: float,
        out: list[Action],
    ) -> None:
        dialog = part.dialog
        assert dialog is not None
        tag = dialog.local_tag
        refused = dialog.check_request(request)
        if refused is not None:
            out.append(self._respond(txn, request, refused[0], refused[1], to_tag=tag))
            return
        method = request.method
        if method == "PRACK":
            self._on_prack(conf, part, request, txn, now, out)
            return
        dialog.accept_request(request)
        if method == "BYE":
            out.append(self._respond(txn, request, 200, to_tag=tag))
            if part.invite_txn is not None and part.invite is not None:
                # RFC 3261 §15.1.2: a BYE in an early dialog ends the INVITE with 487.
                out.append(self._respond(part.invite_txn, part.invite, 487, to_tag=tag))
                part.invite_txn = None
            self._remove_participant(conf, part, DisconnectionMethod.DEPARTED, now, out)
        elif method in ("UPDATE", "INVITE"):
            self._on_offer(conf, part, request, txn, now, out)
        elif method == "SUBSCRIBE":
            existing = self._subscription_in_dialog(conf, part)
            self._on_subscribe(request, txn, now, out, dialog=dialog, existing=existing, part=part)
        elif method == "REFER":
            self._on_refer(request, txn, now, out, dialog=dialog, part=part)
        elif method == "OPTIONS":
            out.append(self._respond(txn, request, 200, to_tag=tag, headers=[("Allow", ALLOW)]))
        elif method == "INFO":
            out.append(self._respond(txn, request, 200, to_tag=tag))
        else:
            out.append(self._respond(txn, request, 405, to_tag=tag, headers=[("Allow", ALLOW)]))

    def _subscription_in_dialog(self, conf: Conference, part: Participant) -> Subscription | None:
        for sub in conf.subscriptions.values():
            if (
                sub.participant_id == part.id
                and not sub.terminated
                and sub.kind is SubscriptionKind.CONFERENCE
            ):
                return sub
        return None

    def _on_prack(
        self,
        conf: Conference,
        part: Participant,
        request: Request,
        txn: object,
        now: float,
        out: list[Action],
    ) -> None:
        assert part.dialog is not None
        tag = part.dialog.local_tag
        rack = request.rack
        pending = part.unacked_provisional
        # RFC 3262 §4: a PRACK matching no unacknowledged reliable provisional gets 481.
        if (
            rack is None
            or pending is None
            or part.invite is None
            or rack.rseq != part.rseq
            or rack.cseq != part.invite.cseq.number
            or rack.method != "INVITE"
        ):
            out.append(
                self._respond(txn, request, 481, "No matching reliable response", to_tag=tag)
            )
            return
        part.dialog.accept_request(request)
        part.unacked_provisional = None
        self._disarm(conf, part, "100rel", out)
        if request.body and request.content_type == "application/sdp":
            # A new offer in the PRACK (RFC 3262 §5): renegotiate, answer in the PRACK's 200.
            self._on_offer(conf, part, request, txn, now, out)
            return
        out.append(self._respond(txn, request, 200, to_tag=tag))
        self._maybe_final(conf, part, now, out)

    def _on_offer(
        self,
        conf: Conference,
        part: Participant,
        request: Request,
        txn: object,
        now: float,
        out: list[Action],
    ) -> None:
        """An UPDATE, re-INVITE or PRACK with an SDP offer (RFC 3311, RFC 3264 §8)."""
        assert part.dialog is not None
        tag = part.dialog.local_tag
        if part.pending_request is not None or part.mrfp_answer is None:
            # RFC 3311 §5.2: an offer while one is outstanding gets 491.
            out.append(self._respond(txn, request, 491, to_tag=tag, headers=[("Retry-After", "1")]))
            return
        if request.method == "INVITE" and part.session_expires is not None:
            self._disarm(conf, part, "session", out)
        if not request.body:
            # A refresh without an offer (RFC 4028 §10): answer with the current session.
            self._answer_offer(conf, part, request, txn, now, out)
            return
        offer = SessionDescription.parse(request.body)
        if part.preconditions is not None:
            part.preconditions.update(offer)
        stripped = strip_preconditions(offer)
        changed = part.ue_offer is None or needs_renegotiation(part.ue_offer, stripped)
        part.ue_offer = stripped
        if changed and part.mrfp_dialog is not None:
            part.pending_request = request
            part.pending_txn = txn
            self._reinvite_mrfp(conf, part, stripped, out)
            return
        self._answer_offer(conf, part, request, txn, now, out)

    def _answer_offer(
        self,
        conf: Conference,
        part: Participant,
        request: Request,
        txn: object,
        now: float,
        out: list[Action],
    ) -> None:
        assert part.dialog is not None and part.mrfp_answer is not None
        answer = part.mrfp_answer
        if part.preconditions is not None:
            answer = add_preconditions(answer, part.preconditions)
        # RFC 3311 §5.2 / RFC 3264: only an offer gets an answer; an UPDATE without SDP (a
        # session refresh, RFC 4028 §10) is answered without one. A re-INVITE without SDP
        # asks for an offer, so it gets the current session description.
        with_sdp = bool(request.body) or request.method == "INVITE"
        headers: list[tuple[str, str]] = []
        if with_sdp:
            headers.append(("Content-Type", "application/sdp"))
        if request.method in ("INVITE", "UPDATE"):
            headers.append(("Contact", self._focus_contact(conf.id)))
        if request.method in ("INVITE", "UPDATE") and part.session_expires is not None:
            headers += [
                ("Session-Expires", f"{part.session_expires};refresher=uac"),
                ("Require", "timer"),
            ]
            if part.phase is Phase.CONNECTED:
                self._arm(conf, part, "session", now + _expiry_margin(part.session_expires), out)
        out.append(
            self._respond(
                txn,
                request,
                200,
                to_tag=part.dialog.local_tag,
                headers=headers,
                body=bytes(answer) if with_sdp else b"",
            )
        )
        if request.method in ("UPDATE", "PRACK"):
            self._maybe_final(conf, part, now, out)

    def _reinvite_mrfp(
        self, conf: Conference, part: Participant, offer: SessionDescription, out: list[Action]
    ) -> None:
        dialog = part.mrfp_dialog
        assert dialog is not None
        invite, hop = dialog.create_request(
            "INVITE",
            self._via(dialog.remote_target),
            headers=[("Content-Type", "application/sdp"), ("X-Conference", conf.id)],
            body=bytes(offer),
        )
        part.mrfp_invite = invite
        out.append(
            SendRequest(invite, hop, LegContext("mrfp-reinvite", conf.id, part.id, request=invite))
        )

    def _resp_mrfp_reinvite(
        self, response: Response, ctx: LegContext, now: float, out: list[Action]
    ) -> None:
        part = self._participant(ctx.conference_id, ctx.participant_id)
        conf = self.conferences.get(ctx.conference_id)
        if part is None or conf is None or ctx.request is None or response.status < 200:
            return
        if part.mrfp_dialog is not None:
            part.mrfp_dialog.accept_response(ctx.request, response)
        if response.is_success:
            self._ack_mrfp(part, out, body=None)
            if response.body:
                part.mrfp_answer = SessionDescription.parse(response.body)
        self._finish_renegotiation(conf, part, now, out)

    def _finish_renegotiation(
        self, conf: Conference, part: Participant, now: float, out: list[Action]
    ) -> None:
        request, txn = part.pending_request, part.pending_txn
        part.pending_request = part.pending_txn = None
        if request is None or txn is None:
            return
        self._answer_offer(conf, part, request, txn, now, out)

    # ---------------------------------------------------------------- CANCEL ----------------

    def on_cancel(
        self,
        cancel: Request,
        cancel_txn: object,
        invite_txn: object | None,
        now: float,
        now_wall: datetime | None = None,
    ) -> list[Action]:
        """RFC 3261 §9.2: 200 to the CANCEL; 487 to the INVITE if it is still unanswered;
        the MRFP leg goes too."""
        self._wall(now_wall)
        out: list[Action] = []
        if invite_txn is None:
            out.append(self._respond(cancel_txn, cancel, 481))
            return out
        out.append(self._respond(cancel_txn, cancel, 200, to_tag=cancel.to.tag))
        found = self._cancelled_join(cancel, invite_txn)
        if found is not None:
            conf, part = found
            assert part.invite is not None
            tag = part.dialog.local_tag if part.dialog else None
            out.append(self._respond(invite_txn, part.invite, 487, to_tag=tag))
            part.invite_txn = None
            self._remove_participant(conf, part, DisconnectionMethod.DEPARTED, now, out)
        return out

    def _cancelled_join(
        self, cancel: Request, invite_txn: object
    ) -> tuple[Conference, Participant] | None:
        """The participant whose unanswered INVITE is `invite_txn`."""
        entry = self._by_invite.get((cancel.call_id, cancel.from_.tag))
        conf = self.conferences.get(entry[0]) if entry is not None else None
        if entry is not None and conf is not None:
            part = conf.participants.get(entry[1])
            if part is not None and part.invite_txn is invite_txn and part.invite is not None:
                return conf, part
        # Not indexed (a CANCEL that does not repeat the INVITE's tags, or a participant
        # already gone with its INVITE unanswered): look at everyone.
        for conf in self.conferences.values():
            for part in conf.participants.values():
                if part.invite_txn is invite_txn and part.invite is not None:
                    return conf, part
        return None

    # ---------------------------------------------------------------- timers ----------------

    def on_timer(
        self, key: tuple[str, ...], now: float, now_wall: datetime | None = None
    ) -> list[Action]:
        self._wall(now_wall)
        out: list[Action] = []
        kind, conf_id = key[0], key[1]
        conf = self.conferences.get(conf_id)
        if conf is None:
            return out
        if kind == "prune-conference":
            self._forget_conference(conf)
            return out
        if kind == "prune":
            gone = conf.participants.get(key[2])
            if gone is not None and gone.phase is Phase.GONE:
                self._forget_participant(conf, gone)
            return out
        if kind == "sub":
            sub = conf.subscriptions.get(key[2])
            if sub is not None and not sub.terminated:
                self._terminate_subscription(conf, sub, "timeout", now, out)
            return out
        part = conf.participants.get(key[2])
        if part is None or part.phase is Phase.GONE:
            return out
        # Fired: no longer armed unless set again below.
        part.armed = _without(part.armed, kind)
        if kind == "100rel" and part.unacked_provisional is not None:
            if now >= part.provisional_deadline:
                # RFC 3262 §3: no PRACK after 64*T1: reject the INVITE with a 5xx.
                self._fail_participant(conf, part, 504, now, out, reason="No PRACK received")
                return out
            out.append(Respond(part.invite_txn, part.unacked_provisional))
            part.provisional_interval *= 2
            self._arm(conf, part, kind, now + part.provisional_interval, out)
        elif kind == "2xx" and part.final_response is not None and part.phase is Phase.ANSWERED:
            if now >= part.final_deadline:
                # RFC 3261 §13.3.1.4: no ACK: confirm and end the session with BYE.
                log.info("no ACK from %s; ending its session", part.aor)
                self._bye_ue(conf, part, out)
                self._remove_participant(conf, part, DisconnectionMethod.FAILED, now, out)
                return out
            out.append(Respond(None, part.final_response))
            part.final_interval = min(2 * part.final_interval, self.config.t2)
            self._arm(conf, part, kind, now + part.final_interval, out)
        elif kind == "ring" and part.phase is Phase.DIALING:
            # Nobody answered: CANCEL; the 487 that follows ends the participant.
            log.info("dial-out to %s not answered; cancelling", part.aor)
            self._cancel_dial_out(conf, part, out)
        elif kind == "mrfp-gone":
            # The MRFP's BYE came without an ESL event saying why.
            self._bye_ue(conf, part, out)
            self._remove_participant(conf, part, DisconnectionMethod.FAILED, now, out)
        elif kind == "session":
            # RFC 4028 §10: the refresher did not refresh in time.
            log.info("session timer expired for %s", part.aor)
            self._bye_ue(conf, part, out)
            self._remove_participant(conf, part, DisconnectionMethod.FAILED, now, out)
        return out

    # ---------------------------------------------------------------- leaving ---------------

    def _fail_participant(
        self,
        conf: Conference,
        part: Participant,
        status: int,
        now: float,
        out: list[Action],
        reason: str | None = None,
    ) -> None:
        if part.invite_txn is not None and part.invite is not None:
            tag = part.dialog.local_tag if part.dialog else None
            out.append(self._respond(part.invite_txn, part.invite, status, reason, to_tag=tag))
            part.invite_txn = None
        if part.unacked_provisional is not None:
            self._disarm(conf, part, "100rel", out)
            part.unacked_provisional = None
        self._remove_participant(conf, part, DisconnectionMethod.FAILED, now, out)

    def _remove_participant(
        self,
        conf: Conference,
        part: Participant,
        method: DisconnectionMethod,
        now: float,
        out: list[Action],
        actor: str | None = None,
    ) -> None:
        if part.phase is Phase.GONE:
            return
        was_connected = part.phase is Phase.CONNECTED
        mrfp_pending = part.phase is Phase.MRFP_PENDING and part.mrfp_dialog is None
        conf.mark_gone(part)
        part.status = EndpointStatus.DISCONNECTED
        key = part.invite_key
        if key is not None and self._by_invite.get(key) == (conf.id, part.id):
            del self._by_invite[key]
        part.disconnection_method = method
        part.left_at = self._now_wall
        if part.armed:
            out.extend(CancelTimer((kind, conf.id, part.id)) for kind in part.armed)
            part.armed = ()
        if not mrfp_pending:
            self._bye_mrfp(conf, part, out)
        # Take the leaver out first, so the documents below describe the state after it left.
        user = conf.info.users.pop(part.aor, None)
        if not conf.present_count():
            # The last one out ends the conference (RFC 4575 §5.3.2: active false).
            conf.info.active = False
        # RFC 4575 / TS 24.147: the leaver's own subscription ends with it; its last NOTIFY
        # carries the state without it (RFC 6665 §4.2.2 final NOTIFY).
        if conf.subscriptions:
            for sub in list(conf.subscriptions.values()):
                if sub.participant_id == part.id and not sub.terminated:
                    self._terminate_subscription(conf, sub, "noresource", now, out)
        if was_connected and user is not None and self._listening(conf):
            change = user_removed(conf.info, user, method, self._now_wall, by=actor)
            self._notify_change(conf, change, now, out)
        out.append(Changed("participant.left", conf.id, part.id, part.snapshot(), actor))
        if part.refer_subscription is not None:
            self._refer_progress(
                conf, part.refer_subscription, 487, "Request Terminated", now, out, final=True
            )
            part.refer_subscription = None
        # Once its transactions are over (64*T1, RFC 3261 §17), the focus forgets it: the
        # database keeps the record, memory does not grow with every join. Its media state is
        # of no use until then: dropped now, so the garbage collector does not keep walking it.
        out.append(SetTimer(("prune", conf.id, part.id), now + self._prune_after))
        if part.pending_request is not None and part.pending_txn is not None:
            # RFC 3261 §15.1.2: requests still pending in a dialog that ends get 487.
            tag = part.dialog.local_tag if part.dialog is not None else None
            out.append(self._respond(part.pending_txn, part.pending_request, 487, to_tag=tag))
        part.pending_request = part.pending_txn = None
        part.ue_offer = part.mrfp_answer = None
        part.preconditions = None
        if not conf.present_count():
            self._end_conference(conf, now, out)

    def _forget_participant(self, conf: Conference, part: Participant) -> None:
        conf.forget(part.id)
        entry = (conf.id, part.id)
        if part.dialog is not None and self._by_dialog.get(self._dialog_key(part.dialog)) == entry:
            del self._by_dialog[self._dialog_key(part.dialog)]
        if part.mrfp_call_id is not None and self._by_mrfp_call.get(part.mrfp_call_id) == entry:
            del self._by_mrfp_call[part.mrfp_call_id]
        invite_key = part.invite_key
        if invite_key is not None and self._by_invite.get(invite_key) == entry:
            del self._by_invite[invite_key]
        for sub_id, sub in list(conf.subscriptions.items()):
            if sub.terminated and sub.participant_id == part.id:
                del conf.subscriptions[sub_id]

    def _forget_conference(self, conf: Conference) -> None:
        if conf.active:
            return
        self.conferences.pop(conf.id, None)
        for index in (self._by_invite,):
            for key in [k for k, v in index.items() if v[0] == conf.id]:
                del index[key]

    def _bye_mrfp(self, conf: Conference, part: Participant, out: list[Action]) -> None:
        dialog = part.mrfp_dialog
        if dialog is None or dialog.state is DialogState.TERMINATED:
            return
        dialog.state = DialogState.TERMINATED
        bye, hop = dialog.create_request("BYE", self._via(dialog.remote_target))
        out.append(SendRequest(bye, hop, LegContext("mrfp-bye", conf.id, part.id, request=bye)))

    def _bye_ue(
        self, conf: Conference, part: Participant, out: list[Action], reason: str | None = None
    ) -> None:
        dialog = part.dialog
        if dialog is None or dialog.state is DialogState.TERMINATED:
            return
        if part.phase not in (Phase.CONNECTED, Phase.ANSWERED):
            return
        dialog.state = DialogState.TERMINATED
        headers = [("Reason", reason)] if reason else []
        bye, hop = dialog.create_request("BYE", self._via(dialog.remote_target), headers=headers)
        out.append(SendRequest(bye, hop, LegContext("ue-bye", conf.id, part.id, request=bye)))

    def _end_conference(self, conf: Conference, now: float, out: list[Action]) -> None:
        if not conf.active:
            return
        conf.active = False
        conf.info.active = False
        conf.ended_at = self._now_wall
        for sub in list(conf.subscriptions.values()):
            if not sub.terminated:
                self._terminate_subscription(conf, sub, "noresource", now, out)
        self.ended.add(conf.id)
        out.append(Changed("conference.ended", conf.id, data=conf.snapshot()))
        out.append(SetTimer(("prune-conference", conf.id), now + self._prune_after))
        # The URI answers 404 from now; the record stays in the database for REST reads.
        for key, entry in list(self._by_dialog.items()):
            if entry[0] == conf.id:
                del self._by_dialog[key]
        for key, entry in list(self._subs_by_dialog.items()):
            if entry[0] == conf.id:
                del self._subs_by_dialog[key]
        for call_id, entry in list(self._by_mrfp_call.items()):
            if entry[0] == conf.id:
                del self._by_mrfp_call[call_id]

    # ---------------------------------------------------------------- SUBSCRIBE -------------

    def _on_subscribe(
        self,
        request: Request,
        txn: object,
        now: float,
        out: list[Action],
        *,
        dialog: Dialog | None,
        existing: Subscription | None = None,
        part: Participant | None = None,
    ) -> None:
        event = request.event
        tag = dialog.local_tag if dialog else None
        if event is None or event.value.lower() != "conference":
            # RFC 6665 §4.2.1: unknown package -> 489 with the packages we know.
            out.append(
                self._respond(
                    txn, request, 489, to_tag=tag, headers=[("Allow-Events", "conference")]
                )
            )
            return
        if existing is not None:
            conf = self.conferences.get(existing.conference_id)
        else:
            conf_id = self._conference_for_uri(request.sip_uri)
            if part is not None:
                conf_id = part.conference_id
            conf = self.conferences.get(conf_id) if conf_id else None
        if conf is None or not conf.active:
            out.append(self._respond(txn, request, 404, "Conference not found", to_tag=tag))
            return
        expires = request.expires
        if expires is None:
            expires = self.config.subscription_default_expires
        if 0 < expires < self.config.subscription_min_expires:
            out.append(
                self._respond(
                    txn,
                    request,
                    423,
                    to_tag=tag,
                    headers=[("Min-Expires", str(self.config.subscription_min_expires))],
                )
            )
            return
        expires = min(expires, self.config.subscription_max_expires)
        if existing is not None:
            sub = existing  # its dialog has recorded the request (_in_dialog)
        else:
            if dialog is None:
                local_tag = self.ids.tag()
                contact = NameAddr.parse(self._focus_contact(conf.id))
                dialog = Dialog.uas(request, local_tag, contact, state=DialogState.CONFIRMED)
                key = self._dialog_key(dialog)
            else:
                key = None
            sub = Subscription(
                id=self.ids.participant_id(),
                conference_id=conf.id,
                kind=SubscriptionKind.CONFERENCE,
                subscriber=_identity(request),
                dialog=dialog,
                expires_at=now + expires,
                participant_id=part.id if part is not None else None,
            )
            conf.subscriptions[sub.id] = sub
            if key is not None:
                self._subs_by_dialog[key] = (conf.id, sub.id)
        out.append(
            self._respond(
                txn,
                request,
                200,
                to_tag=sub.dialog.local_tag,
                headers=[
                    ("Expires", str(expires)),
                    ("Contact", self._focus_contact(conf.id)),
                ],
            )
        )
        if expires == 0:
            # RFC 6665 §4.2.1.4: unsubscribe -> a last NOTIFY with the state, terminated.
            self._terminate_subscription(conf, sub, "timeout", now, out, full=True)
            return
        sub.expires_at = now + expires
        out.append(SetTimer(("sub", conf.id, sub.id), sub.expires_at))
        # RFC 6665 §4.2.1.2 / RFC 4575 §4.1: a NOTIFY with the full state at once.
        sub.version += 1
        body = full_template(conf.info).render(sub.version)
        self._send_notify(conf, sub, f"active;expires={expires}", body, out)
        out.append(Changed("subscription.active", conf.id, sub.participant_id, sub.snapshot()))

    def _send_notify(
        self,
        conf: Conference,
        sub: Subscription,
        state: str,
        body: bytes,
        out: list[Action],
        content_type: str = CONFERENCE_INFO_TYPE,
        event: str = "conference",
    ) -> None:
        dialog = sub.dialog
        notify, hop = dialog.create_request(
            "NOTIFY",
            self._via(dialog.remote_target),
            headers=[
                ("Event", event),
                ("Subscription-State", state),
                ("Content-Type", content_type),
            ],
            body=body,
        )
        out.append(
            SendRequest(
                notify, hop, LegContext("notify", conf.id, sub.participant_id, sub.id, notify)
            )
        )

    @staticmethod
    def _listening(conf: Conference) -> bool:
        """Whether anyone is subscribed to the conference's state: a change nobody receives
        needs no partial document built."""
        return any(
            s.kind is SubscriptionKind.CONFERENCE and not s.terminated
            for s in conf.subscriptions.values()
        )

    def _notify_change(
        self, conf: Conference, change: Change, now: float, out: list[Action]
    ) -> None:
        """One partial document per change, each subscriber with its own version (§4.1)."""
        subs = [
            s
            for s in conf.subscriptions.values()
            if s.kind is SubscriptionKind.CONFERENCE and not s.terminated
        ]
        if not subs:
            return
        template = partial_template(change)
        for sub in subs:
            sub.version += 1
            remaining = max(0, int(sub.expires_at - now))
            self._send_notify(
                conf, sub, f"active;expires={remaining}", template.render(sub.version), out
            )

    def _terminate_subscription(
        self,
        conf: Conference,
        sub: Subscription,
        reason: str,
        now: float,
        out: list[Action],
        full: bool = True,
    ) -> None:
        if sub.terminated:
            return
        sub.terminated = True
        out.append(CancelTimer(("sub", conf.id, sub.id)))
        if sub.kind is SubscriptionKind.CONFERENCE:
            sub.version += 1
            body = full_template(conf.info).render(sub.version)
            self._send_notify(conf, sub, f"terminated;reason={reason}", body, out)
        out.append(Changed("subscription.terminated", conf.id, sub.participant_id, sub.snapshot()))
        key = self._dialog_key(sub.dialog)
        self._subs_by_dialog.pop(key, None)

    def _resp_notify(
        self, response: Response, ctx: LegContext, now: float, out: list[Action]
    ) -> None:
        # RFC 6665 §4.1.2.2 (as notifier, §4.2.2): 481 or a timeout ends the subscription.
        if response.status in (481, 408) or response.status >= 500:
            conf = self.conferences.get(ctx.conference_id)
            sub = conf.subscriptions.get(ctx.subscription_id or "") if conf else None
            if conf is not None and sub is not None and not sub.terminated:
                sub.terminated = True
                out.append(CancelTimer(("sub", conf.id, sub.id)))
                self._subs_by_dialog.pop(self._dialog_key(sub.dialog), None)
                out.append(
                    Changed("subscription.terminated", conf.id, sub.participant_id, sub.snapshot())
                )
                # RFC 5057 §5.1: a 481 or a timeout ends the whole dialog, so a participant
                # whose INVITE dialog carried the subscription is gone too.
                part = conf.participants.get(sub.participant_id or "")
                shared = part is not None and part.dialog is sub.dialog
                if part is not None and shared and response.status in (481, 408):
                    if response.status == 408:
                        self._bye_ue(conf, part, out)
                    elif part.dialog is not None:
                        part.dialog.state = DialogState.TERMINATED
                    self._remove_participant(conf, part, DisconnectionMethod.FAILED, now, out)

    def on_timeout(
        self, context: object, now: float, now_wall: datetime | None = None
    ) -> list[Action]:
        """One of our client transactions got no final response (Timer B/F)."""
        self._wall(now_wall)
        out: list[Action] = []
        if not isinstance(context, LegContext):
            return out
        conf = self.conferences.get(context.conference_id)
        if conf is None:
            return out
        if context.kind == "notify":
            fake = Response(408)
            self._resp_notify(fake, context, now, out)
        elif context.kind in ("mrfp-invite", "mrfp-reinvite"):
            part = conf.participants.get(context.participant_id or "")
            if part is not None:
                self._fail_participant(conf, part, 504, now, out, reason="Media server timeout")
        elif context.kind in ("dialout-invite",):
            part = conf.participants.get(context.participant_id or "")
            if part is not None:
                self._dialout_failed(conf, part, 408, "Request Timeout", now, out)
        return out

    # ---------------------------------------------------------------- REFER -----------------

    def _on_refer(
        self,
        request: Request,
        txn: object,
        now: float,
        out: list[Action],
        *,
        dialog: Dialog | None,
        part: Participant | None = None,
    ) -> None:
        """RFC 4579 §5.5 (dial-out) and §5.8 (remove) via a REFER to the focus."""
        tag = dialog.local_tag if dialog else self.ids.tag()
        refer_to = request.refer_to
        if refer_to is None or not isinstance(refer_to.uri, SipUri):
            out.append(self._respond(txn, request, 400, "Missing or bad Refer-To", to_tag=tag))
            return
        conf_id = part.conference_id if part else self._conference_for_uri(request.sip_uri)
        conf = self.conferences.get(conf_id) if conf_id else None
        if conf is None or not conf.active:
            out.append(self._respond(txn, request, 404, "Conference not found", to_tag=tag))
            return
        referrer = part or self._participant_by_identity(conf, _identity(request))
        if referrer is None or referrer.phase is not Phase.CONNECTED:
            # Only participants may steer the conference.
            out.append(self._respond(txn, request, 403, "Not a participant", to_tag=tag))
            return
        target = refer_to.uri.copy()
        method = (target.params.pop("method", None) or "INVITE").upper()
        target.headers = None
        no_sub = (request.get("Refer-Sub") or "").strip().lower() == "false"
        # The implicit subscription (RFC 3515 §2.4.4) unless Refer-Sub: false (RFC 4488).
        sub: Subscription | None = None
        if dialog is None:
            dialog = Dialog.uas(
                request,
                tag,
                NameAddr.parse(self._focus_contact(conf.id)),
                state=DialogState.CONFIRMED,
            )
        headers = [("Contact", self._focus_contact(conf.id))]
        if no_sub:
            headers.append(("Refer-Sub", "false"))
        out.append(self._respond(txn, request, 202, to_tag=dialog.local_tag, headers=headers))
        if not no_sub:
            sub = Subscription(
                id=self.ids.participant_id(),
                conference_id=conf.id,
                kind=SubscriptionKind.REFER,
                subscriber=_identity(request),
                dialog=dialog,
                expires_at=now + 300,
                participant_id=referrer.id,
            )
            conf.subscriptions[sub.id] = sub
        if method == "BYE":
            victim = self._participant_by_identity(conf, target.aor)
            if victim is None:
                if sub is not None:
                    self._refer_progress(conf, sub.id, 404, "Not Found", now, out, final=True)
                return
            self._kick(conf, victim, now, out, actor=referrer.aor)
            if sub is not None:
                self._refer_progress(conf, sub.id, 200, "OK", now, out, final=True)
            return
        if method != "INVITE":
            if sub is not None:
                self._refer_progress(conf, sub.id, 501, "Not Implemented", now, out, final=True)
            return
        if sub is not None:
            self._refer_progress(conf, sub.id, 100, "Trying", now, out, final=False)
        self._dial_out(
            conf, target, now, out, refer_sub=sub.id if sub else None, actor=referrer.aor
        )

    def _participant_by_identity(self, conf: Conference, aor: str) -> Participant | None:
        key = aor.lower()
        for p in conf.participants.values():
            if p.phase is not Phase.GONE and p.aor.lower() == key:
                return p
        return None

    def _refer_progress(
        self,
        conf: Conference,
        sub_id: str,
        status: int,
        reason: str,
        now: float,
        out: list[Action],
        *,
        final: bool,
    ) -> None:
        sub = conf.subscriptions.get(sub_id)
        if sub is None or sub.terminated:
            return
        # RFC 3515 §2.4.5: the body is a message/sipfrag status line.
        body = f"SIP/2.0 {status} {reason}\r\n".encode()
        state = "terminated;reason=noresource" if final else "active;expires=300"
        self._send_notify(
            conf, sub, state, body, out, content_type="message/sipfrag;version=2.0", event="refer"
        )
        if final:
            sub.terminated = True

    # ---------------------------------------------------------------- dial-out --------------

    def _dial_out(
        self,
        conf: Conference,
        target: SipUri,
        now: float,
        out: list[Action],
        *,
        refer_sub: str | None,
        actor: str | None,
    ) -> Participant:
        """RFC 4579 §5.5: the focus INVITEs the user (late offer, RFC 3725 flow I style): the
        user's 200 carries its offer, which goes to the MRFP; the MRFP's answer goes in the
        ACK to the user."""
        part = self._new_participant(conf, None, JoiningMethod.DIALED_OUT, aor=target.aor)
        part.refer_subscription = refer_sub
        part.phase = Phase.DIALING
        part.status = EndpointStatus.DIALING_OUT
        call_id = self.ids.call_id()
        tag = self.ids.tag()
        proxy = SipUri.parse(self.config.outbound_proxy) if self.config.outbound_proxy else None
        if proxy is not None:
            proxy.params["lr"] = None  # RFC 3261 §16.12.1.1: a loose-routing pre-loaded Route
        hop = proxy if proxy is not None else target
        headers = [
            ("Via", self._via(hop)),
            ("Max-Forwards", "70"),
            ("From", f"<{conf.uri}>;tag={tag}"),
            ("To", f"<{target}>"),
            ("Call-ID", call_id),
            ("CSeq", "1 INVITE"),
            ("Contact", self._focus_contact(conf.id)),
            ("Allow", ALLOW),
            ("Allow-Events", ALLOW_EVENTS),
            ("Supported", "timer"),
        ]
        if proxy is not None:
            headers.insert(2, ("Route", f"<{proxy}>"))
        if actor:
            headers.append(("Referred-By", f"<{actor}>"))
        invite = Request("INVITE", target, headers)
        part.invite = invite
        conf.info.users.pop(part.aor, None)
        out.append(
            SendRequest(invite, hop, LegContext("dialout-invite", conf.id, part.id, request=invite))
        )
        # The INVITE transaction waits as long as the user's phone rings (RFC 3261 §17.1.1.2):
        # the focus gives up after a while and cancels it (§9.1).
        self._arm(conf, part, "ring", now + self.config.ring_timeout, out)
        out.append(Changed("participant.dialing", conf.id, part.id, part.snapshot(), actor))
        return part

    def _cancel_dial_out(self, conf: Conference, part: Participant, out: list[Action]) -> None:
        invite = part.invite
        if invite is None:
            return
        cancel = build_cancel(invite)
        hop = invite.routes[0].sip_uri if invite.has("Route") else invite.sip_uri
        out.append(
            SendRequest(cancel, hop, LegContext("dialout-cancel", conf.id, part.id, request=cancel))
        )

    def _resp_dialout_invite(
        self, response: Response, ctx: LegContext, now: float, out: list[Action]
    ) -> None:
        part = self._participant(ctx.conference_id, ctx.participant_id)
        conf = self.conferences.get(ctx.conference_id)
        if part is None or conf is None or ctx.request is None:
            return
        status = response.status
        if status >= 200:
            self._disarm(conf, part, "ring", out)
        if status < 200:
            if status > 100 and part.refer_subscription:
                self._refer_progress(
                    conf, part.refer_subscription, status, response.reason, now, out, final=False
                )
            return
        if status >= 300:
            self._dialout_failed(conf, part, status, response.reason, now, out)
            return
        if part.dialog is None:
            part.dialog = Dialog.uac(ctx.request, response)
            part.dialog.local_contact = NameAddr.parse(self._focus_contact(conf.id))
            self._by_dialog[self._dialog_key(part.dialog)] = (conf.id, part.id)
        else:
            # A retransmitted 2xx: ACK again (RFC 3261 §13.2.2.4). Its offer must be answered
            # in the ACK (RFC 3264 §4), so while the MRFP has not answered yet there is nothing
            # to send: the ACK goes out with the MRFP's answer.
            if part.mrfp_answer is not None or part.phase is Phase.GONE:
                self._ack_ue(part, out, body=self._ue_ack_body(part))
            return
        if part.phase is Phase.GONE:
            self._ack_ue(part, out, body=None)
            self._bye_ue_force(conf, part, out)
            return
        if not response.body:
            self._ack_ue(part, out, body=None)
            self._bye_ue_force(conf, part, out)
            self._dialout_failed(conf, part, 488, "No offer in the answer", now, out)
            return
        offer = SessionDescription.parse(response.body)
        part.ue_offer = strip_preconditions(offer)
        part.phase = Phase.MRFP_PENDING
        self._invite_mrfp(conf, part, part.ue_offer, out)

    def _ue_ack_body(self, part: Participant) -> bytes | None:
        return bytes(part.mrfp_answer) if part.mrfp_answer is not None else None

    def _dialout_mrfp_answered(
        self, conf: Conference, part: Participant, response: Response, now: float, out: list[Action]
    ) -> None:
        self._ack_mrfp(part, out, body=None)
        if not response.body:
            self._bye_ue_force(conf, part, out)
            self._dialout_failed(conf, part, 500, "Media server gave no answer", now, out)
            return
        part.mrfp_answer = SessionDescription.parse(response.body)
        self._ack_ue(part, out, body=bytes(part.mrfp_answer))
        if part.refer_subscription:
            self._refer_progress(conf, part.refer_subscription, 200, "OK", now, out, final=True)
            part.refer_subscription = None
        self._connected(conf, part, now, out)

    def _ack_ue(self, part: Participant, out: list[Action], body: bytes | None) -> None:
        dialog, invite = part.dialog, part.invite
        if dialog is None or invite is None:
            return
        headers = [("Content-Type", "application/sdp")] if body else []
        ack, hop = dialog.create_request(
            "ACK",
            self._via(dialog.remote_target),
            cseq=invite.cseq.number,
            headers=headers,
            body=body or b"",
        )
        out.append(SendAck(ack, self._outbound_hop(hop)))

    def _outbound_hop(self, hop: SipUri) -> SipUri:
        return hop

    def _bye_ue_force(self, conf: Conference, part: Participant, out: list[Action]) -> None:
        dialog = part.dialog
        if dialog is None or dialog.state is DialogState.TERMINATED:
            return
        dialog.state = DialogState.TERMINATED
        bye, hop = dialog.create_request("BYE", self._via(dialog.remote_target))
        out.append(SendRequest(bye, hop, LegContext("ue-bye", conf.id, part.id, request=bye)))

    def _dialout_failed(
        self,
        conf: Conference,
        part: Participant,
        status: int,
        reason: str,
        now: float,
        out: list[Action],
    ) -> None:
        if part.refer_subscription:
            self._refer_progress(
                conf, part.refer_subscription, status, reason, now, out, final=True
            )
            part.refer_subscription = None
        method = DisconnectionMethod.BUSY if status in (486, 600) else DisconnectionMethod.FAILED
        self._remove_participant(conf, part, method, now, out)

    # ===================================================================== media events =====

    def on_media_event(
        self, event: MediaEvent, now: float, now_wall: datetime | None = None
    ) -> list[Action]:
        self._wall(now_wall)
        out: list[Action] = []
        if isinstance(event, NodeConnectionChanged):
            return out
        conf = self.conferences.get(event.conference)
        if conf is None:
            return out
        if isinstance(event, ConferenceDestroyed):
            return out
        if isinstance(event, ConferenceLockChanged):
            return out
        part = self._member(conf, event)
        if part is None:
            return out
        if isinstance(event, MemberAdded):
            part.member_id = event.member_id
            out.append(Changed("participant.media", conf.id, part.id, part.snapshot()))
        elif isinstance(event, MemberRemoved):
            if part.phase is Phase.GONE:
                return out
            method = (
                DisconnectionMethod.BOOTED
                if event.cause is MemberRemovalCause.KICKED
                else DisconnectionMethod.FAILED
            )
            if part.mrfp_dialog is not None:
                part.mrfp_dialog.state = DialogState.TERMINATED  # the MRFP ended its leg
            self._bye_ue(conf, part, out)
            self._remove_participant(conf, part, method, now, out)
        elif isinstance(event, MemberMuteChanged):
            if part.muted != event.muted:
                part.muted = event.muted
                self._endpoint_changed(conf, part, now, out, kind="participant.muted")
        elif isinstance(event, MemberTalkingChanged):
            part.talking = event.talking
            out.append(Changed("participant.talking", conf.id, part.id, part.snapshot()))
        return out

    def _member(self, conf: Conference, event: MediaEvent) -> Participant | None:
        call_id = getattr(event, "call_id", None)
        if call_id:
            entry = self._by_mrfp_call.get(call_id)
            if entry is not None:
                return conf.participants.get(entry[1])
        participant = getattr(event, "participant", None)
        if participant and participant in conf.participants:
            return conf.participants[participant]
        member_id = getattr(event, "member_id", None)
        for p in conf.participants.values():
            if member_id is not None and p.member_id == member_id:
                return p
        return None

    def _endpoint_changed(
        self,
        conf: Conference,
        part: Participant,
        now: float,
        out: list[Action],
        kind: str,
        actor: str | None = None,
    ) -> None:
        if part.phase is Phase.CONNECTED:
            part.status = EndpointStatus.MUTED_VIA_FOCUS if part.muted else EndpointStatus.CONNECTED
            user = conf.info.users.get(part.aor)
            if user is not None:
                endpoint = user.endpoints.get(part.endpoint_entity)
                if endpoint is not None:
                    endpoint.status = part.status
                    media = endpoint.media.get("1")
                    if media is not None:
                        media.status = MediaStatus.RECVONLY if part.muted else MediaStatus.SENDRECV
                self._notify_change(conf, user_updated(conf.info, part.aor), now, out)
        out.append(Changed(kind, conf.id, part.id, part.snapshot(), actor))

    # ===================================================================== operator =========

    def _get(self, conf_id: str, pid: str | None = None) -> tuple[Conference, Participant | None]:
        conf = self.conferences.get(conf_id)
        if conf is None and conf_id in self.ended:
            raise FocusError("conference_ended", f"conference {conf_id} has ended")
        if conf is None:
            raise FocusError("conference_not_found", f"no conference {conf_id}")
        if pid is None:
            return conf, None
        part = conf.participants.get(pid)
        if part is None:
            raise FocusError("participant_not_found", f"no participant {pid} in {conf_id}")
        return conf, part

    def kick(self, conf_id: str, pid: str, now: float, actor: str | None = None) -> list[Action]:
        conf, part = self._get(conf_id, pid)
        assert part is not None
        if part.phase is Phase.GONE:
            raise FocusError("participant_gone", f"participant {pid} has already left")
        out: list[Action] = []
        self._kick(conf, part, now, out, actor=actor)
        return out

    def _kick(
        self, conf: Conference, part: Participant, now: float, out: list[Action], actor: str | None
    ) -> None:
        # RFC 4575 §5.7.6 "booted": removed by the focus on someone's request.
        if part.phase is Phase.DIALING:
            self._cancel_dial_out(conf, part, out)
        self._bye_ue(conf, part, out, reason='SIP;cause=200;text="Removed from the conference"')
        if part.invite_txn is not None and part.invite is not None:
            tag = part.dialog.local_tag if part.dialog else None
            out.append(self._respond(part.invite_txn, part.invite, 603, "Removed", to_tag=tag))
            part.invite_txn = None
        self._remove_participant(conf, part, DisconnectionMethod.BOOTED, now, out, actor=actor)

    def set_muted(
        self, conf_id: str, pid: str, muted: bool, now: float, actor: str | None = None
    ) -> list[Action]:
        conf, part = self._get(conf_id, pid)
        assert part is not None
        if part.phase is not Phase.CONNECTED:
            raise FocusError("participant_not_connected", f"participant {pid} is not connected")
        out: list[Action] = []
        if part.member_id is not None:
            out.append(
                MediaCommand(conf.node, "mute" if muted else "unmute", conf.id, part.member_id)
            )
        if part.muted != muted:
            part.muted = muted
            self._endpoint_changed(conf, part, now, out, kind="participant.muted", actor=actor)
        return out

    def set_locked(
        self, conf_id: str, locked: bool, now: float, actor: str | None = None
    ) -> list[Action]:
        conf, _ = self._get(conf_id)
        if not conf.active:
            raise FocusError("conference_ended", f"conference {conf_id} has ended")
        out: list[Action] = []
        if conf.locked != locked:
            conf.locked = locked
            conf.info.locked = locked
            self._notify_change(conf, state_changed(conf.info), now, out)
            out.append(Changed("conference.locked", conf.id, data=conf.snapshot(), actor=actor))
        return out

    def end(self, conf_id: str, now: float, actor: str | None = None) -> list[Action]:
        conf, _ = self._get(conf_id)
        if not conf.active:
            raise FocusError("conference_ended", f"conference {conf_id} has ended")
        out: list[Action] = []
        # Subscribers' final NOTIFY (RFC 6665 §4.2.2) shows the conference as it ends: nobody
        # left and active=false, rather than one partial document per participant kicked.
        conf.info.users.clear()
        conf.info.active = False
        for sub in list(conf.subscriptions.values()):
            if not sub.terminated:
                self._terminate_subscription(conf, sub, "noresource", now, out)
        for part in list(conf.participants.values()):
            if part.phase is not Phase.GONE:
                self._kick(conf, part, now, out, actor=actor)
        self._end_conference(conf, now, out)
        return out

    def dial_out(
        self, conf_id: str, uri: str, now: float, actor: str | None = None
    ) -> tuple[str, list[Action]]:
        conf, _ = self._get(conf_id)
        if not conf.active:
            raise FocusError("conference_ended", f"conference {conf_id} has ended")
        if conf.present_count() >= self.config.participant_limit:
            raise FocusError("conference_full", "the conference is at its participant limit")
        target = NameAddr.parse(uri).uri
        if not isinstance(target, SipUri):
            raise FocusError("bad_uri", f"not a SIP URI: {uri}")
        out: list[Action] = []
        part = self._dial_out(conf, target.copy(), now, out, refer_sub=None, actor=actor)
        return part.id, out

    # ===================================================================== misc =============

    @staticmethod
    def _dialog_key(dialog: Dialog) -> tuple[str, str, str]:
        return (dialog.call_id, dialog.local_tag, dialog.remote_tag)

    def _resp_mrfp_bye(
        self, response: Response, ctx: LegContext, now: float, out: list[Action]
    ) -> None:
        return

    def _resp_ue_bye(
        self, response: Response, ctx: LegContext, now: float, out: list[Action]
    ) -> None:
        return

    # ===================================================================== restart ==========

    def restore(self, conf: Conference, now: float) -> list[Action]:
        """Take back a conference rebuilt from the database after a restart.

        Its connected participants keep their dialogs (a BYE after the restart still matches),
        its live subscriptions get their expiry timers back and a full NOTIFY each: the
        versions sent while the process was down are unknown, so subscribers resynchronise
        on a full document with a higher version (RFC 4575 §4.1).
        """
        out: list[Action] = []
        self.conferences[conf.id] = conf
        conf.info.users.clear()
        for part in conf.participants.values():
            if part.phase is not Phase.CONNECTED:
                continue
            if part.dialog is not None:
                self._by_dialog[self._dialog_key(part.dialog)] = (conf.id, part.id)
            if part.mrfp_call_id is not None:
                self._by_mrfp_call[part.mrfp_call_id] = (conf.id, part.id)
            conf.info.users[part.aor] = self._user_of(part)
        conf.info.locked = conf.locked
        for sub in conf.subscriptions.values():
            if sub.terminated:
                continue
            if sub.participant_id is None or sub.participant_id not in conf.participants:
                self._subs_by_dialog[self._dialog_key(sub.dialog)] = (conf.id, sub.id)
            if sub.kind is not SubscriptionKind.CONFERENCE:
                continue
            out.append(SetTimer(("sub", conf.id, sub.id), sub.expires_at))
            sub.version += 1
            remaining = max(0, int(sub.expires_at - now))
            body = full_template(conf.info).render(sub.version)
            self._send_notify(conf, sub, f"active;expires={remaining}", body, out)
        if not conf.present_count():
            self._end_conference(conf, now, out)
        return out


def _request_dialog_key(request: Request) -> tuple[str, str, str]:
    return (request.call_id, request.to.tag or "", request.from_.tag or "")


def _identity(request: Request) -> str:
    """Who sent it: the network-asserted identity (RFC 3325) if present, else From."""
    pai = request.p_asserted_identities if request.has("P-Asserted-Identity") else []
    for addr in pai:
        if isinstance(addr.uri, SipUri):
            return addr.uri.aor
    uri = request.from_.uri
    return uri.aor if isinstance(uri, SipUri) else str(uri)


def _without(kinds: tuple[str, ...], kind: str) -> tuple[str, ...]:
    if kind not in kinds:
        return kinds
    i = kinds.index(kind)
    return kinds[:i] + kinds[i + 1 :]


def _expiry_margin(interval: int) -> float:
    """RFC 4028 §10: the non-refresher ends the session a little before the interval ends."""
    return interval - min(32, interval / 3)
