"""The SIP side of the built-in media processor: a UAS that puts each call into a conference,
behaving as FreeSWITCH 1.10's sofia profile + dialplan of `../shared/fixtures/freeswitch/sip/`.

Routing (the fixtures' dialplan): the conference is the `X-Conference` header, else the
Request-URI user `conf-<name>`; neither gets `404` with `Reason: Q.850;cause=1`.

An INVITE with an offer (RFC 3264) is answered as FreeSWITCH does with the dialplan of
`freeswitch/` (`answer`): `100`, then `200` with the SDP answer. With `pre_answer` (the dialplan
the fixtures were recorded with: `pre_answer`, then `answer`) it is `100`, then `183` with the
answer — reliable (`Require: 100rel`, `RSeq`, RFC 3262) only when the INVITE says it supports
100rel, in which case the `200` waits for the PRACK and carries no SDP — else an unreliable 183
and a `200` repeating the answer. An INVITE without an
offer (late offer) gets our offer in the `200`; the ACK carries the answer (RFC 3264 §4). The
member joins the conference when the call is answered.

In the dialog: re-INVITE and UPDATE renegotiate (new address, codec, direction; RFC 3264 §8,
RFC 3311), BYE removes the member, CANCEL before the answer gets `487` on the INVITE.
A kick, hup or media timeout sends BYE with a Q.850 `Reason` (RFC 3326), as FreeSWITCH does.

2xx retransmission until ACK (RFC 3261 §13.3.1.4) and reliable-provisional retransmission
until PRACK (RFC 3262 §3) are the TU's job, so they live here, on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from app.mrfp.builtin.conference import (
    MEDIA_TIMEOUT,
    NORMAL_CLEARING,
    ConferenceLocked,
    ConferenceRegistry,
    Leg,
    Member,
)
from app.net.endpoint import SipEndpoint
from app.sip.address import Address
from app.sip.dialog import Dialog, DialogState
from app.sip.errors import ParseError
from app.sip.message import Request, Response, make_response
from app.sip.sdp import (
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    Attribute,
    Codec,
    Connection,
    Direction,
    MediaDescription,
    Origin,
    SdpError,
    SessionDescription,
    build_answer,
    next_version,
    select_codecs,
)
from app.sip.transaction import ClientTransaction, ServerTransaction, Timers
from app.sip.uri import NameAddr, SipUri

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, PRACK"
SUPPORTED = "100rel"
SDP_TYPE = "application/sdp"
_CONF_PREFIX = "conf-"
_RPORT = re.compile(r";rport(?=[;,]|$)")


class MediaPort(Protocol):
    """What the SIP side needs of the media engine (`MediaEngine` fits)."""

    async def add_member(self, conference: str, member_id: str) -> int: ...

    async def remove_member(self, member_id: str) -> None: ...

    def set_remote(
        self,
        member_id: str,
        host: str,
        port: int,
        codec: str,
        payload_type: int,
        telephone_event_pt: int | None,
        rtcp_port: int | None = None,
    ) -> None: ...

    def set_muted(self, member_id: str, muted: bool) -> None: ...

    def set_deaf(self, member_id: str, deaf: bool) -> None: ...

    def set_hold(self, member_id: str, direction: str) -> None: ...


class CallState(Enum):
    EARLY = "early"  # INVITE received, no final response yet
    ANSWERED = "answered"  # 200 sent, waiting for the ACK
    CONFIRMED = "confirmed"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class RemoteMedia:
    """What the engine needs from the peer's SDP."""

    host: str
    port: int
    codec: Codec
    telephone_event_pt: int | None
    direction: str


@dataclass(eq=False)
class Call:
    """One leg: the INVITE, its dialog, the offer/answer state and the conference member."""

    invite: Request
    txn: ServerTransaction
    source: Address
    conference: str
    leg: Leg
    dialog: Dialog
    reliable: bool = False
    state: CallState = CallState.EARLY
    member: Member | None = None
    engine_added: bool = False
    local_sdp: SessionDescription | None = None
    remote_sdp: SessionDescription | None = None
    codec: Codec | None = None
    rseq: int = 0
    prack: asyncio.Future[None] | None = None
    # The 2xx being retransmitted until the ACK (initial INVITE or re-INVITE), its CSeq,
    # and whether that ACK must carry the answer to our offer (late offer).
    pending_2xx: Response | None = None
    pending_cseq: int = 0
    ack_carries_answer: bool = False
    retransmit: asyncio.TimerHandle | None = None
    bye_sent: bool = False
    # A hangup asked for while our 2xx waits for its ACK (RFC 3261 §15: no BYE before it).
    bye_after_ack: tuple[int, str] | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def key(self) -> str:
        return self.leg.channel_uuid


def conference_for(request: Request) -> str | None:
    """The conference a call asks for: `X-Conference`, else a `conf-<name>` R-URI user."""
    header = request.get("X-Conference")
    if header is not None and header.strip():
        return header.strip()
    try:
        user = request.sip_uri.user
    except ParseError:
        return None
    if user and user.startswith(_CONF_PREFIX) and len(user) > len(_CONF_PREFIX):
        return user[len(_CONF_PREFIX) :]
    return None


def remote_media(sdp: SessionDescription) -> RemoteMedia | None:
    """The first usable audio stream of an SDP: address, voice codec, DTMF type, direction."""
    for index, media in enumerate(sdp.media):
        if media.media != "audio" or media.rejected:
            continue
        codecs = select_codecs(media)
        voice = next((c for c in codecs if c.encoding != TELEPHONE_EVENT.encoding), None)
        if voice is None:
            continue
        conn = sdp.media_connection(index)
        if conn is None:
            continue
        te = next((c.payload_type for c in codecs if c.encoding == TELEPHONE_EVENT.encoding), None)
        return RemoteMedia(conn.address, media.port, voice, te, sdp.media_direction(index).value)
    return None


def _codec_for_answer(codec: Codec) -> Codec:
    return PCMA if codec.encoding.upper() == "PCMA" else PCMU


class SipSide:
    """The UAS. `endpoint.user` is set to it; `engine` events come in via `on_media_event`."""

    def __init__(
        self,
        endpoint: SipEndpoint,
        registry: ConferenceRegistry,
        engine: MediaPort,
        *,
        rtp_host: str = "127.0.0.1",
        user_agent: str = "mrfp-builtin",
        timers: Timers | None = None,
        pre_answer: bool = False,
    ) -> None:
        self.endpoint = endpoint
        self.pre_answer = pre_answer
        self.registry = registry
        self.engine = engine
        self.rtp_host = rtp_host
        self.user_agent = user_agent
        self.timers = timers or Timers()
        self.calls: dict[str, Call] = {}  # by channel UUID
        self._by_dialog: dict[tuple[str, str], Call] = {}  # (Call-ID, our tag)
        self._tasks: set[asyncio.Task[None]] = set()
        self._bye_done: dict[str, asyncio.Event] = {}
        endpoint.user = self

    # -- TransactionUser ------------------------------------------------------------------

    def on_request(self, request: Request, source: Address, txn: ServerTransaction | None) -> None:
        method = request.method
        if method == "ACK":
            self._on_ack(request)
            return
        assert txn is not None
        if method == "CANCEL":
            self._on_cancel(request, txn)
            return
        if request.to.tag is not None:
            self._in_dialog(request, source, txn)
            return
        if method == "INVITE":
            self._on_invite(request, source, txn)
        elif method == "OPTIONS":
            # RFC 3261 §11.2: what we can do.
            self._respond(
                txn, request, 200, headers=[("Accept", SDP_TYPE), *self._dialog_headers()]
            )
        elif method in ("BYE", "PRACK", "UPDATE", "INFO"):
            self._respond(txn, request, 481)
        else:
            self._respond(txn, request, 405)

    def on_response(
        self, response: Response, source: Address, txn: ClientTransaction | None
    ) -> None:
        if txn is None or response.is_provisional:
            return
        call = txn.owner
        if isinstance(call, Call) and txn.request.method == "BYE":
            done = self._bye_done.pop(call.key, None)
            if done is not None:
                done.set()

    def on_timeout(self, txn: ClientTransaction | ServerTransaction) -> None:
        call = txn.owner
        if isinstance(txn, ClientTransaction) and isinstance(call, Call):
            done = self._bye_done.pop(call.key, None)
            if done is not None:
                done.set()

    # -- media engine events --------------------------------------------------------------

    def on_media_event(self, event: object) -> None:
        """`TalkingChanged` / `MediaTimeout` from the engine (keys are channel UUIDs)."""
        kind = type(event).__name__
        member_id = getattr(event, "member_id", None)
        if not isinstance(member_id, str):
            return
        if kind == "TalkingChanged":
            energy = 0
            state = getattr(self.engine, "member_state", None)
            if callable(state):
                with contextlib.suppress(Exception):
                    energy = int(state(member_id).energy)
            self.registry.talking_changed(member_id, bool(getattr(event, "talking", False)), energy)
        elif kind == "MediaTimeout":
            call = self.calls.get(member_id)
            if call is not None and call.state is not CallState.ENDED:
                log.info("media timeout on %s (%s)", call.leg.call_id, call.conference)
                self.hangup(call, MEDIA_TIMEOUT)

    # -- INVITE ---------------------------------------------------------------------------

    def _on_invite(self, request: Request, source: Address, txn: ServerTransaction) -> None:
        conference = conference_for(request)
        if conference is None:
            # The fixtures' dialplan: no route -> 404 UNALLOCATED_NUMBER (call-d).
            self._respond(
                txn, request, 404, tag=True, headers=[self._reason((1, "UNALLOCATED_NUMBER"))]
            )
            return
        if self.registry.is_locked(conference):
            self._respond(
                txn, request, 403, tag=True, headers=[self._reason((21, "CALL_REJECTED"))]
            )
            return
        offer: SessionDescription | None = None
        if request.body:
            ctype = (request.content_type or "").split(";")[0].strip().lower()
            if ctype != SDP_TYPE:
                self._respond(txn, request, 415, headers=[("Accept", SDP_TYPE)])
                return
            try:
                offer = SessionDescription.parse(request.body)
            except SdpError:
                self._not_acceptable(txn, request)
                return
            remote = remote_media(offer)
            if remote is None or not _ipv4(remote.host):
                self._not_acceptable(txn, request)
                return
        contact = request.contact
        if contact is None or not isinstance(contact.uri, SipUri):
            self._respond(txn, request, 400, reason="Missing Contact")
            return
        transport = source.transport.lower()
        ruri_user = request.sip_uri.user or "mrfp"
        local_contact = NameAddr.parse(
            f"<sip:{ruri_user}@{self.endpoint.local_host}:{self.endpoint.local_port}"
            f";transport={transport}>"
        )
        tag = secrets.token_urlsafe(9).replace("-", "x").replace("_", "y")
        dialog = Dialog.uas(request, tag, local_contact)
        from_uri = request.from_.sip_uri if isinstance(request.from_.uri, SipUri) else None
        from_host = ""
        if from_uri is not None:
            from_host = from_uri.host + (f":{from_uri.port}" if from_uri.port else "")
        leg = Leg(
            call_id=request.call_id,
            channel_uuid=str(uuid.uuid4()),
            from_user=(from_uri.user if from_uri is not None else None) or "unknown",
            from_host=from_host,
            from_display=request.from_.display_name,
            from_tag=request.from_.tag or "",
            destination=request.sip_uri.user or "",
            participant=request.get("X-Participant"),
            conference_header=request.get("X-Conference"),
            network_ip=source.host,
            network_port=source.port,
            transport=transport,
        )
        reliable = "100rel" in request.supported or "100rel" in request.require
        call = Call(request, txn, source, conference, leg, dialog, reliable=reliable)
        call.remote_sdp = offer
        txn.owner = call
        self.calls[leg.channel_uuid] = call
        self._by_dialog[(request.call_id, tag)] = call
        self._spawn(call, self._answer(call))

    async def _answer(self, call: Call) -> None:
        request, txn = call.invite, call.txn
        try:
            port = await self.engine.add_member(call.conference, call.key)
        except Exception as exc:
            log.warning("no media port for %s: %s", call.leg.call_id, exc)
            self._forget(call)
            self._respond(txn, request, 503, tag=call.dialog.local_tag)
            return
        call.engine_added = True
        call.leg.local_media_port = port
        # Not in the mix until answered and joined (FreeSWITCH's early media is silence).
        self.engine.set_muted(call.key, True)
        self.engine.set_deaf(call.key, True)
        if call.state is CallState.ENDED:  # cancelled while the port was bound
            await self._release_media(call)
            return
        session_id = str(secrets.randbelow(2**31))
        offer = call.remote_sdp
        if offer is None:
            # Late offer (RFC 3264 §4): our offer goes in the 200, the answer comes in the ACK.
            call.local_sdp = self._local_offer(port, session_id, 1)
            await self._final_200(call, with_sdp=True, ack_answer=True)
            return
        remote = remote_media(offer)
        assert remote is not None  # checked before the call was created
        try:
            answer = build_answer(
                offer,
                address=self.rtp_host,
                port=port,
                session_id=session_id,
                version=1,
                username=self.user_agent,
                supported=(_codec_for_answer(remote.codec), TELEPHONE_EVENT),
                ptime=20,
                session_name=self.user_agent,
            )
        except SdpError:
            await self._release_media(call)
            self._forget(call)
            self._not_acceptable(txn, request, tag=call.dialog.local_tag)
            return
        call.local_sdp = answer
        self._apply_remote(call, remote)
        if not self.pre_answer:
            # The shipped dialplan's `answer` alone: the 200 carries the answer.
            await self._final_200(call, with_sdp=True, ack_answer=False)
            return
        # pre_answer: 183 with the answer; reliable only if the UAC can do 100rel (RFC 3262).
        headers = self._dialog_headers()
        if call.reliable:
            call.rseq = secrets.randbelow(2**31 - 1) + 1
            headers += [("RSeq", str(call.rseq)), ("Require", "100rel")]
        progress = self._response(
            request, 183, tag=call.dialog.local_tag, headers=headers, sdp=answer
        )
        self._send(txn, progress)
        if call.reliable and not await self._wait_prack(call, progress):
            if call.state is CallState.EARLY:
                # RFC 3262 §3: no PRACK within 64*T1 -> reject the INVITE with a 5xx.
                await self._release_media(call)
                self._forget(call)
                self._respond(txn, request, 504, tag=call.dialog.local_tag)
            return
        if call.state is not CallState.EARLY:
            return
        await self._final_200(call, with_sdp=not call.reliable, ack_answer=False)

    async def _wait_prack(self, call: Call, progress: Response) -> bool:
        loop = asyncio.get_running_loop()
        call.prack = loop.create_future()
        interval = self.timers.t1
        deadline = loop.time() + self.timers.b
        while not call.prack.done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(call.prack), min(interval, remaining))
            if call.prack.done() or call.state is not CallState.EARLY:
                break
            # RFC 3262 §3: retransmit the reliable provisional with T1 doubling (no T2 cap).
            self._send(call.txn, progress)
            interval *= 2
        return call.prack.done() and not call.prack.cancelled()

    async def _final_200(self, call: Call, *, with_sdp: bool, ack_answer: bool) -> None:
        request = call.invite
        headers = self._dialog_headers()
        ok = self._response(
            request,
            200,
            tag=call.dialog.local_tag,
            headers=headers,
            sdp=call.local_sdp if with_sdp else None,
        )
        call.state = CallState.ANSWERED
        call.dialog.state = DialogState.CONFIRMED
        self._send(call.txn, ok)
        self._start_2xx(call, ok, request.cseq.number, ack_answer)
        self._join(call)

    def _join(self, call: Call) -> None:
        try:
            member = self.registry.join(call.conference, call.leg, self._on_member_hangup)
        except ConferenceLocked:
            # Locked between the INVITE and the answer: the leg is hung up again.
            self.hangup(call, (21, "CALL_REJECTED"))
            return
        call.member = member
        self.engine.set_muted(call.key, member.muted)
        self.engine.set_deaf(call.key, member.deaf)
        if call.remote_sdp is not None:
            remote = remote_media(call.remote_sdp)
            if remote is not None:
                member.hold = remote.direction in ("sendonly", "inactive")

    # -- 2xx retransmission (RFC 3261 §13.3.1.4) ------------------------------------------

    def _start_2xx(self, call: Call, ok: Response, cseq: int, ack_answer: bool) -> None:
        self._stop_2xx(call)
        call.pending_2xx = ok
        call.pending_cseq = cseq
        call.ack_carries_answer = ack_answer
        loop = asyncio.get_running_loop()
        started = loop.time()

        def again(interval: float) -> None:
            if call.pending_2xx is not ok or call.state is CallState.ENDED:
                return
            if loop.time() - started >= self.timers.b:
                # §13.3.1.4: no ACK within 64*T1 -> confirm then end the session with BYE.
                call.pending_2xx = None
                log.info("no ACK for %s; hanging up", call.leg.call_id)
                cause, call.bye_after_ack = call.bye_after_ack or NORMAL_CLEARING, None
                self.hangup(call, cause)
                return
            self.endpoint.send_stateless(ok, call.txn.source)
            nxt = min(interval * 2, self.timers.t2)
            call.retransmit = loop.call_later(nxt, again, nxt)

        call.retransmit = loop.call_later(self.timers.t1, again, self.timers.t1)

    @staticmethod
    def _stop_2xx(call: Call) -> None:
        if call.retransmit is not None:
            call.retransmit.cancel()
            call.retransmit = None
        call.pending_2xx = None

    # -- ACK, CANCEL, in-dialog requests --------------------------------------------------

    def _find(self, request: Request) -> Call | None:
        tag = request.to.tag
        if tag is None:
            return None
        call = self._by_dialog.get((request.call_id, tag))
        if call is None or (request.from_.tag or "") != call.dialog.remote_tag:
            return None
        return call

    def _on_ack(self, request: Request) -> None:
        call = self._find(request)
        if call is None or call.pending_2xx is None:
            return
        if request.cseq.number != call.pending_cseq:
            return
        ack_answer = call.ack_carries_answer
        self._stop_2xx(call)
        if call.state is CallState.ANSWERED:
            call.state = CallState.CONFIRMED
        if call.bye_after_ack is not None:
            cause, call.bye_after_ack = call.bye_after_ack, None
            self.hangup(call, cause)
            return
        if not ack_answer:
            return
        remote: RemoteMedia | None = None
        if request.body:
            with contextlib.suppress(SdpError):
                sdp = SessionDescription.parse(request.body)
                remote = remote_media(sdp)
                if remote is not None and _ipv4(remote.host):
                    call.remote_sdp = sdp
                else:
                    remote = None
        if remote is None:
            # RFC 3264 §4: an offer in a 2xx must be answered in the ACK; without a usable
            # answer there is no media, so the leg ends.
            log.info("no usable answer in ACK for %s", call.leg.call_id)
            self.hangup(call, (88, "INCOMPATIBLE_DESTINATION"))
            return
        self._apply_remote(call, remote)

    def _on_cancel(self, request: Request, txn: ServerTransaction) -> None:
        invite_txn = self.endpoint.layer.find_invite_for_cancel(request)
        call = invite_txn.owner if invite_txn is not None else None
        if not isinstance(call, Call):
            self._respond(txn, request, 481)
            return
        self._respond(txn, request, 200)
        if call.state is not CallState.EARLY:
            return  # already answered: the CANCEL has no effect (RFC 3261 §9.2)
        call.state = CallState.ENDED
        if call.prack is not None and not call.prack.done():
            call.prack.cancel()
        self._respond(
            call.txn,
            call.invite,
            487,
            tag=call.dialog.local_tag,
            headers=[self._reason((487, "ORIGINATOR_CANCEL"))],
        )
        self._forget(call)
        self._spawn(call, self._release_media(call))

    def _in_dialog(self, request: Request, source: Address, txn: ServerTransaction) -> None:
        call = self._find(request)
        if call is None or call.state is CallState.ENDED:
            self._respond(txn, request, 481)
            return
        refused = call.dialog.check_request(request)
        if refused is not None:
            self._respond(txn, request, refused[0], reason=refused[1])
            return
        call.dialog.accept_request(request)
        method = request.method
        if method == "BYE":
            self._on_bye(call, request, txn)
        elif method == "PRACK":
            self._on_prack(call, request, txn)
        elif method in ("INVITE", "UPDATE"):
            self._on_offer(call, request, txn)
        elif method in ("INFO", "OPTIONS"):
            self._respond(txn, request, 200, headers=self._dialog_headers())
        else:
            self._respond(txn, request, 405)

    def _on_bye(self, call: Call, request: Request, txn: ServerTransaction) -> None:
        self._respond(txn, request, 200)
        was_early = call.state is CallState.EARLY
        call.state = CallState.ENDED
        self._stop_2xx(call)
        if was_early:
            # RFC 3261 §15.1.2: a BYE in an early dialog ends the INVITE with 487.
            if call.prack is not None and not call.prack.done():
                call.prack.cancel()
            self._respond(call.txn, call.invite, 487, tag=call.dialog.local_tag)
        member = call.member
        self._forget(call)
        if member is not None:
            self.registry.leave(member, hangup=True)
        self._spawn(call, self._release_media(call))

    def _on_prack(self, call: Call, request: Request, txn: ServerTransaction) -> None:
        rack = request.rack
        if (
            rack is None
            or call.prack is None
            or rack.rseq != call.rseq
            or rack.cseq != call.invite.cseq.number
            or rack.method != "INVITE"
        ):
            # RFC 3262 §3: a PRACK that matches no unacknowledged reliable response.
            self._respond(txn, request, 481)
            return
        self._respond(txn, request, 200, headers=self._dialog_headers())
        if not call.prack.done():
            call.prack.set_result(None)

    def _on_offer(self, call: Call, request: Request, txn: ServerTransaction) -> None:
        """re-INVITE or UPDATE (RFC 3311): renegotiate the stream, or a session refresh."""
        is_invite = request.method == "INVITE"
        if is_invite and (call.pending_2xx is not None or call.state is CallState.EARLY):
            # RFC 3261 §14.2: an INVITE while ours is pending gets 491.
            self._respond(txn, request, 491)
            return
        if call.local_sdp is None:
            self._respond(txn, request, 500, headers=[("Retry-After", "1")])
            return
        if not request.body:
            if is_invite:
                # A re-INVITE without an offer: our current description is the offer (§14.2).
                ok = self._response(
                    request, 200, headers=self._dialog_headers(), sdp=call.local_sdp
                )
                self._send(txn, ok)
                self._start_2xx(call, ok, request.cseq.number, True)
            else:
                self._respond(txn, request, 200, headers=self._dialog_headers())
            return
        try:
            offer = SessionDescription.parse(request.body)
        except SdpError:
            self._not_acceptable(txn, request)
            return
        remote = remote_media(offer)
        if remote is None or not _ipv4(remote.host):
            # RFC 3261 §14.2: a refused re-offer leaves the session as it was.
            self._not_acceptable(txn, request)
            return
        try:
            answer = build_answer(
                offer,
                address=self.rtp_host,
                port=call.leg.local_media_port,
                session_id=call.local_sdp.origin.session_id,
                version=call.local_sdp.origin.session_version,
                username=self.user_agent,
                supported=(_codec_for_answer(remote.codec), TELEPHONE_EVENT),
                ptime=20,
                session_name=self.user_agent,
            )
        except SdpError:
            self._not_acceptable(txn, request)
            return
        # RFC 3264 §8: same o= version when nothing changed, else one more.
        call.local_sdp = next_version(call.local_sdp, answer)
        call.remote_sdp = offer
        self._apply_remote(call, remote)
        if call.member is not None:
            call.member.hold = remote.direction in ("sendonly", "inactive")
        ok = self._response(request, 200, headers=self._dialog_headers(), sdp=call.local_sdp)
        self._send(txn, ok)
        if is_invite:
            self._start_2xx(call, ok, request.cseq.number, False)

    # -- hanging up -----------------------------------------------------------------------

    def _on_member_hangup(self, member: Member, cause: tuple[int, str]) -> None:
        """The registry's callback for kick/hup: BYE on the leg, after the api reply went."""
        call = self.calls.get(member.key)
        if call is None:
            self.registry.leave(member, hangup=False)
            return
        asyncio.get_running_loop().call_soon(self.hangup, call, cause)

    def hangup(self, call: Call, cause: tuple[int, str] = NORMAL_CLEARING) -> None:
        """End an answered leg from our side: BYE with a Q.850 Reason (RFC 3326)."""
        if call.state is CallState.ENDED or call.bye_after_ack is not None:
            return
        if call.state is CallState.ANSWERED and call.pending_2xx is not None:
            # RFC 3261 §15: the callee sends no BYE before the ACK of its 2xx (or before the
            # 2xx retransmissions give up); the member leaves the conference now.
            call.bye_after_ack = cause
            member = call.member
            call.member = None
            if member is not None:
                self.registry.leave(member, hangup=False)
            self._spawn(call, self._release_media(call))
            return
        if call.state is CallState.EARLY:
            call.state = CallState.ENDED
            self._respond(call.txn, call.invite, 480, tag=call.dialog.local_tag)
        else:
            call.state = CallState.ENDED
            self._send_bye(call, cause)
        self._stop_2xx(call)
        member = call.member
        self._forget(call)
        if member is not None:
            self.registry.leave(member, hangup=False)
        self._spawn(call, self._release_media(call))

    def _send_bye(self, call: Call, cause: tuple[int, str]) -> None:
        if call.bye_sent:
            return
        call.bye_sent = True
        headers = [
            ("User-Agent", self.user_agent),
            ("Allow", ALLOW),
            ("Supported", SUPPORTED),
            self._reason(cause),
        ]
        via = self.endpoint.via(call.leg.transport.upper())
        bye, next_hop = call.dialog.create_request("BYE", via, headers=headers)
        dest = self.endpoint.resolve(next_hop, next_hop.transport or call.leg.transport)
        self._bye_done[call.key] = asyncio.Event()
        self.endpoint.send_request(bye, dest, owner=call)

    async def close(self, timeout: float = 2.0) -> None:
        """BYE every open leg, wait (up to `timeout`) for their answers, free the media."""
        waits: list[asyncio.Event] = []
        for call in list(self.calls.values()):
            self.hangup(call, NORMAL_CLEARING)
            done = self._bye_done.get(call.key)
            if done is not None:
                waits.append(done)
        if waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(w.wait() for w in waits)), timeout)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- helpers --------------------------------------------------------------------------

    def _apply_remote(self, call: Call, remote: RemoteMedia) -> None:
        call.codec = remote.codec
        call.leg.codec = remote.codec.encoding.upper()
        call.leg.remote_media = (remote.host, remote.port)
        self.engine.set_remote(
            call.key,
            remote.host,
            remote.port,
            remote.codec.encoding.upper(),
            remote.codec.payload_type,
            remote.telephone_event_pt,
        )
        self.engine.set_hold(call.key, remote.direction)

    def _local_offer(self, port: int, session_id: str, version: int) -> SessionDescription:
        sdp = SessionDescription(
            Origin(self.user_agent, session_id, version, "IN", "IP4", self.rtp_host),
            self.user_agent,
            Connection(self.rtp_host),
        )
        media = MediaDescription("audio", port, "RTP/AVP", ["0", "8", "101"])
        media.attributes += [
            Attribute("rtpmap", "0 PCMU/8000"),
            Attribute("rtpmap", "8 PCMA/8000"),
            Attribute("rtpmap", "101 telephone-event/8000"),
            Attribute("fmtp", "101 0-16"),
            Attribute("ptime", "20"),
        ]
        media.direction = Direction.SENDRECV
        sdp.media.append(media)
        return sdp

    def _forget(self, call: Call) -> None:
        self.calls.pop(call.key, None)
        self._by_dialog.pop((call.leg.call_id, call.dialog.local_tag), None)

    async def _release_media(self, call: Call) -> None:
        if call.engine_added:
            call.engine_added = False
            try:
                await self.engine.remove_member(call.key)
            except Exception:  # already gone
                log.debug("remove_member %s failed", call.key, exc_info=True)

    def _spawn(self, call: Call, coro: object) -> None:
        assert asyncio.iscoroutine(coro)
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("call task failed", exc_info=task.exception())

    def _dialog_headers(self) -> list[tuple[str, str]]:
        return [("Allow", ALLOW), ("Supported", SUPPORTED)]

    @staticmethod
    def _reason(cause: tuple[int, str]) -> tuple[str, str]:
        return ("Reason", f'Q.850;cause={cause[0]};text="{cause[1]}"')

    def _response(
        self,
        request: Request,
        status: int,
        *,
        reason: str | None = None,
        tag: str | bool | None = None,
        headers: list[tuple[str, str]] | None = None,
        sdp: SessionDescription | None = None,
    ) -> Response:
        to_tag: str | None = None
        if isinstance(tag, str):
            to_tag = tag
        elif tag is True:
            to_tag = secrets.token_hex(6)
        out: list[tuple[str, str]] = []
        call = self._find_for_contact(request)
        if call is not None and 100 < status < 300 and request.method in ("INVITE", "UPDATE"):
            out.append(("Contact", str(call.dialog.local_contact)))
        out.append(("User-Agent", self.user_agent))
        if status != 100:
            out += headers or []
        body = b""
        if sdp is not None:
            body = bytes(sdp)
            out += [("Content-Type", SDP_TYPE), ("Content-Disposition", "session")]
        response = make_response(request, status, reason, to_tag=to_tag, headers=out, body=body)
        response.set("Content-Length", str(len(body)))
        return response

    def _find_for_contact(self, request: Request) -> Call | None:
        if request.method == "INVITE" and request.to.tag is None:
            for call in self.calls.values():
                if call.invite is request:
                    return call
            return None
        return self._find(request)

    def _send(self, txn: ServerTransaction, response: Response) -> None:
        _fill_rport(response, txn.source)
        self.endpoint.send_response(txn, response)

    def _respond(
        self,
        txn: ServerTransaction,
        request: Request,
        status: int,
        *,
        reason: str | None = None,
        tag: str | bool | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self._send(txn, self._response(request, status, reason=reason, tag=tag, headers=headers))

    def _not_acceptable(
        self, txn: ServerTransaction, request: Request, *, tag: str | bool | None = True
    ) -> None:
        # RFC 3261 §13.3.1.1 / RFC 3264 §6: no common codec -> 488 (Q.850 88 in FreeSWITCH).
        self._respond(
            txn,
            request,
            488,
            tag=tag,
            headers=[("Accept", SDP_TYPE), self._reason((88, "INCOMPATIBLE_DESTINATION"))],
        )


def _fill_rport(response: Response, source: Address) -> None:
    """RFC 3581 §4: a Via asking for rport gets the source port filled in (on a response
    `make_response` just built, whose parsed-header cache is still empty)."""
    for index, (name, value) in enumerate(response.headers):
        if name == "Via":
            if _RPORT.search(value):
                response.headers[index] = (
                    name,
                    _RPORT.sub(f";rport={source.port}", value, count=1),
                )
            return


def _ipv4(host: str) -> bool:
    parts = host.split(".")
    return len(parts) == 4 and all(p.isdigit() and 0 <= int(p) <= 255 for p in parts)


OnMediaEvent = Callable[[object], None]
