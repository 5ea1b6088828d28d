"""SIP transactions (RFC 3261 §17, with RFC 6026's Accepted state), sans-IO.

The `TransactionLayer` is driven by three inputs — messages received, messages the
transaction user (TU) sends, and the clock — and returns outputs: bytes to transmit and
events for the TU. Time is a float passed in by the caller (seconds, monotonic); timers are
deadlines the layer keeps, and the driver calls `expire(now)` at `next_deadline()`.

Everything that changes a transaction's state is in the four `_on_*` tables of transitions
below and the timer handlers next to them, so the machines can be read in one place.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from app.sip.address import Address
from app.sip.errors import LocalProtocolError
from app.sip.headers import split_commas
from app.sip.message import Request, Response, make_response
from app.sip.routing import response_destination

MAGIC_COOKIE = "z9hG4bK"  # RFC 3261 §8.1.1.7


@dataclass(frozen=True, slots=True)
class Timers:
    """RFC 3261 §17.1.1.1 / Table 4 values, configurable."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    @property
    def b(self) -> float:  # also F, H, J, L, M: 64*T1
        return 64 * self.t1


class State(Enum):
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    ACCEPTED = "Accepted"  # RFC 6026 §7.1, §7.2
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"


# -- outputs --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transmit:
    """Send this message to this address."""

    message: Request | Response
    dest: Address


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request for the TU, with the server transaction to answer it on (None for an
    ACK to a 2xx, which has no transaction of its own, RFC 3261 §17.1.1.3)."""

    request: Request
    source: Address
    transaction: ServerTransaction | None


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response for the TU. `transaction` is None for a stray 2xx retransmission whose
    client transaction is gone (the TU re-sends its ACK, RFC 3261 §13.2.2.4)."""

    response: Response
    source: Address
    transaction: ClientTransaction | None


@dataclass(frozen=True, slots=True)
class TransactionTimeout:
    """Timer B/F fired (no final response), or Timer H (no ACK for a non-2xx final)."""

    transaction: ClientTransaction | ServerTransaction


@dataclass(frozen=True, slots=True)
class TransactionTerminated:
    transaction: ClientTransaction | ServerTransaction


Output = Transmit | RequestReceived | ResponseReceived | TransactionTimeout | TransactionTerminated


# -- transactions ---------------------------------------------------------------------------


@dataclass(eq=False)
class ClientTransaction:
    request: Request
    dest: Address
    key: tuple[str, ...]
    state: State
    is_invite: bool
    last_response: Response | None = None
    ack: Request | None = None
    retransmit_interval: float = 0.0
    # Opaque slot for the TU (e.g. the dialog or call leg this request belongs to).
    owner: object | None = None

    @property
    def branch(self) -> str:
        return self.key[0]


@dataclass(eq=False)
class ServerTransaction:
    request: Request
    source: Address
    key: tuple[str, ...]
    state: State
    is_invite: bool
    last_response: Response | None = None
    retransmit_interval: float = 0.0
    owner: object | None = None
    responded: bool = field(default=False)

    @property
    def method(self) -> str:
        return self.request.method


Transaction = ClientTransaction | ServerTransaction

_branch_counter = itertools.count(1)


def new_branch(entropy: str) -> str:
    """A branch unique across space and time (RFC 3261 §8.1.1.7); `entropy` comes from the
    caller (the sans-IO core has no randomness source of its own)."""
    return f"{MAGIC_COOKIE}-{entropy}-{next(_branch_counter)}"


def server_key(request: Request) -> tuple[str, ...]:
    """RFC 3261 §17.2.3 matching key, with the RFC 2543 fallback when the branch lacks the
    magic cookie (or is only the cookie, RFC 4475 §3.3.10 badbranch)."""
    via = request.top_via
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch or ""
    if branch.startswith(MAGIC_COOKIE) and len(branch) > len(MAGIC_COOKIE):
        return (branch, via.host.lower(), str(via.port or ""), method)
    # RFC 2543: Request-URI, To tag, From tag, Call-ID, CSeq number and top Via identify it.
    # An ACK carries the To tag of the response while the INVITE had none, so leave it out.
    to_tag = "" if method == "INVITE" else (request.to.tag or "")
    return (
        "2543",
        request.uri_text,
        to_tag,
        request.from_.tag or "",
        request.call_id,
        str(request.cseq.number),
        str(via),
        method,
    )


def client_key(branch: str, method: str) -> tuple[str, ...]:
    # RFC 3261 §17.1.3: branch of the top Via and the CSeq method.
    return (branch, "ACK" if method == "ACK" else method)


class TransactionLayer:
    """All transactions of one SIP element. Not thread-safe; one event loop drives it."""

    def __init__(self, timers: Timers | None = None, *, auto_trying: bool = True) -> None:
        self.timers = timers or Timers()
        # RFC 3261 §17.2.1: an INVITE server transaction sends 100 Trying unless the TU
        # answers within 200 ms; the layer does it at once when `auto_trying` is set.
        self.auto_trying = auto_trying
        self.clients: dict[tuple[str, ...], ClientTransaction] = {}
        self.servers: dict[tuple[str, ...], ServerTransaction] = {}
        self._deadlines: list[tuple[float, int, str, Transaction]] = []
        self._seq = itertools.count()
        # Transactions that got their final response and now only absorb retransmissions:
        # their messages' parsed forms are dropped once the TU is done with them (see
        # `_release_settled`).
        self._settled: list[Transaction] = []

    def _settle(self, txn: Transaction) -> None:
        self._settled.append(txn)

    def _release_settled(self) -> None:
        """Called as each message comes in, when the TU has finished with the last one.
        What a settled transaction still needs (its key, the last response to send again)
        does not depend on them; a TU that reads one of its messages again gets it parsed
        again."""
        for txn in self._settled:
            txn.request.release_parsed()
            if txn.last_response is not None:
                txn.last_response.release_parsed()
        self._settled.clear()

    # -- timers -----------------------------------------------------------------------------

    def _arm(self, txn: Transaction, name: str, at: float) -> None:
        heapq.heappush(self._deadlines, (at, next(self._seq), name, txn))

    def next_deadline(self) -> float | None:
        while self._deadlines and self._deadlines[0][3].state is State.TERMINATED:
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else None

    def expire(self, now: float) -> list[Output]:
        out: list[Output] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, name, txn = heapq.heappop(self._deadlines)
            if txn.state is State.TERMINATED:
                continue
            if isinstance(txn, ClientTransaction):
                self._client_timer(txn, name, now, out)
            else:
                self._server_timer(txn, name, now, out)
        return out

    # -- client side ------------------------------------------------------------------------

    def send_request(
        self, request: Request, dest: Address, now: float, *, owner: object | None = None
    ) -> tuple[ClientTransaction, list[Output]]:
        """Start a client transaction for `request` (which must carry its top Via with a
        fresh branch). ACK is never sent through here: use `transmit_ack`."""
        if request.method == "ACK":
            raise LocalProtocolError("ACK has no client transaction; use transmit_ack")
        branch = request.top_via.branch
        if not branch or not branch.startswith(MAGIC_COOKIE):
            raise LocalProtocolError("client requests need an RFC 3261 branch")
        key = client_key(branch, request.method)
        if key in self.clients:
            raise LocalProtocolError(f"branch {branch} already in use")
        is_invite = request.method == "INVITE"
        txn = ClientTransaction(
            request=request,
            dest=dest,
            key=key,
            state=State.CALLING if is_invite else State.TRYING,
            is_invite=is_invite,
            retransmit_interval=self.timers.t1,
            owner=owner,
        )
        self.clients[key] = txn
        if not dest.reliable:
            self._arm(txn, "A" if is_invite else "E", now + self.timers.t1)
        self._arm(txn, "B" if is_invite else "F", now + self.timers.b)
        return txn, [Transmit(request, dest)]

    def transmit_ack(self, ack: Request, dest: Address) -> list[Output]:
        """An ACK for a 2xx is the TU's, sent outside any transaction (RFC 3261 §13.2.2.4)."""
        return [Transmit(ack, dest)]

    def _client_timer(
        self, txn: ClientTransaction, name: str, now: float, out: list[Output]
    ) -> None:
        t = self.timers
        if name == "A" and txn.state is State.CALLING:
            out.append(Transmit(txn.request, txn.dest))
            txn.retransmit_interval *= 2  # §17.1.1.2: Timer A doubles, no cap
            self._arm(txn, "A", now + txn.retransmit_interval)
        elif name == "E" and txn.state in (State.TRYING, State.PROCEEDING):
            out.append(Transmit(txn.request, txn.dest))
            # §17.1.2.2: doubles up to T2 while Trying; T2 once Proceeding.
            if txn.state is State.TRYING:
                txn.retransmit_interval = min(2 * txn.retransmit_interval, t.t2)
            else:
                txn.retransmit_interval = t.t2
            self._arm(txn, "E", now + txn.retransmit_interval)
        elif (name == "B" and txn.state is State.CALLING) or (
            name == "F" and txn.state in (State.TRYING, State.PROCEEDING)
        ):
            # §17.1.1.2: Timer B only while Calling; once a provisional came, ending an INVITE
            # that never gets a final response is the TU's job (CANCEL, cf. Timer C §16.6).
            out.append(TransactionTimeout(txn))
            self._terminate(txn, out)
        elif name in ("D", "K", "M"):
            self._terminate(txn, out)

    def receive_response(self, response: Response, source: Address, now: float) -> list[Output]:
        if self._settled:
            self._release_settled()
        out: list[Output] = []
        via = response.top_via
        key = client_key(via.branch or "", response.cseq.method)
        txn = self.clients.get(key)
        if txn is None:
            # A 2xx retransmission after the transaction ended goes to the TU (§13.2.2.4);
            # anything else is dropped (§18.1.2).
            if response.is_success and response.cseq.method == "INVITE":
                out.append(ResponseReceived(response, source, None))
            return out
        status = response.status
        if txn.is_invite:
            self._invite_client_response(txn, response, source, now, out)
        else:
            if txn.state in (State.TRYING, State.PROCEEDING):
                txn.last_response = response
                if status < 200:
                    txn.state = State.PROCEEDING
                    out.append(ResponseReceived(response, source, txn))
                else:
                    txn.state = State.COMPLETED
                    out.append(ResponseReceived(response, source, txn))
                    self._arm(txn, "K", now + (0 if txn.dest.reliable else self.timers.t4))
                    self._settle(txn)
            # Completed: retransmissions of the final response are absorbed.
        return out

    def _invite_client_response(
        self,
        txn: ClientTransaction,
        response: Response,
        source: Address,
        now: float,
        out: list[Output],
    ) -> None:
        status = response.status
        if txn.state in (State.CALLING, State.PROCEEDING):
            txn.last_response = response
            if status < 200:
                txn.state = State.PROCEEDING
                out.append(ResponseReceived(response, source, txn))
            elif status < 300:
                # RFC 6026 §8.4: Accepted, so 2xx retransmissions still reach the TU.
                txn.state = State.ACCEPTED
                out.append(ResponseReceived(response, source, txn))
                self._arm(txn, "M", now + self.timers.b)
                self._settle(txn)
            else:
                txn.state = State.COMPLETED
                txn.ack = build_non2xx_ack(txn.request, response)
                out.append(Transmit(txn.ack, txn.dest))
                out.append(ResponseReceived(response, source, txn))
                self._arm(txn, "D", now + (0 if txn.dest.reliable else 32.0))
                self._settle(txn)
        elif txn.state is State.ACCEPTED:
            if response.is_success:
                out.append(ResponseReceived(response, source, txn))
        elif txn.state is State.COMPLETED and status >= 300 and txn.ack is not None:
            out.append(Transmit(txn.ack, txn.dest))  # §17.1.1.2: re-ACK retransmitted finals

    # -- server side ------------------------------------------------------------------------

    def receive_request(self, request: Request, source: Address, now: float) -> list[Output]:
        if self._settled:
            self._release_settled()
        out: list[Output] = []
        key = server_key(request)
        txn = self.servers.get(key)
        if request.method == "ACK":
            if txn is not None and txn.is_invite:
                if txn.state is State.COMPLETED:
                    txn.state = State.CONFIRMED  # §17.2.1: ACK for our non-2xx
                    self._arm(txn, "I", now + (0 if source.reliable else self.timers.t4))
                    return out
                if txn.state is State.CONFIRMED:
                    return out
            # ACK for a 2xx: not part of the INVITE transaction; the TU gets it.
            out.append(RequestReceived(request, source, None))
            return out
        if txn is not None:
            # A retransmission: resend the last response, if any (§17.2.1, §17.2.2).
            if txn.last_response is not None and txn.state in (
                State.PROCEEDING,
                State.COMPLETED,
            ):
                out.append(Transmit(txn.last_response, txn.source))
            return out
        is_invite = request.method == "INVITE"
        txn = ServerTransaction(
            request=request,
            # Where its responses go (RFC 3261 §18.2.2, RFC 3581 §4): the same connection for
            # a stream; over UDP the received address and the rport, else the Via's port.
            source=response_destination(request.top_via, source),
            key=key,
            state=State.PROCEEDING if is_invite else State.TRYING,
            is_invite=is_invite,
            retransmit_interval=self.timers.t1,
        )
        self.servers[key] = txn
        out.append(RequestReceived(request, source, txn))
        if is_invite and self.auto_trying:
            trying = make_response(request, 100)
            txn.last_response = trying
            out.insert(0, Transmit(trying, source))
        return out

    def find_invite_for_cancel(self, cancel: Request) -> ServerTransaction | None:
        """The INVITE server transaction a CANCEL targets (RFC 3261 §9.2)."""
        key = server_key(cancel)
        if key[0] == "2543":
            # RFC 2543 keys of an INVITE leave the To tag out (so its ACK matches); the CANCEL
            # of a re-INVITE carries the INVITE's To tag, so leave it out here too.
            key = (*key[:2], "", *key[3:])
        invite_key = (*key[:-1], "INVITE")
        txn = self.servers.get(invite_key)
        return txn if txn is not None and txn.state is not State.TERMINATED else None

    def send_response(self, txn: ServerTransaction, response: Response, now: float) -> list[Output]:
        out: list[Output] = []
        if txn.state in (State.COMPLETED, State.CONFIRMED, State.TERMINATED, State.ACCEPTED):
            if txn.state is State.ACCEPTED and response.is_success:
                # RFC 6026 §7.1: the TU's 2xx retransmissions pass through Accepted.
                out.append(Transmit(response, txn.source))
                return out
            raise LocalProtocolError(f"transaction already answered ({txn.state.value})")
        status = response.status
        txn.last_response = response
        txn.responded = True
        out.append(Transmit(response, txn.source))
        if status < 200:
            if txn.state is State.TRYING:
                txn.state = State.PROCEEDING
            return out
        reliable = txn.source.reliable
        if txn.is_invite:
            if status < 300:
                txn.state = State.ACCEPTED
                self._arm(txn, "L", now + self.timers.b)
            else:
                txn.state = State.COMPLETED
                if not reliable:
                    self._arm(txn, "G", now + self.timers.t1)
                self._arm(txn, "H", now + self.timers.b)
        else:
            txn.state = State.COMPLETED
            self._arm(txn, "J", now + (0 if reliable else self.timers.b))
        self._settle(txn)
        return out

    def _server_timer(
        self, txn: ServerTransaction, name: str, now: float, out: list[Output]
    ) -> None:
        if name == "G" and txn.state is State.COMPLETED and txn.last_response is not None:
            out.append(Transmit(txn.last_response, txn.source))
            txn.retransmit_interval = min(2 * txn.retransmit_interval, self.timers.t2)
            self._arm(txn, "G", now + txn.retransmit_interval)
        elif name == "H" and txn.state is State.COMPLETED:
            out.append(TransactionTimeout(txn))  # §17.2.1: the ACK never came
            self._terminate(txn, out)
        elif name in ("I", "J", "L"):
            self._terminate(txn, out)

    # -- shared -----------------------------------------------------------------------------

    def _terminate(self, txn: Transaction, out: list[Output]) -> None:
        if txn.state is State.TERMINATED:
            return
        txn.state = State.TERMINATED
        if isinstance(txn, ClientTransaction):
            self.clients.pop(txn.key, None)
        else:
            self.servers.pop(txn.key, None)
        out.append(TransactionTerminated(txn))

    def transport_error(self, txn: Transaction) -> list[Output]:
        """§17.1.1.2 / §17.2.4: a transport failure ends the transaction like a timeout."""
        out: list[Output] = [TransactionTimeout(txn)]
        self._terminate(txn, out)
        return out

    def __len__(self) -> int:
        return len(self.clients) + len(self.servers)


def build_non2xx_ack(invite: Request, response: Response) -> Request:
    """RFC 3261 §17.1.1.3: the ACK a client INVITE transaction sends for a 300-699."""
    headers: list[tuple[str, str]] = []
    for name, value in invite.headers:
        if name in ("Call-ID", "From", "Route", "Max-Forwards"):
            headers.append((name, value))
        elif name == "Via" and not any(n == "Via" for n, _ in headers):
            headers.append((name, _first_value(value)))
    to = response.get("To")
    if to is not None:
        headers.append(("To", to))
    headers.append(("CSeq", f"{invite.cseq.number} ACK"))
    return Request("ACK", invite.uri_text, headers)


def build_cancel(invite: Request) -> Request:
    """RFC 3261 §9.1: CANCEL with the INVITE's Request-URI, top Via, Call-ID, From, To, Route
    and CSeq number."""
    headers: list[tuple[str, str]] = []
    for name, value in invite.headers:
        if name in ("Call-ID", "From", "To", "Route", "Max-Forwards"):
            headers.append((name, value))
        elif name == "Via" and not any(n == "Via" for n, _ in headers):
            headers.append((name, _first_value(value)))
    headers.append(("CSeq", f"{invite.cseq.number} CANCEL"))
    return Request("CANCEL", invite.uri_text, headers)


def _first_value(value: str) -> str:
    return split_commas(value)[0]


def outputs_of(kind: type, outputs: Iterable[Output]) -> list[Output]:
    """Test helper: the outputs of one type."""
    return [o for o in outputs if isinstance(o, kind)]
