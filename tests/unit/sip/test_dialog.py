"""Dialogs (RFC 3261 §12): creation on both sides, route sets, loose and strict routing,
CSeq rules, remote target refresh, matching, 481 through the table, persistence."""

from __future__ import annotations

import json

import pytest

from app.sip.dialog import Dialog, DialogId, DialogState, DialogTable
from app.sip.errors import LocalProtocolError
from app.sip.message import Request, Response, make_response, parse_datagram
from app.sip.uri import NameAddr

VIA = "SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK-new"
FOCUS_CONTACT = NameAddr.parse("<sip:conf-abc@192.0.2.10:5070>;isfocus")


def parse_request(text: str, body: bytes = b"") -> Request:
    msg = parse_datagram(text.replace("\n", "\r\n").encode() + body)
    assert isinstance(msg, Request)
    return msg


def invite(record_routes: tuple[str, ...] = (), *, to_tag: str | None = None) -> Request:
    rr = "".join(f"Record-Route: {r}\n" for r in record_routes)
    to = "<sip:conf-factory1@mrfc1.home1.net>" + (f";tag={to_tag}" if to_tag else "")
    return parse_request(
        "INVITE sip:conf-factory1@mrfc1.home1.net SIP/2.0\n"
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1\n"
        "Max-Forwards: 70\n"
        f"{rr}"
        'From: "User 1" <sip:user1_public1@home1.net>;tag=ue-tag\n'
        f"To: {to}\n"
        "Call-ID: dlg-1@192.0.2.1\n"
        "CSeq: 10 INVITE\n"
        "Contact: <sip:user1@192.0.2.1:5060;transport=udp>\n"
        "Content-Length: 0\n\n"
    )


def answer(
    req: Request,
    status: int = 200,
    *,
    contact: str = "<sip:bob@192.0.2.20:5062>",
    record_routes: tuple[str, ...] | None = None,
    to_tag: str = "far-tag",
) -> Response:
    resp = make_response(req, status, to_tag=to_tag, headers=[("Contact", contact)])
    if record_routes is not None:
        resp.remove("Record-Route")
        for r in record_routes:
            resp.add("Record-Route", r)
    parsed = parse_datagram(bytes(resp))
    assert isinstance(parsed, Response)
    return parsed


def in_dialog(
    method: str,
    cseq: int,
    *,
    from_tag: str = "ue-tag",
    to_tag: str = "focus-tag",
    contact: str | None = None,
    call_id: str = "dlg-1@192.0.2.1",
) -> Request:
    contact_line = f"Contact: {contact}\n" if contact else ""
    return parse_request(
        f"{method} sip:conf-abc@192.0.2.10:5070 SIP/2.0\n"
        f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-{method}{cseq}\n"
        "Max-Forwards: 70\n"
        f"From: <sip:user1_public1@home1.net>;tag={from_tag}\n"
        f"To: <sip:conf-factory1@mrfc1.home1.net>;tag={to_tag}\n"
        f"Call-ID: {call_id}\n"
        f"CSeq: {cseq} {method}\n"
        f"{contact_line}"
        "Content-Length: 0\n\n"
    )


# -- creation (§12.1.1, §12.1.2) ----------------------------------------------------------------

RRS = ("<sip:scscf.home1.net;lr>", "<sip:pcscf.home1.net;lr>")


def test_uas_dialog_from_request() -> None:
    req = invite(RRS)
    d = Dialog.uas(req, "focus-tag", FOCUS_CONTACT)
    assert d.id == DialogId("dlg-1@192.0.2.1", "focus-tag", "ue-tag")
    assert not d.is_uac and d.state is DialogState.EARLY
    # §12.1.1: route set = Record-Route in order; remote target = Contact; remote CSeq =
    # the request's; local CSeq empty (the first request we send takes 1).
    assert [str(r) for r in d.route_set] == list(RRS)
    assert str(d.remote_target) == "sip:user1@192.0.2.1:5060;transport=udp"
    assert d.remote_cseq == 10 and d.local_cseq == 0
    assert d.remote_uri.tag is None and d.local_uri.tag is None
    assert d.remote_uri.display_name == "User 1"
    assert not d.secure
    req2, _ = d.create_request("BYE", VIA)
    assert req2.cseq.number == 1


def test_uas_dialog_needs_contact() -> None:
    req = invite()
    req.remove("Contact")
    with pytest.raises(LocalProtocolError):
        Dialog.uas(req, "t", FOCUS_CONTACT)


def test_uac_dialog_reverses_record_route() -> None:
    req = invite(to_tag=None)
    resp = answer(req, 200, record_routes=RRS)
    d = Dialog.uac(req, resp)
    assert d.is_uac and d.state is DialogState.CONFIRMED
    assert d.id == DialogId("dlg-1@192.0.2.1", "ue-tag", "far-tag")
    # §12.1.2: the UAC's route set is the Record-Route list in reverse order.
    assert [str(r) for r in d.route_set] == list(reversed(RRS))
    assert str(d.remote_target) == "sip:bob@192.0.2.20:5062"
    assert d.local_cseq == 10 and d.remote_cseq is None
    assert d.create_request("BYE", VIA)[0].cseq.number == 11


def test_uac_early_dialog_from_18x_then_confirmed_by_2xx_with_its_route_set() -> None:
    req = invite()
    early = answer(req, 183, record_routes=("<sip:old.example.com;lr>",))
    d = Dialog.uac(req, early)
    assert d.state.value == "early"
    assert [str(r) for r in d.route_set] == ["<sip:old.example.com;lr>"]
    # §13.2.2.4: the 2xx recomputes the route set (reversed) and may move the target.
    ok = answer(req, 200, record_routes=RRS, contact="<sip:bob@192.0.2.30:5064>")
    d.accept_response(req, ok)
    assert d.state is DialogState.CONFIRMED
    assert [str(r) for r in d.route_set] == list(reversed(RRS))
    assert str(d.remote_target) == "sip:bob@192.0.2.30:5064"


def test_uac_dialog_needs_remote_tag_and_contact() -> None:
    req = invite()
    no_tag = make_response(req, 180, headers=[("Contact", "<sip:b@192.0.2.2>")])
    with pytest.raises(LocalProtocolError):
        Dialog.uac(req, no_tag)
    no_contact = make_response(req, 180, to_tag="x")
    with pytest.raises(LocalProtocolError):
        Dialog.uac(req, no_contact)


# -- requests we send (§12.2.1.1) -------------------------------------------------------------


def test_loose_routing_request() -> None:
    d = Dialog.uas(invite(RRS), "focus-tag", FOCUS_CONTACT)
    req, next_hop = d.create_request(
        "INFO", VIA, headers=[("Content-Type", "text/plain")], body=b"hi"
    )
    wire = parse_datagram(bytes(req))
    assert isinstance(wire, Request)
    # Request-URI = remote target; Route = route set; next hop = the first route.
    assert wire.uri_text == "sip:user1@192.0.2.1:5060;transport=udp"
    assert [str(r) for r in wire.routes] == list(RRS)
    assert str(next_hop) == "sip:scscf.home1.net;lr"
    assert wire.from_.tag == "focus-tag" and wire.to.tag == "ue-tag"
    assert wire.call_id == "dlg-1@192.0.2.1"
    assert (wire.cseq.number, wire.cseq.method) == (1, "INFO")
    assert str(wire.contact) == str(FOCUS_CONTACT)
    assert wire.max_forwards == 70 and wire.top_via.branch == "z9hG4bK-new"
    assert wire.get("Content-Type") == "text/plain" and wire.body == b"hi"


def test_no_route_set_goes_to_remote_target() -> None:
    d = Dialog.uas(invite(), "focus-tag", FOCUS_CONTACT)
    req, next_hop = d.create_request("BYE", VIA)
    assert req.get("Route") is None
    assert str(next_hop) == str(d.remote_target) == req.uri_text
    # BYE carries no Contact (it is not a target refresh).
    assert req.get("Contact") is None


def test_strict_routing_request() -> None:
    """§12.2.1.1: a strict router first in the route set takes the Request-URI (without
    parameters a Request-URI may not hold); the rest of the route set, then the remote target,
    go into Route."""
    rrs = ("<sip:strict.example.com;transport=udp?X-Hdr=1>", "<sip:p2.example.com;lr>")
    d = Dialog.uas(invite(rrs), "focus-tag", FOCUS_CONTACT)
    req, next_hop = d.create_request("BYE", VIA)
    assert req.uri_text == "sip:strict.example.com;transport=udp"
    assert req.get_lines("Route") == [
        "<sip:p2.example.com;lr>",
        "<sip:user1@192.0.2.1:5060;transport=udp>",
    ]
    assert str(next_hop) == "sip:strict.example.com;transport=udp"
    # The dialog's own route set is untouched.
    assert str(d.route_set[0]) == rrs[0]


def test_cseq_increments_and_ack_cancel_reuse_the_invite_number() -> None:
    d = Dialog.uac(invite(), answer(invite()))
    reinvite, _ = d.create_request("INVITE", VIA)
    assert reinvite.cseq.number == 11
    ack, _ = d.create_request("ACK", VIA, cseq=reinvite.cseq.number)
    assert (ack.cseq.number, ack.cseq.method) == (11, "ACK") and d.local_cseq == 11
    assert d.create_request("UPDATE", VIA)[0].cseq.number == 12


def test_local_cseq_exhausted() -> None:
    d = Dialog.uac(invite(), answer(invite()))
    d.local_cseq = 2**31 - 1
    with pytest.raises(LocalProtocolError):
        d.create_request("BYE", VIA)


# -- requests we receive (§12.2.2) --------------------------------------------------------------


def test_lower_cseq_is_refused_with_500() -> None:
    d = Dialog.uas(invite(), "focus-tag", FOCUS_CONTACT)  # remote CSeq 10
    assert d.check_request(in_dialog("INFO", 11)) is None
    d.accept_request(in_dialog("INFO", 11))
    assert d.remote_cseq == 11
    assert d.check_request(in_dialog("INFO", 9)) == (500, "CSeq out of order")
    assert d.check_request(in_dialog("INFO", 11)) == (500, "CSeq out of order")
    # A jump forward is fine (§12.2.2: numbers need not be contiguous).
    assert d.check_request(in_dialog("BYE", 1000)) is None
    # ACK and CANCEL carry the INVITE's number and are not checked.
    assert d.check_request(in_dialog("ACK", 10)) is None
    d.accept_request(in_dialog("ACK", 10))
    assert d.remote_cseq == 11


def test_first_request_of_a_uac_dialog_sets_remote_cseq() -> None:
    d = Dialog.uac(invite(), answer(invite()))
    # §12.2.2: an empty remote sequence number accepts any value and is then set.
    bye = in_dialog("BYE", 1, from_tag="far-tag", to_tag="ue-tag")
    assert d.check_request(bye) is None
    d.accept_request(bye)
    assert d.remote_cseq == 1


def test_remote_target_refresh() -> None:
    d = Dialog.uas(invite(), "focus-tag", FOCUS_CONTACT)
    d.accept_request(in_dialog("INFO", 11, contact="<sip:elsewhere@192.0.2.99>"))
    assert str(d.remote_target) == "sip:user1@192.0.2.1:5060;transport=udp"  # not a refresh
    for i, method in enumerate(("INVITE", "UPDATE", "NOTIFY", "SUBSCRIBE")):
        contact = f"<sip:moved{i}@192.0.2.{50 + i}>"
        d.accept_request(in_dialog(method, 12 + i, contact=contact))
        assert str(d.remote_target) == contact[1:-1]
    # A 2xx to our own target refresh request moves it too (§12.2.1.2); an error does not.
    update, _ = d.create_request("UPDATE", VIA)
    d.accept_response(update, answer(update, 491, contact="<sip:no@192.0.2.70>"))
    assert str(d.remote_target) == "sip:moved3@192.0.2.53"
    d.accept_response(update, answer(update, 200, contact="<sip:yes@192.0.2.71>"))
    assert str(d.remote_target) == "sip:yes@192.0.2.71"


def test_matching() -> None:
    d = Dialog.uas(invite(), "focus-tag", FOCUS_CONTACT)
    assert d.matches(in_dialog("BYE", 11))
    assert not d.matches(in_dialog("BYE", 11, to_tag="other"))
    assert not d.matches(in_dialog("BYE", 11, from_tag="other"))
    assert not d.matches(in_dialog("BYE", 11, call_id="other@x"))
    bye, _ = d.create_request("BYE", VIA)
    resp = make_response(bye, 200)
    assert d.matches(resp)


def test_table_finds_dialogs_and_misses_mean_481() -> None:
    table = DialogTable()
    uas = Dialog.uas(invite(), "focus-tag", FOCUS_CONTACT)
    uac = Dialog.uac(invite(), answer(invite()))
    table.add(uas)
    table.add(uac)
    assert len(table) == 2 and set(table) == {uas, uac}
    assert table.find_for_request(in_dialog("BYE", 11)) is uas
    assert table.find_for_request(in_dialog("BYE", 5, from_tag="far-tag", to_tag="ue-tag")) is uac
    # No To tag: not an in-dialog request.
    assert table.find_for_request(invite()) is None
    # §12.2.2: a request with a To tag that matches no dialog gets 481; the table says None.
    assert table.find_for_request(in_dialog("BYE", 11, to_tag="gone")) is None
    # Responses to our requests match by From tag (local) and To tag (remote).
    bye, _ = uac.create_request("BYE", VIA)
    assert table.find_for_response(answer(bye, 200, to_tag="far-tag")) is uac
    fork = answer(bye, 200)
    fork.set("To", "<sip:conf-factory1@mrfc1.home1.net>;tag=another-fork")
    assert table.find_for_response(fork) is None
    table.remove(uas)
    assert table.find_for_request(in_dialog("BYE", 11)) is None and len(table) == 1


# -- persistence ---------------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["uas", "uac"])
def test_persistence_round_trip(side: str) -> None:
    rrs = ("<sip:strict.example.com>", "<sip:p2.example.com;lr>")
    if side == "uas":
        d = Dialog.uas(invite(rrs), "focus-tag", FOCUS_CONTACT, state=DialogState.CONFIRMED)
    else:
        d = Dialog.uac(invite(), answer(invite(), record_routes=rrs))
    d.create_request("INFO", VIA)
    data = json.loads(json.dumps(d.to_dict()))  # plain JSON, as a database column holds it
    back = Dialog.from_dict(data)
    assert back.to_dict() == d.to_dict()
    assert back.id == d.id and back.state is d.state and back.is_uac is d.is_uac
    # The restored dialog builds the same next request.
    a, hop_a = d.create_request("BYE", VIA)
    b, hop_b = back.create_request("BYE", VIA)
    assert bytes(a) == bytes(b) and str(hop_a) == str(hop_b)


def test_from_dict_refuses_a_non_sip_target() -> None:
    data = Dialog.uas(invite(), "t", FOCUS_CONTACT).to_dict()
    data["remote_target"] = "tel:+15551234"
    with pytest.raises(ValueError):
        Dialog.from_dict(data)


def test_snapshots_follow_target_refreshes_and_route_sets() -> None:
    """to_dict keeps the text of the addresses between snapshots; a refresh still shows."""
    d = Dialog.uac(invite(), answer(invite()))
    first = d.to_dict()
    assert d.to_dict() == first
    d.accept_request(in_dialog("UPDATE", 11, from_tag=d.remote_tag, to_tag=d.local_tag,
                               contact="<sip:moved@192.0.2.77>"))  # fmt: skip
    moved = d.to_dict()
    assert moved["remote_target"] == "sip:moved@192.0.2.77"
    assert moved["remote_cseq"] == 11
    invite_again, _ = d.create_request("INVITE", VIA)
    d.state = DialogState.EARLY  # as if the first 2xx were still to come: it sets the routes
    d.accept_response(invite_again, answer(invite_again, record_routes=RRS))
    routed = d.to_dict()
    assert routed["route_set"] == list(reversed(RRS))
    routed["route_set"].append("<sip:mine@x>")  # a snapshot is the caller's to change
    assert d.to_dict()["route_set"] == list(reversed(RRS))
