"""Messages framed out of a byte stream by Content-Length (RFC 3261 §18.3, RFC 4475)."""

from __future__ import annotations

import pytest

from app.sip.errors import ParseError
from app.sip.message import Request, Response, StreamFramer


def message(call_id: str, body: bytes = b"") -> bytes:
    return (
        "MESSAGE sip:conf@mrfc1.home1.net SIP/2.0\r\n"
        "Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK" + call_id + "\r\n"
        "From: <sip:a@home1.net>;tag=1\r\nTo: <sip:conf@mrfc1.home1.net>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def feed_all(framer: StreamFramer, *chunks: bytes) -> list[Request | Response]:
    out: list[Request | Response] = []
    for chunk in chunks:
        out.extend(framer.feed(chunk))
    return out


def test_back_to_back_messages_in_one_chunk() -> None:
    data = message("a", b"hello") + message("b") + message("c", b"\r\n\r\nbinary\x00")
    msgs = feed_all(StreamFramer(), data)
    assert [m.call_id for m in msgs] == ["a", "b", "c"]
    assert [m.body for m in msgs] == [b"hello", b"", b"\r\n\r\nbinary\x00"]


def test_every_split_point() -> None:
    data = message("a", b"body with \r\n\r\n inside") + message("b", b"x")
    for cut in range(1, len(data)):
        framer = StreamFramer()
        msgs = feed_all(framer, data[:cut], data[cut:])
        assert [m.call_id for m in msgs] == ["a", "b"], cut
        assert framer.pending == 0


def test_one_byte_at_a_time() -> None:
    data = message("a", b"12345")
    framer = StreamFramer()
    msgs = feed_all(framer, *(data[i : i + 1] for i in range(len(data))))
    assert len(msgs) == 1 and msgs[0].body == b"12345"


def test_incomplete_body_waits() -> None:
    data = message("a", b"0123456789")
    framer = StreamFramer()
    assert feed_all(framer, data[:-3]) == []
    assert framer.pending == len(data) - 3
    assert [m.body for m in feed_all(framer, data[-3:])] == [b"0123456789"]


def test_keepalive_crlfs_between_messages() -> None:
    msgs = feed_all(StreamFramer(), b"\r\n\r\n", message("a"), b"\r\n\r\n\r\n", message("b"))
    assert [m.call_id for m in msgs] == ["a", "b"]


def test_responses_are_framed_too() -> None:
    resp = (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nCall-ID: r\r\n"
        b"CSeq: 1 MESSAGE\r\nl: 2\r\n\r\nok"
    )
    msgs = feed_all(StreamFramer(), resp)
    assert isinstance(msgs[0], Response) and msgs[0].body == b"ok"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (message("a").replace(b"Content-Length: 0\r\n", b""), "Missing Content-Length"),
        (message("a").replace(b"Content-Length: 0", b"Content-Length: -1"), "Bad Content"),
        (message("a").replace(b"Content-Length: 0", b"Content-Length: 0\r\nl: 4"), "Conflicting"),
        (b"GARBAGE\r\n\r\n", "Malformed request line"),
    ],
)
def test_framing_errors_raise(data: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        feed_all(StreamFramer(), data)


def test_messages_before_an_error_are_delivered() -> None:
    framer = StreamFramer()
    got: list[Request | Response] = []
    with pytest.raises(ParseError):
        for m in framer.feed(message("ok") + b"BROKEN\r\n\r\n"):
            got.append(m)
    assert [m.call_id for m in got] == ["ok"]
    assert framer.buffered().startswith(b"BROKEN")


def test_size_limits() -> None:
    with pytest.raises(ParseError) as err:
        feed_all(StreamFramer(max_size=500), message("a", b"x" * 600))
    assert err.value.status == 513
    # A header section that never ends is refused once it passes the limit.
    framer = StreamFramer(max_size=500)
    assert feed_all(framer, b"INVITE sip:a@b SIP/2.0\r\n") == []
    with pytest.raises(ParseError) as err:
        feed_all(framer, b"X-Long: " + b"y" * 600)
    assert err.value.status == 513


def test_header_count_limit() -> None:
    head = message("a").replace(b"Content-Type", b"X: 1\r\n" * 50 + b"Content-Type")
    with pytest.raises(ParseError, match="Too many"):
        feed_all(StreamFramer(max_headers=20), head)
    assert len(feed_all(StreamFramer(max_headers=100), head)) == 1
