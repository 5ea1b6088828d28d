"""A small SIP user agent built on the project's SIP core, for interop tests and benchmarks.

It uses only the core's public pieces — `SipTransport`, `SipEndpoint` (transactions),
`Dialog`/`DialogTable`, and `app.sip.ua` (2xx and reliable-provisional retransmission, RSeq
/RAck) — so a peer nobody here wrote (SIPp) exercises exactly what the product runs on.

As UAS it answers:
- INVITE with 100rel (Supported or Require): 183 reliable (RSeq, SDP answer), retransmitted
  until PRACK; 200 PRACK; then waits for an UPDATE (200 with an SDP answer) and sends the 200
  INVITE, retransmitted until ACK (RFC 3261 §13.3.1.4, RFC 3262, RFC 3311);
- INVITE without 100rel: 180 then 200 at once;
- BYE 200, OPTIONS/INFO 200, CANCEL 200 + 487, unknown dialog 481, lower CSeq 500, an
  unsupported Require 420.

As UAC, `await peer.call(uri, dest)` sends INVITE, ACKs the 2xx (again for every
retransmission of it), holds, sends BYE and reports how it went.

Run it alone (the benchmark does) with `python -m tests.support.core_peer --port N`: it prints
`ready <port> cpu=<seconds>`, and on SIGTERM/SIGINT one JSON line of counters and its CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import secrets
import signal
import sys
from collections import Counter
from dataclasses import dataclass, field

from app.net.endpoint import SipEndpoint
from app.net.transport import SipTransport
from app.sip.address import Address
from app.sip.dialog import Dialog, DialogState, DialogTable
from app.sip.errors import LocalProtocolError
from app.sip.message import Request, Response, make_response
from app.sip.transaction import ClientTransaction, ServerTransaction, Timers
from app.sip.ua import GiveUp, ReliableProvisionals, Retransmitter, unsupported_extensions
from app.sip.uri import NameAddr

log = logging.getLogger(__name__)

SUPPORTED = ("100rel",)
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, PRACK, UPDATE, INFO"


def sdp(host: str, version: int, port: int = 30000) -> bytes:
    lines = [
        "v=0",
        f"o=core 4242 {version} IN IP4 {host}",
        "s=-",
        f"c=IN IP4 {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP 0",
        "a=rtpmap:0 PCMU/8000",
        "a=sendrecv",
        "",
    ]
    return "\r\n".join(lines).encode()


@dataclass(eq=False)
class _UasCall:
    dialog: Dialog
    invite: Request
    txn: ServerTransaction
    reliable: ReliableProvisionals | None
    sdp_version: int = 1
    answered: bool = False  # the 2xx (or a final response) went out
    acked: bool = False


@dataclass
class CallOutcome:
    """What a UAC call came to: `ok` when INVITE got 2xx, was ACKed, and BYE got 2xx."""

    ok: bool
    invite_status: int | None = None
    bye_status: int | None = None
    reason: str = ""
    provisional: list[int] = field(default_factory=list)


@dataclass(eq=False)
class _UacCall:
    invite: Request
    dest: Address
    final: asyncio.Future[Response | None]
    outcome: CallOutcome
    dialog: Dialog | None = None
    ack: Request | None = None
    ack_dest: Address | None = None


class CorePeer:
    """UAS and UAC on one transport; `stats` counts what it did."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        timers: Timers | None = None,
        user: str = "core",
    ) -> None:
        self.host = host
        self.transport = SipTransport(host, port)
        self.timers = timers or Timers()
        self.user = user
        self.endpoint: SipEndpoint | None = None
        self.dialogs = DialogTable()
        self.retrans = Retransmitter(self.timers)
        self.stats: Counter[str] = Counter()
        self._uas_calls: dict[tuple[str, str, str], _UasCall] = {}
        self._uac_calls: dict[str, _UacCall] = {}
        self._pending: dict[ClientTransaction, asyncio.Future[Response | None]] = {}
        self._timer: asyncio.TimerHandle | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        await self.transport.start()
        self.endpoint = SipEndpoint(
            self.transport, self.host, self.transport.port, timers=self.timers
        )
        self.endpoint.user = self
        self.transport.on_message = self.endpoint.receive

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.endpoint is not None:
            self.endpoint.close()
        await self.transport.stop()

    @property
    def port(self) -> int:
        return self.transport.port

    @property
    def ep(self) -> SipEndpoint:
        assert self.endpoint is not None, "start() first"
        return self.endpoint

    def contact(self, transport: str) -> NameAddr:
        param = ";transport=tcp" if transport == "TCP" else ""
        return NameAddr.parse(f"<sip:{self.user}@{self.host}:{self.port}{param}>")

    # -- retransmission timer ---------------------------------------------------------------

    def _arm(self) -> None:
        deadline = self.retrans.next_deadline()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        for event in self.retrans.expire(self.ep.now()):
            key = event.key
            assert isinstance(key, tuple)
            kind = key[0]
            call = self._uas_calls.get(key[1:])
            if call is None:
                continue
            if isinstance(event, GiveUp):
                self.stats[f"gave_up_{kind}"] += 1
                if kind == "2xx":
                    # §13.3.1.4: no ACK within 64*T1: confirmed, but end it with BYE.
                    self._send_bye(call)
                else:
                    # RFC 3262 §3: no PRACK within 64*T1: reject the INVITE with a 5xx.
                    self._final(call, 504, "No PRACK")
                continue
            assert isinstance(event.message, Response)
            self.stats[f"retransmit_{kind}"] += 1
            self.ep.send_response(call.txn, event.message)
        self._arm()

    # -- TransactionUser --------------------------------------------------------------------

    def on_request(self, request: Request, source: Address, txn: ServerTransaction | None) -> None:
        self.stats[f"rx_{request.method}"] += 1
        if txn is None:
            self._on_ack(request)
            return
        if request.method == "CANCEL":
            self._on_cancel(request, txn)
        elif request.to.tag is not None:
            self._in_dialog(request, txn)
        elif request.method == "INVITE":
            self._on_invite(request, source, txn)
        elif request.method == "OPTIONS":
            self._respond(txn, 200, headers=[("Allow", ALLOW)])
        elif request.method == "BYE":
            self._respond(txn, 481)
        else:
            self._respond(txn, 405, headers=[("Allow", ALLOW)])

    def on_response(
        self, response: Response, source: Address, txn: ClientTransaction | None
    ) -> None:
        call = self._uac_calls.get(response.call_id)
        if response.cseq.method == "INVITE" and call is not None:
            self._uac_invite_response(call, response)
            return
        if txn is not None and response.status >= 200:
            fut = self._pending.pop(txn, None)
            if fut is not None and not fut.done():
                fut.set_result(response)

    def on_timeout(self, txn: ClientTransaction | ServerTransaction) -> None:
        self.stats["timeouts"] += 1
        if isinstance(txn, ClientTransaction):
            fut = self._pending.pop(txn, None)
            if fut is not None and not fut.done():
                fut.set_result(None)
            call = self._uac_calls.get(txn.request.call_id)
            if call is not None and txn.request.method == "INVITE" and not call.final.done():
                call.final.set_result(None)

    # -- UAS --------------------------------------------------------------------------------

    def _respond(
        self,
        txn: ServerTransaction,
        status: int,
        *,
        to_tag: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> Response:
        hdrs = list(headers or [])
        if body:
            hdrs.append(("Content-Type", "application/sdp"))
        resp = make_response(txn.request, status, to_tag=to_tag, headers=hdrs, body=body)
        self.ep.send_response(txn, resp)
        return resp

    def _on_invite(self, request: Request, source: Address, txn: ServerTransaction) -> None:
        tag = SipEndpoint.new_tag()
        missing = unsupported_extensions(request, SUPPORTED)
        if missing:
            # RFC 3261 §8.2.2.3: 420 naming what we lack.
            self._respond(txn, 420, to_tag=tag, headers=[("Unsupported", ", ".join(missing))])
            return
        try:
            dialog = Dialog.uas(request, tag, self.contact(source.transport))
        except LocalProtocolError as exc:
            self._respond(txn, 400, to_tag=tag)
            log.info("refused INVITE: %s", exc)
            return
        use_100rel = "100rel" in request.require or "100rel" in request.supported
        reliable = (
            ReliableProvisionals(request.cseq.number, secrets.randbelow(2**31 - 2) + 1)
            if use_100rel
            else None
        )
        call = _UasCall(dialog, request, txn, reliable)
        self.dialogs.add(dialog)
        self._uas_calls[self._key(dialog)] = call
        self.stats["calls_offered"] += 1
        contact = ("Contact", str(dialog.local_contact))
        if reliable is not None:
            # RFC 3262 §3: Require: 100rel and RSeq; retransmitted until the PRACK.
            rseq = reliable.next_rseq()
            body = sdp(self.host, call.sdp_version) if request.body else b""
            p183 = self._respond(
                txn,
                183,
                to_tag=tag,
                body=body,
                headers=[contact, ("Require", "100rel"), ("RSeq", str(rseq)), ("Allow", ALLOW)],
            )
            self.retrans.start_reliable_provisional(
                ("rel", *self._key(dialog)), p183, self.ep.now()
            )
            self._arm()
            return
        self._respond(txn, 180, to_tag=tag, headers=[contact])
        self._answer(call)

    def _answer(self, call: _UasCall) -> None:
        """The 2xx to the INVITE, retransmitted until the ACK (§13.3.1.4)."""
        call.answered = True
        call.sdp_version += 1
        body = sdp(self.host, call.sdp_version) if call.invite.body else b""
        ok = self._respond(
            call.txn,
            200,
            to_tag=call.dialog.local_tag,
            body=body,
            headers=[("Contact", str(call.dialog.local_contact)), ("Allow", ALLOW)],
        )
        self.retrans.start_2xx(("2xx", *self._key(call.dialog)), ok, self.ep.now())
        self._arm()

    def _final(self, call: _UasCall, status: int, reason: str | None = None) -> None:
        call.answered = True
        self.retrans.stop(("rel", *self._key(call.dialog)))
        resp = make_response(call.invite, status, reason, to_tag=call.dialog.local_tag)
        self.ep.send_response(call.txn, resp)
        self._forget(call)

    def _on_ack(self, ack: Request) -> None:
        call = self._uas_calls.get((ack.call_id, ack.to.tag or "", ack.from_.tag or ""))
        if call is None:
            return
        if self.retrans.stop(("2xx", *self._key(call.dialog))) is not None or not call.acked:
            call.acked = True
            call.dialog.state = DialogState.CONFIRMED
            self.stats["calls_confirmed"] += 1

    def _on_cancel(self, cancel: Request, txn: ServerTransaction) -> None:
        invite_txn = self.ep.layer.find_invite_for_cancel(cancel)
        if invite_txn is None:
            self._respond(txn, 481)  # RFC 3261 §9.2
            return
        self._respond(txn, 200)
        call = next((c for c in self._uas_calls.values() if c.txn is invite_txn), None)
        if call is not None and not call.answered:
            self._final(call, 487)
            self.stats["calls_cancelled"] += 1

    def _in_dialog(self, request: Request, txn: ServerTransaction) -> None:
        dialog = self.dialogs.find_for_request(request)
        if dialog is None:
            self._respond(txn, 481)  # RFC 3261 §12.2.2
            return
        refusal = dialog.check_request(request)
        if refusal is not None:
            self._respond(txn, refusal[0])
            return
        dialog.accept_request(request)
        call = self._uas_calls.get(self._key(dialog))
        method = request.method
        if method == "PRACK" and call is not None and call.reliable is not None:
            if not call.reliable.acknowledge(request.rack):
                self._respond(txn, 481)  # RFC 3262 §3: matches no unacknowledged 1xx
                return
            self.retrans.stop(("rel", *self._key(dialog)))
            self._respond(txn, 200)
        elif method in ("UPDATE", "INVITE") and call is not None:
            body = b""
            if request.body:
                call.sdp_version += 1
                body = sdp(self.host, call.sdp_version)
            self._respond(txn, 200, headers=[("Contact", str(dialog.local_contact))], body=body)
            if method == "UPDATE" and not call.answered:
                self._answer(call)  # the offer/answer of the early dialog is done
        elif method == "BYE":
            self._respond(txn, 200)
            if call is not None:
                if not call.answered:
                    self._final(call, 487)
                self.stats["calls_completed"] += 1
                self._forget(call)
            self.dialogs.remove(dialog)
        elif method in ("OPTIONS", "INFO"):
            self._respond(txn, 200)
        else:
            self._respond(txn, 405, headers=[("Allow", ALLOW)])

    def _send_bye(self, call: _UasCall) -> None:
        bye, hop = call.dialog.create_request("BYE", self.ep.via(call.txn.source.transport))
        self.ep.send_request(bye, self.ep.resolve(hop, call.txn.source.transport))
        self._forget(call)

    def _forget(self, call: _UasCall) -> None:
        key = self._key(call.dialog)
        self.retrans.stop(("2xx", *key))
        self.retrans.stop(("rel", *key))
        self._uas_calls.pop(key, None)
        self.dialogs.remove(call.dialog)

    @staticmethod
    def _key(dialog: Dialog) -> tuple[str, str, str]:
        return (dialog.call_id, dialog.local_tag, dialog.remote_tag)

    # -- UAC --------------------------------------------------------------------------------

    async def call(
        self, target: str, dest: Address, *, hold: float = 0.1, timeout: float = 60.0
    ) -> CallOutcome:
        """INVITE `target` at `dest`, ACK its 2xx, wait `hold` seconds, BYE."""
        ep = self.ep
        loop = asyncio.get_running_loop()
        transport = dest.transport
        call_id = ep.new_call_id()
        body = sdp(self.host, 1)
        invite = Request(
            "INVITE",
            target,
            [
                ("Via", ep.via(transport)),
                ("Max-Forwards", "70"),
                ("From", f"<sip:{self.user}@{self.host}>;tag={ep.new_tag()}"),
                ("To", f"<{target}>"),
                ("Call-ID", call_id),
                ("CSeq", "1 INVITE"),
                ("Contact", str(self.contact(transport))),
                ("Allow", ALLOW),
                ("Content-Type", "application/sdp"),
            ],
            body,
        )
        call = _UacCall(invite, dest, loop.create_future(), CallOutcome(False))
        self._uac_calls[call_id] = call
        self.stats["calls_placed"] += 1
        try:
            ep.send_request(invite, dest, owner=call)
            final = await asyncio.wait_for(call.final, timeout)
            outcome = call.outcome
            if final is None:
                outcome.reason = "INVITE timed out"
                return outcome
            outcome.invite_status = final.status
            if not final.is_success or call.dialog is None:
                outcome.reason = f"INVITE answered {final.status}"
                return outcome
            await asyncio.sleep(hold)
            bye, hop = call.dialog.create_request("BYE", ep.via(transport))
            txn = ep.send_request(bye, ep.resolve(hop, transport))
            fut: asyncio.Future[Response | None] = loop.create_future()
            self._pending[txn] = fut
            resp = await asyncio.wait_for(fut, timeout)
            if resp is None:
                outcome.reason = "BYE timed out"
                return outcome
            outcome.bye_status = resp.status
            outcome.ok = resp.is_success
            if outcome.ok:
                self.stats["calls_ok"] += 1
            else:
                outcome.reason = f"BYE answered {resp.status}"
            return outcome
        except TimeoutError:
            call.outcome.reason = "no answer in time"
            return call.outcome
        finally:
            # Keep answering stray 2xx retransmissions with the ACK for a while (§13.2.2.4).
            loop.call_later(self.timers.b, self._uac_calls.pop, call_id, None)

    def _uac_invite_response(self, call: _UacCall, response: Response) -> None:
        if response.status < 200:
            call.outcome.provisional.append(response.status)
            return
        if response.is_success:
            if call.dialog is None:
                try:
                    call.dialog = Dialog.uac(call.invite, response)
                except LocalProtocolError as exc:
                    log.warning("2xx without a usable dialog: %s", exc)
                    if not call.final.done():
                        call.final.set_result(None)
                    return
                dialog = call.dialog
                transport = call.dest.transport
                # §13.2.2.4: the ACK is the TU's, with the INVITE's CSeq number, sent to the
                # dialog's next hop; it is sent again for every retransmission of the 2xx.
                call.ack, hop = dialog.create_request(
                    "ACK", self.ep.via(transport), cseq=call.invite.cseq.number
                )
                call.ack_dest = self.ep.resolve(hop, transport)
            elif response.to.tag != call.dialog.remote_tag:
                return  # a 2xx from another fork: not handled by this small peer
            else:
                self.stats["reacked"] += 1
            assert call.ack is not None and call.ack_dest is not None
            self.ep.send_stateless(call.ack, call.ack_dest)
        if not call.final.done():
            call.final.set_result(response)


# -- running alone --------------------------------------------------------------------------


async def _serve(host: str, port: int) -> int:
    peer = CorePeer(host, port)
    await peer.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # The CPU seconds spent so far (imports, start-up), so a benchmark can subtract them.
    print(f"ready {peer.port} cpu={usage.ru_utime + usage.ru_stime:.6f}", flush=True)
    try:
        await stop.wait()
    finally:
        await peer.stop()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        report = {
            "stats": dict(peer.stats),
            "transport": dict(peer.transport.stats),
            "cpu_user": usage.ru_utime,
            "cpu_system": usage.ru_stime,
        }
        print(json.dumps(report), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    return asyncio.run(_serve(args.host, args.port))


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["CallOutcome", "CorePeer", "main", "sdp"]
