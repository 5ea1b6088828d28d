"""TU-level retransmissions (RFC 3261 §13.3.1.4, RFC 3262 §3), RSeq/RAck, Require checks."""

from __future__ import annotations

import pytest

from app.sip.errors import LocalProtocolError
from app.sip.headers import RAck
from app.sip.message import Request, Response
from app.sip.transaction import Timers
from app.sip.ua import (
    GiveUp,
    ReliableProvisionals,
    Resend,
    RetransmitEvent,
    Retransmitter,
    unsupported_extensions,
)


def drive(r: Retransmitter, end: float) -> list[tuple[float, RetransmitEvent]]:
    out: list[tuple[float, RetransmitEvent]] = []
    while (deadline := r.next_deadline()) is not None and deadline <= end:
        out += [(deadline, e) for e in r.expire(deadline)]
    return out


def test_2xx_doubles_to_t2_and_gives_up_after_64_t1() -> None:
    r = Retransmitter()
    ok = Response(200)
    r.start_2xx("d1", ok, 10.0)
    events = drive(r, 100.0)
    resends = [round(t - 10.0, 6) for t, e in events if isinstance(e, Resend)]
    assert resends == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    gave_up = [(t, e) for t, e in events if isinstance(e, GiveUp)]
    assert [t for t, _ in gave_up] == [pytest.approx(42.0)]
    assert gave_up[0][1] == GiveUp("d1", ok)
    assert len(r) == 0 and r.next_deadline() is None


def test_reliable_provisional_doubles_without_cap() -> None:
    r = Retransmitter(Timers(t1=0.1))
    r.start_reliable_provisional("p", Response(183), 0.0)
    events = drive(r, 10.0)
    resends = [round(t, 6) for t, e in events if isinstance(e, Resend)]
    assert resends == [0.1, 0.3, 0.7, 1.5, 3.1, 6.3]
    assert [t for t, e in events if isinstance(e, GiveUp)] == [pytest.approx(6.4)]


def test_stop_ends_retransmission_and_restart_replaces() -> None:
    r = Retransmitter()
    first, second = Response(200), Response(200)
    r.start_2xx("k", first, 0.0)
    assert r.expire(0.5) == [Resend("k", first)]
    assert "k" in r
    r.start_2xx("k", second, 1.0)  # a re-INVITE's 2xx replaces the first
    events = drive(r, 2.0)
    assert [e for _, e in events] == [Resend("k", second)]
    assert r.stop("k") is second and "k" not in r
    assert r.stop("k") is None
    assert drive(r, 100.0) == []


def test_many_keys_interleave() -> None:
    r = Retransmitter()
    for i in range(10):
        r.start_2xx(i, Response(200), i * 0.1)
    for i in range(0, 10, 2):
        r.stop(i)
    events = drive(r, 100.0)
    assert {e.key for _, e in events if isinstance(e, GiveUp)} == {1, 3, 5, 7, 9}


def test_rseq_and_rack_matching() -> None:
    rel = ReliableProvisionals(invite_cseq=7, first_rseq=100)
    assert rel.next_rseq() == 100
    with pytest.raises(LocalProtocolError):
        rel.next_rseq()  # RFC 3262 §3: one unacknowledged at a time
    assert not rel.acknowledge(RAck(99, 7, "INVITE"))  # wrong RSeq
    assert not rel.acknowledge(RAck(100, 8, "INVITE"))  # wrong CSeq
    assert not rel.acknowledge(RAck(100, 7, "UPDATE"))  # wrong method
    assert not rel.acknowledge(None)
    assert rel.acknowledge(RAck(100, 7, "INVITE"))
    assert rel.pending is None and rel.last_acknowledged == 100
    assert not rel.acknowledge(RAck(100, 7, "INVITE"))  # already acknowledged: 481
    assert rel.next_rseq() == 101


def test_first_rseq_range() -> None:
    with pytest.raises(LocalProtocolError):
        ReliableProvisionals(1, 0)
    with pytest.raises(LocalProtocolError):
        ReliableProvisionals(1, 2**31)


def test_unsupported_extensions() -> None:
    req = Request("INVITE", "sip:a@b", [("Require", "100rel, Foo"), ("Require", "timer")])
    assert unsupported_extensions(req, ["100rel", "timer"]) == ["foo"]
    assert unsupported_extensions(req, ["100REL", "TIMER", "foo"]) == []
    cancel = Request("CANCEL", "sip:a@b", [("Require", "foo")])
    assert unsupported_extensions(cancel, []) == []
