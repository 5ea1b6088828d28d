"""SDP parse/serialize (RFC 4566) and the offer/answer helpers (RFC 3264)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.sip.sdp import (
    PCMA,
    PCMU,
    Attribute,
    Connection,
    Direction,
    MediaDescription,
    Origin,
    SdpError,
    SessionDescription,
    answer_direction,
    build_answer,
    needs_renegotiation,
    next_version,
    select_codecs,
)


def crlf(text: str) -> bytes:
    return text.strip("\n").replace("\n", "\r\n").encode() + b"\r\n"


# RFC 4317 §2.1 (offer with audio and video), RFC 3264 §10.1 style.
OFFER_AV = crlf("""
v=0
o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com
s=
c=IN IP4 host.atlanta.example.com
t=0 0
m=audio 49170 RTP/AVP 0 8 97
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:97 iLBC/8000
m=video 51372 RTP/AVP 31 32
a=rtpmap:31 H261/90000
a=rtpmap:32 MPV/90000
""")

# A VoLTE-like offer: AMR first, DTMF, preconditions, session-level lines of every kind.
OFFER_VOLTE = crlf("""
v=0
o=user1 1234 5678 IN IP6 2001:db8::1
s=-
i=a session
u=http://example.com/
e=user@example.com
p=+1 555 0100
c=IN IP6 2001:db8::1
b=AS:41
t=0 0
r=604800 3600 0 90000
z=2882844526 -1h 2898848070 0
a=tool:x
a=sendrecv
m=audio 49152 RTP/AVP 116 107 8 0 105 100
i=voice
b=AS:41
b=RS:0
a=rtpmap:116 AMR-WB/16000/1
a=fmtp:116 mode-change-capability=2;max-red=0
a=rtpmap:107 AMR/8000/1
a=rtpmap:105 telephone-event/16000
a=fmtp:105 0-15
a=rtpmap:100 telephone-event/8000
a=fmtp:100 0-15
a=curr:qos local none
a=curr:qos remote none
a=des:qos mandatory local sendrecv
a=des:qos optional remote sendrecv
a=ptime:20
a=maxptime:240
a=x-unknown
""")


@pytest.mark.parametrize("body", [OFFER_AV, OFFER_VOLTE], ids=["rfc4317", "volte"])
def test_round_trip_is_byte_exact(body: bytes) -> None:
    sdp = SessionDescription.parse(body)
    assert bytes(sdp) == body
    assert bytes(SessionDescription.parse(body.decode())) == body


def test_lf_only_body_round_trips_as_lf() -> None:
    body = OFFER_AV.replace(b"\r\n", b"\n")
    assert bytes(SessionDescription.parse(body)) == body


def test_fields_are_parsed() -> None:
    sdp = SessionDescription.parse(OFFER_VOLTE)
    assert sdp.origin == Origin("user1", "1234", 5678, "IN", "IP6", "2001:db8::1")
    assert sdp.connection == Connection("2001:db8::1", "IN", "IP6")
    assert sdp.direction is Direction.SENDRECV
    (audio,) = sdp.media
    assert (audio.media, audio.port, audio.proto) == ("audio", 49152, "RTP/AVP")
    assert audio.formats == ["116", "107", "8", "0", "105", "100"]
    assert audio.rtpmaps[116].encoding == "AMR-WB"
    assert audio.rtpmaps[116].channels == 1
    assert audio.fmtps[100] == "0-15"
    assert audio.ptime == 20
    assert audio.get("x-unknown") == ""
    assert audio.get("absent") is None
    assert audio.get_all("curr") == ["qos local none", "qos remote none"]
    assert audio.connection is None
    assert sdp.media_connection(0) == sdp.connection
    assert sdp.media_direction(0) is Direction.SENDRECV


def test_media_level_direction_and_connection_win() -> None:
    sdp = SessionDescription.parse(OFFER_AV)
    sdp.direction = Direction.SENDONLY
    sdp.media[1].direction = Direction.INACTIVE
    sdp.media[1].connection = Connection("192.0.2.9")
    assert sdp.media_direction(0) is Direction.SENDONLY
    assert sdp.media_direction(1) is Direction.INACTIVE
    assert sdp.media_connection(1) == Connection("192.0.2.9")
    text = bytes(sdp).decode()
    assert "m=video 51372 RTP/AVP 31 32\r\nc=IN IP4 192.0.2.9\r\n" in text
    reparsed = SessionDescription.parse(text)
    assert reparsed.media[1].direction is Direction.INACTIVE
    sdp.media[1].direction = None
    assert sdp.media[1].direction is None


def test_set_replaces_in_place_and_remove() -> None:
    m = SessionDescription.parse(OFFER_VOLTE).media[0]
    m.set("ptime", "30")
    assert m.get_all("ptime") == ["30"]
    assert [a.name for a in m.attributes][-3:] == ["ptime", "maxptime", "x-unknown"]
    m.remove("curr")
    assert m.get("curr") is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"v=0\r\n",
        b"o=a 1 1 IN IP4 h\r\nv=0\r\ns=-\r\nt=0 0\r\n",
        b"v=0\r\no=a 1 1 IN IP4\r\ns=-\r\nt=0 0\r\n",
        b"v=0\r\no=a 1 x IN IP4 h\r\ns=-\r\nt=0 0\r\n",
        b"v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\n",
        b"v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio x RTP/AVP 0\r\n",
        b"v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 70000 RTP/AVP 0\r\n",
        b"v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 1 RTP/AVP\r\n",
        b"v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nbad line\r\n",
        b"v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nt=0 0",
        b"v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4\r\nt=0 0\r\n",
        b"v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 a\r\nc=IN IP4 b\r\nt=0 0\r\n",
        b"v=x\r\no=a 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\n",
    ],
)
def test_malformed_input_raises_sdp_error(body: bytes) -> None:
    with pytest.raises(SdpError):
        SessionDescription.parse(body)


def test_bad_rtpmap_raises_when_read() -> None:
    sdp = SessionDescription.parse(OFFER_AV)
    sdp.media[0].attributes.append(Attribute("rtpmap", "x PCMU"))
    with pytest.raises(SdpError):
        _ = sdp.media[0].rtpmaps


# --- offer/answer -----------------------------------------------------------------------------


def test_select_codecs_keeps_offer_order_and_payload_types() -> None:
    m = SessionDescription.parse(OFFER_VOLTE).media[0]
    chosen = select_codecs(m)
    assert [(c.payload_type, c.encoding) for c in chosen] == [
        (8, "PCMA"),
        (0, "PCMU"),
        (100, "telephone-event"),  # the 8 kHz one; 105 is 16 kHz
    ]
    assert chosen[2].fmtp == "0-15"


def test_static_payload_types_need_no_rtpmap() -> None:
    m = MediaDescription("audio", 4000, "RTP/AVP", ["0", "8"])
    assert select_codecs(m) == [PCMU, PCMA]


def test_telephone_event_alone_is_not_enough() -> None:
    m = MediaDescription("audio", 4000, "RTP/AVP", ["101"])
    m.attributes.append(Attribute("rtpmap", "101 telephone-event/8000"))
    assert select_codecs(m) == []


@pytest.mark.parametrize(
    ("offered", "answered"),
    [
        (Direction.SENDRECV, Direction.SENDRECV),
        (Direction.SENDONLY, Direction.RECVONLY),
        (Direction.RECVONLY, Direction.SENDONLY),
        (Direction.INACTIVE, Direction.INACTIVE),
    ],
)
def test_answer_direction(offered: Direction, answered: Direction) -> None:
    assert answer_direction(offered) is answered
    offer = SessionDescription.parse(OFFER_AV)
    offer.direction = offered  # session level applies to the media (RFC 3264 §5.1)
    answer = build_answer(offer, address="10.0.0.1", port=20000, session_id="7", version=1)
    assert answer.media[0].direction is answered


def test_build_answer_accepts_audio_rejects_the_rest() -> None:
    offer = SessionDescription.parse(OFFER_AV)
    answer = build_answer(
        offer, address="10.0.0.1", port=20000, session_id="77", version=3, ptime=20
    )
    assert bytes(answer) == crlf("""
v=0
o=- 77 3 IN IP4 10.0.0.1
s=-
c=IN IP4 10.0.0.1
t=0 0
m=audio 20000 RTP/AVP 0 8
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=ptime:20
a=sendrecv
m=video 0 RTP/AVP 31
""")
    # RFC 3264 §6: as many m= lines as offered.
    assert len(answer.media) == len(offer.media)


def test_build_answer_rejects_disabled_and_second_audio_streams() -> None:
    offer = SessionDescription.parse(OFFER_AV)
    offer.media[0].port = 0
    offer.media.append(MediaDescription("audio", 6000, "RTP/AVP", ["8"]))
    offer.media.append(MediaDescription("audio", 6002, "RTP/AVP", ["0"]))
    answer = build_answer(offer, address="::1", port=30000, session_id="1", version=1)
    assert [m.port for m in answer.media] == [0, 0, 30000, 0]
    assert answer.origin.addrtype == "IP6"
    assert answer.media[2].formats == ["8"]


def test_build_answer_without_common_codec_raises() -> None:
    offer = SessionDescription.parse(OFFER_AV)
    offer.media[0].formats = ["97"]
    with pytest.raises(SdpError):
        build_answer(offer, address="10.0.0.1", port=20000, session_id="1", version=1)


def test_next_version_increments_only_on_change() -> None:
    offer = SessionDescription.parse(OFFER_AV)
    first = build_answer(offer, address="10.0.0.1", port=20000, session_id="5", version=1)
    assert next_version(None, first) is first
    same = build_answer(offer, address="10.0.0.1", port=20000, session_id="9", version=42)
    assert next_version(first, same).origin.session_version == 1
    assert next_version(first, same).origin.session_id == "5"
    offer.direction = Direction.SENDONLY  # hold
    held = build_answer(offer, address="10.0.0.1", port=20000, session_id="5", version=1)
    bumped = next_version(first, held)
    assert bumped.origin.session_version == 2
    assert bumped.media[0].direction is Direction.RECVONLY
    assert first.origin.session_version == 1  # the previous one is untouched


def test_needs_renegotiation() -> None:
    a = SessionDescription.parse(OFFER_AV)
    same_version_changed_text = a.copy()
    same_version_changed_text.media[0].port = 1  # RFC 3264 §8: same version means no change
    assert not needs_renegotiation(a, same_version_changed_text)
    refresh = a.copy()
    refresh.origin.session_version += 1  # bumped, identical content (a session refresh)
    assert not needs_renegotiation(a, refresh)
    hold = refresh.copy()
    hold.direction = Direction.SENDONLY
    assert needs_renegotiation(a, hold)
    new_session = a.copy()
    new_session.origin.session_id = "1"
    assert needs_renegotiation(a, new_session)


# --- property: anything we build parses back to itself ---------------------------------------

_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=12)
_value = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=0, max_size=20
).map(str.strip)


@st.composite
def _media(draw: st.DrawFn) -> MediaDescription:
    m = MediaDescription(
        draw(st.sampled_from(["audio", "video", "application"])),
        draw(st.integers(0, 65535)),
        "RTP/AVP",
        draw(st.lists(st.integers(0, 127).map(str), min_size=1, max_size=5)),
        draw(st.none() | st.integers(1, 4)),
        draw(st.none() | _token.map(Connection)),
    )
    for _ in range(draw(st.integers(0, 4))):
        m.attributes.append(Attribute(draw(_token), draw(st.none() | _value)))
    if draw(st.booleans()):
        m.other.append(("b", "AS:64"))
    return m


@st.composite
def _sessions(draw: st.DrawFn) -> SessionDescription:
    sdp = SessionDescription(
        Origin(draw(_token), str(draw(st.integers(0, 2**64))), draw(st.integers(0, 2**32))),
        draw(_value),
        draw(st.none() | _token.map(Connection)),
    )
    sdp.attributes.extend(
        Attribute(draw(_token), draw(st.none() | _value)) for _ in range(draw(st.integers(0, 3)))
    )
    sdp.media.extend(draw(st.lists(_media(), max_size=3)))
    return sdp


@given(_sessions())
def test_serialized_descriptions_parse_back(sdp: SessionDescription) -> None:
    body = bytes(sdp)
    again = SessionDescription.parse(body)
    assert again == sdp
    assert bytes(again) == body


@given(_sessions())
def test_copy_equals_a_reparse_and_shares_nothing_mutable(sdp: SessionDescription) -> None:
    before = bytes(sdp)
    copy = sdp.copy()
    assert copy == SessionDescription.parse(before) == sdp
    assert bytes(copy) == before
    copy.origin.session_version += 1
    copy.attributes.append(Attribute("new"))
    for m in copy.media:
        m.formats.append("99")
        m.attributes.append(Attribute("new"))
        m.other.append(("i", "x"))
        if m.connection is not None:
            m.connection.address = "changed"
    if copy.connection is not None:
        copy.connection.address = "changed"
    assert bytes(sdp) == before  # the original is untouched


@pytest.mark.parametrize("body", [OFFER_AV, OFFER_VOLTE, OFFER_AV.replace(b"\r\n", b"\n")])
def test_copy_of_parsed_bodies_is_byte_exact_and_deep(body: bytes) -> None:
    sdp = SessionDescription.parse(body)
    copy = sdp.copy()
    assert bytes(copy) == body and copy == sdp
    copy.media[0].attributes[0].value = "changed"
    copy.media[0].set("ptime", "30")
    assert bytes(sdp) == body


def test_a_malformed_line_is_the_fault_reported_even_after_another_fault() -> None:
    # Lines are read once; a fault in an early line must not hide a line that is not
    # <type>=<value> at all further on (that one is what a 488/400 reason names).
    for body in (
        b"v=0\r\no=bad\r\ns=-\r\nt=0 0\r\nxx\r\n",
        b"v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio x RTP/AVP 0\r\n1=x\r\n",
        b"v=0\r\nfoo\r\n",
    ):
        with pytest.raises(SdpError, match="not a <type>=<value> line"):
            SessionDescription.parse(body.replace(b"\r\n", b"\n") if b"1=x" in body else body)
    with pytest.raises(SdpError, match="o= needs 6 fields"):
        SessionDescription.parse(b"v=0\r\no=bad\r\ns=-\r\nt=0 0\r\n")
    # A t= line belongs to the session; one inside a media section does not count.
    with pytest.raises(SdpError, match="needs a t= line"):
        SessionDescription.parse(
            b"v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nm=audio 1 RTP/AVP 0\r\nt=0 0\r\n"
        )


def test_every_kind_of_line_is_written_where_rfc_4566_puts_it() -> None:
    body = (
        b"v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\ni=info\r\nu=http://x\r\ne=a@b\r\np=+1\r\n"
        b"c=IN IP4 192.0.2.1\r\nb=AS:64\r\nt=0 0\r\nr=7d 1h 0 25h\r\nz=0 0\r\nk=prompt\r\n"
        b"a=group:BUNDLE 0\r\na=recvonly\r\n"
        b"m=audio 4000/2 RTP/AVP 0 8\r\ni=voice\r\nc=IN IP4 192.0.2.2\r\nb=AS:32\r\n"
        b"k=prompt\r\na=rtpmap:0 PCMU/8000\r\na=sendonly\r\n"
        b"m=video 0 RTP/AVP 31\r\n"
    )
    sdp = SessionDescription.parse(body)
    assert bytes(sdp) == body and bytes(sdp.copy()) == body
    assert sdp.media[0].port_count == 2 and sdp.media[1].rejected
    # Rebuilt from fields in any order, the lines still come out in that order.
    sdp.media[0].other.reverse()
    sdp.other.reverse()
    assert bytes(sdp).count(b"\r\n") == body.count(b"\r\n")
    assert bytes(sdp).index(b"i=info") < bytes(sdp).index(b"c=IN IP4 192.0.2.1")
    assert bytes(sdp).index(b"i=voice") < bytes(sdp).index(b"c=IN IP4 192.0.2.2")


def test_an_m_line_built_without_formats_has_no_trailing_blank() -> None:
    # The parser never makes one (RFC 4566 §5.14 needs a format), but code may build one; the
    # line is written as its fields join, as it always was.
    sdp = SessionDescription.parse(b"v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\n")
    sdp.media.append(MediaDescription("audio", 0, "RTP/AVP", []))
    assert bytes(sdp).endswith(b"\r\nm=audio 0 RTP/AVP\r\n")
