"""SipEndpoint: the asyncio driver of the transaction layer (timers on the loop, TU events,
ids, RFC 3263-without-DNS resolution), with a recording transport and over real loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from app.net.endpoint import SipEndpoint
from app.net.transport import SipTransport
from app.sip.address import Address
from app.sip.message import Request, Response, make_response
from app.sip.transaction import MAGIC_COOKIE, ClientTransaction, ServerTransaction, Timers
from app.sip.uri import SipUri
from tests.support.ports import free_port

HOST = "127.0.0.1"
WAIT = 10.0  # generous: the suite runs on a loaded 2-core machine
FAST = Timers(t1=0.02, t2=0.08, t4=0.1)  # 64*T1 = 1.28 s
PEER = Address("UDP", HOST, 5999)


class Wire:
    """A transport that records what the endpoint sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[Request | Response, Address]] = []

    def send(self, message: Request | Response, dest: Address) -> None:
        self.sent.append((message, dest))


class Recorder:
    """A TransactionUser that records its events; `reply` answers requests."""

    def __init__(self) -> None:
        self.requests: list[tuple[Request, Address, ServerTransaction | None]] = []
        self.responses: list[tuple[Response, ClientTransaction | None]] = []
        self.timeouts: list[ClientTransaction | ServerTransaction] = []
        self.reply: Callable[[Request, ServerTransaction | None], None] | None = None
        self.fail = False

    def on_request(self, request: Request, source: Address, txn: ServerTransaction | None) -> None:
        if self.fail:
            raise RuntimeError("TU bug")
        self.requests.append((request, source, txn))
        if self.reply is not None:
            self.reply(request, txn)

    def on_response(
        self, response: Response, source: Address, txn: ClientTransaction | None
    ) -> None:
        self.responses.append((response, txn))

    def on_timeout(self, txn: ClientTransaction | ServerTransaction) -> None:
        self.timeouts.append(txn)


async def until(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def options(
    ep: SipEndpoint, target: str = f"sip:peer@{HOST}:5999", *, transport: str = "UDP"
) -> Request:
    return Request(
        "OPTIONS",
        target,
        [
            ("Via", ep.via(transport)),
            ("Max-Forwards", "70"),
            ("From", f"<sip:ep@{HOST}>;tag={ep.new_tag()}"),
            ("To", f"<{target}>"),
            ("Call-ID", ep.new_call_id()),
            ("CSeq", "1 OPTIONS"),
        ],
    )


def make(timers: Timers = FAST) -> tuple[SipEndpoint, Wire, Recorder]:
    wire = Wire()
    ep = SipEndpoint(wire, HOST, 5070, timers=timers)
    tu = Recorder()
    ep.user = tu
    return ep, wire, tu


# -- with a recording transport -----------------------------------------------------------------


async def test_retransmits_on_the_loop_clock_then_times_out() -> None:
    ep, wire, tu = make()
    req = options(ep)
    txn = ep.send_request(req, PEER)
    assert wire.sent == [(req, PEER)]
    await until(lambda: bool(tu.timeouts))
    # Timer E ran on the loop: several retransmissions, then Timer F (64*T1) told the TU.
    assert tu.timeouts == [txn]
    assert 5 <= len(wire.sent) <= 40 and all(m is req for m, _ in wire.sent)
    assert len(ep.layer) == 0
    ep.close()


async def test_response_stops_retransmission_and_reaches_the_tu() -> None:
    ep, wire, tu = make()
    req = options(ep)
    txn = ep.send_request(req, PEER)
    ep.receive(make_response(req, 200, to_tag="x"), PEER)
    assert [(r.status, t) for r, t in tu.responses] == [(200, txn)]
    await asyncio.sleep(FAST.t1 * 6)
    assert len(wire.sent) == 1  # no retransmission after the final response
    await until(lambda: len(ep.layer) == 0)  # Timer K ran
    assert tu.timeouts == []
    ep.close()


async def test_incoming_invite_gets_100_and_the_tu_answers() -> None:
    ep, wire, tu = make()
    tu.reply = lambda req, txn: (
        ep.send_response(txn, make_response(req, 486, to_tag="t")) if txn is not None else None
    )
    invite = options(ep)
    invite.method = "INVITE"
    invite.set("CSeq", "1 INVITE")
    ep.receive(invite, PEER)
    statuses = [m.status for m, _ in wire.sent if isinstance(m, Response)]
    assert statuses[:2] == [100, 486]
    # Timer G retransmits the 486 until the ACK; Timer H then gives up and tells the TU.
    await until(lambda: bool(tu.timeouts))
    assert sum(1 for m, _ in wire.sent if isinstance(m, Response) and m.status == 486) > 3
    ep.close()


async def test_a_screened_request_makes_no_transaction_and_no_answer() -> None:
    ep, wire, tu = make()
    seen: list[Address] = []

    def screen(request: Request, source: Address) -> bool:
        seen.append(source)
        return source != PEER

    ep.screen = screen
    invite = options(ep)
    invite.method = "INVITE"
    invite.set("CSeq", "1 INVITE")
    ep.receive(invite, PEER)
    assert seen == [PEER]
    assert wire.sent == [] and tu.requests == [] and len(ep.layer) == 0  # not even 100 Trying
    ep.receive(make_response(options(ep), 200, to_tag="r"), PEER)  # responses are not screened
    assert seen == [PEER]
    other = Address("UDP", HOST, 5998)
    ep.receive(invite, other)
    assert [s for _, s, _ in tu.requests] == [other]
    ep.close()


async def test_timers_follow_an_injected_clock() -> None:
    """Deadlines are on the endpoint's clock: with a clock far from the loop's, the
    retransmissions still come T1 apart in real time."""
    loop = asyncio.get_running_loop()
    wire = Wire()
    ep = SipEndpoint(wire, HOST, 5070, timers=FAST, clock=lambda: loop.time() + 1000.0)
    ep.user = Recorder()
    ep.send_request(options(ep), PEER)
    await until(lambda: len(wire.sent) >= 3)
    ep.close()


async def test_tu_exceptions_do_not_break_the_endpoint() -> None:
    ep, _, tu = make()
    tu.fail = True
    ep.receive(options(ep), PEER)  # logged, not raised
    tu.fail = False
    req = options(ep)
    ep.receive(req, PEER)
    assert tu.requests and tu.requests[-1][0] is req
    ep.close()


async def test_send_response_on_an_answered_transaction_is_dropped() -> None:
    ep, wire, tu = make()
    req = options(ep)
    ep.receive(req, PEER)
    txn = tu.requests[0][2]
    assert txn is not None
    ep.send_response(txn, make_response(req, 200, to_tag="a"))
    ep.send_response(txn, make_response(req, 500, to_tag="a"))  # logged, not raised
    assert [m.status for m, _ in wire.sent if isinstance(m, Response)] == [200]
    ep.close()


async def test_without_a_user_outputs_are_still_sent() -> None:
    wire = Wire()
    ep = SipEndpoint(wire, HOST, 5070, timers=FAST)
    invite = options(ep)
    invite.method = "INVITE"
    invite.set("CSeq", "1 INVITE")
    ep.receive(invite, PEER)
    assert [m.status for m, _ in wire.sent if isinstance(m, Response)] == [100]
    ep.close()


def test_ids_and_via() -> None:
    ep = SipEndpoint(Wire(), "192.0.2.5", 5070)
    via = ep.via("TCP")
    assert via.startswith("SIP/2.0/TCP 192.0.2.5:5070;rport;branch=" + MAGIC_COOKIE)
    assert len({ep.new_branch() for _ in range(100)}) == 100
    assert len({ep.new_tag() for _ in range(100)}) == 100
    assert ep.new_call_id().endswith("@192.0.2.5")


def test_resolve_without_dns() -> None:
    ep = SipEndpoint(Wire(), HOST, 5070, host_map={"home1.net": ("127.0.0.1", 6060)})
    assert ep.resolve(SipUri.parse("sip:u@home1.net")) == Address("UDP", HOST, 6060)
    assert ep.resolve(SipUri.parse("sip:u@HOME1.net:7000;transport=tcp")) == Address(
        "TCP", HOST, 7000
    )
    assert ep.resolve(SipUri.parse("sip:u@192.0.2.9")) == Address("UDP", "192.0.2.9", 5060)
    assert ep.resolve(SipUri.parse("sip:u@[2001:db8::1]:5080"), "tcp") == Address(
        "TCP", "2001:db8::1", 5080
    )
    # maddr overrides the host (RFC 3261 §19.1.1).
    assert ep.resolve(SipUri.parse("sip:u@example.com;maddr=192.0.2.7")) == Address(
        "UDP", "192.0.2.7", 5060
    )


def test_stateless_response_goes_where_the_via_says() -> None:
    wire = Wire()
    ep = SipEndpoint(wire, HOST, 5070)
    req = Request(
        "BYE",
        "sip:x@127.0.0.1",
        [
            ("Via", "SIP/2.0/UDP 10.0.0.1:5062;rport=40000;received=192.0.2.44;branch=z9hG4bK-1"),
            ("From", "<sip:a@b>;tag=1"),
            ("To", "<sip:c@d>;tag=2"),
            ("Call-ID", "c"),
            ("CSeq", "2 BYE"),
        ],
    )
    ep.send_response_stateless(make_response(req, 200))
    # RFC 3581 §4: received and rport.
    assert wire.sent[0][1] == Address("UDP", "192.0.2.44", 40000)


# -- two endpoints over real loopback sockets -----------------------------------------------------


class Node:
    def __init__(self, transport: SipTransport, ep: SipEndpoint, tu: Recorder) -> None:
        self.transport, self.ep, self.tu = transport, ep, tu


@pytest.fixture
async def nodes() -> AsyncIterator[tuple[Node, Node]]:
    out: list[Node] = []
    try:
        for _ in range(2):
            transport = SipTransport(HOST, free_port())
            await transport.start()
            ep = SipEndpoint(transport, HOST, transport.port, timers=FAST)
            tu = Recorder()
            ep.user = tu
            transport.on_message = ep.receive
            out.append(Node(transport, ep, tu))
        yield out[0], out[1]
    finally:
        for node in out:
            node.ep.close()
            await node.transport.stop()


@pytest.mark.parametrize("transport", ["UDP", "TCP"])
async def test_request_and_response_over_loopback(nodes: tuple[Node, Node], transport: str) -> None:
    a, b = nodes

    def answer(req: Request, txn: ServerTransaction | None) -> None:
        assert txn is not None
        b.ep.send_response(txn, make_response(req, 200, to_tag="b"))

    b.tu.reply = answer
    req = options(a.ep, f"sip:b@{HOST}:{b.transport.port}", transport=transport)
    txn = a.ep.send_request(req, Address(transport, HOST, b.transport.port))
    await until(lambda: bool(a.tu.responses))
    resp, got_txn = a.tu.responses[0]
    assert resp.status == 200 and got_txn is txn
    ((received, source, _),) = b.tu.requests
    assert source.transport == transport
    # The server transport stamped received/rport into the top Via (RFC 3581 §4): the port
    # the request came from (over TCP an ephemeral one, and the response used that connection).
    assert received.top_via.rport == source.port
    if transport == "UDP":
        assert source.port == a.transport.port
