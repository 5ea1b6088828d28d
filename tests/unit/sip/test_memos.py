"""The receive path's memos give exactly what parsing afresh gives.

A header line seen before, the part of a Via before its branch, the tokens of Require, the
parsed CSeq and Call-ID a response starts with: each is remembered by its text (bounded) and
must never change what a message parses to, serializes to, or is refused with.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.sip import headers as headers_module
from app.sip import message as message_module
from app.sip import uri as uri_module
from app.sip.errors import ParseError
from app.sip.headers import Via
from app.sip.message import Request, make_response, parse_datagram, validate_request
from app.sip.uri import NameAddr

INVITE = (
    b"INVITE sip:conf-1@mrfc1.home1.net SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:7000;rport;branch=z9hG4bK-1\r\n"
    b"From: <sip:user1@home1.net>;tag=a1\r\n"
    b"To: <sip:conf-1@mrfc1.home1.net>\r\n"
    b"Call-ID: memo-1@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Max-Forwards: 70\r\n"
    b"Contact: <sip:user1@127.0.0.1:7000>\r\n"
    b"Require: precondition, 100rel\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def _reparsed(data: bytes) -> Request:
    msg = parse_datagram(data)
    assert isinstance(msg, Request)
    validate_request(msg)
    return msg


def test_a_line_seen_before_parses_as_the_first_time() -> None:
    _reparsed(INVITE)  # header name spellings known from here on
    message_module._LINES.clear()
    first = _reparsed(INVITE)
    assert "From: <sip:user1@home1.net>;tag=a1" in message_module._LINES
    second = _reparsed(INVITE)
    assert second.headers == first.headers
    assert bytes(second) == bytes(first) == INVITE
    # The remembered pair is shared, and an edit of one message never shows in the other.
    second.set("From", "<sip:other@home1.net>;tag=b2")
    assert first.from_.tag == "a1" and second.from_.tag == "b2"
    assert _reparsed(INVITE).get("From") == "<sip:user1@home1.net>;tag=a1"


def test_a_remembered_line_followed_by_a_continuation_is_still_unfolded() -> None:
    message_module._LINES.clear()
    _reparsed(INVITE)
    folded = INVITE.replace(
        b"Require: precondition, 100rel\r\n", b"Require: precondition,\r\n 100rel\r\n"
    )
    message_module._LINES["Require: precondition,"] = ("Require", "precondition,")
    msg = _reparsed(folded)
    assert msg.get("Require") == "precondition, 100rel"
    assert msg.require == {"precondition", "100rel"}


def test_line_memo_is_bounded() -> None:
    message_module._LINES.clear()
    for n in range(message_module._LINES_MAX + 10):
        _reparsed(INVITE.replace(b"Call-ID: memo-1@", f"Call-ID: memo-{n:05d}@".encode()))
    assert len(message_module._LINES) <= message_module._LINES_MAX


def test_content_length_and_request_via_lines_are_never_remembered() -> None:
    _reparsed(INVITE)
    message_module._LINES.clear()
    invite = _reparsed(INVITE)
    assert not any(name == "Content-Length" for name, _ in message_module._LINES.values())
    # A request's Via names a new transaction each time; its responses repeat it.
    assert not any(name == "Via" for name, _ in message_module._LINES.values())
    parse_datagram(bytes(make_response(invite, 100)))
    assert any(name == "Via" for name, _ in message_module._LINES.values())


VIA_HEAD_TEXTS = [
    "SIP/2.0/UDP 127.0.0.1:7000",
    "SIP/2.0/UDP 127.0.0.1:7000;rport",
    "SIP/2.0/TCP [2001:db8::1]:5060;received=192.0.2.1",
    "SIP/2.0/udp host.example.com",
    "SIP/2.0/UDP host;branch=z9hG4bK-old",
    "SIP/2.0/UDP host;",
    "SIP/2.0/UDP host;;rport",
    "SIP/2.0/UDP ",
    "SIP/2.0/UDP  host",
    "SIP/2.0/UDP\thost",
    'SIP/2.0/UDP host;x="a b"',
    "SIP/2.0 /UDP host",
    "SIP/2.0/UDP host:99999",
    "SIP/2.0/UDP bad host",
    "SIP/2.0/UDP host ; rport",
]
BRANCH_TEXTS = ["z9hG4bK-1", "", "z9hG4bK;rport", "a b", 'z9"x', "x ", "x\t", "a=b", "é", "x\r"]
VIA_HEADS = st.sampled_from(VIA_HEAD_TEXTS)
BRANCHES = st.one_of(st.sampled_from(BRANCH_TEXTS), st.text(max_size=12))


def _fresh(text: str) -> Via | str:
    try:
        return Via._parse(text)
    except ParseError as exc:
        return exc.reason


def _memoed(text: str) -> Via | str:
    try:
        return Via.parse(text)
    except ParseError as exc:
        return exc.reason


def _check_via(head: str, first: str, branch: str) -> None:
    headers_module._VIA_HEADS.clear()
    _memoed(f"{head};branch={first}")  # remembers the head, if it qualifies
    text = f"{head};branch={branch}"
    assert _memoed(text) == _fresh(text)
    assert _memoed(text) == _fresh(text)  # and from the memo for sure the second time


@pytest.mark.parametrize("head", VIA_HEAD_TEXTS)
def test_via_from_a_remembered_head_is_the_whole_parse(head: str) -> None:
    for branch in BRANCH_TEXTS:
        _check_via(head, "z9hG4bK-first", branch)


@settings(max_examples=300, deadline=None)
@given(head=VIA_HEADS, first=BRANCHES, branch=BRANCHES)
def test_via_memo_against_generated_branches(head: str, first: str, branch: str) -> None:
    _check_via(head, first, branch)


def test_via_from_the_memo_is_a_value_of_its_own() -> None:
    headers_module._VIA_HEADS.clear()
    one = Via.parse("SIP/2.0/UDP 127.0.0.1:7000;rport;branch=z9hG4bK-1")
    two = Via.parse("SIP/2.0/UDP 127.0.0.1:7000;rport;branch=z9hG4bK-2")
    assert "SIP/2.0/UDP 127.0.0.1:7000;rport" in headers_module._VIA_HEADS
    assert list(two.params) == ["rport", "branch"] and two.branch == "z9hG4bK-2"
    two.params["received"] = "192.0.2.1"
    assert one.params == {"rport": None, "branch": "z9hG4bK-1"}
    three = Via.parse("SIP/2.0/UDP 127.0.0.1:7000;rport;branch=z9hG4bK-3")
    assert three.params == {"rport": None, "branch": "z9hG4bK-3"}
    assert str(three) == "SIP/2.0/UDP 127.0.0.1:7000;rport;branch=z9hG4bK-3"


def test_via_head_memo_is_bounded() -> None:
    headers_module._VIA_HEADS.clear()
    for n in range(headers_module._VIA_HEADS_MAX + 10):
        Via.parse(f"SIP/2.0/UDP 10.0.{n // 250}.{n % 250}:5060;branch=z9hG4bK-{n}")
    assert len(headers_module._VIA_HEADS) <= headers_module._VIA_HEADS_MAX


def test_require_tokens_follow_header_edits() -> None:
    msg = _reparsed(INVITE)
    assert msg.require == {"precondition", "100rel"}
    msg.set("Require", "timer")
    assert msg.require == {"timer"}
    msg.headers.append(("Require", "precondition"))
    msg.headers_changed()
    assert msg.require == {"timer", "precondition"}
    msg.remove("Require")
    assert msg.require == frozenset()


def test_response_starts_with_the_requests_cseq_and_call_id() -> None:
    invite = _reparsed(INVITE)
    resp = make_response(invite, 180, to_tag="t1")
    assert resp.cseq is invite.cseq and resp.call_id == "memo-1@127.0.0.1"
    assert resp.to.tag == "t1"
    again = parse_datagram(bytes(resp))
    assert again.cseq == resp.cseq and again.call_id == resp.call_id
    # Editing the response's headers forgets them like any parsed value.
    resp.set("CSeq", "2 INVITE")
    assert resp.cseq.number == 2 and invite.cseq.number == 1


def test_make_response_copies_record_route_only_for_18x_2xx() -> None:
    invite = _reparsed(
        INVITE.replace(b"Max-Forwards", b"Record-Route: <sip:p1;lr>\r\nMax-Forwards")
    )
    assert make_response(invite, 183).get_lines("Record-Route") == ["<sip:p1;lr>"]
    assert make_response(invite, 100).get_lines("Record-Route") == []
    assert make_response(invite, 486).get_lines("Record-Route") == []
    names = [n for n, _ in make_response(invite, 200, to_tag="x").headers]
    assert names == ["Via", "From", "To", "Call-ID", "CSeq", "Record-Route"]  # request order


def test_start_lines_seen_before_parse_as_the_first_time() -> None:
    message_module._REQUEST_LINES.clear()
    message_module._STATUS_LINES.clear()
    for _ in range(2):
        req = _reparsed(INVITE)
        assert (req.method, req.uri_text, req.version) == (
            "INVITE",
            "sip:conf-1@mrfc1.home1.net",
            "SIP/2.0",
        )
        resp = parse_datagram(bytes(make_response(req, 183)))
        assert (resp.status, resp.reason) == (183, "Session Progress")  # type: ignore[union-attr]
        odd = parse_datagram(b"SIP/2.0 299\r\n" + bytes(resp).split(b"\r\n", 1)[1])
        assert (odd.status, odd.reason) == (299, "")  # type: ignore[union-attr]
    assert "INVITE sip:conf-1@mrfc1.home1.net SIP/2.0" in message_module._REQUEST_LINES
    # A bad start line is refused every time, never remembered.
    bad = INVITE.replace(b"INVITE sip:conf-1@mrfc1.home1.net SIP/2.0", b"INVITE  sip:x SIP/2.0")
    for _ in range(2):
        try:
            parse_datagram(bad)
        except ParseError as exc:
            assert exc.reason == "Malformed request line"
        else:
            raise AssertionError("a bad request line parsed")
    assert "INVITE  sip:x SIP/2.0" not in message_module._REQUEST_LINES


def test_start_line_memo_is_bounded() -> None:
    message_module._REQUEST_LINES.clear()
    for n in range(message_module._START_LINES_MAX + 10):
        _reparsed(INVITE.replace(b"sip:conf-1@", f"sip:conf-{n}@".encode(), 1))
    assert len(message_module._REQUEST_LINES) <= message_module._START_LINES_MAX


ADDR_HEAD_TEXTS = [
    "<sip:conf-1@mrfc1.home1.net>",
    '"User One" <sip:user1@home1.net>',
    "User One <sip:user1@home1.net>;x=y",
    "<sip:user1@home1.net;transport=udp>;expires=60",
    "<sip:a@b> ;foo = bar",
    "<sip:a@b>;tag=old",
    "<sip:a@b;tag=inner>",
    "sip:a@b",
    "sip:a@b;transport=tcp",
    "sip:a@b?x=y",
    "<sip:a@b>;",
    "<sip:a@b>;;x",
    "<sip:a@b",
    '"unterminated <sip:a@b>',
    '"x;tag=y" <sip:a@b>',
    '<sip:a@b>;q="a b"',
    "<sip:a@b>\t;x",
    "<tel:+1555>",
    "   <sip:a@b>",
    "",
]
TAG_TEXTS = ["ue1", "", "a;b", "a b", 'a"', "a>", "<a", "a=b", "x\t", "é", "a,b", "x\n"]
ADDR_HEADS = st.sampled_from(ADDR_HEAD_TEXTS)
TAGS = st.one_of(st.sampled_from(TAG_TEXTS), st.text(max_size=10))


def _addr(parse: Callable[[str], NameAddr], text: str) -> tuple[object, ...] | str:
    try:
        value = parse(text)
    except ParseError as exc:
        return exc.reason
    return (value, str(value), list(value.params))


def _check_addr(head: str, first: str, tag: str) -> None:
    uri_module._ADDR_HEADS.clear()
    uri_module._ADDR_HEADS_SEEN.clear()
    _addr(NameAddr.parse, f"{head};tag={first}")  # notes the head
    _addr(NameAddr.parse, f"{head};tag={first}x")  # remembers it, if it qualifies
    text = f"{head};tag={tag}"
    assert _addr(NameAddr.parse, text) == _addr(NameAddr._parse, text)
    assert _addr(NameAddr.parse, text) == _addr(NameAddr._parse, text)


@pytest.mark.parametrize("head", ADDR_HEAD_TEXTS)
def test_name_addr_from_a_remembered_head_is_the_whole_parse(head: str) -> None:
    for tag in TAG_TEXTS:
        _check_addr(head, "first", tag)


@settings(max_examples=300, deadline=None)
@given(head=ADDR_HEADS, first=TAGS, tag=TAGS)
def test_name_addr_memo_against_generated_tags(head: str, first: str, tag: str) -> None:
    _check_addr(head, first, tag)


def test_name_addr_from_the_memo_is_a_value_of_its_own() -> None:
    uri_module._ADDR_HEADS.clear()
    uri_module._ADDR_HEADS_SEEN.clear()
    one = NameAddr.parse("<sip:conf-1@mrfc1.home1.net>;tag=a")
    assert "<sip:conf-1@mrfc1.home1.net>" not in uri_module._ADDR_HEADS  # seen once only
    two = NameAddr.parse("<sip:conf-1@mrfc1.home1.net>;tag=b")
    assert "<sip:conf-1@mrfc1.home1.net>" in uri_module._ADDR_HEADS
    two.sip_uri.user = "conf-2"
    two.params["x"] = None
    assert str(one) == "<sip:conf-1@mrfc1.home1.net>;tag=a"
    assert str(two) == "<sip:conf-2@mrfc1.home1.net>;tag=b;x"
    three = NameAddr.parse("<sip:conf-1@mrfc1.home1.net>;tag=c")
    assert str(three) == "<sip:conf-1@mrfc1.home1.net>;tag=c" and three.tag == "c"


def test_name_addr_head_memo_is_bounded() -> None:
    uri_module._ADDR_HEADS.clear()
    for n in range(uri_module._ADDR_HEADS_MAX + 10):
        NameAddr.parse(f"<sip:user{n}@home1.net>;tag=t{n}")
        NameAddr.parse(f"<sip:user{n}@home1.net>;tag=u{n}")
    assert 0 < len(uri_module._ADDR_HEADS) <= uri_module._ADDR_HEADS_MAX
    assert len(uri_module._ADDR_HEADS_SEEN) <= uri_module._ADDR_HEADS_MAX
