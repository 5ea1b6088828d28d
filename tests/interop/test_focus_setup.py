"""Conference creation variants with SIPp against the MRFC-AS and the built-in MRFP:
preconditions (RFC 3312), no 100rel, a PRACK for an unknown RSeq, CANCEL mid-setup."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.sipp import SippResult, header_values, run_sipp, sipp_available
from tests.support.stack import Stack, start_stack, wait_for

SCENARIOS = Path(__file__).parent / "scenarios" / "focus"

pytestmark = [
    pytest.mark.interop,
    pytest.mark.slow,
    pytest.mark.skipif(not sipp_available(), reason="sipp (Debian sip-tester) is not installed"),
]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    started = start_stack(tmp_path / "stack")
    try:
        yield started
    finally:
        started.stop()


def create(stack: Stack, scenario: str, log_dir: Path) -> SippResult:
    result = run_sipp(
        SCENARIOS / scenario,
        log_dir,
        remote=f"127.0.0.1:{stack.sip_port}",
        keys={
            "to_user": "conf-factory1",
            "to_domain": "mrfc1.home1.net",
            "ue_user": "user1_public1",
        },
        timeout=60,
    )
    assert result.ok, result.report() + stack.logs()
    return result


def status_line(message: str) -> str:
    return message.split("\n", 1)[0].strip()


def cseq(message: str) -> str:
    return header_values(message, "CSeq")[0]


def body_of(message: str) -> str:
    parts = re.split(r"\r?\n\r?\n", message, maxsplit=1)
    return parts[1] if len(parts) == 2 else ""


def responses(result: SippResult) -> list[tuple[str, str]]:
    """(status line, CSeq) of each response received, in order, retransmissions dropped."""
    seen: list[tuple[str, str]] = []
    for m in result.received():
        if m.startswith("SIP/2.0 "):
            key = (status_line(m), cseq(m))
            if key not in seen:
                seen.append(key)
    return seen


def test_preconditions_hold_the_200_until_the_update(stack: Stack, tmp_path: Path) -> None:
    result = create(stack, "uac_create_preconditions.xml", tmp_path / "ue")
    order = [(s.split()[1], c) for s, c in responses(result)]
    assert ("200", "1 INVITE") in order
    assert order.index(("200", "3 UPDATE")) < order.index(("200", "1 INVITE")), order
    received = result.received()
    r183 = next(m for m in received if m.startswith("SIP/2.0 183"))
    assert header_values(r183, "RSeq") == ["1"]
    # RFC 3312 §5.1: the answerer's 183 says what it has and wants (its media is the MRFP's,
    # whose resources are reserved: curr local sendrecv), and asks the UE to confirm (conf).
    requires = {t.strip() for v in header_values(r183, "Require") for t in v.split(",")}
    assert requires == {"100rel", "precondition"}
    sdp183 = body_of(r183)
    assert "a=curr:qos local sendrecv" in sdp183
    assert "a=curr:qos remote none" in sdp183
    # The UE's mandatory local QoS is the focus's remote one; the UE's optional remote one
    # is the focus's local one (RFC 3312 §5.1: the answer may not weaken a strength).
    assert "a=des:qos mandatory remote sendrecv" in sdp183
    assert re.search(r"a=des:qos (optional|mandatory) local sendrecv", sdp183)
    assert "a=conf:qos remote sendrecv" in sdp183
    update_ok = next(m for m in received if m.startswith("SIP/2.0 200") and "UPDATE" in cseq(m))
    sdp_update = body_of(update_ok)
    assert header_values(update_ok, "Content-Type") == ["application/sdp"]
    assert "a=curr:qos local sendrecv" in sdp_update
    assert "a=curr:qos remote sendrecv" in sdp_update
    assert "m=audio" in sdp_update
    final = next(m for m in received if m.startswith("SIP/2.0 200") and "INVITE" in cseq(m))
    (contact,) = header_values(final, "Contact")
    assert re.fullmatch(r"<sip:conf-[A-Za-z0-9]+@mrfc1\.home1\.net>;isfocus", contact)


def test_without_100rel_an_unreliable_183_then_200_with_sdp(stack: Stack, tmp_path: Path) -> None:
    result = create(stack, "uac_create_no_100rel.xml", tmp_path / "ue")
    received = result.received()
    r183 = next(m for m in received if m.startswith("SIP/2.0 183"))
    assert header_values(r183, "Require") == []
    assert header_values(r183, "RSeq") == []
    assert header_values(r183, "Content-Type") == ["application/sdp"]
    final = next(m for m in received if m.startswith("SIP/2.0 200") and "INVITE" in cseq(m))
    assert header_values(final, "Content-Type") == ["application/sdp"]
    assert body_of(final).split("m=audio")[1] == body_of(r183).split("m=audio")[1]
    assert not [m for m in result.sent() if m.startswith("PRACK ")]


def test_prack_for_an_unknown_rseq_gets_481(stack: Stack, tmp_path: Path) -> None:
    result = create(stack, "uac_prack_unknown_rseq.xml", tmp_path / "ue")
    order = [(s.split()[1], c) for s, c in responses(result)]
    assert ("481", "2 PRACK") in order
    assert ("200", "3 PRACK") in order and ("200", "1 INVITE") in order


def test_cancel_mid_setup_gives_487_and_drops_the_mrfp_leg(stack: Stack, tmp_path: Path) -> None:
    result = create(stack, "uac_cancel_mid_setup.xml", tmp_path / "ue")
    order = [(s.split()[1], c) for s, c in responses(result)]
    assert ("200", "1 CANCEL") in order and ("487", "1 INVITE") in order
    assert ("200", "1 INVITE") not in order
    # The MRFP leg is gone, and with it the conference there and in the focus.
    wait_for(
        lambda: "+OK No active conferences" in stack.esl_api("conference list"),
        what="the MRFP conference to go",
    )
    wait_for(
        lambda: stack.query("select state from conferences") == [("ended",)],
        what="the conference to end",
    )
    ((status, method),) = stack.query("select status, disconnection_method from participants")
    assert status == "disconnected" and method == "departed"
