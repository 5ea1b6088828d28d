"""Parsing, inspecting, building and serializing SIP messages (RFC 3261 §7, §20, §25)."""

from __future__ import annotations

import pytest

from app.sip.errors import ParseError
from app.sip.headers import Via
from app.sip.message import (
    Request,
    Response,
    error_response,
    make_response,
    parse_datagram,
    parse_head,
    validate_request,
    validate_response,
)
from app.sip.uri import AbsoluteUri, SipUri


def msg(
    *lines: str,
    body: bytes = b"",
    start: str = "INVITE sip:conf@mrfc1.home1.net SIP/2.0",
    length: bool = True,
) -> bytes:
    head = [start, *lines]
    if length:
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


BASIC = (
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds",
    "Max-Forwards: 70",
    'From: "Alice" <sip:alice@home1.net>;tag=1928301774',
    "To: <sip:conf@mrfc1.home1.net>",
    "Call-ID: a84b4c76e66710@pc33.home1.net",
    "CSeq: 314159 INVITE",
    "Contact: <sip:alice@192.0.2.1:5060>",
)


def request(*extra: str, body: bytes = b"") -> Request:
    parsed = parse_datagram(msg(*BASIC, *extra, body=body))
    assert isinstance(parsed, Request)
    return parsed


def test_basic_request_fields() -> None:
    req = request()
    validate_request(req)
    assert req.method == "INVITE" and req.version == "SIP/2.0"
    assert isinstance(req.uri, SipUri) and req.sip_uri.user == "conf"
    assert req.top_via.branch == "z9hG4bK776asdhds" and req.top_via.port == 5060
    assert req.from_.display_name == "Alice" and req.from_.tag == "1928301774"
    assert req.to.tag is None
    assert req.call_id == "a84b4c76e66710@pc33.home1.net"
    assert (req.cseq.number, req.cseq.method) == (314159, "INVITE")
    assert req.max_forwards == 70
    assert req.contact is not None and req.contact.sip_uri.port == 5060
    assert req.content_length == 0 and req.body == b""


def test_compact_forms_and_case_insensitive_names() -> None:
    data = msg(
        "v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1",
        "f: <sip:a@b>;tag=1",
        "t: <sip:c@d>",
        "i: cid",
        "cSeQ: 1 INVITE",
        "m: <sip:a@192.0.2.1>",
        "k: 100rel",
        "c: application/sdp",
        "o: conference",
        "r: <sip:x@y>",
        "b: <sip:z@w>",
        "MAX-FORWARDS: 10",
        "l: 5",
        body=b"v=0\r\n",
        length=False,
    )
    req = parse_datagram(data)
    assert isinstance(req, Request)
    validate_request(req)
    names = [n for n, _ in req.headers]
    assert names == [
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Supported",
        "Content-Type",
        "Event",
        "Refer-To",
        "Referred-By",
        "Max-Forwards",
        "Content-Length",
    ]
    assert req.supported == frozenset({"100rel"})
    assert req.content_type == "application/sdp" and req.body == b"v=0\r\n"
    assert req.event is not None and req.event.value == "conference"
    assert req.get("call-id") == req.get("i") == "cid"
    # Unchanged, it is sent on as received; once edited, written with the full names.
    assert bytes(req) == data
    req.set("Max-Forwards", "9")
    out = bytes(req)
    assert b"\r\nCall-ID: cid\r\n" in out and b"\r\nMax-Forwards: 9\r\n" in out
    assert b"\r\nContent-Length: 5\r\n\r\nv=0\r\n" in out


def test_multi_value_headers_across_lines_and_commas() -> None:
    req = request(
        "Route: <sip:p1.home1.net;lr>, <sip:p2.home1.net;lr>",
        "Route: <sip:p3.home1.net;lr>",
        "Supported: 100rel, timer",
        "Supported: replaces",
        'P-Asserted-Identity: "Alice, A." <sip:alice@home1.net>, <tel:+15551234>',
    )
    assert [r.sip_uri.host for r in req.routes] == ["p1.home1.net", "p2.home1.net", "p3.home1.net"]
    assert req.supported == frozenset({"100rel", "timer", "replaces"})
    pais = req.p_asserted_identities
    assert pais[0].display_name == "Alice, A." and isinstance(pais[1].uri, AbsoluteUri)
    assert req.values("Route")[1] == "<sip:p2.home1.net;lr>"


def test_empty_list_headers_are_empty_lists() -> None:
    req = request("Supported:", "Allow: ", "Accept:")
    validate_request(req)
    assert req.supported == frozenset() and req.allow == frozenset()
    assert req.values("Accept") == []
    empty_via = parse_datagram(msg("Via:", *BASIC[1:]))
    assert isinstance(empty_via, Request)
    with pytest.raises(ParseError, match="Missing Via"):
        validate_request(empty_via)


def test_single_value_headers_keep_their_commas() -> None:
    req = request(
        'Authorization: Digest username="alice", realm="home1.net", nonce="x"',
        "Date: Sat, 13 Nov 2010 23:29:00 GMT",
    )
    assert req.values("Authorization") == ['Digest username="alice", realm="home1.net", nonce="x"']
    assert req.get("Date") == "Sat, 13 Nov 2010 23:29:00 GMT"


def test_line_folding_is_one_value() -> None:
    data = msg(*BASIC, "Subject: I know you're there,", "\tpick up the phone", "   and talk")
    req = parse_datagram(data)
    assert req.get("Subject") == "I know you're there, pick up the phone and talk"


def test_folding_before_any_header_is_refused() -> None:
    with pytest.raises(ParseError):
        parse_datagram(b"INVITE sip:a@b SIP/2.0\r\n folded\r\n\r\n")


def test_bare_lf_line_ends_are_tolerated() -> None:
    data = msg(*BASIC).replace(b"\r\n", b"\n")
    req = parse_datagram(data)
    assert isinstance(req, Request) and req.call_id == "a84b4c76e66710@pc33.home1.net"
    validate_request(req)


def test_whitespace_around_colon_and_values() -> None:
    req = parse_datagram(
        msg("Via  : SIP/2.0/UDP h;branch=z9hG4bK1  ", "To:<sip:a@b>", "Call-ID:\tx  ")
    )
    assert req.get("Via") == "SIP/2.0/UDP h;branch=z9hG4bK1"
    assert req.get("To") == "<sip:a@b>" and req.call_id == "x"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"INVITE sip:a@b SIP/2.0\r\nNoColonHere\r\n\r\n", "without a colon"),
        (b"INVITE sip:a@b SIP/2.0\r\nBad Name: x\r\n\r\n", "Bad header name"),
        (b"INVITE  sip:a@b SIP/2.0\r\n\r\n", "Malformed request line"),
        (b"INV(ITE sip:a@b SIP/2.0\r\n\r\n", "Bad method"),
        (b"INVITE sip:a@b HTTP/1.1\r\n\r\n", "Malformed request line"),
        (b"SIP/2.0 2000 OK\r\n\r\n", "Bad status code"),
        (b"SIP/2.0 099 Low\r\n\r\n", "Bad status code"),
        (b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 10\r\n\r\nshort", "larger than"),
        (b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\nab", "Conflicting"),
        (b"INVITE sip:a@b SIP/2.0\r\nContent-Length: -1\r\n\r\n", "Bad Content-Length"),
    ],
)
def test_parse_errors_name_the_fault(data: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason) as err:
        parse_datagram(data)
    assert err.value.status == 400


def test_version_not_supported_is_505() -> None:
    with pytest.raises(ParseError) as err:
        parse_datagram(b"OPTIONS sip:a@b SIP/3.0\r\n\r\n")
    assert err.value.status == 505


def test_limits() -> None:
    many = msg(*BASIC, *[f"X-H{i}: {i}" for i in range(300)])
    with pytest.raises(ParseError, match="Too many header lines"):
        parse_datagram(many)
    assert isinstance(parse_datagram(many, max_headers=400), Request)
    big = msg(*BASIC, body=b"x" * 3000)
    with pytest.raises(ParseError) as err:
        parse_datagram(big, max_size=2000)
    assert err.value.status == 513


def test_datagram_body_follows_content_length_or_runs_to_the_end() -> None:
    req = parse_datagram(msg(*BASIC, body=b"0123456789") + b"trailing junk")
    assert req.body == b"0123456789"
    no_length = parse_datagram(msg(*BASIC, body=b"v=0\r\n", length=False))
    assert no_length.body == b"v=0\r\n" and no_length.content_length is None


def test_keepalive_crlfs_before_a_datagram_are_skipped() -> None:
    assert isinstance(parse_datagram(b"\r\n\r\n" + msg(*BASIC)), Request)


def test_multipart_body_kept_as_bytes() -> None:
    body = (
        b"--b1\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n"
        b"--b1\r\nContent-Type: application/octet-stream\r\n\r\n\x00\xff\xfe\r\n\r\n\x00"
        b"\r\n--b1--\r\n"
    )
    req = request('Content-Type: multipart/mixed;boundary="b1"', body=body)
    assert req.body == body and req.content_type == "multipart/mixed"
    assert bytes(req).endswith(body)


def test_non_utf8_header_bytes_survive_a_round_trip() -> None:
    raw = msg(*BASIC, "Subject: cafX").replace(b"cafX", b"caf\xe9")  # Latin-1, not UTF-8
    assert bytes(parse_datagram(raw)) == raw


def test_round_trip_is_byte_exact_for_canonical_messages() -> None:
    data = msg(*BASIC, "Record-Route: <sip:p1;lr>", body=b"v=0\r\no=- 1 1 IN IP4 h\r\n")
    assert bytes(parse_datagram(data)) == data
    resp_bytes = (
        b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"To: <sip:a@b>;tag=2\r\nFrom: <sip:c@d>;tag=1\r\nCall-ID: x\r\n"
        b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    resp = parse_datagram(resp_bytes)
    assert isinstance(resp, Response) and resp.reason == "Ringing"
    assert bytes(resp) == resp_bytes


def test_unchanged_messages_go_out_as_received_and_any_edit_shows() -> None:
    data = msg(
        "Via:  SIP/2.0/UDP h;branch=z9hG4bK1  ",
        "v: SIP/2.0/UDP g;branch=z9hG4bK0",
        *BASIC[1:],
        body=b"abc",
    )
    req = parse_datagram(data)
    assert bytes(req) == data  # extra blanks and compact names kept
    req.method = "OPTIONS"  # the start line is always written from the fields
    assert bytes(req).startswith(b"OPTIONS sip:conf@") and bytes(req).endswith(data[6:])
    req.headers[0] = ("Via", "SIP/2.0/UDP h;branch=z9hG4bK9")
    assert b"\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK9\r\n" in bytes(req)
    req = parse_datagram(data)
    req.body = b"abcd"  # a new body length rewrites Content-Length
    assert bytes(req).endswith(b"Content-Length: 4\r\n\r\nabcd")
    req = parse_datagram(data)
    req.headers = list(req.headers)  # equal by value: still as received
    assert bytes(req) == data
    folded = msg(*BASIC, "Subject: a", " b")
    assert b"Subject: a b\r\n" in bytes(parse_datagram(folded))  # unfolded when written


def test_serialization_fixes_content_length() -> None:
    req = request(body=b"abc")
    req.body = b"abcdef"
    assert b"\r\nContent-Length: 6\r\n" in bytes(req)
    req.headers.append(("Content-Length", "99"))  # a stale duplicate
    out = bytes(req)
    assert out.count(b"Content-Length") == 1 and b"Content-Length: 6\r\n" in out
    req.remove("Content-Length")
    assert bytes(req).endswith(b"Content-Length: 6\r\n\r\nabcdef")
    assert parse_datagram(bytes(req)).body == b"abcdef"


def test_editing_headers_invalidates_parsed_values() -> None:
    req = request()
    assert req.call_id.startswith("a84b")
    req.set("Call-ID", "new-id")
    assert req.call_id == "new-id"
    req.add("Via", "SIP/2.0/TCP proxy.home1.net;branch=z9hG4bKtop", first=True)
    assert [v.host for v in req.vias] == ["proxy.home1.net", "192.0.2.1"]
    req.remove_first_value("Via")
    assert [v.host for v in req.vias] == ["192.0.2.1"]
    req.set_top_via(Via("UDP", "192.0.2.1", 5060, {"branch": "z9hG4bKx", "received": "1.2.3.4"}))
    assert req.top_via.received == "1.2.3.4"
    req.headers.append(("Max-Forwards", "5"))
    req.headers_changed()
    with pytest.raises(ParseError, match="Multiple Max-Forwards"):
        validate_request(req)


def test_typed_accessors_for_extensions() -> None:
    req = request(
        "Require: 100rel, precondition",
        "RAck: 776656 1 INVITE",
        "RSeq: 988789",
        "Event: conference;id=1234",
        'Subscription-State: active;expires="600"',
        "Expires: 3600",
        "Allow: INVITE, ack, BYE",
        "Refer-To: <sip:conf-1@mrfc1.home1.net;method=BYE?Reason=x>",
        "Referred-By: <sip:alice@home1.net>",
        "Path: <sip:pcscf.home1.net;lr>",
        "Service-Route: <sip:scscf.home1.net;lr>",
        "P-Preferred-Identity: <sip:alice@home1.net>",
        "Session-Expires: 1800;refresher=uac",
    )
    assert req.require == frozenset({"100rel", "precondition"})
    assert req.rack is not None and (req.rack.rseq, req.rack.cseq, req.rack.method) == (
        776656,
        1,
        "INVITE",
    )
    assert req.rseq == 988789
    assert req.event is not None and req.event.param("id") == "1234"
    assert req.subscription_state is not None and req.subscription_state.param("expires") == "600"
    assert req.expires == 3600
    assert req.allow == frozenset({"INVITE", "ACK", "BYE"})
    refer_to = req.refer_to
    assert refer_to is not None and refer_to.sip_uri.params["method"] == "BYE"
    assert refer_to.sip_uri.headers == "Reason=x"
    assert req.referred_by is not None and req.path[0].sip_uri.lr
    assert req.service_routes[0].sip_uri.host == "scscf.home1.net"
    assert req.p_preferred_identities[0].sip_uri.user == "alice"
    assert req.session_expires is not None and req.session_expires.params["refresher"] == "uac"


def test_contact_isfocus_and_wildcard() -> None:
    resp = parse_datagram(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:a@b>;tag=2\r\n"
        b"From: <sip:c@d>;tag=1\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n"
        b"Contact: <sip:conf-1@mrfc1.home1.net>;isfocus\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(resp, Response)
    validate_response(resp)
    assert resp.contact is not None and "isfocus" in resp.contact.params
    reg = parse_datagram(
        msg(*BASIC[:6], "Contact: *", "Expires: 0", start="REGISTER sip:home1.net SIP/2.0")
    )
    assert reg.contacts == []


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ("CSeq: 1 INVITE", "Multiple CSeq"),
        ("Max-Forwards: abc", "Max-Forwards"),
        ("Route: <sip:p1;lr>,,<sip:p2;lr>", "Empty value in Route"),
        ("Record-Route: sip:bad host", "needs <>|Bad"),
    ],
)
def test_validation_errors(extra: str, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        validate_request(request(extra))


def test_validation_needs_the_mandatory_headers() -> None:
    for missing in ("Via", "From", "To", "Call-ID", "CSeq"):
        lines = [h for h in BASIC if not h.startswith(missing + ":")]
        req = parse_datagram(msg(*lines))
        assert isinstance(req, Request)
        with pytest.raises(ParseError, match=missing):
            validate_request(req)


def test_request_uri_rules() -> None:
    with pytest.raises(ParseError, match="headers"):
        validate_request(parse_datagram(msg(*BASIC, start="INVITE sip:a@b?X=y SIP/2.0")))
    tel = parse_datagram(msg(*BASIC, start="INVITE tel:+15551234 SIP/2.0"))
    assert isinstance(tel, Request)
    validate_request(tel.__class__("INVITE", "tel:+15551234", tel.headers))
    with pytest.raises(ParseError) as err:
        tel.sip_uri  # noqa: B018
    assert err.value.status == 416


def test_make_response_copies_what_rfc3261_says() -> None:
    req = request(
        "Record-Route: <sip:scscf.home1.net;lr>",
        "Record-Route: <sip:pcscf;lr>",
        "Supported: 100rel",
    )
    resp = make_response(
        req, 183, to_tag="as1", headers=[("Require", "100rel"), ("RSeq", "1")], body=b"v=0\r\n"
    )
    assert resp.status == 183 and resp.reason == "Session Progress"
    assert resp.get_lines("Via") == req.get_lines("Via")
    assert resp.from_.tag == "1928301774" and resp.to.tag == "as1"
    assert resp.call_id == req.call_id and resp.cseq == req.cseq
    assert len(resp.record_routes) == 2  # §12.1.1: copied into 18x/2xx
    assert resp.get("Require") == "100rel" and resp.rseq == 1
    assert resp.get("Supported") is None  # not copied: only what the caller adds
    back = parse_datagram(bytes(resp))
    assert isinstance(back, Response) and back.body == b"v=0\r\n"
    validate_response(back)
    # No Record-Route in a final error; an existing To tag is kept.
    err = make_response(resp_request_with_tag(), 486, to_tag="other")
    assert err.get("Record-Route") is None and err.to.tag == "t0"
    assert make_response(req, 400, "Bad thing").reason == "Bad thing"


def resp_request_with_tag() -> Request:
    lines = [h if not h.startswith("To:") else "To: <sip:conf@x>;tag=t0" for h in BASIC]
    req = parse_datagram(msg(*lines, "Record-Route: <sip:p;lr>"))
    assert isinstance(req, Request)
    return req


def test_error_response_from_an_unparseable_request() -> None:
    data = msg(*BASIC, start="INVITE  sip:a@b  SIP/2.0")
    with pytest.raises(ParseError) as err:
        parse_datagram(data)
    resp = error_response(data, err.value, to_tag="x1")
    assert resp is not None and resp.status == 400 and resp.reason == "Malformed request line"
    assert resp.to.tag == "x1" and resp.call_id == "a84b4c76e66710@pc33.home1.net"
    assert resp.get("Contact") is None and resp.get("Max-Forwards") is None
    # Folded Via, compact names: still found.
    folded = b"OPTIONS x\r\nv: SIP/2.0/UDP\r\n 192.0.2.1;branch=z9hG4bK1\r\ni: c\r\n\r\n"
    resp2 = error_response(folded, ParseError("Malformed request line"))
    assert resp2 is not None and resp2.top_via.host == "192.0.2.1"


def test_no_error_response_to_responses_acks_or_without_via() -> None:
    assert error_response(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\n\r\n", ParseError("x")) is None
    assert (
        error_response(b"INVITE sip:a@b SIP/2.0\r\nTo: <sip:a@b>\r\n\r\n", ParseError("x")) is None
    )
    assert error_response(b"\x00\xff garbage", ParseError("x")) is None
    ack = msg(*BASIC, start="ACK sip:a@b SIP/2.0").replace(b"CSeq: 314159 INVITE", b"CSeq: x")
    parsed = parse_datagram(ack)
    assert isinstance(parsed, Request)
    with pytest.raises(ParseError) as err:
        validate_request(parsed)
    assert error_response(ack, err.value) is None


def test_parse_head_alone() -> None:
    head = b"BYE sip:a@b SIP/2.0\r\nCall-ID: x"
    parsed = parse_head(head)
    assert isinstance(parsed, Request) and parsed.call_id == "x" and parsed.body == b""


def test_header_lookups_stay_right_after_every_kind_of_edit() -> None:
    # Each kind of edit shows in the next read (lookups must never see a stale header list).
    req = request("X-Trace: one")
    assert req.get("x-trace") == "one" and req.get("Max-Forwards") == "70"
    req.set("X-TRACE", "two")
    assert req.get_lines("x-trace") == ["two"]
    req.add("X-Trace", "three")
    assert req.get_lines("X-Trace") == ["two", "three"]
    req.add("Route", "<sip:p1.home1.net;lr>")
    req.add("Route", "<sip:p0.home1.net;lr>", first=True)
    assert req.get_lines("Route") == ["<sip:p0.home1.net;lr>", "<sip:p1.home1.net;lr>"]
    req.remove("x-trace")
    assert req.get("X-Trace") is None and not req.has("X-Trace")
    req.remove_first_value("Route")
    assert req.values("Route") == ["<sip:p1.home1.net;lr>"]
    # Direct edits of the list, even in place, show as well.
    at = next(i for i, (n, _) in enumerate(req.headers) if n == "Max-Forwards")
    req.headers[at] = ("Max-Forwards", "69")
    assert req.get("Max-Forwards") == "69"
    req.headers.append(("Subject", "hi"))
    assert req.get("s") == "hi"  # compact form of Subject (RFC 3261 §20.36)
    req.headers = [(n, v) for n, v in req.headers if n != "Subject"]
    assert req.get("Subject") is None
    # What get_lines returns is the caller's own list.
    req.get_lines("Via").append("SIP/2.0/UDP x;branch=z9hG4bKz")
    assert len(req.get_lines("Via")) == 1


def test_address_headers_parsed_once_are_still_each_messages_own() -> None:
    # Equal From values parse to equal objects, but editing one message's does not touch
    # another's (the parsed values are remembered by text, and handed out as copies).
    a, b = request(), request()
    assert a.from_ == b.from_ and a.from_ is not b.from_
    a.from_.params["tag"] = "changed"
    a.from_.sip_uri.params["user"] = "phone"
    assert b.from_.tag == "1928301774" and "user" not in b.from_.sip_uri.params
    assert request().from_.tag == "1928301774"
    assert a.cseq == b.cseq
    # A value that failed to parse keeps failing.
    for _ in range(2):
        bad = request()
        bad.set("To", "<sip:conf@mrfc1.home1.net")
        with pytest.raises(ParseError):
            validate_request(bad)


def test_validation_leaves_what_it_parsed_for_the_accessors() -> None:
    req = request(
        "Record-Route: <sip:p1.home1.net;lr>, <sip:p2.home1.net;lr>",
        "Route: <sip:mrfc1.home1.net;lr>",
    )
    validate_request(req)
    # Everything validation parsed is there already: the accessors walk no header again.
    req.headers = []  # (without headers_changed: the parsed values stay as they were)
    assert req.top_via.branch == "z9hG4bK776asdhds" and req.from_.tag == "1928301774"
    assert str(req.to) == "<sip:conf@mrfc1.home1.net>" and req.cseq.number == 314159
    assert req.call_id == "a84b4c76e66710@pc33.home1.net"
    assert [r.sip_uri.host for r in req.record_routes] == ["p1.home1.net", "p2.home1.net"]
    assert [str(r) for r in req.routes] == ["<sip:mrfc1.home1.net;lr>"]
    assert req.contact is not None and req.contact.sip_uri.user == "alice"
    # A value an accessor handed out (and the caller edited) before validation is kept.
    edited = request()
    edited.from_.params["tag"] = "mine"
    validate_request(edited)
    assert edited.from_.tag == "mine"
    # A wildcard Contact is no address (RFC 3261 §10.2.2), before and after validation.
    star = parse_datagram(
        msg(
            *BASIC[:-1],
            "Contact: *",
            start="REGISTER sip:h SIP/2.0",
        ).replace(b"314159 INVITE", b"314159 REGISTER")
    )
    assert isinstance(star, Request) and star.contacts == []
    validate_request(star)
    assert star.contact is None
