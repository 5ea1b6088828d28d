"""RFC 4475 torture messages through the parser and validation, byte-exact from ../shared.

`EXPECTED` holds, for every message, what this element does with it and why, in the RFC's
words (the index.tsv `rfc_expectation` column): `ACCEPT` (parses and validates: well formed,
or refusal is the application's business), `refuse(status)` (a request answered statelessly
with that status) or `DROP` (a malformed response, silently discarded). Extra checks follow for
the messages whose point is a particular reading (escapes, folding, framing ...).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.sip.errors import ParseError
from app.sip.message import (
    Request,
    Response,
    StreamFramer,
    error_response,
    parse_datagram,
    validate_request,
    validate_response,
)
from app.sip.uri import AbsoluteUri, SipUri

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "vectors" / "rfc4475"


@dataclass(frozen=True)
class Outcome:
    accepted: bool
    status: int | None = None  # the refusal's status; None for a dropped response


ACCEPT = Outcome(True)
DROP = Outcome(False)


def refuse(status: int) -> Outcome:
    return Outcome(False, status)


EXPECTED: dict[str, Outcome] = {
    # §3.1.1 valid messages: "all elements should treat this as well-formed".
    "wsinv": ACCEPT,
    "intmeth": ACCEPT,  # unknown method: 501/404 is the UA's or proxy's answer
    "esc01": ACCEPT,
    "escnull": ACCEPT,
    "esc02": ACCEPT,  # RE%47IST%45R is an unknown method, not REGISTER
    "lwsdisp": ACCEPT,
    "longreq": ACCEPT,
    "dblreq": ACCEPT,  # the trailing INVITE-looking octets are ignored
    "semiuri": ACCEPT,
    "transports": ACCEPT,
    "mpart01": ACCEPT,
    "unreason": ACCEPT,
    "noreason": ACCEPT,
    # §3.1.2 invalid messages.
    "badinv01": refuse(400),  # "should respond 400 Bad Request"
    "clerr": refuse(400),  # "UDP: respond 400"
    "ncl": refuse(400),  # "respond with an error"
    "scalar02": refuse(400),  # CSeq > 2**32-1: "respond 400"
    "scalarlg": DROP,  # a response: "receiver simply discards it"
    "quotbal": refuse(400),  # "should return 400"
    "ltgtruri": refuse(400),  # "reasonable always to reject with 400"
    "lwsruri": refuse(400),  # "should respond 400"
    "lwsstart": refuse(400),  # "acceptable to reject as malformed (400)"
    "trws": refuse(400),  # "acceptable to reject as malformed"
    "escruri": refuse(400),  # "acceptable to reject with 400"
    "baddate": ACCEPT,  # "shouldn't [reject] unless Date matters": it does not here
    "regbadct": refuse(400),  # "reasonable to respond 400"
    "badaspec": refuse(400),  # "reasonable to reject with 400"
    "baddn": refuse(400),  # "reasonable always to reject with 400"
    "badvers": refuse(505),  # "respond 505 Version Not Supported"
    "mismatch01": refuse(400),  # "any element responds 400"
    # "Should respond 501; 400 also acceptable": the transport refuses statelessly, before any
    # UA core could know whether it implements NEWMETHOD, so it answers 400.
    "mismatch02": refuse(400),
    "bigcode": DROP,  # a response: "element should simply drop it"
    # §3.2 transaction layer: branch "z9hG4bK" alone; accepted, RFC 2543 matching applies.
    "badbranch": ACCEPT,
    # §3.3 application layer.
    "insuf": refuse(400),  # no Call-ID/From/To: "ideally respond 400"
    "unkscm": ACCEPT,  # parser accepts; 416 is the application's answer
    "novelsc": ACCEPT,  # likewise
    "unksm2": ACCEPT,  # "syntactically valid; parsers must not fail"
    "bext01": ACCEPT,  # 420 is the UA's answer
    "invut": ACCEPT,  # 415 is the UA's answer
    "regaut01": ACCEPT,  # well formed
    "multi01": refuse(400),  # "respond 400 Bad Request"
    "mcl01": refuse(400),  # "framing error; respond with an error"
    "bcast": ACCEPT,  # well formed (an endpoint then discards it as not its own)
    "zeromf": ACCEPT,  # legal request
    "cparam01": ACCEPT,
    "cparam02": ACCEPT,
    "regescrt": ACCEPT,
    "sdp01": ACCEPT,  # 406 (or 400) would be the UA's answer
    # §3.4 backward compatibility: RFC 2543 syntax "should be accepted".
    "inv2543": ACCEPT,
}


def index() -> list[dict[str, str]]:
    with (VECTORS / "index.tsv").open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def load(name: str) -> bytes:
    return (VECTORS / f"{name}.sip").read_bytes()


def outcome(data: bytes) -> tuple[Outcome, Request | Response | None, ParseError | None]:
    try:
        msg = parse_datagram(data)
        if isinstance(msg, Request):
            validate_request(msg)
        else:
            validate_response(msg)
    except ParseError as exc:
        if data.lstrip().startswith(b"SIP/"):
            return DROP, None, exc
        return refuse(exc.status), None, exc
    return ACCEPT, msg, None


pytestmark = pytest.mark.skipif(not VECTORS.is_dir(), reason="../shared/vectors not present")


def test_every_vector_of_the_index_has_an_expectation() -> None:
    names = [row["name"] for row in index()]
    assert len(names) == 49
    assert sorted(names) == sorted(EXPECTED)


def test_expectations_follow_the_rfc_classes() -> None:
    for row in index():
        want = EXPECTED[row["name"]]
        if row["rfc_class"] == "valid":
            assert want == ACCEPT, row["name"]
        if want.status is not None:
            # Every refusal is one the RFC names (400/505) or allows.
            assert str(want.status) in row["rfc_expectation"] or want.status == 400, row["name"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_vector_outcome(name: str) -> None:
    data = load(name)
    got, _, exc = outcome(data)
    assert got == EXPECTED[name], f"{name}: {exc}"
    if exc is not None and got.status is not None:
        # The refusal can be sent: the error response salvages Via/From/To/Call-ID/CSeq.
        resp = error_response(data, exc, to_tag="x")
        assert resp is not None and resp.status == got.status
        assert resp.reason and "\r" not in resp.reason and "\n" not in resp.reason
        assert resp.get("Via") is not None
        parse_datagram(bytes(resp))  # what we send parses


@pytest.mark.parametrize("name", sorted(n for n, o in EXPECTED.items() if o == DROP))
def test_dropped_responses_get_no_answer(name: str) -> None:
    data = load(name)
    _, _, exc = outcome(data)
    assert exc is not None and error_response(data, exc) is None


def accepted(name: str) -> Request | Response:
    _, msg, exc = outcome(load(name))
    assert msg is not None, exc
    return msg


def request(name: str) -> Request:
    msg = accepted(name)
    assert isinstance(msg, Request)
    return msg


def test_wsinv_folding_lws_and_escaped_quotes() -> None:
    msg = request("wsinv")
    assert msg.method == "INVITE"
    assert msg.to.display_name is None and msg.to.sip_uri.user == "vivekg"
    assert msg.to.tag == "1918181833n"
    assert msg.from_.display_name == 'J Rosenberg \\\\\\"'  # escapes kept as written
    assert msg.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert msg.cseq.number == 9 and msg.cseq.method == "INVITE"  # leading zeros
    assert msg.max_forwards == 68
    vias = msg.vias
    assert [v.host for v in vias] == ["192.0.2.2", "spindle.example.com", "192.168.255.111"]
    assert [v.transport for v in vias] == ["UDP", "TCP", "UDP"]
    assert vias[1].branch == "z9hG4bK9ikj8" and vias[2].branch == "z9hG4bK30239"
    # A folded value is one value with the folds turned into single spaces (§7.3.1).
    assert msg.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.get("Subject") == ""
    assert msg.contact is not None and msg.contact.params["q"] == "0.33"
    assert msg.routes[0].sip_uri.params["unknown-no-value"] is None
    assert msg.body.startswith(b"v=0") and len(msg.body) == 150


def test_intmeth_method_and_unusual_uri() -> None:
    msg = request("intmeth")
    assert msg.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert msg.cseq.method == msg.method
    uri = msg.sip_uri
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"


def test_esc01_escapes_are_equivalent_when_unescaped() -> None:
    msg = request("esc01")
    assert msg.sip_uri.user_unescaped == "sips:user@example.com"
    assert msg.to.sip_uri.user_unescaped == "user"
    assert msg.from_.sip_uri.user_unescaped == "I have spaces"
    assert msg.content_type == "application/sdp"  # compact `c:`


def test_escnull_keeps_escaped_nul_and_two_contacts() -> None:
    msg = request("escnull")
    users = [c.sip_uri.user_unescaped for c in msg.contacts]
    assert users == ["\x00", "\x00\x00"]
    assert msg.to.sip_uri.user_unescaped == "null-\x00-null"


def test_esc02_unknown_method_and_two_contacts() -> None:
    msg = request("esc02")
    assert msg.method == "RE%47IST%45R" and msg.method != "REGISTER"
    assert [c.sip_uri.user for c in msg.contacts] == ["alias1", "alias3"]
    assert msg.to.display_name == "%Z%45"


def test_lwsdisp_display_name_without_space() -> None:
    msg = request("lwsdisp")
    assert msg.from_.display_name == "caller"


def test_longreq_long_values() -> None:
    msg = request("longreq")
    assert len(msg.call_id) > 100
    assert len(msg.to.display_name or "") > 100 and msg.to.sip_uri.port == 6000
    assert len(msg.vias) > 20 and msg.vias[-1].received == "192.0.2.5"


def test_dblreq_trailing_octets_ignored() -> None:
    msg = request("dblreq")
    assert msg.method == "REGISTER" and msg.body == b""


def test_semiuri_user_part_with_semicolon() -> None:
    msg = request("semiuri")
    assert msg.sip_uri.user_unescaped == "user;par=u@example.net"
    assert msg.sip_uri.host == "example.com" and msg.sip_uri.params == {}


def test_transports_every_via_transport() -> None:
    msg = request("transports")
    assert [v.transport for v in msg.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_mpart01_binary_body_kept_as_bytes() -> None:
    msg = request("mpart01")
    assert msg.content_type == "multipart/mixed"
    assert len(msg.body) == msg.content_length
    assert b"\x00" in msg.body


def test_unusual_and_empty_reason_phrases() -> None:
    ok = accepted("unreason")
    assert isinstance(ok, Response) and ok.status == 200
    assert ok.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    trying = accepted("noreason")
    assert isinstance(trying, Response) and trying.status == 100 and trying.reason == ""


def test_badbranch_parses_with_bare_magic_cookie() -> None:
    assert request("badbranch").top_via.branch == "z9hG4bK"


def test_application_level_vectors_are_left_to_the_application() -> None:
    assert isinstance(request("unkscm").uri, AbsoluteUri)
    assert isinstance(request("novelsc").uri, AbsoluteUri)
    unksm2 = request("unksm2")
    assert isinstance(unksm2.to.uri, AbsoluteUri) and isinstance(unksm2.from_.uri, AbsoluteUri)
    bext01 = request("bext01")
    assert bext01.require == frozenset({"nothingsupportsthis", "nothingsupportsthiseither"})
    assert bext01.proxy_require == frozenset({"noproxiessupportthis", "nordoanyproxiessupportthis"})
    assert request("invut").content_type == "application/unknownformat"
    assert request("zeromf").max_forwards == 0
    assert request("baddate").get("Date") == "Fri, 01 Jan 2010 16:00:00 EST"
    bcast = accepted("bcast")
    assert [v.host for v in bcast.vias][1] == "255.255.255.255"


def test_cparam_contact_parameter_placement() -> None:
    # cparam01: no <>, so ;unknownparam belongs to the header (RFC 3261 §20.10).
    c1 = request("cparam01").contacts[0]
    assert "unknownparam" in c1.params and isinstance(c1.uri, SipUri) and not c1.uri.params
    c2 = request("cparam02").contacts[0]
    assert not c2.params and isinstance(c2.uri, SipUri) and "unknownparam" in c2.uri.params


def test_regescrt_escaped_header_stays_in_the_uri() -> None:
    contact = request("regescrt").contacts[0]
    assert isinstance(contact.uri, SipUri)
    assert contact.uri.headers == "Route=%3Csip:sip.example.com%3E"
    assert str(contact) == "<sip:user@example.com?Route=%3Csip:sip.example.com%3E>"


def test_inv2543_body_runs_to_end_of_datagram() -> None:
    msg = request("inv2543")
    assert msg.content_length is None and msg.body.startswith(b"v=0")
    assert msg.top_via.branch is None and msg.from_.tag is None


# -- the same messages on a stream transport (RFC 3261 §18.3) ------------------------------


def frame(data: bytes) -> tuple[list[Request | Response], ParseError | None, int]:
    framer = StreamFramer()
    out: list[Request | Response] = []
    try:
        out.extend(framer.feed(data))
    except ParseError as exc:
        return out, exc, framer.pending
    return out, None, framer.pending


def test_stream_clerr_waits_for_more_body() -> None:
    # "TCP: wait for more data, close connection if none within a reasonable time" (idle).
    msgs, exc, pending = frame(load("clerr"))
    assert msgs == [] and exc is None and pending == len(load("clerr"))


@pytest.mark.parametrize("name", ["ncl", "mcl01"])
def test_stream_framing_errors_are_fatal(name: str) -> None:
    # "TCP: framing error unrecoverable, close connection."
    msgs, exc, _ = frame(load(name))
    assert msgs == [] and exc is not None and exc.status == 400


def test_stream_baddn_without_blank_line_is_incomplete() -> None:
    msgs, exc, pending = frame(load("baddn"))
    assert msgs == [] and exc is None and pending > 0


def test_stream_inv2543_needs_content_length() -> None:
    # RFC 3261 §18.3: Content-Length is mandatory on a stream; 2543 syntax is for UDP.
    msgs, exc, _ = frame(load("inv2543"))
    assert msgs == [] and exc is not None


def test_stream_dblreq_is_two_messages() -> None:
    # The rule to ignore trailing octets is for datagrams (§18.3); on a stream the octets
    # after the REGISTER are the next message, an INVITE whose Content-Length (150) stops
    # five octets short of its SDP: those ("C\r\n\r\n") are a malformed third message.
    msgs, exc, _ = frame(load("dblreq"))
    assert [m.method for m in msgs if isinstance(m, Request)] == ["REGISTER", "INVITE"]
    assert exc is not None and exc.reason == "Malformed request line"


@pytest.mark.parametrize(
    "name",
    sorted(
        n for n, o in EXPECTED.items() if o == ACCEPT and n not in ("inv2543", "dblreq", "baddn")
    ),
)
def test_stream_frames_each_accepted_vector(name: str) -> None:
    data = load(name)
    msgs, exc, pending = frame(data + data)  # two back to back
    assert exc is None and len(msgs) == 2 and pending == 0
