"""Header names and typed header values (RFC 3261 §7.3, §20; RFC 3262 RAck)."""

from __future__ import annotations

import pytest

from app.sip.errors import ParseError
from app.sip.headers import (
    COMPACT_FORMS,
    CSeq,
    ParamValue,
    RAck,
    Via,
    canonical_name,
    split_commas,
    split_semicolons,
)


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("v", "Via"),
        ("V", "Via"),
        ("via", "Via"),
        ("call-id", "Call-ID"),
        ("i", "Call-ID"),
        ("cseq", "CSeq"),
        ("l", "Content-Length"),
        ("m", "Contact"),
        ("k", "Supported"),
        ("o", "Event"),
        ("u", "Allow-Events"),
        ("r", "Refer-To"),
        ("x", "Session-Expires"),
        ("rack", "RAck"),
        ("p-asserted-identity", "P-Asserted-Identity"),
        ("X-Custom-Header", "X-Custom-Header"),
    ],
)
def test_canonical_names(raw: str, name: str) -> None:
    assert canonical_name(raw) == name


def test_every_compact_form_expands_to_a_known_name() -> None:
    for short, full in COMPACT_FORMS.items():
        assert len(short) == 1 and canonical_name(full.lower()) == full


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("a", ["a"]),
        ("a, b ,c", ["a", "b", "c"]),
        ('"Doe, John" <sip:j@h>, <sip:k@h>', ['"Doe, John" <sip:j@h>', "<sip:k@h>"]),
        ("<sip:a@h;x=1,2>, <sip:b@h>", ["<sip:a@h;x=1,2>", "<sip:b@h>"]),
        ('"esc \\" ,quote" <sip:a@h>, b', ['"esc \\" ,quote" <sip:a@h>', "b"]),
        ("a,,b", ["a", "", "b"]),
    ],
)
def test_split_commas(value: str, parts: list[str]) -> None:
    assert split_commas(value) == parts


def test_split_semicolons_outside_quotes() -> None:
    assert split_semicolons("active;expires=60") == ("active", "expires=60")
    assert split_semicolons('"a;b";c') == ('"a;b"', "c")
    assert split_semicolons("plain") == ("plain", "")


def test_via_full() -> None:
    via = Via.parse(
        "SIP/2.0/udp pc33.atlanta.com:5066;branch=z9hG4bK776asdhds;rport;"
        "received=192.0.2.1;maddr=224.2.0.1;ttl=16"
    )
    assert via.transport == "UDP" and via.host == "pc33.atlanta.com" and via.port == 5066
    assert via.branch == "z9hG4bK776asdhds" and via.received == "192.0.2.1"
    assert via.rport is None and "rport" in via.params
    assert via.params["maddr"] == "224.2.0.1"
    assert via.sent_by == ("pc33.atlanta.com", 5066)
    assert str(via) == (
        "SIP/2.0/UDP pc33.atlanta.com:5066;branch=z9hG4bK776asdhds;rport;"
        "received=192.0.2.1;maddr=224.2.0.1;ttl=16"
    )


def test_via_lws_everywhere() -> None:
    via = Via.parse("SIP  /   2.0 /UDP    192.0.2.2 : 5060  ;  branch = z9hG4bK1")
    assert (via.transport, via.host, via.port, via.branch) == ("UDP", "192.0.2.2", 5060, "z9hG4bK1")


def test_via_ipv6_and_bracketed_received() -> None:
    via = Via.parse("SIP/2.0/UDP [2001:db8::9:1]:6050;received=[2001:db8::9:255];rport=7")
    assert via.host == "[2001:db8::9:1]" and via.port == 6050
    assert via.received == "2001:db8::9:255" and via.rport == 7


@pytest.mark.parametrize(
    "bad",
    [
        "SIP/2.0 host",
        "SIP/2.0/UDP",
        "SIP/2.0/UDP host;;",
        "SIP/2.0/UDP 2001:db8::1",
        "SIP/2.0/UDP host:70000",
        "SIP/2.0/UDP host;branch=a b",
    ],
)
def test_bad_vias(bad: str) -> None:
    with pytest.raises(ParseError):
        Via.parse(bad)


def test_cseq() -> None:
    assert CSeq.parse(" 0009\r\n  INVITE") == CSeq(9, "INVITE")
    assert str(CSeq(1, "PRACK")) == "1 PRACK"
    for bad in (
        "INVITE",
        "1",
        "x INVITE",
        "1 INVITE extra",
        "-1 INVITE",
        "4294967296 ACK",
        "1 IN(VITE",
    ):
        with pytest.raises(ParseError):
            CSeq.parse(bad)
    assert CSeq.parse("4294967295 ACK").number == 2**32 - 1


def test_rack() -> None:
    rack = RAck.parse("776656 1 INVITE")
    assert (rack.rseq, rack.cseq, rack.method) == (776656, 1, "INVITE")
    assert str(rack) == "776656 1 INVITE"
    for bad in ("1 INVITE", "a 1 INVITE", "1 b INVITE"):
        with pytest.raises(ParseError):
            RAck.parse(bad)


def test_param_value() -> None:
    pv = ParamValue.parse('terminated;reason=noresource;retry-after="30"')
    assert pv.value == "terminated" and pv.params["reason"] == "noresource"
    assert pv.param("retry-after") == "30" and pv.params["retry-after"] == '"30"'
    assert str(pv) == 'terminated;reason=noresource;retry-after="30"'
    ct = ParamValue.parse('multipart/mixed ; boundary="a;b"')
    assert ct.value == "multipart/mixed" and ct.param("boundary") == "a;b"
    with pytest.raises(ParseError):
        ParamValue.parse("x;;y")
