"""RFC 3312 segmented QoS preconditions, checked against the RFC 3312 §6 call flow lines."""

from __future__ import annotations

import pytest

from app.focus.preconditions import (
    PreconditionTable,
    QosDirection,
    QosLine,
    StatusType,
    Strength,
    add_preconditions,
    preconditions_failed,
    preconditions_met,
    strip_preconditions,
    uses_preconditions,
)
from app.sip.sdp import Attribute, MediaDescription, SdpError, SessionDescription, build_answer


def offer_with(*lines: str) -> SessionDescription:
    body = "\r\n".join(
        [
            "v=0",
            "o=- 1 1 IN IP4 192.0.2.1",
            "s=-",
            "c=IN IP4 192.0.2.1",
            "t=0 0",
            "m=audio 20000 RTP/AVP 0",
            *lines,
            "",
        ]
    )
    return SessionDescription.parse(body)


def qos_lines(sdp: SessionDescription, index: int = 0) -> list[str]:
    return [f"a={a}" for a in sdp.media[index].attributes if a.name in ("curr", "des", "conf")]


def answer_for(offer: SessionDescription) -> SessionDescription:
    return build_answer(offer, address="192.0.2.4", port=30000, session_id="2", version=1)


# RFC 3312 §6: the offer of A (INVITE) and its UPDATE once A's resources are reserved.
RFC3312_OFFER = [
    "a=curr:qos local none",
    "a=curr:qos remote none",
    "a=des:qos mandatory local sendrecv",
    "a=des:qos mandatory remote sendrecv",
]
RFC3312_UPDATE = [
    "a=curr:qos local sendrecv",
    "a=curr:qos remote none",
    "a=des:qos mandatory local sendrecv",
    "a=des:qos mandatory remote sendrecv",
]


def test_rfc3312_answer_of_an_answerer_that_still_reserves() -> None:
    # RFC 3312 §6: B has reserved nothing yet and asks A to confirm its segment.
    offer = offer_with(*RFC3312_OFFER)
    table = PreconditionTable.from_offer(offer, local_current=QosDirection.NONE)
    assert qos_lines(add_preconditions(answer_for(offer), table)) == [
        "a=curr:qos local none",
        "a=curr:qos remote none",
        "a=des:qos mandatory local sendrecv",
        "a=des:qos mandatory remote sendrecv",
        "a=conf:qos remote sendrecv",
    ]
    assert not preconditions_met(table)


def test_focus_flow_183_then_update() -> None:
    offer = offer_with(*RFC3312_OFFER)
    assert uses_preconditions(offer)
    table = PreconditionTable.from_offer(offer)

    # The media processor never sees the lines.
    forwarded = strip_preconditions(offer)
    assert qos_lines(forwarded) == []
    assert not uses_preconditions(forwarded)
    assert qos_lines(offer) == RFC3312_OFFER  # the original is untouched

    mrfp_answer = answer_for(forwarded)
    answer_183 = add_preconditions(mrfp_answer, table)
    assert qos_lines(answer_183) == [
        "a=curr:qos local sendrecv",  # the focus's own segment needs no reservation
        "a=curr:qos remote none",
        "a=des:qos mandatory local sendrecv",
        "a=des:qos mandatory remote sendrecv",
        "a=conf:qos remote sendrecv",
    ]
    assert not preconditions_met(table)  # hold the 200 to the INVITE

    table.update(offer_with(*RFC3312_UPDATE))
    answer_update = add_preconditions(mrfp_answer, table)
    assert qos_lines(answer_update) == [
        "a=curr:qos local sendrecv",
        "a=curr:qos remote sendrecv",
        "a=des:qos mandatory local sendrecv",
        "a=des:qos mandatory remote sendrecv",
    ]
    assert preconditions_met(table)
    assert qos_lines(mrfp_answer) == []  # add_preconditions copies


def test_directions_and_segments_are_turned_around() -> None:
    # The UE has reserved only its sending direction: for the focus that is the remote
    # segment's receiving direction (RFC 3312 §5: send/recv are the writer's point of view).
    offer = offer_with(
        "a=curr:qos local send",
        "a=curr:qos remote none",
        "a=des:qos mandatory local sendrecv",
        "a=des:qos none remote sendrecv",
    )
    table = PreconditionTable.from_offer(offer)
    assert qos_lines(add_preconditions(answer_for(offer), table)) == [
        "a=curr:qos local sendrecv",
        "a=curr:qos remote recv",
        "a=des:qos none local sendrecv",
        "a=des:qos mandatory remote sendrecv",
        "a=conf:qos remote send",
    ]
    assert not preconditions_met(table)


def test_split_strengths_get_one_line_per_direction() -> None:
    offer = offer_with(
        "a=curr:qos local none",
        "a=des:qos mandatory local send",
        "a=des:qos optional local recv",
    )
    table = PreconditionTable.from_offer(offer)
    lines = qos_lines(add_preconditions(answer_for(offer), table))
    assert "a=des:qos mandatory remote recv" in lines
    assert "a=des:qos optional remote send" in lines


def test_optional_preconditions_do_not_hold_the_session() -> None:
    table = PreconditionTable.from_offer(
        offer_with("a=curr:qos local none", "a=des:qos optional local sendrecv")
    )
    assert preconditions_met(table)


def test_strength_is_never_downgraded() -> None:
    table = PreconditionTable.from_offer(offer_with(*RFC3312_OFFER))
    table.update(offer_with("a=curr:qos local none", "a=des:qos optional local sendrecv"))
    remote = table.streams[0].segments[StatusType.REMOTE]
    assert (remote.desired_send, remote.desired_recv) == (Strength.MANDATORY, Strength.MANDATORY)


def test_failure_strength_fails_the_session() -> None:
    table = PreconditionTable.from_offer(offer_with(*RFC3312_OFFER))
    table.update(offer_with("a=curr:qos local none", "a=des:qos failure local sendrecv"))
    assert preconditions_failed(table)
    assert not preconditions_met(table)


def test_e2e_status() -> None:
    offer = offer_with("a=curr:qos e2e none", "a=des:qos mandatory e2e sendrecv")
    table = PreconditionTable.from_offer(offer)
    assert qos_lines(add_preconditions(answer_for(offer), table)) == [
        "a=curr:qos e2e none",
        "a=des:qos mandatory e2e sendrecv",
        "a=conf:qos e2e sendrecv",
    ]
    table.update(offer_with("a=curr:qos e2e sendrecv", "a=des:qos mandatory e2e sendrecv"))
    assert preconditions_met(table)


def test_offer_without_preconditions_goes_straight_through() -> None:
    offer = offer_with("a=sendrecv")
    assert not uses_preconditions(offer)
    table = PreconditionTable.from_offer(offer)
    assert preconditions_met(table)
    assert bytes(add_preconditions(answer_for(offer), table)) == bytes(answer_for(offer))


def test_rejected_streams_get_no_lines() -> None:
    offer = offer_with(*RFC3312_OFFER)
    offer.media.append(MediaDescription("video", 5000, "RTP/AVP", ["31"]))
    offer.media[1].attributes.extend(offer.media[0].attributes)
    table = PreconditionTable.from_offer(offer)
    answer = add_preconditions(answer_for(offer), table)
    assert answer.media[1].port == 0
    assert qos_lines(answer, 1) == []


def test_other_precondition_types_are_left_alone() -> None:
    # RFC 3312 §5 defines only "qos"; another type is not the focus's to strip or judge.
    offer = offer_with("a=des:foo mandatory local sendrecv", "a=curr:qos local none")
    assert QosLine.from_attribute(Attribute("des", "foo mandatory local sendrecv")) is None
    assert qos_lines(strip_preconditions(offer)) == ["a=des:foo mandatory local sendrecv"]


@pytest.mark.parametrize(
    "attribute",
    [
        Attribute("curr", "qos local"),
        Attribute("curr", "qos middle none"),
        Attribute("des", "qos mandatory local"),
        Attribute("des", "qos strong local sendrecv"),
        Attribute("conf", "qos remote both"),
    ],
)
def test_malformed_lines_raise(attribute: Attribute) -> None:
    with pytest.raises(SdpError):
        QosLine.from_attribute(attribute)


@pytest.mark.parametrize(
    "text",
    [
        "des:qos mandatory local sendrecv",
        "des:qos unknown e2e none",
        "curr:qos remote recv",
        "conf:qos e2e send",
    ],
)
def test_line_round_trip(text: str) -> None:
    line = QosLine.from_attribute(Attribute.parse(text))
    assert line is not None
    assert str(line.to_attribute()) == text
