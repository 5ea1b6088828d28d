"""Real audio through the MRFC-AS and the built-in media processor, heard by baresip UEs.

Three baresip UEs each send their own tone (440, 660, 880 Hz) and record what they hear.
The first creates a conference through the factory URI, the other two join its conference
URI; each must hear the other two tones and not its own (the N-1 mix). Then one member is
muted through the REST API, and its tone must vanish from the others' audio while the
remaining tone stays. baresip 1.0 has no 100rel (RFC 3262), so these calls take the
focus's path for UEs without reliable provisional responses; it also sends `Supported:`
with an empty value, which RFC 3261 §20.37 allows.

The UEs reach the focus without CSCFs: a DNS stub resolves `mrfc1.home1.net` (RFC 3263)
to the MRFC-AS, since the focus's Contact is the conference URI (RFC 4579 §5.1) and the
UE's ACK and BYE go there.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.audio import ToneLevels, read_wav, tone_levels, window, write_tone_wav
from tests.support.baresip import Baresip, DnsStub, baresip_available
from tests.support.stack import Stack, start_stack, wait_for, wait_readyz

pytestmark = [
    pytest.mark.interop,
    pytest.mark.slow,
    pytest.mark.timeout(240),
    pytest.mark.skipif(not baresip_available(), reason="baresip (Debian baresip-core) is missing"),
]

FACTORY = "sip:conf-factory1@mrfc1.home1.net"
USERS = {
    # Demo users of CONVENTIONS.md, each with its tone.
    "user1_public1@home1.net": 440.0,
    "user2_public1@home2.net": 660.0,
    "user3_public1@home1.net": 880.0,
}
TONES = list(USERS.values())
PHASE_SECONDS = 5.0  # audio recorded with all three talking, then again after the mute
# How much louder a tone that must be heard is than one that must not (energy ratio), and
# than the noise floor. G.711 keeps a loud tone about 38 dB above its quantisation noise.
HEARD_OVER_ABSENT = 10.0
HEARD_OVER_FLOOR = 100.0


@dataclass
class Ue:
    user: str
    tone: float
    baresip: Baresip
    closed_at: float = 0.0

    @property
    def uri(self) -> str:
        return f"sip:{self.user}"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    started = start_stack(tmp_path / "stack")
    try:
        wait_readyz(started.api)
        yield started
    finally:
        started.stop()


@pytest.fixture
def ues(stack: Stack, tmp_path: Path) -> Iterator[list[Ue]]:
    dns = DnsStub({"mrfc1.home1.net": ("127.0.0.1", stack.sip_port)}).start()
    started: list[Ue] = []
    try:
        for index, (user, freq) in enumerate(USERS.items(), start=1):
            workdir = tmp_path / f"ue{index}"
            workdir.mkdir()
            # Longer than the call: aufile hangs up when its file ends.
            tone = write_tone_wav(workdir / f"tone{int(freq)}.wav", freq, 120.0)
            ue = Ue(user, freq, Baresip(f"ue{index}", workdir, f"sip:{user}", tone, dns.port))
            started.append(ue)
            ue.baresip.start()
        yield started
    finally:
        for ue in started:
            ue.baresip.stop()
        dns.stop()


def _get(client: httpx.Client, path: str) -> Any:
    resp = client.get(path)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _connected(client: httpx.Client, conf_id: str) -> dict[str, dict[str, Any]] | None:
    """The participants by URI once all three are connected (RFC 4575 status)."""
    items = _get(client, f"/api/v1/conferences/{conf_id}/participants")["items"]
    by_uri = {p["uri"]: p for p in items if p["status"] == "connected"}
    return by_uri if len(by_uri) == len(USERS) else None


def _dial(ue: Ue, uri: str) -> None:
    since = len(ue.baresip.events)
    ue.baresip.dial(uri)
    ue.baresip.wait_event("CALL_ESTABLISHED", since=since, timeout=45)


def _hang_up(ue: Ue) -> None:
    since = len(ue.baresip.events)
    ue.baresip.hangup()
    event = ue.baresip.wait_event("CALL_CLOSED", since=since, timeout=30, fail_on=())
    ue.closed_at = float(event["at"])


def _levels(ue: Ue, start: float, end: float) -> tuple[ToneLevels, str]:
    """Tone levels in what `ue` heard between two monotonic times.

    sndfile writes each decoded 20 ms frame as it arrives, so the recording ends at the
    hangup and is placed on the clock from its end; losses under load can only make a
    slice earlier than asked, which the margins around each phase absorb.
    """
    (recording,) = ue.baresip.recordings("dec")
    rate, samples = read_wav(recording)
    length = len(samples) / rate
    levels = tone_levels(
        window(samples, rate, length - (ue.closed_at - start), length - (ue.closed_at - end)),
        rate,
        TONES,
    )
    return levels, f"{ue.user} ({ue.tone:g} Hz, recording {length:.2f} s): {levels.describe()}"


def test_three_ues_hear_the_others_and_a_muted_one_goes_silent(stack: Stack, ues: list[Ue]) -> None:
    token = stack.create_token("audio-e2e")
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=stack.api, headers=headers, timeout=10) as client:
        creator, *joiners = ues
        _dial(creator, FACTORY)
        # The database is written behind the SIP exchange: poll until the conference shows.
        (conf,) = wait_for(
            lambda: _get(client, "/api/v1/conferences?state=active")["items"],
            30,
            "the new conference in GET /conferences",
        )
        assert conf["factory_uri"] == FACTORY
        for ue in joiners:
            _dial(ue, conf["uri"])
        by_uri = wait_for(lambda: _connected(client, conf["id"]), 30, "three connected")
        all_joined = time.monotonic()
        # The recording window: audio has to play for this long, there is no event to await.
        time.sleep(PHASE_SECONDS)

        muted = ues[2]
        resp = client.patch(
            f"/api/v1/conferences/{conf['id']}/participants/{by_uri[muted.uri]['id']}",
            json={"muted": True},
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["muted"] is True
        muted_at = time.monotonic()
        time.sleep(PHASE_SECONDS)
        hangup_at = time.monotonic()
        for ue in ues:
            _hang_up(ue)  # sndfile completes the WAV header when the call ends

    logs = stack.logs()
    report: list[str] = []
    failures: list[str] = []
    for ue in ues:
        others = [u.tone for u in ues if u is not ue]
        before, text = _levels(ue, all_joined + 1.0, muted_at - 0.75)
        report.append(f"all talking: {text}")
        for tone in others:
            if before.ratio(tone, ue.tone) < HEARD_OVER_ABSENT:
                failures.append(f"{ue.user} hears its own tone against {tone:g} Hz")
            if before.above_floor(tone) < HEARD_OVER_FLOOR:
                failures.append(f"{ue.user} does not hear {tone:g} Hz")
        after, text = _levels(ue, muted_at + 1.5, hangup_at - 0.5)
        report.append(f"{muted.tone:g} Hz muted: {text}")
        if ue is muted:
            # Muted is not deaf: the muted member still hears both others.
            expect_heard, expect_absent = others, [ue.tone]
        else:
            remaining = next(t for t in others if t != muted.tone)
            expect_heard, expect_absent = [remaining], [ue.tone, muted.tone]
        for heard in expect_heard:
            if after.above_floor(heard) < HEARD_OVER_FLOOR:
                failures.append(f"{ue.user} no longer hears {heard:g} Hz after the mute")
            for absent in expect_absent:
                if after.ratio(heard, absent) < HEARD_OVER_ABSENT:
                    failures.append(f"{ue.user} hears {absent:g} Hz after the mute")
    summary = "\n".join(report)
    print(summary)  # the measured levels, shown with `pytest -s`
    assert not failures, "\n".join(failures) + "\n" + summary + "\n" + logs
