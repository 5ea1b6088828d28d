"""Messages parsed and serialized per second on one core (issue 3: goal >= 100,000 INVITE/s).

A typical INVITE as the S-CSCF relays it to the MRFC-AS (two Vias, two Record-Routes,
P-Asserted-Identity, Supported, Allow, Session-Expires, an SDP offer) and the 200 OK the focus
answers with. Each round really parses the start line and every header boundary from fresh
bytes and serializes the result; header values stay lazy, as on the real receive path. An
unchanged parsed message writes its header lines as received (see app/sip/message.py), so
the make_response line measures what the focus does for its own answers: build a 200 OK from
the parsed INVITE with make_response and serialize it, every header written field by field.
The in-dialog PRACK line is what the focus receives most: requests and responses of dialogs it
knows, whose repeated lines, addresses and start line the parser has seen before (new Vias).
The last lines measure the pieces the focus repeats per message: copying and writing SIP URIs
and name-addr values (dialogs), and parsing, copying and writing an SDP offer.

    .venv/bin/python tests/bench/bench_sip.py
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.sip.message import Request, make_response, parse_datagram, validate_request
from app.sip.sdp import SessionDescription
from app.sip.uri import NameAddr, SipUri

SDP = (
    b"v=0\r\n"
    b"o=- 3913174612 3913174612 IN IP4 192.0.2.33\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.33\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 8 0 101\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-15\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)

INVITE = (
    b"INVITE sip:conf-factory1@mrfc1.home1.net SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:6060;branch=z9hG4bK6b1c.5d2e0b71a3f4c9e0e8c2e1a2b3c4d5e6.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;received=127.0.0.1;rport=5060;"
    b"branch=z9hG4bK8a7f.1e2d3c4b5a697887766554433221100.0\r\n"
    b"Max-Forwards: 67\r\n"
    b"Record-Route: <sip:127.0.0.1:6060;lr;ftag=8f1e2d3c>\r\n"
    b"Record-Route: <sip:127.0.0.1:5060;lr;ftag=8f1e2d3c>\r\n"
    b'From: "User One" <sip:user1_public1@home1.net>;tag=8f1e2d3c\r\n'
    b"To: <sip:conf-factory1@mrfc1.home1.net>\r\n"
    b"Call-ID: 7a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d@192.0.2.33\r\n"
    b"CSeq: 1 INVITE\r\n"
    b'Contact: <sip:user1_public1@192.0.2.33:40312;transport=udp>;+sip.instance="<urn:uuid:'
    b'00000000-0000-1000-8000-000a95a0e128>"\r\n'
    b'P-Asserted-Identity: "User One" <sip:user1_public1@home1.net>\r\n'
    b"Allow: INVITE, ACK, CANCEL, BYE, PRACK, UPDATE, REFER, NOTIFY, SUBSCRIBE, OPTIONS\r\n"
    b"Supported: 100rel, timer, replaces, norefersub\r\n"
    b"Session-Expires: 1800\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n"
    b"\r\n" + SDP
)

OK = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:6060;branch=z9hG4bK6b1c.5d2e0b71a3f4c9e0e8c2e1a2b3c4d5e6.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;received=127.0.0.1;rport=5060;"
    b"branch=z9hG4bK8a7f.1e2d3c4b5a697887766554433221100.0\r\n"
    b"Record-Route: <sip:127.0.0.1:6060;lr;ftag=8f1e2d3c>\r\n"
    b"Record-Route: <sip:127.0.0.1:5060;lr;ftag=8f1e2d3c>\r\n"
    b'From: "User One" <sip:user1_public1@home1.net>;tag=8f1e2d3c\r\n'
    b"To: <sip:conf-factory1@mrfc1.home1.net>;tag=as5f2e8d1c\r\n"
    b"Call-ID: 7a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d@192.0.2.33\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:conf-x3Jk9Qm2Lp0aZ7wE@mrfc1.home1.net;transport=udp>;isfocus\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, PRACK, UPDATE, REFER, NOTIFY, SUBSCRIBE, OPTIONS\r\n"
    b"Supported: 100rel, timer, replaces, norefersub\r\n"
    b"Require: timer\r\n"
    b"Session-Expires: 1800;refresher=uac\r\n"
    b"Server: mrfc-as\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n"
    b"\r\n" + SDP
)


def _parse_serialize(data: bytes) -> None:
    bytes(parse_datagram(data))


def _parse_validate_serialize(data: bytes) -> None:
    msg = parse_datagram(data)
    assert isinstance(msg, Request)
    validate_request(msg)
    bytes(msg)


def _parse_validate(data: bytes) -> None:
    msg = parse_datagram(data)
    assert isinstance(msg, Request)
    validate_request(msg)


def _parse_edit_serialize(data: bytes) -> None:
    # What a proxy does: one header added, so every header line is written out again
    # (an unchanged message reuses its received header block).
    msg = parse_datagram(data)
    msg.add("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-bench", first=True)
    bytes(msg)


# A PRACK in the dialog the INVITE above created, as the focus receives it: its addresses,
# Call-ID, start line and most header lines repeat what the dialog's earlier messages carried.
PRACK = (
    b"PRACK sip:conf-x3Jk9Qm2Lp0aZ7wE@mrfc1.home1.net;transport=udp SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:6060;branch=z9hG4bK6b1c.5d2e0b71a3f4c9e0e8c2e1a2b3c4d5e7.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;received=127.0.0.1;rport=5060;"
    b"branch=z9hG4bK8a7f.1e2d3c4b5a697887766554433221101.0\r\n"
    b"Max-Forwards: 67\r\n"
    b"Route: <sip:127.0.0.1:6060;lr;ftag=8f1e2d3c>\r\n"
    b'From: "User One" <sip:user1_public1@home1.net>;tag=8f1e2d3c\r\n'
    b"To: <sip:conf-factory1@mrfc1.home1.net>;tag=as5f2e8d1c\r\n"
    b"Call-ID: 7a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d@192.0.2.33\r\n"
    b"CSeq: 2 PRACK\r\n"
    b"RAck: 1 1 INVITE\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

_PARSED_INVITE = parse_datagram(INVITE)
_OK_HEADERS = [
    ("Contact", "<sip:conf-x3Jk9Qm2Lp0aZ7wE@mrfc1.home1.net;transport=udp>;isfocus"),
    ("Allow", "INVITE, ACK, CANCEL, BYE, PRACK, UPDATE, REFER, NOTIFY, SUBSCRIBE, OPTIONS"),
    ("Supported", "100rel, timer, replaces, norefersub"),
    ("Require", "timer"),
    ("Session-Expires", "1800;refresher=uac"),
    ("Content-Type", "application/sdp"),
]


def _build_serialize(_: bytes) -> None:
    invite = _PARSED_INVITE
    assert isinstance(invite, Request)
    bytes(make_response(invite, 200, to_tag="as5f2e8d1c", headers=_OK_HEADERS, body=SDP))


# What a dialog does with the addresses of a message (RFC 3261 §12: remote target, route set,
# From/To with tags): copies them and writes them into the requests it builds.
_URI = SipUri.parse("sip:user1_public1@192.0.2.33:40312;transport=udp")
_ADDR = NameAddr.parse('"User One" <sip:user1_public1@home1.net>;tag=8f1e2d3c')


def _uri_copy(_: bytes) -> None:
    _URI.copy()


def _uri_copy_str(_: bytes) -> None:
    str(_URI.copy())


def _addr_copy_str(_: bytes) -> None:
    str(_ADDR.copy())


_SDP = SessionDescription.parse(SDP)


def _sdp_parse(data: bytes) -> None:
    SessionDescription.parse(data)


def _sdp_copy(_: bytes) -> None:
    _SDP.copy()


def _sdp_serialize(_: bytes) -> None:
    bytes(_SDP)


def _new_dialogs(data: bytes, count: int) -> list[bytes]:
    """`count` variants of an INVITE, each of a dialog of its own: its own Call-ID, From tag
    and branches, as a focus receives them (the addresses themselves repeat: same users, same
    conference URI, same CSCFs). The same length, so Content-Length stays right."""
    out = []
    for i in range(count):
        n = f"{i:04x}".encode()
        out.append(
            data.replace(b"tag=8f1e2d3c", b"tag=8f1e" + n)
            .replace(b"ftag=8f1e" + n, b"ftag=8f1e2d3c")
            .replace(b"7a9b8c7d6e5f", b"7a9b8c7d" + n)
            .replace(b"z9hG4bK6b1c", b"z9hG4bK" + n)
            .replace(b"z9hG4bK8a7f", b"z9hG4bK" + n)
        )
    return out


def rate(
    fn: Callable[[bytes], None], data: bytes, seconds: float = 1.5, *, dialogs: bool = False
) -> float:
    """Best of three runs of `fn(data)`, in calls per second of this process's CPU time:
    the one-core figure, and steadier than wall time when other work shares the machine."""
    best = 0.0
    # Fresh copies, so nothing can be cached on the bytes object itself; with `dialogs`,
    # each of a dialog of its own, seen once per run (values remembered by text miss).
    copies = _new_dialogs(data, 4096) if dialogs else [bytes(bytearray(data)) for _ in range(64)]
    for _ in range(3):
        count = 0
        start = time.process_time()
        deadline = start + seconds / 3
        while True:
            for item in copies:
                fn(item)
            count += len(copies)
            now = time.process_time()
            if now >= deadline:
                break
        best = max(best, count / (now - start))
    return best


def main() -> None:
    # Sanity: the parse really sees what the benchmark claims to measure.
    invite = parse_datagram(INVITE)
    assert isinstance(invite, Request) and len(invite.vias) == 2 and invite.body == SDP
    assert bytes(invite) == INVITE and bytes(parse_datagram(OK)) == OK
    print(f"parse+serialize INVITE: {rate(_parse_serialize, INVITE):.0f} msg/s")
    print(f"parse+serialize 200 OK: {rate(_parse_serialize, OK):.0f} msg/s")
    print(f"parse+edit+serialize INVITE: {rate(_parse_edit_serialize, INVITE):.0f} msg/s")
    print(f"parse+validate+serialize INVITE: {rate(_parse_validate_serialize, INVITE):.0f} msg/s")
    fresh = rate(_parse_validate_serialize, INVITE, dialogs=True)
    print(f"parse+validate+serialize INVITE, each of a new dialog: {fresh:.0f} msg/s")
    print(f"parse+validate in-dialog PRACK: {rate(_parse_validate, PRACK):.0f} msg/s")
    print(f"make_response+serialize 200 OK: {rate(_build_serialize, INVITE):.0f} msg/s")
    print(f"SIP URI copy: {rate(_uri_copy, b''):.0f} /s")
    print(f"SIP URI copy+str: {rate(_uri_copy_str, b''):.0f} /s")
    print(f"name-addr copy+str: {rate(_addr_copy_str, b''):.0f} /s")
    assert bytes(_SDP) == SDP and SessionDescription.parse(SDP) == _SDP == _SDP.copy()
    print(f"SDP parse (VoLTE offer): {rate(_sdp_parse, SDP):.0f} /s")
    print(f"SDP copy: {rate(_sdp_copy, b''):.0f} /s")
    print(f"SDP serialize: {rate(_sdp_serialize, b''):.0f} /s")


if __name__ == "__main__":
    main()
