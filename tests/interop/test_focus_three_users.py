"""The whole conference flow with three SIPp UEs against the MRFC-AS and the built-in MRFP.

user1 creates the conference at the factory URI (100rel), subscribes to it, sees user2 join by
the conference URI, REFERs the focus to dial user3 out (a SIPp UAS answering a late offer), sees
user2 depart, REFERs the focus to remove user3, and leaves, which ends the conference.
The processes are coordinated by the test (user2 starts once user1's subscription is active)
and by what each UE receives; the traces are read after all three have finished.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.focus.conference_info import ConferenceInfo, ConferenceView, EndpointStatus
from tests.support.sipp import SippResult, header_values, sipp_available, start_sipp
from tests.support.stack import Stack, start_stack, wait_for

SCENARIOS = Path(__file__).parent / "scenarios" / "focus"
USER1 = "sip:user1_public1@home1.net"
USER2 = "sip:user2_public1@home1.net"
USER3 = "sip:user3_public1@127.0.0.1"
CONF_INFO = "application/conference-info+xml"

pytestmark = [
    pytest.mark.interop,
    pytest.mark.slow,
    pytest.mark.skipif(not sipp_available(), reason="sipp (Debian sip-tester) is not installed"),
]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    started = start_stack(tmp_path / "stack")
    try:
        wait_for(lambda: "ready" in started.mrfc.output(), what="MRFC-AS ready")
        yield started
    finally:
        started.stop()


def cseq_method(message: str) -> str:
    (cseq,) = header_values(message, "CSeq")
    return cseq.split()[1]


def body_of(message: str) -> str:
    return re.split(r"\r?\n\r?\n", message, maxsplit=1)[1] if "\n\n" in message else ""


def notifies(result: SippResult, event: str) -> list[str]:
    return [m for m in result.received_requests("NOTIFY") if header_values(m, "Event") == [event]]


def response(result: SippResult, status: int, method: str) -> str:
    found = [
        m
        for m in result.received()
        if m.startswith(f"SIP/2.0 {status} ") and cseq_method(m) == method
    ]
    assert found, f"no {status} to {method}"
    return found[0]


def check_creation_handshake(result: SippResult, conf_uri: str) -> None:
    """183 reliable (RFC 3262 §3), PRACK's RAck, 200 PRACK, 200 INVITE from the focus."""
    r183 = response(result, 183, "INVITE")
    assert header_values(r183, "Require") == ["100rel"]
    assert header_values(r183, "RSeq") == ["1"]
    assert header_values(r183, "Content-Type") == ["application/sdp"]
    assert header_values(r183, "Contact") == [f"<{conf_uri}>;isfocus"]
    (prack,) = [m for m in result.sent() if m.startswith("PRACK ")]
    assert header_values(prack, "RAck") == ["1 1 INVITE"]
    response(result, 200, "PRACK")
    final = response(result, 200, "INVITE")
    assert header_values(final, "Contact") == [f"<{conf_uri}>;isfocus"]
    (allow,) = header_values(final, "Allow")
    assert {m.strip() for m in allow.split(",")} >= {
        "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "PRACK", "UPDATE", "REFER", "SUBSCRIBE",
        "NOTIFY",
    }  # fmt: skip
    assert header_values(final, "Allow-Events") == ["conference, refer"]


def test_three_users_create_subscribe_refer_dial_out_leave(stack: Stack, tmp_path: Path) -> None:
    remote = f"127.0.0.1:{stack.sip_port}"
    user3 = start_sipp(
        SCENARIOS / "uas_dialout_late_offer.xml",
        tmp_path / "user3",
        keys={"ue_user": "user3_public1"},
        timeout=90,
    )
    dialout_uri = f"sip:user3_public1@127.0.0.1:{user3.port}"
    user1 = start_sipp(
        SCENARIOS / "uac_initiator.xml",
        tmp_path / "user1",
        remote=remote,
        keys={
            "factory_user": "conf-factory1",
            "factory_domain": "mrfc1.home1.net",
            "ue_user": "user1_public1",
            "dialout_uri": dialout_uri,
        },
        timeout=90,
    )
    user2 = None
    try:
        # user2 joins once user1 watches the conference, so its join is a partial NOTIFY.
        wait_for(
            lambda: "subscription.active" in stack.event_kinds(),
            timeout=60,
            what="user1's subscription",
        )
        ((conf_uri,),) = stack.query("select uri from conferences")
        conf_user, conf_domain = conf_uri.removeprefix("sip:").split("@")
        user2 = start_sipp(
            SCENARIOS / "uac_joiner.xml",
            tmp_path / "user2",
            remote=remote,
            keys={"conf_user": conf_user, "conf_domain": conf_domain, "ue_user": "user2_public1"},
            timeout=90,
        )
        r2 = user2.wait()
        r1 = user1.wait()
        r3 = user3.wait()
    finally:
        for process in (user1, user2, user3):
            if process is not None:
                process.stop()
    logs = stack.logs()
    assert r1.ok, r1.report() + logs
    assert r2.ok, r2.report() + logs
    assert r3.ok, r3.report() + logs

    # -- user1: creation, subscription, REFERs -------------------------------------------
    check_creation_handshake(r1, conf_uri)
    check_creation_handshake(r2, conf_uri)
    sub_ok = response(r1, 200, "SUBSCRIBE")
    assert header_values(sub_ok, "Expires") == ["600"]
    assert header_values(sub_ok, "Contact") == [f"<{conf_uri}>;isfocus"]

    conf_notifies = notifies(r1, "conference")
    states = [header_values(n, "Subscription-State")[0] for n in conf_notifies]
    assert len(conf_notifies) == 6, states
    for n in conf_notifies:
        assert header_values(n, "Content-Type") == [CONF_INFO]
        assert header_values(n, "Contact") == [f"<{conf_uri}>;isfocus"]
    assert all(re.fullmatch(r"active;expires=\d+", s) for s in states[:5]), states
    assert states[0] == "active;expires=600"
    assert states[5] == "terminated;reason=noresource"
    versions = [int(re.search(rb'version="(\d+)"', body_of(n).encode())[1]) for n in conf_notifies]  # type: ignore[index]
    assert versions == [1, 2, 3, 4, 5, 6], "one higher per NOTIFY (RFC 4575 §4.1)"

    view = ConferenceView()  # refuses a partial document whose version does not follow
    docs: list[ConferenceInfo] = [view.receive(body_of(n)) for n in conf_notifies]
    full, joined2, joined3, left2, booted3, final = docs
    assert b'state="full"' in body_of(conf_notifies[0]).encode()
    assert all(b'state="partial"' in body_of(n).encode() for n in conf_notifies[1:5])
    assert full.entity == conf_uri
    assert set(full.users) == {USER1}
    assert full.user_count == 1 and full.active
    ep1 = full.users[USER1].endpoints[USER1]
    assert ep1.status is EndpointStatus.CONNECTED
    assert ep1.joining_method is not None and ep1.joining_method.value == "dialed-in"
    assert set(joined2.users) == {USER1, USER2} and joined2.user_count == 2
    assert set(joined3.users) == {USER1, USER2, USER3}
    ep3 = joined3.users[USER3].endpoints[USER3]
    assert ep3.status is EndpointStatus.CONNECTED
    assert ep3.joining_method is not None and ep3.joining_method.value == "dialed-out"
    assert set(left2.users) == {USER1, USER3}
    assert b'state="deleted"' in body_of(conf_notifies[3]).encode()
    departed = body_of(conf_notifies[3])
    assert "<status>disconnected</status>" in departed
    assert "<disconnection-method>departed</disconnection-method>" in departed
    booted = body_of(conf_notifies[4])
    assert "<disconnection-method>booted</disconnection-method>" in booted
    assert f"<by>{USER1}</by>" in booted
    assert set(booted3.users) == {USER1}
    # The last NOTIFY, to the leaver that ended the conference: nobody left, not active.
    assert b'state="full"' in body_of(conf_notifies[5]).encode()
    assert final.users == {} and final.active is False

    # REFER to the focus in the INVITE dialog: 202, then sipfrag progress (RFC 3515 §2.4.5).
    refer_ok = [m for m in r1.received() if m.startswith("SIP/2.0 202 ")]
    assert len(refer_ok) == 2
    assert all(header_values(m, "Contact") == [f"<{conf_uri}>;isfocus"] for m in refer_ok)
    frags = notifies(r1, "refer")
    assert [body_of(n).strip() for n in frags] == [
        "SIP/2.0 100 Trying",
        "SIP/2.0 200 OK",
        "SIP/2.0 200 OK",
    ]
    assert all(header_values(n, "Content-Type") == ["message/sipfrag;version=2.0"] for n in frags)
    assert [header_values(n, "Subscription-State")[0] for n in frags] == [
        "active;expires=300",
        "terminated;reason=noresource",
        "terminated;reason=noresource",
    ]

    # -- user2: joined by the conference URI, saw user3, left; its subscription ended -------
    n2 = notifies(r2, "conference")
    assert header_values(n2[-1], "Subscription-State") == ["terminated;reason=noresource"]
    assert response(r2, 200, "BYE")

    # -- user3: dialed out with a late offer; the ACK carried the MRFP's answer -------------
    (invite3,) = r3.received_requests("INVITE")
    assert header_values(invite3, "Contact") == [f"<{conf_uri}>;isfocus"]
    assert header_values(invite3, "Referred-By") == [f"<{USER1}>"]
    assert not body_of(invite3).strip()
    (ack3,) = r3.received_requests("ACK")
    assert header_values(ack3, "Content-Type") == ["application/sdp"]
    assert "m=audio" in body_of(ack3)
    (bye3,) = r3.received_requests("BYE")
    assert header_values(bye3, "Reason") == ['SIP;cause=200;text="Removed from the conference"']

    # -- what the operator sees ------------------------------------------------------------
    wait_for(
        lambda: stack.query("select state from conferences") == [("ended",)],
        what="the conference to end",
    )
    rows = dict(
        stack.query("select uri, disconnection_method from participants where left_at is not null")
    )
    assert rows == {USER1: "departed", USER2: "departed", USER3: "booted"}
    wait_for(
        lambda: "+OK No active conferences" in stack.esl_api("conference list"),
        what="the MRFP conference to be gone",
    )
