"""The four RFC 3261 §17 transaction machines (with RFC 6026 Accepted) on a fake clock.

Time is the float passed to every call, so each test walks a machine through its timers
exactly: `expire(t)` at the instants RFC 3261 Table 4 names, and nothing in between.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app.sip.address import Address
from app.sip.errors import LocalProtocolError
from app.sip.message import Request, Response, make_response, parse_datagram
from app.sip.transaction import (
    MAGIC_COOKIE,
    ClientTransaction,
    Output,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    State,
    Timers,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimeout,
    Transmit,
    build_cancel,
    build_non2xx_ack,
    new_branch,
    outputs_of,
    server_key,
)

UAS = Address("UDP", "127.0.0.1", 5070)
UAC = Address("UDP", "127.0.0.1", 5060)
UAS_TCP = Address("TCP", "127.0.0.1", 5070)
UAC_TCP = Address("TCP", "127.0.0.1", 40001, connection=7)
T = Timers()  # T1 0.5, T2 4, T4 5
VECTORS = Path(__file__).resolve().parents[3].parent / "shared" / "vectors" / "rfc4475"


def request(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bK-1",
    cseq: int = 1,
    cseq_method: str | None = None,
    to_tag: str | None = None,
    transport: str = "UDP",
    via_host: str = "127.0.0.1:5060",
    routes: tuple[str, ...] = (),
    body: bytes = b"",
) -> Request:
    branch_param = f";branch={branch}" if branch is not None else ""
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} sip:bob@example.com SIP/2.0",
        f"Via: SIP/2.0/{transport} {via_host}{branch_param}",
        "Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bK-proxy",
        "Max-Forwards: 70",
        *(f"Route: {r}" for r in routes),
        "From: <sip:alice@example.com>;tag=a1",
        f"To: {to}",
        "Call-ID: call-1@example.com",
        f"CSeq: {cseq} {cseq_method or method}",
        "Contact: <sip:alice@127.0.0.1:5060>",
        f"Content-Length: {len(body)}",
        "",
        "",
    ]
    return parse_request("\r\n".join(lines).encode() + body)


def response_to(req: Request, status: int, *, to_tag: str | None = "b1") -> Response:
    """A response as the peer sends it: serialized and parsed again, like off the wire."""
    resp = make_response(req, status, to_tag=to_tag if status > 100 else None)
    parsed = parse_datagram(bytes(resp))
    assert isinstance(parsed, Response)
    return parsed


def wire(msg: Request | Response) -> Request:
    """A request as received: serialized and parsed again."""
    parsed = parse_datagram(bytes(msg))
    assert isinstance(parsed, Request)
    return parsed


def parse_request(data: bytes) -> Request:
    parsed = parse_datagram(data)
    assert isinstance(parsed, Request)
    return parsed


def st(txn: ClientTransaction | ServerTransaction) -> State:
    """The state, read through a call so mypy does not narrow it across transitions."""
    return txn.state


def sent(outputs: list[Output]) -> list[Request | Response]:
    return [o.message for o in outputs if isinstance(o, Transmit)]


def kinds(outputs: list[Output]) -> list[str]:
    return [type(o).__name__ for o in outputs]


def run_until(layer: TransactionLayer, end: float) -> list[tuple[float, Output]]:
    """Fire every deadline up to `end`, at its own instant; (time, output) pairs."""
    out: list[tuple[float, Output]] = []
    while True:
        deadline = layer.next_deadline()
        if deadline is None or deadline > end:
            return out
        out += [(deadline, o) for o in layer.expire(deadline)]


def transmit_times(events: list[tuple[float, Output]]) -> list[float]:
    return [round(t, 6) for t, o in events if isinstance(o, Transmit)]


# -- INVITE client (RFC 3261 §17.1.1, RFC 6026 §8.4) ----------------------------------------


def test_invite_client_timer_a_doubles_and_b_times_out() -> None:
    layer = TransactionLayer()
    inv = request()
    txn, out = layer.send_request(inv, UAS, 0.0)
    assert sent(out) == [inv] and st(txn) is State.CALLING
    events = run_until(layer, 40.0)
    # §17.1.1.2: retransmits at T1, 3T1, 7T1 ... (interval doubling without a cap) until
    # Timer B (64*T1 = 32 s): 0.5, 1.5, 3.5, 7.5, 15.5, 31.5.
    assert transmit_times(events) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert all(o.message is inv for _, o in events if isinstance(o, Transmit))
    timeouts = [(t, o) for t, o in events if isinstance(o, TransactionTimeout)]
    assert len(timeouts) == 1 and timeouts[0][0] == pytest.approx(32.0)
    assert timeouts[0][1].transaction is txn
    assert st(txn) is State.TERMINATED and len(layer) == 0
    assert layer.next_deadline() is None


def test_invite_client_provisional_stops_retransmissions() -> None:
    layer = TransactionLayer()
    inv = request()
    txn, _ = layer.send_request(inv, UAS, 0.0)
    layer.expire(0.5)  # one retransmission
    out = layer.receive_response(response_to(inv, 180), UAS, 0.7)
    assert kinds(out) == ["ResponseReceived"] and st(txn) is State.PROCEEDING
    # Timer A no longer retransmits once Proceeding (§17.1.1.2).
    events = run_until(layer, 20.0)
    assert transmit_times(events) == []
    # A 100 Trying moves it to Proceeding as well, and further 1xx go to the TU.
    out = layer.receive_response(response_to(inv, 183), UAS, 21.0)
    assert kinds(out) == ["ResponseReceived"]


def test_invite_client_2xx_accepted_then_timer_m() -> None:
    layer = TransactionLayer()
    inv = request()
    txn, _ = layer.send_request(inv, UAS, 0.0)
    ok = response_to(inv, 200)
    out = layer.receive_response(ok, UAS, 0.2)
    # RFC 6026 §8.4: Accepted, the 2xx goes to the TU, no ACK from the transaction.
    assert kinds(out) == ["ResponseReceived"] and st(txn) is State.ACCEPTED
    assert sent(out) == []
    # 2xx retransmissions (possibly from forks) keep reaching the TU so it re-ACKs.
    again = layer.receive_response(ok, UAS, 1.0)
    assert kinds(again) == ["ResponseReceived"]
    assert isinstance(again[0], ResponseReceived) and again[0].transaction is txn
    # A non-2xx final in Accepted is discarded.
    assert layer.receive_response(response_to(inv, 486), UAS, 1.5) == []
    # No retransmission of the INVITE from Accepted; Timer M = 64*T1 after the 2xx.
    events = run_until(layer, 40.0)
    assert transmit_times(events) == []
    terminated = [t for t, o in events if isinstance(o, TransactionTerminated)]
    assert terminated == [pytest.approx(0.2 + 32.0)]
    # After M, a stray 2xx still reaches the TU, without a transaction (§13.2.2.4).
    stray = layer.receive_response(ok, UAS, 50.0)
    assert len(stray) == 1 and isinstance(stray[0], ResponseReceived)
    assert stray[0].transaction is None


def test_invite_client_non2xx_builds_ack_and_reacks_until_timer_d() -> None:
    layer = TransactionLayer()
    inv = request(routes=("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"))
    txn, _ = layer.send_request(inv, UAS, 0.0)
    busy = response_to(inv, 486)
    out = layer.receive_response(busy, UAS, 0.1)
    assert st(txn) is State.COMPLETED
    acks = sent(out)
    assert len(acks) == 1 and isinstance(acks[0], Request)
    ack = wire(acks[0])
    # §17.1.1.3: same Request-URI, Call-ID, From, CSeq number and top Via (only that one) as
    # the INVITE; To from the response (its tag); Route headers of the INVITE; method ACK.
    assert ack.method == "ACK" and ack.uri_text == inv.uri_text
    assert ack.call_id == inv.call_id and ack.from_.tag == "a1"
    assert ack.to.tag == "b1"
    assert (ack.cseq.number, ack.cseq.method) == (1, "ACK")
    assert [str(v) for v in ack.vias] == [str(inv.top_via)]
    assert [str(r) for r in ack.routes] == [str(r) for r in inv.routes]
    assert ack.get("Contact") is None and ack.body == b""
    assert build_non2xx_ack(inv, busy).headers == acks[0].headers
    # The TU hears of the final response once.
    assert next(o for o in out if isinstance(o, ResponseReceived)).response is busy
    # Every retransmission of the final response is answered with the same ACK, and not
    # passed up (§17.1.1.2).
    out2 = layer.receive_response(busy, UAS, 2.0)
    assert sent(out2) == [acks[0]] and outputs_of(ResponseReceived, out2) == []
    # Timer D: at least 32 s over UDP.
    events = run_until(layer, 31.0)
    assert not any(isinstance(o, TransactionTerminated) for _, o in events)
    events = run_until(layer, 40.0)
    assert [t for t, o in events if isinstance(o, TransactionTerminated)] == [pytest.approx(32.1)]
    assert len(layer) == 0


def test_invite_client_in_proceeding_waits_for_its_tu() -> None:
    """RFC 3261 §17.1.1.2 fires Timer B only in Calling: once a 1xx came, retransmissions stop
    and the transaction waits for a final response or the TU's CANCEL (the focus rings a
    dial-out for a limited time, then cancels)."""
    layer = TransactionLayer()
    inv = request()
    txn, _ = layer.send_request(inv, UAS, 0.0)
    layer.receive_response(response_to(inv, 100), UAS, 0.1)
    events = run_until(layer, 40.0)
    assert transmit_times(events) == []
    assert not any(isinstance(o, TransactionTimeout) for _, o in events)
    assert st(txn) is State.PROCEEDING


# -- non-INVITE client (§17.1.2) --------------------------------------------------------------


def test_non_invite_client_timer_e_doubles_to_t2_then_f() -> None:
    layer = TransactionLayer()
    opt = request("OPTIONS")
    txn, out = layer.send_request(opt, UAS, 0.0)
    assert sent(out) == [opt] and st(txn) is State.TRYING
    events = run_until(layer, 40.0)
    # §17.1.2.2: intervals T1, 2T1, 4T1, then T2 (4 s) until Timer F at 64*T1.
    expected = [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert transmit_times(events) == expected
    timeouts = [t for t, o in events if isinstance(o, TransactionTimeout)]
    assert timeouts == [pytest.approx(32.0)]
    assert st(txn) is State.TERMINATED


def test_non_invite_client_proceeding_retransmits_every_t2() -> None:
    layer = TransactionLayer()
    opt = request("OPTIONS")
    txn, _ = layer.send_request(opt, UAS, 0.0)
    out = layer.receive_response(response_to(opt, 100), UAS, 0.2)
    assert st(txn) is State.PROCEEDING and kinds(out) == ["ResponseReceived"]
    events = run_until(layer, 12.0)
    # The retransmission armed at T1 (0.5) still fires; from then on every T2.
    assert transmit_times(events) == [0.5, 4.5, 8.5]


def test_non_invite_client_final_then_timer_k_absorbs_retransmissions() -> None:
    layer = TransactionLayer()
    opt = request("OPTIONS")
    txn, _ = layer.send_request(opt, UAS, 0.0)
    ok = response_to(opt, 200)
    out = layer.receive_response(ok, UAS, 0.3)
    assert st(txn) is State.COMPLETED and kinds(out) == ["ResponseReceived"]
    assert layer.receive_response(ok, UAS, 1.0) == []  # absorbed in Completed
    events = run_until(layer, 10.0)
    assert transmit_times(events) == []  # no more request retransmissions
    assert [t for t, o in events if isinstance(o, TransactionTerminated)] == [
        pytest.approx(0.3 + T.t4)
    ]


# -- INVITE server (§17.2.1, RFC 6026 §7.1) ---------------------------------------------------


def test_invite_server_sends_100_and_answers_retransmissions_with_last_provisional() -> None:
    layer = TransactionLayer()
    inv = request()
    out = layer.receive_request(inv, UAC, 0.0)
    trying = sent(out)
    assert len(trying) == 1 and isinstance(trying[0], Response) and trying[0].status == 100
    received = outputs_of(RequestReceived, out)
    assert len(received) == 1 and isinstance(received[0], RequestReceived)
    txn = received[0].transaction
    assert txn is not None and st(txn) is State.PROCEEDING
    # A retransmitted INVITE gets the 100 again and is not passed to the TU.
    again = layer.receive_request(wire(inv), UAC, 0.5)
    assert sent(again) == [trying[0]] and outputs_of(RequestReceived, again) == []
    ringing = make_response(inv, 180, to_tag="b1")
    assert sent(layer.send_response(txn, ringing, 1.0)) == [ringing]
    assert sent(layer.receive_request(wire(inv), UAC, 1.5)) == [ringing]
    # No timers run while Proceeding: the TU decides when to answer.
    assert layer.next_deadline() is None


def test_invite_server_without_auto_trying() -> None:
    layer = TransactionLayer(auto_trying=False)
    out = layer.receive_request(request(), UAC, 0.0)
    assert kinds(out) == ["RequestReceived"]
    # Nothing sent yet, so a retransmission gets nothing either.
    assert layer.receive_request(request(), UAC, 0.5) == []


def _server_txn(layer: TransactionLayer, req: Request, source: Address) -> ServerTransaction:
    out = layer.receive_request(req, source, 0.0)
    got = outputs_of(RequestReceived, out)
    assert len(got) == 1 and isinstance(got[0], RequestReceived)
    txn = got[0].transaction
    assert txn is not None
    return txn


def test_invite_server_non2xx_timer_g_capped_at_t2_then_h() -> None:
    layer = TransactionLayer()
    inv = request()
    txn = _server_txn(layer, inv, UAC)
    busy = make_response(inv, 486, to_tag="b1")
    assert sent(layer.send_response(txn, busy, 0.0)) == [busy]
    assert st(txn) is State.COMPLETED
    events = run_until(layer, 40.0)
    # §17.2.1: Timer G fires at T1, then doubles up to T2: 0.5, 1.5, 3.5, 7.5, 11.5 ...
    expected = [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert transmit_times(events) == expected
    assert all(o.message is busy for _, o in events if isinstance(o, Transmit))
    # Timer H (64*T1): no ACK came; the TU is told.
    timeouts = [(t, o) for t, o in events if isinstance(o, TransactionTimeout)]
    assert [t for t, _ in timeouts] == [pytest.approx(32.0)]
    assert timeouts[0][1].transaction is txn and st(txn) is State.TERMINATED


def test_invite_server_ack_confirms_and_timer_i() -> None:
    layer = TransactionLayer()
    inv = request()
    txn = _server_txn(layer, inv, UAC)
    busy = make_response(inv, 486, to_tag="b1")
    layer.send_response(txn, busy, 0.0)
    layer.expire(0.5)  # one G retransmission
    # The ACK for a non-2xx has the INVITE's branch (§17.1.1.3) and so matches (§17.2.3).
    ack = wire(build_non2xx_ack(inv, response_to(inv, 486)))
    out = layer.receive_request(ack, UAC, 0.8)
    assert out == [] and st(txn) is State.CONFIRMED
    # Confirmed absorbs further ACKs, and Timer G no longer fires.
    assert layer.receive_request(ack, UAC, 1.0) == []
    events = run_until(layer, 20.0)
    assert transmit_times(events) == []
    # Timer I = T4 over UDP.
    assert [t for t, o in events if isinstance(o, TransactionTerminated)] == [
        pytest.approx(0.8 + T.t4)
    ]
    assert not any(isinstance(o, TransactionTimeout) for _, o in events)


def test_invite_server_2xx_accepted_timer_l_and_tu_retransmissions() -> None:
    layer = TransactionLayer()
    inv = request()
    txn = _server_txn(layer, inv, UAC)
    ok = make_response(inv, 200, to_tag="b1")
    assert sent(layer.send_response(txn, ok, 0.0)) == [ok]
    assert st(txn) is State.ACCEPTED
    # RFC 6026 §7.1: the TU's 2xx retransmissions (§13.3.1.4) go out through Accepted ...
    assert sent(layer.send_response(txn, ok, 0.5)) == [ok]
    # ... a retransmitted INVITE is absorbed (the TU retransmits the 2xx itself) ...
    assert layer.receive_request(wire(inv), UAC, 0.6) == []
    # ... the ACK for the 2xx (a new branch) is the TU's, outside the transaction ...
    ack = request("ACK", branch="z9hG4bK-ack2xx", to_tag="b1", cseq_method="ACK")
    out = layer.receive_request(ack, UAC, 0.7)
    assert len(out) == 1 and isinstance(out[0], RequestReceived)
    assert out[0].transaction is None
    # ... and the layer never retransmits the 2xx by itself.
    events = run_until(layer, 40.0)
    assert transmit_times(events) == []
    assert [t for t, o in events if isinstance(o, TransactionTerminated)] == [pytest.approx(32.0)]
    # A non-2xx after a 2xx is refused.
    with pytest.raises(LocalProtocolError):
        layer.send_response(txn, make_response(inv, 500), 50.0)


def test_invite_server_refuses_second_final() -> None:
    layer = TransactionLayer()
    inv = request()
    txn = _server_txn(layer, inv, UAC)
    layer.send_response(txn, make_response(inv, 486, to_tag="b1"), 0.0)
    with pytest.raises(LocalProtocolError):
        layer.send_response(txn, make_response(inv, 200, to_tag="b1"), 0.1)


# -- non-INVITE server (§17.2.2) --------------------------------------------------------------


def test_non_invite_server_retransmission_gets_last_response_then_timer_j() -> None:
    layer = TransactionLayer()
    bye = request("BYE", to_tag="b1", cseq=2)
    txn = _server_txn(layer, bye, UAC)
    assert st(txn) is State.TRYING
    # Trying: a retransmission is absorbed (nothing to resend yet).
    assert layer.receive_request(wire(bye), UAC, 0.2) == []
    ok = make_response(bye, 200)
    assert sent(layer.send_response(txn, ok, 0.3)) == [ok]
    assert st(txn) is State.COMPLETED
    assert sent(layer.receive_request(wire(bye), UAC, 1.0)) == [ok]
    # No retransmission timer on the server side; Timer J = 64*T1 over UDP.
    events = run_until(layer, 40.0)
    assert transmit_times(events) == []
    assert [t for t, o in events if isinstance(o, TransactionTerminated)] == [pytest.approx(32.3)]
    # After J, a late retransmission is a new request for the TU.
    again = layer.receive_request(wire(bye), UAC, 41.0)
    assert kinds(again) == ["RequestReceived"]


def test_non_invite_server_provisional_then_final() -> None:
    layer = TransactionLayer()
    sub = request("SUBSCRIBE")
    txn = _server_txn(layer, sub, UAC)
    trying = make_response(sub, 100)
    layer.send_response(txn, trying, 0.0)
    assert st(txn) is State.PROCEEDING
    assert sent(layer.receive_request(wire(sub), UAC, 0.1)) == [trying]
    ok = make_response(sub, 200, to_tag="b1")
    layer.send_response(txn, ok, 0.2)
    assert sent(layer.receive_request(wire(sub), UAC, 0.3)) == [ok]


# -- reliable transports (§17.1.1.2, §17.1.2.2, §17.2.1, §17.2.2) ------------------------------


def test_reliable_invite_client_no_retransmissions_and_d_zero() -> None:
    layer = TransactionLayer()
    inv = request(transport="TCP")
    txn, _ = layer.send_request(inv, UAS_TCP, 0.0)
    events = run_until(layer, 20.0)
    assert transmit_times(events) == []  # no Timer A over TCP
    out = layer.receive_response(response_to(inv, 404), UAS_TCP, 21.0)
    assert len(sent(out)) == 1  # the ACK
    # Timer D = 0: terminated at once.
    assert [o for o in layer.expire(21.0) if isinstance(o, TransactionTerminated)]
    assert st(txn) is State.TERMINATED


def test_reliable_invite_client_timer_b_still_runs() -> None:
    layer = TransactionLayer()
    txn, _ = layer.send_request(request(transport="TCP"), UAS_TCP, 0.0)
    events = run_until(layer, 40.0)
    assert [t for t, o in events if isinstance(o, TransactionTimeout)] == [pytest.approx(32.0)]
    assert st(txn) is State.TERMINATED


def test_reliable_non_invite_client_no_e_and_k_zero() -> None:
    layer = TransactionLayer()
    opt = request("OPTIONS", transport="TCP")
    txn, _ = layer.send_request(opt, UAS_TCP, 0.0)
    assert transmit_times(run_until(layer, 10.0)) == []
    layer.receive_response(response_to(opt, 200), UAS_TCP, 10.0)
    assert st(txn) is State.COMPLETED
    assert kinds(layer.expire(10.0)) == ["TransactionTerminated"]


def test_reliable_invite_server_no_g_and_i_zero() -> None:
    layer = TransactionLayer()
    inv = request(transport="TCP")
    txn = _server_txn(layer, inv, UAC_TCP)
    busy = make_response(inv, 486, to_tag="b1")
    layer.send_response(txn, busy, 0.0)
    assert transmit_times(run_until(layer, 10.0)) == []  # no Timer G
    layer.receive_request(wire(build_non2xx_ack(inv, response_to(inv, 486))), UAC_TCP, 10.0)
    assert st(txn) is State.CONFIRMED
    assert kinds(layer.expire(10.0)) == ["TransactionTerminated"]  # Timer I = 0


def test_reliable_invite_server_timer_h_still_runs() -> None:
    layer = TransactionLayer()
    inv = request(transport="TCP")
    txn = _server_txn(layer, inv, UAC_TCP)
    layer.send_response(txn, make_response(inv, 486, to_tag="b1"), 0.0)
    events = run_until(layer, 40.0)
    assert [t for t, o in events if isinstance(o, TransactionTimeout)] == [pytest.approx(32.0)]


def test_reliable_non_invite_server_j_zero() -> None:
    layer = TransactionLayer()
    bye = request("BYE", transport="TCP", to_tag="b1")
    txn = _server_txn(layer, bye, UAC_TCP)
    layer.send_response(txn, make_response(bye, 200), 1.0)
    assert kinds(layer.expire(1.0)) == ["TransactionTerminated"]
    assert st(txn) is State.TERMINATED


# -- configurable timers ----------------------------------------------------------------------


def test_t1_t2_t4_are_configurable() -> None:
    timers = Timers(t1=0.1, t2=0.4, t4=0.7)
    assert timers.b == pytest.approx(6.4)
    layer = TransactionLayer(timers)
    opt = request("OPTIONS")
    layer.send_request(opt, UAS, 0.0)
    events = run_until(layer, 1.6)
    # E: 0.1, 0.2 (doubled), 0.4 (capped at the new T2), 0.4 ...
    assert transmit_times(events) == [0.1, 0.3, 0.7, 1.1, 1.5]
    layer.receive_response(response_to(opt, 200), UAS, 2.0)
    events = run_until(layer, 10.0)
    assert [t for t, o in events if isinstance(o, TransactionTerminated)] == [
        pytest.approx(2.7)  # K = the new T4
    ]
    inv_layer = TransactionLayer(timers)
    inv_layer.send_request(request(), UAS, 0.0)
    events = run_until(inv_layer, 10.0)
    assert [t for t, o in events if isinstance(o, TransactionTimeout)] == [pytest.approx(6.4)]


# -- matching (§17.1.3, §17.2.3, §9.2) --------------------------------------------------------


def test_client_matching_by_branch_and_cseq_method() -> None:
    layer = TransactionLayer()
    inv = request(branch="z9hG4bK-x")
    txn, _ = layer.send_request(inv, UAS, 0.0)
    # A CANCEL shares the INVITE's branch (§9.1) but is its own transaction (§17.1.3).
    cancel = build_cancel(inv)
    ctxn, _ = layer.send_request(cancel, UAS, 0.1)
    assert ctxn is not txn
    out = layer.receive_response(response_to(cancel, 200), UAS, 0.2)
    assert outputs_of(ResponseReceived, out)[0].transaction is ctxn  # type: ignore[union-attr]
    assert st(txn) is State.CALLING
    out = layer.receive_response(response_to(inv, 487), UAS, 0.3)
    assert st(txn) is State.COMPLETED
    assert outputs_of(ResponseReceived, out)[0].transaction is txn  # type: ignore[union-attr]
    # A response with an unknown branch is dropped (§18.1.2).
    other = response_to(request("OPTIONS", branch="z9hG4bK-unknown"), 200)
    assert layer.receive_response(other, UAS, 0.4) == []


def test_build_cancel_copies_what_9_1_names() -> None:
    inv = request(routes=("<sip:p1.example.com;lr>",))
    cancel = wire(build_cancel(inv))
    assert cancel.method == "CANCEL" and cancel.uri_text == inv.uri_text
    assert [str(v) for v in cancel.vias] == [str(inv.top_via)]
    assert cancel.to.tag is None and cancel.from_.tag == "a1"
    assert (cancel.cseq.number, cancel.cseq.method) == (1, "CANCEL")
    assert [str(r) for r in cancel.routes] == [str(r) for r in inv.routes]


def test_send_request_refuses_ack_reused_and_2543_branches() -> None:
    layer = TransactionLayer()
    with pytest.raises(LocalProtocolError):
        layer.send_request(request("ACK", cseq_method="ACK"), UAS, 0.0)
    with pytest.raises(LocalProtocolError):
        layer.send_request(request(branch="old-style"), UAS, 0.0)
    layer.send_request(request(branch="z9hG4bK-dup"), UAS, 0.0)
    with pytest.raises(LocalProtocolError):
        layer.send_request(request(branch="z9hG4bK-dup"), UAS, 0.0)
    assert layer.transmit_ack(request("ACK", cseq_method="ACK"), UAS)[0].dest == UAS  # type: ignore[union-attr]


def test_server_matching_needs_branch_sent_by_and_method() -> None:
    layer = TransactionLayer()
    first = _server_txn(layer, request("OPTIONS", branch="z9hG4bK-s"), UAC)
    # Same branch from another sent-by: another transaction (§17.2.3).
    other = layer.receive_request(
        request("OPTIONS", branch="z9hG4bK-s", via_host="192.0.2.9:5060"), UAC, 0.1
    )
    got = outputs_of(RequestReceived, other)
    assert len(got) == 1 and got[0].transaction is not first  # type: ignore[union-attr]
    # Same branch, other method: another transaction too.
    assert outputs_of(
        RequestReceived, layer.receive_request(request("INFO", branch="z9hG4bK-s"), UAC, 0.2)
    )
    assert len(layer.servers) == 3


def test_cancel_matches_its_invite_transaction() -> None:
    layer = TransactionLayer()
    inv = request(branch="z9hG4bK-inv")
    itxn = _server_txn(layer, inv, UAC)
    cancel = wire(build_cancel(inv))
    # The CANCEL is a server transaction of its own (answered 200) ...
    out = layer.receive_request(cancel, UAC, 0.5)
    got = outputs_of(RequestReceived, out)
    assert len(got) == 1 and got[0].transaction is not itxn  # type: ignore[union-attr]
    # ... and §9.2 finds the INVITE it cancels.
    assert layer.find_invite_for_cancel(cancel) is itxn
    # Another branch (a CANCEL of another INVITE) finds nothing.
    stray = wire(build_cancel(request(branch="z9hG4bK-other")))
    assert layer.find_invite_for_cancel(stray) is None
    # Once the INVITE transaction is over, the CANCEL finds nothing (§9.2: 481).
    layer.send_response(itxn, make_response(inv, 486, to_tag="b1"), 1.0)
    layer.expire(40.0)
    assert layer.find_invite_for_cancel(cancel) is None


def test_ack_for_2xx_with_new_branch_is_not_matched_to_invite() -> None:
    layer = TransactionLayer()
    inv = request(branch="z9hG4bK-i")
    txn = _server_txn(layer, inv, UAC)
    layer.send_response(txn, make_response(inv, 486, to_tag="b1"), 0.0)
    # An ACK with another branch (as for a 2xx) goes to the TU, the transaction stays.
    ack = request("ACK", branch="z9hG4bK-other", to_tag="b1", cseq_method="ACK")
    out = layer.receive_request(ack, UAC, 0.1)
    assert kinds(out) == ["RequestReceived"] and st(txn) is State.COMPLETED


def test_rfc2543_fallback_matches_retransmission_and_ack() -> None:
    """§17.2.3: without the magic cookie, Request-URI, tags, Call-ID, CSeq and top Via."""
    layer = TransactionLayer()
    inv = request(branch=None)
    key = server_key(inv)
    assert key[0] == "2543"
    txn = _server_txn(layer, inv, UAC)
    # The retransmission matches and gets the 100 again.
    again = layer.receive_request(wire(inv), UAC, 0.5)
    assert outputs_of(RequestReceived, again) == [] and len(sent(again)) == 1
    busy = make_response(inv, 486, to_tag="b1")
    layer.send_response(txn, busy, 1.0)
    # The ACK carries the To tag of the response and no branch: it still matches.
    ack = wire(build_non2xx_ack(inv, response_to(inv, 486)))
    assert layer.receive_request(ack, UAC, 1.2) == []
    assert st(txn) is State.CONFIRMED
    # A request differing in CSeq is a new transaction.
    other = request(branch=None, cseq=2)
    assert outputs_of(RequestReceived, layer.receive_request(other, UAC, 1.3))


def test_rfc2543_cancel_finds_invite() -> None:
    layer = TransactionLayer()
    inv = request(branch=None)
    itxn = _server_txn(layer, inv, UAC)
    cancel = wire(build_cancel(inv))
    assert layer.find_invite_for_cancel(cancel) is itxn


def test_rfc2543_cancel_finds_reinvite() -> None:
    """§9.2: the CANCEL of a re-INVITE carries the INVITE's To tag; it still finds it."""
    layer = TransactionLayer()
    reinvite = request(branch=None, to_tag="b1", cseq=5)
    itxn = _server_txn(layer, reinvite, UAC)
    cancel = wire(build_cancel(reinvite))
    assert cancel.to.tag == "b1"
    assert layer.find_invite_for_cancel(cancel) is itxn


@pytest.mark.skipif(not VECTORS.is_dir(), reason="../shared/vectors not present")
def test_rfc4475_badbranch_falls_back_to_2543_matching() -> None:
    """RFC 4475 §3.2.1: a branch of exactly the magic cookie identifies nothing; the element
    must not break, and may fall back to RFC 2543 matching."""
    data = (VECTORS / "badbranch.sip").read_bytes()
    req = parse_datagram(data)
    assert isinstance(req, Request) and req.top_via.branch == MAGIC_COOKIE
    assert server_key(req)[0] == "2543"
    layer = TransactionLayer()
    source = Address("UDP", "192.0.2.1", 5060)
    txn = _server_txn(layer, req, source)
    ok = make_response(req, 200, to_tag="t1")
    layer.send_response(txn, ok, 0.1)
    # The retransmission (same bytes) matches and gets the 200 again.
    assert sent(layer.receive_request(parse_request(data), source, 0.5)) == [ok]
    # A different request with the same bare cookie is not confused with it.
    other = data.replace(b"CSeq: 8 OPTIONS", b"CSeq: 9 OPTIONS")
    assert outputs_of(RequestReceived, layer.receive_request(parse_request(other), source, 0.6))


@pytest.mark.skipif(not VECTORS.is_dir(), reason="../shared/vectors not present")
def test_rfc4475_inv2543_gets_a_transaction() -> None:
    req = parse_datagram((VECTORS / "inv2543.sip").read_bytes())
    assert isinstance(req, Request)
    layer = TransactionLayer()
    txn = _server_txn(layer, req, Address("UDP", "192.0.2.7", 5060))
    assert txn.is_invite and txn.key[0] == "2543"
    ok = make_response(req, 200, to_tag="t")
    assert sent(layer.send_response(txn, ok, 0.0)) == [ok]


# -- odds and ends ------------------------------------------------------------------------------


def test_new_branch_is_rfc3261_and_unique() -> None:
    a, b = new_branch("e"), new_branch("e")
    assert a.startswith(MAGIC_COOKIE) and b.startswith(MAGIC_COOKIE) and a != b


def test_transport_error_ends_transaction_like_a_timeout() -> None:
    layer = TransactionLayer()
    txn, _ = layer.send_request(request(transport="TCP"), UAS_TCP, 0.0)
    out = layer.transport_error(txn)
    assert kinds(out) == ["TransactionTimeout", "TransactionTerminated"]
    assert len(layer) == 0 and layer.next_deadline() is None


def test_many_transactions_keep_their_own_timers() -> None:
    layer = TransactionLayer()
    txns: list[ClientTransaction] = []
    for i in range(50):
        txn, _ = layer.send_request(request("OPTIONS", branch=f"z9hG4bK-m{i}"), UAS, i * 0.01)
        txns.append(txn)
    for i, txn in enumerate(txns[::2]):
        layer.receive_response(response_to(txn.request, 200), UAS, 0.6 + i * 0.001)
    events = run_until(layer, 60.0)
    timeouts = {id(o.transaction) for _, o in events if isinstance(o, TransactionTimeout)}
    assert timeouts == {id(t) for t in txns[1::2]}
    assert len(layer) == 0


@pytest.mark.parametrize(
    ("via_host", "expected_port"),
    [
        # §18.2.2: over UDP without rport, to the sent-by port (at the address it came from).
        ("127.0.0.1:5062", 5062),
        # RFC 3581 §4: with rport (the transport fills it in), back to the source port.
        ("127.0.0.1:5062;rport=40123", 40123),
    ],
)
def test_server_responses_go_where_section_18_2_2_says(via_host: str, expected_port: int) -> None:
    layer = TransactionLayer()
    req = request("OPTIONS", via_host=via_host.replace(";rport=40123", ""))
    if "rport" in via_host:
        via = req.top_via
        via.params["rport"] = "40123"
        via.params["received"] = "127.0.0.1"
        req.set("Via", f"{via}, SIP/2.0/UDP proxy.example.com;branch=z9hG4bK-proxy")
    txn = _server_txn(layer, req, Address("UDP", "127.0.0.1", 40123))
    out = layer.send_response(txn, make_response(req, 200), 0.1)
    (transmit,) = [o for o in out if isinstance(o, Transmit)]
    assert (transmit.dest.host, transmit.dest.port) == ("127.0.0.1", expected_port)


# -- settled transactions keep their messages unparsed ----------------------------------------


def _parsed_objects(msg: Request | Response) -> int:
    """How many objects the message holds beyond its header list and body (white box: the
    parsed-value cache is what a settled transaction lets go of)."""
    return len(msg._cache)


def test_settled_transactions_let_go_of_parsed_values_once_the_next_message_comes() -> None:
    layer = TransactionLayer()
    bye = request("BYE", to_tag="b1", cseq=2)
    txn = _server_txn(layer, bye, UAC)
    ok = make_response(bye, 200)
    assert ok.top_via.branch == "z9hG4bK-1"  # parsed: the response has cached values
    first_bytes = bytes(ok)
    layer.send_response(txn, ok, 0.3)
    assert _parsed_objects(bye) > 0 and _parsed_objects(ok) > 0  # the TU may still read them
    # The next message in: the settled transaction's request and response are released...
    resent = sent(layer.receive_request(wire(bye), UAC, 1.0))
    assert _parsed_objects(bye) == 0 and _parsed_objects(ok) == 0
    # ...and still do their job: the same response goes out again, byte for byte, and
    # whatever is read from them is parsed again, the same.
    assert resent == [ok] and bytes(resent[0]) == first_bytes
    assert bye.call_id == "call-1@example.com" and bye.from_.tag == "a1"
    assert ok.to.tag is not None and ok.cseq.method == "BYE"


def test_a_client_transactions_answer_is_released_after_the_tu_had_it() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS", branch=new_branch("x"))
    txn, _ = layer.send_request(req, UAS, 0.0)
    answer = response_to(req, 200)
    (received,) = outputs_of(ResponseReceived, layer.receive_response(answer, UAS, 0.1))
    assert isinstance(received, ResponseReceived) and received.response.to.tag == "b1"
    assert st(txn) is State.COMPLETED and _parsed_objects(answer) > 0
    other = request("OPTIONS", branch="z9hG4bK-other")
    layer.receive_request(wire(other), UAC, 0.2)
    assert _parsed_objects(answer) == 0 and _parsed_objects(req) == 0
    # A retransmitted answer is still absorbed by the settled transaction.
    assert layer.receive_response(response_to(req, 200), UAS, 0.3) == []
