"""Response and request destinations (RFC 3261 §18.1.1, §18.2.2, RFC 3581), sans-IO."""

from __future__ import annotations

import pytest

from app.sip.address import Address
from app.sip.errors import ParseError
from app.sip.headers import Via
from app.sip.message import Request, parse_datagram
from app.sip.routing import (
    needs_congestion_control,
    received_via,
    request_destination,
    response_destination,
    stamp_received,
)
from app.sip.uri import SipUri

UDP_SRC = Address("UDP", "198.51.100.7", 40000)


def via(text: str) -> Via:
    return Via.parse(text)


@pytest.mark.parametrize(
    ("via_text", "source", "expected"),
    [
        # Unreliable, received present, no rport: received address, sent-by port.
        (
            "SIP/2.0/UDP pc33.example.com:5066;received=198.51.100.7;branch=z9hG4bK1",
            UDP_SRC,
            Address("UDP", "198.51.100.7", 5066),
        ),
        # ... and 5060 when the sent-by has no port.
        (
            "SIP/2.0/UDP pc33.example.com;received=198.51.100.7;branch=z9hG4bK1",
            UDP_SRC,
            Address("UDP", "198.51.100.7", 5060),
        ),
        # RFC 3581 §4: rport with a value wins over the sent-by port.
        (
            "SIP/2.0/UDP 10.0.0.1:5060;received=198.51.100.7;rport=40000;branch=z9hG4bK1",
            UDP_SRC,
            Address("UDP", "198.51.100.7", 40000),
        ),
        # No received: the sent-by itself (a name is resolved by the transport).
        (
            "SIP/2.0/UDP proxy.home1.net:5062;branch=z9hG4bK1",
            None,
            Address("UDP", "proxy.home1.net", 5062),
        ),
        # maddr (§18.2.2: the multicast case), port from sent-by or 5060.
        (
            "SIP/2.0/UDP a.example.com;maddr=239.255.255.1;received=198.51.100.7;branch=z9hG4bK1",
            UDP_SRC,
            Address("UDP", "239.255.255.1", 5060),
        ),
        # IPv6 received in both forms (RFC 5118 §4.5), brackets dropped for sockets.
        (
            "SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bK1",
            None,
            Address("UDP", "2001:db8::9:255", 5060),
        ),
        (
            "SIP/2.0/UDP [2001:db8::9:1]:5070;branch=z9hG4bK1",
            None,
            Address("UDP", "2001:db8::9:1", 5070),
        ),
        # A TLS Via over UDP (RFC 4475 transports): answered over UDP at 5060, not 5061.
        (
            "SIP/2.0/TLS t3.example.com;received=198.51.100.7;branch=z9hG4bK1",
            UDP_SRC,
            Address("UDP", "198.51.100.7", 5060),
        ),
    ],
)
def test_unreliable_response_destination(
    via_text: str, source: Address | None, expected: Address
) -> None:
    assert response_destination(via(via_text), source) == expected


def test_a_response_to_the_source_itself_reuses_its_address() -> None:
    """rport and received naming the source (RFC 3581 §4): the same Address object comes back
    (a server transaction keeps it for 64*T1); any other destination is a new one."""
    stamped = via("SIP/2.0/UDP 10.0.0.1:5060;received=198.51.100.7;rport=40000;branch=z9hG4bK1")
    assert response_destination(stamped, UDP_SRC) is UDP_SRC
    plain = via("SIP/2.0/UDP 198.51.100.7:40000;branch=z9hG4bK1")
    assert response_destination(plain, UDP_SRC) is UDP_SRC
    other_port = via("SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK1")
    assert response_destination(other_port, UDP_SRC) == Address("UDP", "198.51.100.7", 5060)
    tcp_src = Address("TCP", "198.51.100.7", 40000)
    dest = response_destination(plain, tcp_src)
    assert dest == Address("UDP", "198.51.100.7", 40000) and dest is not tcp_src


def test_reliable_response_goes_back_on_the_connection() -> None:
    src = Address("TCP", "198.51.100.7", 51000, connection=12)
    dest = response_destination(
        via("SIP/2.0/TCP pc.example.com;received=198.51.100.7;branch=z9hG4bK1"), src
    )
    # The connection first; if it is gone, received + sent-by port (default for TCP).
    assert dest == Address("TCP", "198.51.100.7", 5060, connection=12)


def test_reliable_response_without_a_known_connection_uses_the_via() -> None:
    dest = response_destination(via("SIP/2.0/TLS pc.example.com:5071;branch=z9hG4bK1"))
    assert dest == Address("TLS", "pc.example.com", 5071)
    assert response_destination(via("SIP/2.0/TLS pc.example.com;branch=z9hG4bK1")).port == 5061


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:mrfp@127.0.0.1", Address("UDP", "127.0.0.1", 5060)),
        ("sip:mrfp@127.0.0.1:5080", Address("UDP", "127.0.0.1", 5080)),
        ("sip:mrfp@127.0.0.1:5080;transport=TCP", Address("TCP", "127.0.0.1", 5080)),
        ("sip:scscf.home1.net;lr;transport=tcp", Address("TCP", "scscf.home1.net", 5060)),
        ("sips:alice@example.com", Address("TLS", "example.com", 5061)),
        ("sips:alice@example.com;transport=tcp", Address("TLS", "example.com", 5061)),
        ("sip:alice@example.com;maddr=192.0.2.9", Address("UDP", "192.0.2.9", 5060)),
        ("sip:alice@[2001:db8::1]:5070", Address("UDP", "2001:db8::1", 5070)),
    ],
)
def test_request_destination(uri: str, expected: Address) -> None:
    assert request_destination(SipUri.parse(uri)) == expected


def test_congestion_control_threshold() -> None:
    # RFC 3261 §18.1.1: 1300 bytes without a known MTU, MTU - 200 with one.
    assert not needs_congestion_control(1300)
    assert needs_congestion_control(1301)
    assert needs_congestion_control(1301, mtu=1500)
    assert not needs_congestion_control(8000, mtu=9000)


def request(top_via: str) -> Request:
    msg = parse_datagram(
        (
            "OPTIONS sip:a@b SIP/2.0\r\n"
            f"Via: {top_via}, SIP/2.0/UDP second.example.com;branch=z9hG4bK2\r\n"
            "Via: SIP/2.0/UDP third.example.com;branch=z9hG4bK3\r\n"
            "From: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(msg, Request)
    return msg


def test_stamp_received_when_sent_by_differs() -> None:
    msg = request("SIP/2.0/UDP pc33.example.com;branch=z9hG4bK1")
    stamped = stamp_received(msg, UDP_SRC)
    assert stamped.received == "198.51.100.7" and stamped.rport is None
    assert msg.top_via.received == "198.51.100.7"
    # The other Vias, including the one sharing the header line, are untouched.
    assert [v.host for v in msg.vias] == [
        "pc33.example.com",
        "second.example.com",
        "third.example.com",
    ]
    assert "second.example.com;branch=z9hG4bK2" in (msg.get("Via") or "")


def test_stamp_nothing_when_sent_by_is_the_source() -> None:
    msg = request("SIP/2.0/UDP 198.51.100.7:40000;branch=z9hG4bK1")
    before = bytes(msg)
    stamp_received(msg, UDP_SRC)
    assert bytes(msg) == before


def test_rport_is_filled_and_received_always_added() -> None:
    # RFC 3581 §4: received even though the address matches, rport = source port.
    msg = request("SIP/2.0/UDP 198.51.100.7:5060;rport;branch=z9hG4bK1")
    stamped = stamp_received(msg, UDP_SRC)
    assert stamped.rport == 40000 and stamped.received == "198.51.100.7"
    assert response_destination(msg.top_via, UDP_SRC) == Address("UDP", "198.51.100.7", 40000)


def test_ipv6_received_is_written_without_brackets() -> None:
    src = Address("UDP", "2001:db8::5", 5060)
    stamped = received_via(via("SIP/2.0/UDP [2001:db8::9]:5060;branch=z9hG4bK1"), src)
    assert stamped.params["received"] == "2001:db8::5"
    assert str(stamped) == "SIP/2.0/UDP [2001:db8::9]:5060;branch=z9hG4bK1;received=2001:db8::5"


def test_stamp_needs_a_via() -> None:
    msg = Request("OPTIONS", "sip:a@b", [("From", "<sip:x@y>;tag=1")])
    with pytest.raises(ParseError):
        stamp_received(msg, UDP_SRC)
