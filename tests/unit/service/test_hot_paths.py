"""Shortcuts taken on the per-message path give the answers the plain computation gives."""

from __future__ import annotations

import ipaddress
import random
from datetime import UTC, datetime

import pytest

from app.focus.actions import Changed, Respond
from app.focus.conference_info import ConferenceInfo, JoiningMethod
from app.focus.core import Focus, FocusConfig
from app.focus.model import Conference, Participant, Phase
from app.sip.address import Address
from app.sip.message import Request, parse_datagram
from tests.support.focus_ids import CountingIds

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _conference() -> Conference:
    uri = "sip:conf-c1@mrfc1.home1.net"
    return Conference("c1", uri, None, None, "mrfp1", NOW, ConferenceInfo(entity=uri))


def _participant(n: int) -> Participant:
    return Participant(
        f"p{n}", "c1", f"sip:u{n}@home1.net", None, JoiningMethod.DIALED_IN,
        Phase.MRFP_PENDING, NOW,
    )  # fmt: skip


def test_present_follows_joins_and_leaves_in_any_order() -> None:
    rng = random.Random(4575)
    conf = _conference()
    n = 0
    for _ in range(2000):
        roll = rng.random()
        if roll < 0.4 or not conf.participants:
            n += 1
            part = _participant(n)
            if rng.random() < 0.1:
                part.phase = Phase.GONE  # added already gone (a restore, a failed dial)
            conf.participants[part.id] = part
        elif roll < 0.6:
            conf.mark_gone(rng.choice(list(conf.participants.values())))
        elif roll < 0.7:
            del conf.participants[rng.choice(list(conf.participants))]  # forgotten
        else:
            part = rng.choice(list(conf.participants.values()))
            if part.phase is not Phase.GONE:
                part.phase = rng.choice([Phase.EARLY, Phase.ANSWERED, Phase.CONNECTED])
        if rng.random() < 0.5:  # not looked at after every change
            expected = [p for p in conf.participants.values() if p.phase is not Phase.GONE]
            assert conf.present() == expected
            assert conf.present_count() == len(expected)
    assert conf.present() == [p for p in conf.participants.values() if p.phase is not Phase.GONE]


def test_present_of_a_conference_whose_participants_are_replaced() -> None:
    conf = _conference()
    for i in range(5):
        conf.participants[f"p{i}"] = _participant(i)
    assert len(conf.present()) == 5
    conf.participants = {"p9": _participant(9)}
    assert [p.id for p in conf.present()] == ["p9"]


def test_present_after_a_participant_is_forgotten_and_another_joins_unlooked() -> None:
    # The focus forgets a gone participant after 64*T1 (del participants[id]); a join may
    # come before anyone counts again, leaving the number of participants as it was.
    conf = _conference()
    for i in range(3):
        conf.participants[f"p{i}"] = _participant(i)
    conf.mark_gone(conf.participants["p0"])
    assert conf.present_count() == 2
    del conf.participants["p0"]
    conf.participants["p3"] = _participant(3)
    assert [p.id for p in conf.present()] == ["p1", "p2", "p3"]
    del conf.participants["p1"]  # forgotten while still present, then two join
    conf.participants["p4"] = _participant(4)
    conf.participants["p5"] = _participant(5)
    assert [p.id for p in conf.present()] == ["p2", "p3", "p4", "p5"]


def test_joins_and_forgets_at_a_steady_rate_never_recount_everyone() -> None:
    """At a steady join rate the focus forgets one gone participant as often as one joins,
    with thousands of gone ones still held: `add`/`forget` keep the live set as they go, so
    the count is never rebuilt from every participant (white box: the same live-set object
    throughout), and it stays right."""
    rng = random.Random(3312)
    conf = _conference()
    gone: list[str] = []
    conf.present_count()
    live_set = conf._live
    for n in range(3000):
        conf.add(_participant(n))
        if rng.random() < 0.9:
            part = rng.choice(conf.present())
            conf.mark_gone(part)
            gone.append(part.id)
        if len(gone) > 500:
            conf.forget(gone.pop(0))
        if n % 97 == 0:
            expected = [p for p in conf.participants.values() if p.phase is not Phase.GONE]
            assert conf.present() == expected and conf.present_count() == len(expected)
    assert conf._live is live_set


def test_trust_is_decided_per_host_and_follows_the_configured_networks() -> None:
    from app.service.focus_service import FocusService

    service = FocusService.__new__(FocusService)
    service.trusted = [ipaddress.ip_network("127.0.0.0/8")]
    service._trusted_hosts = {}
    service._trusted_for = None
    assert service._is_trusted(Address("UDP", "127.0.0.1", 5060))
    assert service._is_trusted(Address("UDP", "127.0.0.1", 5061))
    assert not service._is_trusted(Address("UDP", "10.0.0.1", 5060))
    assert not service._is_trusted(Address("UDP", "not-an-address", 5060))
    service.trusted = [ipaddress.ip_network("10.0.0.0/8")]
    assert not service._is_trusted(Address("UDP", "127.0.0.1", 5060))
    assert service._is_trusted(Address("UDP", "10.0.0.1", 5060))
    service.trusted = None
    assert service._is_trusted(Address("UDP", "192.0.2.1", 5060))


def test_identifiers_from_the_entropy_pool_are_random_hex_of_the_asked_length() -> None:
    from app.net.endpoint import _Entropy, random_hex

    pool = _Entropy(block=64)  # small blocks: refills happen within the test
    seen = {pool.hex(6) for _ in range(1000)}
    assert len(seen) == 1000
    assert all(len(v) == 12 and int(v, 16) >= 0 for v in seen)
    assert len(pool.hex(100)) == 200  # more than a block at once
    assert len({random_hex(8) for _ in range(1000)}) == 1000


# -- CANCEL finds its join through an index, with the old walk as the fallback ----------------

SDP = (
    "v=0\r\no=ue 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
)
FACTORY = "sip:conf-factory1@mrfc1.home1.net"


def _focus() -> Focus:
    config = FocusConfig(
        factory_uris=[FACTORY],
        conference_domain="mrfc1.home1.net",
        local_contact="sip:mrfc@127.0.0.1:5070",
        mrfp_uri={"mrfp1": "sip:127.0.0.1:5080"},
    )
    return Focus(config, CountingIds())


def _ue(method: str, uri: str, call_id: str, from_tag: str, body: str = "") -> Request:
    lines = [
        ("Via", f"SIP/2.0/UDP 127.0.0.1:7000;branch=z9hG4bK-{call_id}"),
        ("Max-Forwards", "70"),
        ("From", f"<sip:u@home1.net>;tag={from_tag}"),
        ("To", f"<{uri}>"),
        ("Call-ID", call_id),
        ("CSeq", f"1 {method}"),
        ("Contact", "<sip:u@127.0.0.1:7000>"),
    ]
    if body:
        lines.append(("Content-Type", "application/sdp"))
    parsed = parse_datagram(bytes(Request(method, uri, lines, body.encode())))
    assert isinstance(parsed, Request)
    return parsed


@pytest.mark.parametrize("cancel_from_tag", ["ue1", "not-the-invites"])
def test_cancel_of_a_join_being_set_up(cancel_from_tag: str) -> None:
    focus = _focus()
    invite_txn, cancel_txn = object(), object()
    focus.on_request(_ue("INVITE", FACTORY, "a1", "ue1", SDP), invite_txn, 0.0, NOW)
    (conf,) = focus.conferences.values()
    (part,) = conf.participants.values()
    cancel = _ue("CANCEL", FACTORY, "a1", cancel_from_tag)
    out = focus.on_cancel(cancel, cancel_txn, invite_txn, 1.0, NOW)
    answered = [(a.txn, a.response.status) for a in out if isinstance(a, Respond)]
    assert answered == [(cancel_txn, 200), (invite_txn, 487)]
    assert part.phase is Phase.GONE and part.invite_txn is None
    assert [c.kind for c in out if isinstance(c, Changed)] == [
        "participant.left",
        "conference.ended",
    ]
    assert focus._by_invite == {}
    # A second CANCEL of the same INVITE finds nothing left to cancel.
    again = focus.on_cancel(cancel, object(), invite_txn, 2.0, NOW)
    assert [a.response.status for a in again if isinstance(a, Respond)] == [200]


def test_cancel_of_an_unknown_invite_is_only_answered() -> None:
    focus = _focus()
    focus.on_request(_ue("INVITE", FACTORY, "a1", "ue1", SDP), object(), 0.0, NOW)
    out = focus.on_cancel(_ue("CANCEL", FACTORY, "a1", "ue1"), object(), object(), 1.0, NOW)
    assert [a.response.status for a in out if isinstance(a, Respond)] == [200]
    (conf,) = focus.conferences.values()
    assert len(conf.present()) == 1
