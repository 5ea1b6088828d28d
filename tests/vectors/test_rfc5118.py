"""RFC 5118 IPv6 torture messages through the parser and validation (../shared/vectors).

Only `ipv6-bad` is to be refused (RFC 5118 §4.2: "should respond with a 400 Bad Request");
every other message parses, and the checks below pin down the reading each one is about.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from app.sip.errors import ParseError
from app.sip.message import Request, error_response, parse_datagram, validate_request

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "vectors" / "rfc5118"

# name -> None (accepted) or the status of the stateless refusal.
EXPECTED: dict[str, int | None] = {
    "ipv6-good": None,
    "ipv6-bad": 400,
    "port-ambiguous": None,  # well formed; [2001:db8::10:5070] is one address, no port
    "port-unambiguous": None,
    "via-received-param-with-delim": None,  # "accept both forms"
    "via-received-param-no-delim": None,
    "ipv6-in-sdp": None,
    "mult-ip-in-header": None,
    "mult-ip-in-sdp": None,
    "ipv4-mapped-ipv6": None,
    "ipv6-bug-abnf-3-colons": None,  # "an implementation must tolerate both"
    "ipv6-correct-abnf-2-colons": None,
}

pytestmark = pytest.mark.skipif(not VECTORS.is_dir(), reason="../shared/vectors not present")


def load(name: str) -> bytes:
    return (VECTORS / f"{name}.sip").read_bytes()


def request(name: str) -> Request:
    msg = parse_datagram(load(name))
    assert isinstance(msg, Request)
    validate_request(msg)
    return msg


def test_table_covers_the_index() -> None:
    with (VECTORS / "index.tsv").open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert sorted(r["name"] for r in rows) == sorted(EXPECTED)
    for row in rows:
        # The index marks exactly one message invalid, the one refused here.
        assert (row["rfc_class"] == "invalid") == (EXPECTED[row["name"]] is not None)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_vector_outcome(name: str) -> None:
    data = load(name)
    try:
        request(name)
    except ParseError as exc:
        assert exc.status == EXPECTED[name], exc.reason
        resp = error_response(data, exc)
        assert resp is not None and resp.status == exc.status
        return
    assert EXPECTED[name] is None


def test_ipv6_bad_reason_names_the_fault() -> None:
    with pytest.raises(ParseError, match=r"IPv6 address without \[\]"):
        request("ipv6-bad")


def test_ipv6_good_references() -> None:
    msg = request("ipv6-good")
    assert msg.sip_uri.host == "[2001:db8::10]" and msg.sip_uri.port is None
    assert msg.top_via.host == "[2001:db8::9:1]"
    assert msg.contact is not None and msg.contact.sip_uri.host == "[2001:db8::1]"


def test_port_ambiguous_and_unambiguous() -> None:
    ambiguous = request("port-ambiguous").sip_uri
    assert ambiguous.host == "[2001:db8::10:5070]" and ambiguous.port is None
    clear = request("port-unambiguous").sip_uri
    assert clear.host == "[2001:db8::10]" and clear.port == 5070


@pytest.mark.parametrize("name", ["via-received-param-with-delim", "via-received-param-no-delim"])
def test_received_with_and_without_brackets(name: str) -> None:
    via = request(name).top_via
    assert via.received == "2001:db8::9:255"
    assert via.branch is not None and via.branch.startswith("z9hG4bKas3")


def test_mult_ip_in_header() -> None:
    vias = request("mult-ip-in-header").vias
    assert [(v.host, v.port) for v in vias] == [
        ("[2001:db8::9:1]", 6050),
        ("192.0.2.1", None),
        ("[2001:db8::9:255]", None),
    ]
    assert vias[2].received == "192.0.2.200" and vias[2].transport == "TCP"


def test_ipv4_mapped() -> None:
    vias = request("ipv4-mapped-ipv6").vias
    assert vias[0].host == "[::ffff:192.0.2.10]" and vias[0].port == 19823


@pytest.mark.parametrize("name", ["ipv6-bug-abnf-3-colons", "ipv6-correct-abnf-2-colons"])
def test_both_abnf_forms_tolerated(name: str) -> None:
    msg = request(name)
    assert msg.sip_uri.host.startswith("[2001:db8:") and msg.to.sip_uri.host == msg.sip_uri.host


@pytest.mark.parametrize("name", ["ipv6-in-sdp", "mult-ip-in-sdp", "ipv4-mapped-ipv6"])
def test_sdp_bodies_kept_whole(name: str) -> None:
    msg = request(name)
    assert msg.body.startswith(b"v=0") and msg.content_length == len(msg.body)
