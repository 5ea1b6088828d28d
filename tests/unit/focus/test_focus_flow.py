"""The focus core driven without sockets: the conference flow, step by step."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.focus.actions import (
    Action,
    CancelTimer,
    Changed,
    Respond,
    SendAck,
    SendRequest,
    SetTimer,
)
from app.focus.conference_info import ConferenceView, EndpointStatus
from app.focus.core import Focus, FocusConfig, FocusError
from app.focus.media import MemberAdded, MemberRemovalCause, MemberRemoved
from app.sip.message import Request, Response, parse_datagram
from tests.support.focus_ids import CountingIds

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SDP_UE = (
    "v=0\r\no=ue 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
)
SDP_MRFP = (
    "v=0\r\no=mrfp 7 7 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 20000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
)
QOS_OFFER = (
    "a=curr:qos local none\r\na=curr:qos remote none\r\n"
    "a=des:qos mandatory local sendrecv\r\na=des:qos optional remote sendrecv\r\n"
)


def make_focus() -> Focus:
    config = FocusConfig(
        factory_uris=["sip:conf-factory1@mrfc1.home1.net"],
        conference_domain="mrfc1.home1.net",
        local_contact="sip:mrfc@127.0.0.1:5070",
        mrfp_uri={"mrfp1": "sip:127.0.0.1:5080"},
        participant_limit=3,
        outbound_proxy="sip:127.0.0.1:6060;lr",
    )
    return Focus(config, CountingIds())


def request(
    method: str,
    uri: str,
    *,
    user: str,
    call_id: str,
    cseq: int,
    to_tag: str | None = None,
    from_tag: str = "ue",
    headers: list[tuple[str, str]] | None = None,
    body: str = "",
) -> Request:
    to = f"<{uri}>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        ("Via", f"SIP/2.0/UDP 127.0.0.1:7000;branch=z9hG4bK-{call_id}-{cseq}-{method}"),
        ("Max-Forwards", "70"),
        ("From", f"<sip:{user}@home1.net>;tag={from_tag}"),
        ("To", to),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} {method}"),
        ("Contact", f"<sip:{user}@127.0.0.1:7000>"),
        *(headers or []),
    ]
    if body:
        lines.append(("Content-Type", "application/sdp"))
    # Through bytes, as a transport would hand it over.
    return parse_datagram(bytes(Request(method, uri, lines, body.encode())))  # type: ignore[return-value]


def of(kind: type, actions: list[Action]) -> list:  # type: ignore[type-arg]
    return [a for a in actions if isinstance(a, kind)]


def responses(actions: list[Action]) -> list[Response]:
    return [a.response for a in of(Respond, actions)]


def answer_mrfp(focus: Focus, actions: list[Action], status: int = 200) -> list[Action]:
    """Let the MRFP answer the INVITE the focus sent it."""
    (send,) = [a for a in of(SendRequest, actions) if a.request.method == "INVITE"]
    invite = send.request
    assert invite.get("X-Conference")
    lines = [
        ("Via", invite.get("Via") or ""),
        ("From", invite.get("From") or ""),
        ("To", f"{invite.get('To')};tag=fs1"),
        ("Call-ID", invite.call_id),
        ("CSeq", str(invite.cseq)),
        ("Contact", "<sip:mod_sofia@127.0.0.1:5080>"),
        ("Content-Type", "application/sdp"),
    ]
    resp = Response(status, None, lines, SDP_MRFP.encode() if status == 200 else b"")
    return focus.on_response(resp, send.context, 1.0, NOW)


def join(
    focus: Focus, uri: str, user: str, call_id: str, *, reliable: bool, body: str = SDP_UE
) -> tuple[list[Action], Request]:
    headers = [("Supported", "100rel")] if reliable else []
    invite = request("INVITE", uri, user=user, call_id=call_id, cseq=1, headers=headers, body=body)
    first = focus.on_request(invite, object(), 0.0, NOW)
    return first + answer_mrfp(focus, first), invite


def test_create_with_100rel_then_prack_gives_200_with_isfocus() -> None:
    focus = make_focus()
    actions, _invite = join(
        focus, "sip:conf-factory1@mrfc1.home1.net", "user1_public1", "a1", reliable=True
    )
    assert [c.kind for c in of(Changed, actions)][:1] == ["conference.created"]
    (conf,) = focus.conferences.values()
    mrfp_invite = next(a for a in of(SendRequest, actions) if a.request.method == "INVITE").request
    assert mrfp_invite.get("X-Conference") == conf.id
    assert str(mrfp_invite.uri) == f"sip:conf-{conf.id}@127.0.0.1:5080"
    assert of(SendAck, actions), "the MRFP's 200 is ACKed"
    (r183,) = responses(actions)
    assert r183.status == 183
    assert r183.get("Require") == "100rel" and r183.get("RSeq") == "1"
    assert b"m=audio 20000" in r183.body
    assert any(isinstance(a, SetTimer) and a.key[0] == "100rel" for a in actions)
    tag = r183.to.tag
    prack = request(
        "PRACK",
        "sip:conf-factory1@mrfc1.home1.net",
        user="user1_public1",
        call_id="a1",
        cseq=2,
        to_tag=tag,
        headers=[("RAck", "1 1 INVITE")],
    )
    out = focus.on_request(prack, object(), 0.2, NOW)
    statuses = [(r.status, r.cseq.method) for r in responses(out)]
    assert statuses == [(200, "PRACK"), (200, "INVITE")]
    final = responses(out)[1]
    assert final.get("Contact") == f"<sip:conf-{conf.id}@mrfc1.home1.net>;isfocus"
    assert "REFER" in (final.get("Allow") or "") and "SUBSCRIBE" in (final.get("Allow") or "")
    assert final.get("Allow-Events") == "conference, refer"
    ack = request("ACK", conf.uri, user="user1_public1", call_id="a1", cseq=1, to_tag=tag)
    joined = focus.on_request(ack, None, 0.3, NOW)
    assert [c.kind for c in of(Changed, joined)] == ["participant.joined"]


def test_prack_for_unknown_rseq_gets_481() -> None:
    focus = make_focus()
    actions, _ = join(
        focus, "sip:conf-factory1@mrfc1.home1.net", "user1_public1", "a1", reliable=True
    )
    tag = responses(actions)[0].to.tag
    prack = request(
        "PRACK",
        "sip:x@y",
        user="user1_public1",
        call_id="a1",
        cseq=2,
        to_tag=tag,
        headers=[("RAck", "7 1 INVITE")],
    )
    assert [r.status for r in responses(focus.on_request(prack, object(), 0.1, NOW))] == [481]


def connect(focus: Focus, user: str, call_id: str, uri: str) -> str:
    return connect_with_actions(focus, user, call_id, uri)[0]


def connect_with_actions(
    focus: Focus, user: str, call_id: str, uri: str
) -> tuple[str, list[Action]]:
    actions, _ = join(focus, uri, user, call_id, reliable=False)
    resp = responses(actions)
    assert [r.status for r in resp] == [183, 200]
    assert resp[1].body, "without 100rel the 200 repeats the answer"
    tag = resp[1].to.tag
    assert tag is not None
    ack = request("ACK", uri, user=user, call_id=call_id, cseq=1, to_tag=tag)
    return tag, focus.on_request(ack, None, 0.5, NOW)


def notifies(actions: list[Action]) -> list[Request]:
    return [a.request for a in of(SendRequest, actions) if a.request.method == "NOTIFY"]


def test_subscribe_join_leave_notifies_with_rising_versions() -> None:
    focus = make_focus()
    connect(focus, "user1_public1", "a1", "sip:conf-factory1@mrfc1.home1.net")
    (conf,) = focus.conferences.values()
    sub = request(
        "SUBSCRIBE",
        conf.uri,
        user="user1_public1",
        call_id="s1",
        cseq=1,
        headers=[("Event", "conference"), ("Expires", "600")],
    )
    out = focus.on_request(sub, object(), 1.0, NOW)
    assert [r.status for r in responses(out)] == [200]
    (first,) = notifies(out)
    assert first.get("Event") == "conference"
    assert first.get("Subscription-State") == "active;expires=600"
    assert first.content_type == "application/conference-info+xml"
    view = ConferenceView()
    info = view.receive(first.body)
    assert set(info.users) == {"sip:user1_public1@home1.net"}

    tag2, joined = connect_with_actions(focus, "user2_public1", "b1", conf.uri)
    (join_notify,) = notifies(joined)
    info = view.receive(join_notify.body)
    assert set(info.users) == {"sip:user1_public1@home1.net", "sip:user2_public1@home1.net"}
    out = focus.on_request(
        request("BYE", conf.uri, user="user2_public1", call_id="b1", cseq=2, to_tag=tag2),
        object(),
        2.0,
        NOW,
    )
    assert [r.status for r in responses(out)] == [200]
    assert [a.request.method for a in of(SendRequest, out) if a.request.method == "BYE"] == [
        "BYE"
    ], "the MRFP leg is hung up"
    (leave_notify,) = notifies(out)
    info = view.receive(leave_notify.body)  # version 3 follows version 2 (the join)
    assert set(info.users) == {"sip:user1_public1@home1.net"}
    assert b'version="3"' in leave_notify.body
    assert b"departed" in leave_notify.body
    assert view.version == 3


def test_negative_answers() -> None:
    focus = make_focus()
    invite = request(
        "INVITE", "sip:conf-nosuch@mrfc1.home1.net", user="u", call_id="x", cseq=1, body=SDP_UE
    )
    assert [r.status for r in responses(focus.on_request(invite, object(), 0, NOW))] == [404]
    bye = request("BYE", "sip:conf-x@mrfc1.home1.net", user="u", call_id="y", cseq=2, to_tag="zz")
    assert [r.status for r in responses(focus.on_request(bye, object(), 0, NOW))] == [481]
    connect(focus, "user1_public1", "a1", "sip:conf-factory1@mrfc1.home1.net")
    (conf,) = focus.conferences.values()
    sub = request(
        "SUBSCRIBE", conf.uri, user="u", call_id="s", cseq=1, headers=[("Event", "presence")]
    )
    (resp,) = responses(focus.on_request(sub, object(), 0, NOW))
    assert resp.status == 489 and resp.get("Allow-Events") == "conference"
    refer = request(
        "REFER",
        conf.uri,
        user="stranger",
        call_id="r",
        cseq=1,
        headers=[("Refer-To", "<sip:user3_public1@home1.net>")],
    )
    assert [r.status for r in responses(focus.on_request(refer, object(), 0, NOW))] == [403]
    focus.set_locked(conf.id, True, 0)
    invite = request("INVITE", conf.uri, user="user2_public1", call_id="b", cseq=1, body=SDP_UE)
    assert [r.status for r in responses(focus.on_request(invite, object(), 0, NOW))] == [403]
    focus.set_locked(conf.id, False, 0)
    connect(focus, "user2_public1", "b1", conf.uri)
    connect(focus, "user3_public1", "c1", conf.uri)
    invite = request("INVITE", conf.uri, user="user4", call_id="d", cseq=1, body=SDP_UE)
    (full,) = responses(focus.on_request(invite, object(), 0, NOW))
    assert full.status == 486


def test_preconditions_hold_the_200_until_the_update() -> None:
    focus = make_focus()
    actions, _ = join(
        focus,
        "sip:conf-factory1@mrfc1.home1.net",
        "user1_public1",
        "a1",
        reliable=True,
        body=SDP_UE + QOS_OFFER,
    )
    (r183,) = responses(actions)
    assert b"a=des:qos" in r183.body and b"a=conf:qos remote sendrecv" in r183.body
    to_the_mrfp = next(a for a in of(SendRequest, actions) if a.request.method == "INVITE")
    assert b"qos" not in to_the_mrfp.request.body, "the MRFP never sees precondition lines"
    tag = r183.to.tag
    prack = request(
        "PRACK",
        "sip:x@y",
        user="u",
        call_id="a1",
        cseq=2,
        to_tag=tag,
        headers=[("RAck", "1 1 INVITE")],
    )
    out = focus.on_request(prack, object(), 0.1, NOW)
    assert [(r.status, r.cseq.method) for r in responses(out)] == [(200, "PRACK")]
    met = SDP_UE.replace("o=ue 1 1", "o=ue 1 2") + QOS_OFFER.replace(
        "curr:qos local none", "curr:qos local sendrecv"
    )
    update = request("UPDATE", "sip:x@y", user="u", call_id="a1", cseq=3, to_tag=tag, body=met)
    out = focus.on_request(update, object(), 0.2, NOW)
    assert [(r.status, r.cseq.method) for r in responses(out)] == [(200, "UPDATE"), (200, "INVITE")]
    assert b"a=curr:qos remote sendrecv" in responses(out)[0].body


def test_kick_from_the_mrfp_byes_the_ue_and_notifies_booted() -> None:
    focus = make_focus()
    connect(focus, "user1_public1", "a1", "sip:conf-factory1@mrfc1.home1.net")
    (conf,) = focus.conferences.values()
    connect(focus, "user2_public1", "b1", conf.uri)
    sub = request(
        "SUBSCRIBE",
        conf.uri,
        user="user1_public1",
        call_id="s1",
        cseq=1,
        headers=[("Event", "conference")],
    )
    focus.on_request(sub, object(), 1.0, NOW)
    victim = next(p for p in conf.participants.values() if p.aor.startswith("sip:user2"))
    focus.on_media_event(MemberAdded("mrfp1", conf.id, "7", victim.mrfp_call_id), 1.0, NOW)
    assert victim.member_id == "7"
    out = focus.on_media_event(
        MemberRemoved("mrfp1", conf.id, "7", victim.mrfp_call_id, MemberRemovalCause.KICKED),
        2.0,
        NOW,
    )
    byes = [a.request for a in of(SendRequest, out) if a.request.method == "BYE"]
    assert [str(b.uri) for b in byes] == ["sip:user2_public1@127.0.0.1:7000"]
    (note,) = notifies(out)
    assert b"booted" in note.body
    assert victim.status is EndpointStatus.DISCONNECTED


@pytest.mark.parametrize("no_sub", [False, True])
def test_refer_to_the_focus_dials_out(no_sub: bool) -> None:
    focus = make_focus()
    tag = connect(focus, "user1_public1", "a1", "sip:conf-factory1@mrfc1.home1.net")
    (conf,) = focus.conferences.values()
    headers = [("Refer-To", "<sip:user3_public1@home1.net>")]
    if no_sub:
        headers.append(("Refer-Sub", "false"))
    refer = request(
        "REFER", conf.uri, user="user1_public1", call_id="a1", cseq=2, to_tag=tag, headers=headers
    )
    out = focus.on_request(refer, object(), 1.0, NOW)
    assert [r.status for r in responses(out)] == [202]
    invites = [a for a in of(SendRequest, out) if a.request.method == "INVITE"]
    assert len(invites) == 1
    dial = invites[0]
    assert str(dial.request.uri) == "sip:user3_public1@home1.net"
    assert dial.request.get("Route") == "<sip:127.0.0.1:6060;lr>"
    assert not dial.request.body, "late offer: the user's 200 carries the offer"
    sipfrags = [n for n in notifies(out) if n.get("Event") == "refer"]
    assert [n.body for n in sipfrags] == ([] if no_sub else [b"SIP/2.0 100 Trying\r\n"])


def test_session_refresh_by_update_without_sdp_gets_no_sdp() -> None:
    focus = make_focus()
    headers = [("Session-Expires", "1800"), ("Supported", "timer")]
    invite = request(
        "INVITE",
        "sip:conf-factory1@mrfc1.home1.net",
        user="user1_public1",
        call_id="st",
        cseq=1,
        headers=headers,
        body=SDP_UE,
    )
    first = focus.on_request(invite, object(), 0.0, NOW)
    actions = first + answer_mrfp(focus, first)
    final = responses(actions)[-1]
    assert final.status == 200 and final.get("Session-Expires") == "1800;refresher=uac"
    tag = final.to.tag
    focus.on_request(
        request("ACK", "sip:x@y", user="user1_public1", call_id="st", cseq=1, to_tag=tag),
        None,
        0.1,
        NOW,
    )
    update = request("UPDATE", "sip:x@y", user="user1_public1", call_id="st", cseq=2, to_tag=tag)
    out = focus.on_request(update, object(), 900.0, NOW)
    (ok,) = responses(out)
    assert ok.status == 200 and not ok.body and ok.get("Content-Type") is None
    # The refresh re-arms the session timer.
    assert any(isinstance(a, SetTimer) and a.key[0] == "session" for a in out)


def subscribe_in_dialog(focus: Focus, user: str, call_id: str, tag: str, uri: str) -> Request:
    """A SUBSCRIBE sharing the participant's INVITE dialog (RFC 6665 §4.5.2)."""
    sub = request(
        "SUBSCRIBE",
        uri,
        user=user,
        call_id=call_id,
        cseq=3,
        to_tag=tag,
        headers=[("Event", "conference"), ("Expires", "600")],
    )
    out = focus.on_request(sub, object(), 1.0, NOW)
    assert [r.status for r in responses(out)] == [200]
    assert len(notifies(out)) == 1
    return sub


def test_the_leavers_last_notify_no_longer_lists_it() -> None:
    # Regression: the leaver's own subscription was terminated with a full document built
    # before the leaver was taken out, so its last NOTIFY still showed it connected; and when
    # the last participant left, the document still said active.
    focus = make_focus()
    tag1 = connect(focus, "user1_public1", "a1", "sip:conf-factory1@mrfc1.home1.net")
    (conf,) = focus.conferences.values()
    tag2 = connect(focus, "user2_public1", "b1", conf.uri)
    subscribe_in_dialog(focus, "user1_public1", "a1", tag1, conf.uri)
    subscribe_in_dialog(focus, "user2_public1", "b1", tag2, conf.uri)
    bye = request("BYE", conf.uri, user="user2_public1", call_id="b1", cseq=4, to_tag=tag2)
    out = focus.on_request(bye, object(), 2.0, NOW)
    by_call = {n.call_id: n for n in notifies(out)}
    last2 = by_call["b1"]
    assert last2.get("Subscription-State") == "terminated;reason=noresource"
    info = ConferenceView().receive(last2.body)
    assert set(info.users) == {"sip:user1_public1@home1.net"}
    assert info.active is True
    assert b"departed" in by_call["a1"].body  # the others learn it as a partial change
    bye = request("BYE", conf.uri, user="user1_public1", call_id="a1", cseq=4, to_tag=tag1)
    (last1,) = notifies(focus.on_request(bye, object(), 3.0, NOW))
    assert last1.get("Subscription-State") == "terminated;reason=noresource"
    info = ConferenceView().receive(last1.body)
    assert info.users == {} and info.active is False


def _mrfp_bye(focus: Focus, part_call_id: str, dialog_tag: str, remote_tag: str) -> Request:
    return parse_datagram(  # type: ignore[return-value]
        bytes(
            Request(
                "BYE",
                "sip:mrfc@127.0.0.1:5070",
                [
                    ("Via", "SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-fsbye"),
                    ("From", f"<sip:conf@127.0.0.1:5080>;tag={remote_tag}"),
                    ("To", f"<sip:mrfc@mrfc1.home1.net>;tag={dialog_tag}"),
                    ("Call-ID", part_call_id),
                    ("CSeq", "10 BYE"),
                    ("Reason", 'Q.850;cause=16;text="NORMAL_CLEARING"'),
                ],
            )
        )
    )


@pytest.mark.parametrize("explained", [True, False])
def test_a_bye_from_the_mrfp_removes_the_participant(explained: bool) -> None:
    focus = make_focus()
    connect(focus, "user1_public1", "a1", "sip:conf-factory1@mrfc1.home1.net")
    (conf,) = focus.conferences.values()
    connect(focus, "user2_public1", "b1", conf.uri)
    victim = next(p for p in conf.participants.values() if p.aor.startswith("sip:user2"))
    assert victim.mrfp_dialog is not None and victim.mrfp_call_id is not None
    bye = _mrfp_bye(
        focus, victim.mrfp_call_id, victim.mrfp_dialog.local_tag, victim.mrfp_dialog.remote_tag
    )
    out = focus.on_request(bye, object(), 5.0, NOW)
    assert [r.status for r in responses(out)] == [200]
    (timer,) = [a for a in out if isinstance(a, SetTimer)]
    assert timer.key[0] == "mrfp-gone"
    if explained:
        out = focus.on_media_event(
            MemberRemoved("mrfp1", conf.id, "2", victim.mrfp_call_id, MemberRemovalCause.KICKED),
            5.1,
            NOW,
        )
        expected = "booted"
    else:
        out = focus.on_timer(timer.key, 6.0, NOW)
        expected = "failed"
    byes = [a.request for a in of(SendRequest, out) if a.request.method == "BYE"]
    assert [str(b.uri) for b in byes] == ["sip:user2_public1@127.0.0.1:7000"]
    assert victim.disconnection_method is not None
    assert victim.disconnection_method.value == expected


def test_a_notify_timing_out_in_a_participants_dialog_removes_it() -> None:
    focus = make_focus()
    tag = connect(focus, "user1_public1", "a1", "sip:conf-factory1@mrfc1.home1.net")
    (conf,) = focus.conferences.values()
    connect(focus, "user2_public1", "b1", conf.uri)
    sub = request(
        "SUBSCRIBE",
        conf.uri,
        user="user1_public1",
        call_id="a1",
        cseq=2,
        to_tag=tag,
        headers=[("Event", "conference")],
    )
    out = focus.on_request(sub, object(), 1.0, NOW)
    (notify,) = [a for a in of(SendRequest, out) if a.request.method == "NOTIFY"]
    out = focus.on_timeout(notify.context, 40.0, NOW)
    user1 = next(p for p in conf.participants.values() if p.aor.startswith("sip:user1"))
    assert user1.status is EndpointStatus.DISCONNECTED
    assert any(a.request.method == "BYE" for a in of(SendRequest, out))


def test_dial_out_ack_waits_for_the_mrfp_answer_on_a_retransmitted_200() -> None:
    # Regression: a retransmitted 200 from the dialed user arriving before the MRFP had answered
    # was ACKed at once without SDP, though that 200 carries an offer whose answer must be in
    # the ACK (RFC 3264 §4, RFC 3261 §13.2.2.4).
    focus = make_focus()
    tag = connect(focus, "user1_public1", "a1", "sip:conf-factory1@mrfc1.home1.net")
    (conf,) = focus.conferences.values()
    refer = request(
        "REFER",
        conf.uri,
        user="user1_public1",
        call_id="a1",
        cseq=2,
        to_tag=tag,
        headers=[("Refer-To", "<sip:user3_public1@home1.net>")],
    )
    out = focus.on_request(refer, object(), 1.0, NOW)
    (dial,) = [a for a in of(SendRequest, out) if a.request.method == "INVITE"]
    invite = dial.request
    lines = [
        ("Via", invite.get("Via") or ""),
        ("From", invite.get("From") or ""),
        ("To", f"{invite.get('To')};tag=u3"),
        ("Call-ID", invite.call_id),
        ("CSeq", str(invite.cseq)),
        ("Contact", "<sip:user3_public1@127.0.0.1:7003>"),
        ("Content-Type", "application/sdp"),
    ]
    ok = Response(200, None, lines, SDP_UE.encode())
    first = focus.on_response(ok, dial.context, 1.1, NOW)
    assert not of(SendAck, first), "no ACK before the MRFP's answer"
    again = focus.on_response(ok, dial.context, 1.6, NOW)
    assert not of(SendAck, again), "a retransmitted 200 waits for the answer too"
    answered = answer_mrfp(focus, first)
    acks = [a.request for a in of(SendAck, answered)]
    to_user = [a for a in acks if a.uri.user == "user3_public1"]
    assert len(to_user) == 1 and b"m=audio 20000" in to_user[0].body
    late = focus.on_response(ok, dial.context, 2.0, NOW)
    (ack,) = [a.request for a in of(SendAck, late)]
    assert b"m=audio 20000" in ack.body


def test_a_subscription_refresh_is_checked_and_recorded_in_its_dialog() -> None:
    # Regression: a refresh in a subscription's own dialog was neither checked nor recorded
    # (RFC 3261 §12.2.2): an out-of-order CSeq was accepted, and a new Contact (SUBSCRIBE is a
    # target refresh request, RFC 6665 §4.1.2.1) did not move the NOTIFYs.
    focus = make_focus()
    connect(focus, "user1_public1", "a1", "sip:conf-factory1@mrfc1.home1.net")
    (conf,) = focus.conferences.values()
    headers = [("Event", "conference"), ("Expires", "600")]
    sub = request("SUBSCRIBE", conf.uri, user="w", call_id="s1", cseq=1, headers=headers)
    (ok,) = responses(focus.on_request(sub, object(), 1.0, NOW))
    tag = ok.to.tag
    refresh = request(
        "SUBSCRIBE", conf.uri, user="w2", call_id="s1", cseq=2, to_tag=tag, headers=headers
    )
    out = focus.on_request(refresh, object(), 2.0, NOW)
    assert [r.status for r in responses(out)] == [200]
    (notify,) = notifies(out)
    assert str(notify.uri) == "sip:w2@127.0.0.1:7000", "the refresh's Contact is the new target"
    stale = request(
        "SUBSCRIBE", conf.uri, user="w", call_id="s1", cseq=2, to_tag=tag, headers=headers
    )
    assert [r.status for r in responses(focus.on_request(stale, object(), 3.0, NOW))] == [500]


def test_ending_the_conference_sends_one_final_notify_with_nobody_left() -> None:
    focus = make_focus()
    connect(focus, "user1_public1", "a1", "sip:conf-factory1@mrfc1.home1.net")
    (conf,) = focus.conferences.values()
    connect(focus, "user2_public1", "b1", conf.uri)
    sub = request(
        "SUBSCRIBE",
        conf.uri,
        user="user1_public1",
        call_id="s1",
        cseq=1,
        headers=[("Event", "conference")],
    )
    view = ConferenceView()
    (first,) = notifies(focus.on_request(sub, object(), 1.0, NOW))
    view.receive(first.body)
    out = focus.end(conf.id, 2.0, actor="ops")
    (final,) = notifies(out)
    assert (final.get("Subscription-State") or "").startswith("terminated")
    info = view.receive(final.body)
    assert info.users == {} and info.active is False
    byes = [a.request for a in of(SendRequest, out) if a.request.method == "BYE"]
    assert len(byes) == 4, "each UE and each MRFP leg gets a BYE"


def test_a_dial_out_nobody_answers_is_cancelled() -> None:
    focus = make_focus()
    tag = connect(focus, "user1_public1", "a1", "sip:conf-factory1@mrfc1.home1.net")
    (conf,) = focus.conferences.values()
    refer = request(
        "REFER",
        conf.uri,
        user="user1_public1",
        call_id="a1",
        cseq=2,
        to_tag=tag,
        headers=[("Refer-To", "<sip:user3_public1@home1.net>")],
    )
    out = focus.on_request(refer, object(), 1.0, NOW)
    (dial,) = [a for a in of(SendRequest, out) if a.request.method == "INVITE"]
    (ring,) = [a for a in out if isinstance(a, SetTimer) and a.key[0] == "ring"]
    assert ring.at == pytest.approx(61.0)
    ringing = Response(
        180,
        None,
        [
            ("Via", dial.request.get("Via") or ""),
            ("From", dial.request.get("From") or ""),
            ("To", f"{dial.request.get('To')};tag=u3"),
            ("Call-ID", dial.request.call_id),
            ("CSeq", "1 INVITE"),
        ],
    )
    focus.on_response(ringing, dial.context, 2.0, NOW)
    out = focus.on_timer(ring.key, 61.0, NOW)
    (cancel,) = [a for a in of(SendRequest, out) if a.request.method == "CANCEL"]
    assert cancel.request.top_via.branch == dial.request.top_via.branch  # RFC 3261 §9.1
    assert str(cancel.next_hop) == str(dial.next_hop)
    terminated = Response(487, None, ringing.headers)
    out = focus.on_response(terminated, dial.context, 61.1, NOW)
    frags = [n.body for n in notifies(out) if n.get("Event") == "refer"]
    assert frags == [b"SIP/2.0 487 Request Terminated\r\n"]
    user3 = next(p for p in conf.participants.values() if p.aor.startswith("sip:user3"))
    assert user3.status is EndpointStatus.DISCONNECTED


def test_gone_participants_and_ended_conferences_are_forgotten() -> None:
    focus = make_focus()
    tag1 = connect(focus, "user1_public1", "a1", "sip:conf-factory1@mrfc1.home1.net")
    (conf,) = focus.conferences.values()
    tag2 = connect(focus, "user2_public1", "b1", conf.uri)
    out = focus.on_request(
        request("BYE", conf.uri, user="user2_public1", call_id="b1", cseq=2, to_tag=tag2),
        object(),
        2.0,
        NOW,
    )
    (prune,) = [a for a in out if isinstance(a, SetTimer) and a.key[0] == "prune"]
    assert prune.at == pytest.approx(2.0 + 64 * 0.5 + 8)
    focus.on_timer(prune.key, prune.at, NOW)
    assert len(conf.participants) == 1
    # A late retransmission of the BYE now finds no dialog.
    again = request("BYE", conf.uri, user="user2_public1", call_id="b1", cseq=2, to_tag=tag2)
    assert [r.status for r in responses(focus.on_request(again, object(), 45.0, NOW))] == [481]
    out = focus.on_request(
        request("BYE", conf.uri, user="user1_public1", call_id="a1", cseq=2, to_tag=tag1),
        object(),
        50.0,
        NOW,
    )
    (forget,) = [a for a in out if isinstance(a, SetTimer) and a.key[0] == "prune-conference"]
    focus.on_timer(forget.key, forget.at, NOW)
    assert focus.conferences == {}
    with pytest.raises(FocusError) as err:
        focus.end(conf.id, 100.0)
    assert err.value.code == "conference_ended"
    invite = request("INVITE", conf.uri, user="user3", call_id="c", cseq=1, body=SDP_UE)
    assert [r.status for r in responses(focus.on_request(invite, object(), 100, NOW))] == [404]


def test_refer_out_of_dialog_from_a_participant_dials_out() -> None:
    # RFC 4579 §5.5: a REFER to the conference URI outside any dialog, from a participant.
    focus = make_focus()
    connect(focus, "user1_public1", "a1", "sip:conf-factory1@mrfc1.home1.net")
    (conf,) = focus.conferences.values()
    refer = request(
        "REFER",
        conf.uri,
        user="user1_public1",
        call_id="r1",
        cseq=1,
        headers=[("Refer-To", "<sip:user3_public1@home1.net>")],
    )
    out = focus.on_request(refer, object(), 1.0, NOW)
    (accepted,) = responses(out)
    assert accepted.status == 202 and accepted.to.tag
    (frag,) = [n for n in notifies(out) if n.get("Event") == "refer"]
    assert frag.call_id == "r1" and frag.to.tag == "ue"
    assert frag.from_.tag == accepted.to.tag, "the NOTIFY is in the dialog the 202 created"
    assert [a.request.method for a in of(SendRequest, out)].count("INVITE") == 1


def test_a_bye_during_a_renegotiation_ends_the_pending_reinvite_with_487() -> None:
    """RFC 3261 §15.1.2: the re-INVITE waiting on the MRFP is answered 487 when its dialog
    ends; the MRFP's late answer then changes nothing."""
    focus = make_focus()
    tag = connect(focus, "user1_public1", "rn", "sip:conf-factory1@mrfc1.home1.net")
    changed = SDP_UE.replace("o=ue 1 1", "o=ue 1 2").replace("40000", "40002")
    assert changed != SDP_UE
    reinvite = request(
        "INVITE", "sip:x@y", user="user1_public1", call_id="rn", cseq=2, to_tag=tag, body=changed
    )
    reinvite_txn = object()
    out = focus.on_request(reinvite, reinvite_txn, 1.0, NOW)
    (to_mrfp,) = [a for a in of(SendRequest, out) if a.request.method == "INVITE"]
    assert not responses(out), "the re-INVITE waits for the MRFP"
    bye = request("BYE", "sip:x@y", user="user1_public1", call_id="rn", cseq=3, to_tag=tag)
    out = focus.on_request(bye, object(), 1.1, NOW)
    answered = {(a.response.status, a.txn is reinvite_txn) for a in of(Respond, out)}
    assert answered == {(200, False), (487, True)}
    lines = [
        ("Via", to_mrfp.request.get("Via") or ""),
        ("From", to_mrfp.request.get("From") or ""),
        ("To", to_mrfp.request.get("To") or ""),
        ("Call-ID", to_mrfp.request.call_id),
        ("CSeq", str(to_mrfp.request.cseq)),
        ("Content-Type", "application/sdp"),
    ]
    late = focus.on_response(
        Response(200, None, lines, SDP_MRFP.encode()), to_mrfp.context, 1.2, NOW
    )
    assert not responses(late)


def timer_keys(kind: type, actions: list[Action]) -> list[tuple[str, ...]]:
    return [a.key for a in of(kind, actions)]


@pytest.mark.parametrize("session_timer", [False, True])
def test_a_leave_cancels_the_timers_still_armed_and_no_others(session_timer: bool) -> None:
    """Every timer set for a participant is cancelled once, by the step that settles it (ACK)
    or by its leaving; none that was never set (or already settled) is cancelled."""
    focus = make_focus()
    headers = [("Session-Expires", "1800"), ("Supported", "timer")] if session_timer else []
    invite = request(
        "INVITE",
        "sip:conf-factory1@mrfc1.home1.net",
        user="user1_public1",
        call_id="tm",
        cseq=1,
        headers=headers,
        body=SDP_UE,
    )
    first = focus.on_request(invite, object(), 0.0, NOW)
    actions = first + answer_mrfp(focus, first)
    (conf,) = focus.conferences.values()
    (part,) = conf.participants.values()
    assert timer_keys(SetTimer, actions) == [("2xx", conf.id, part.id)]
    tag = responses(actions)[-1].to.tag
    ack = request("ACK", "sip:x@y", user="user1_public1", call_id="tm", cseq=1, to_tag=tag)
    out = focus.on_request(ack, None, 0.1, NOW)
    assert timer_keys(CancelTimer, out) == [("2xx", conf.id, part.id)]
    session = [("session", conf.id, part.id)] if session_timer else []
    assert timer_keys(SetTimer, out) == session
    bye = request("BYE", "sip:x@y", user="user1_public1", call_id="tm", cseq=2, to_tag=tag)
    out = focus.on_request(bye, object(), 5.0, NOW)
    assert [r.status for r in responses(out)] == [200]
    assert timer_keys(CancelTimer, out) == session
    assert [k[0] for k in timer_keys(SetTimer, out)] == ["prune", "prune-conference"]
