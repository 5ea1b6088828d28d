"""The REST API acting on a live conference: SIPp UEs in it, the MRFC-AS and the built-in media
processor as real processes, on SQLite and on PostgreSQL.

One conference is driven through list, show, mute/unmute (checked at the media processor over
ESL and in the watcher's NOTIFYs), dial-out (late offer), lock/unlock, kick and end; the SSE
stream and /metrics are checked along the way.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.live import (
    CONF_DOMAIN,
    EslProbe,
    LiveApi,
    SseCollector,
    endpoint_states,
    notifies,
    start_ue,
    wait_for,
)
from tests.support.sipp import SippProcess, header_values, sipp_available
from tests.support.stack import Stack, start_stack, wait_readyz

pytestmark = [
    pytest.mark.interop,
    pytest.mark.slow,
    pytest.mark.skipif(not sipp_available(), reason="sipp (Debian sip-tester) is not installed"),
    pytest.mark.timeout(300),
]

USER1 = "sip:user1_public1@home1.net"
USER2 = "sip:user2_public1@home1.net"
USER4 = "sip:user4_public1@home1.net"


@pytest.fixture
def stack(tmp_path: Path, database_url: str) -> Iterator[Stack]:
    started = start_stack(tmp_path / "stack", database_url=database_url)
    try:
        wait_readyz(started.api)
        yield started
    finally:
        started.stop()


def metric(text: str, name: str) -> float:
    """The value of one unlabelled sample in a Prometheus exposition."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert match is not None, f"{name} not in /metrics"
    return float(match.group(1))


def _joined(api: LiveApi, conf_id: str, uri: str) -> dict[str, object] | None:
    part = api.participant(conf_id, uri)
    return part if part is not None and part["status"] == "connected" else None


def _logs(stack: Stack, *ues: SippProcess) -> str:
    out = [p.output()[-4000:] for p in stack.processes]
    out += [ue.result().report()[-4000:] for ue in ues]
    return "\n".join(out)


def test_live_conference_through_the_api(stack: Stack, tmp_path: Path) -> None:
    admin = LiveApi(stack, stack.create_token("ops", "admin"))
    reader = LiveApi(stack, stack.create_token("viewer", "read"))
    sse = SseCollector(stack, reader.token)
    esl = EslProbe(stack.esl_port)
    started: list[SippProcess] = []

    def ue(name: str, scenario: str, conf_user: str, user: str) -> SippProcess:
        keys = {"conf_user": conf_user, "conf_domain": CONF_DOMAIN, "ue_user": user}
        proc = start_ue(scenario, tmp_path / name, stack, keys, timeout=240)
        started.append(proc)
        return proc

    try:
        assert sse.connected.wait(15), "no SSE stream"
        # -- a conference with two UEs and a watcher ------------------------------------------
        ue1 = ue("ue1", "uac_join_wait_bye.xml", "conf-factory1", "user1_public1")
        conf = wait_for(
            "the conference to be listed active",
            lambda: reader.get("/conferences", state="active")["items"],
        )[0]
        conf_id = conf["id"]
        conf_user = f"conf-{conf_id}"
        wait_for("user1 connected", lambda: _joined(reader, conf_id, USER1))
        watcher = ue("watcher", "uac_subscribe_watch.xml", conf_user, "user1_public1")
        wait_for("the first NOTIFY (full state)", lambda: notifies(watcher))
        ue2 = ue("ue2", "uac_join_wait_bye.xml", conf_user, "user2_public1")
        user2 = wait_for("user2 connected", lambda: _joined(reader, conf_id, USER2))

        # -- list and show ---------------------------------------------------------------------
        assert [c["id"] for c in reader.get("/conferences", state="active")["items"]] == [conf_id]
        assert reader.get("/conferences", state="ended")["items"] == []
        shown = reader.get(f"/conferences/{conf_id}")
        assert shown["uri"] == f"sip:conf-{conf_id}@{CONF_DOMAIN}"
        assert shown["state"] == "active"
        assert shown["initiator"] == USER1
        assert shown["locked"] is False
        assert shown["mrfp_node"] == "mrfp1"
        assert shown["participant_count"] == 2
        assert shown["created_at"]
        parts = reader.participants(conf_id)
        assert [(p["uri"], p["status"], p["muted"]) for p in parts] == [
            (USER1, "connected", False),
            (USER2, "connected", False),
        ]
        assert all(p["joined_at"] and p["joining_method"] == "dialed-in" for p in parts)
        pid2 = str(user2["id"])

        # -- mute: the media processor and the NOTIFY ----------------------------------------
        resp = admin.client.patch(
            f"/conferences/{conf_id}/participants/{pid2}", json={"muted": True}
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["muted"] is True
        member2 = str(
            wait_for(
                "user2's MRFP member id",
                lambda: reader.get(f"/conferences/{conf_id}/participants/{pid2}")["mrfp_member_id"],
            )
        )

        def member_muted(muted: bool) -> bool:
            return any(m.member_id == member2 and m.muted is muted for m in esl.members(conf_id))

        wait_for("the MRFP member muted", lambda: member_muted(True))

        def watcher_sees(status: str) -> bool:
            return any(
                endpoint_states(n).get(USER2, {}).get("status") == status
                for n in notifies(watcher)[1:]
            )

        wait_for("a NOTIFY with user2 muted-via-focus", lambda: watcher_sees("muted-via-focus"))
        got = reader.get(f"/conferences/{conf_id}/participants/{pid2}")
        assert got["muted"] is True
        assert got["status"] == "muted-via-focus"
        # A read token may not act.
        denied = reader.client.patch(
            f"/conferences/{conf_id}/participants/{pid2}", json={"muted": False}
        )
        assert denied.status_code == 403
        before = len(notifies(watcher))
        resp = admin.client.patch(
            f"/conferences/{conf_id}/participants/{pid2}", json={"muted": False}
        )
        assert resp.status_code == 200 and resp.json()["muted"] is False
        wait_for("the MRFP member unmuted", lambda: member_muted(False))
        wait_for(
            "a NOTIFY with user2 connected again",
            lambda: any(
                endpoint_states(n).get(USER2, {}).get("status") == "connected"
                for n in notifies(watcher)[before:]
            ),
        )
        wait_for(
            "unmuted over REST",
            lambda: not reader.get(f"/conferences/{conf_id}/participants/{pid2}")["muted"],
        )

        # -- dial-out (RFC 4579 §5.5, late offer) ---------------------------------------------
        uas = start_ue(
            "uas_dialout_wait_bye.xml",
            tmp_path / "ue3",
            None,
            {"ue_user": "user3_public1"},
            timeout=240,
        )
        started.append(uas)
        user3 = f"sip:user3_public1@127.0.0.1:{uas.port}"
        resp = admin.client.post(f"/conferences/{conf_id}/participants", json={"uri": user3})
        assert resp.status_code == 201, resp.text
        pid3 = resp.json()["id"]
        assert resp.headers["Location"].endswith(f"/participants/{pid3}")
        dialed = wait_for(
            "the dialled-out user connected",
            lambda: (
                p
                if (p := reader.get(f"/conferences/{conf_id}/participants/{pid3}"))["status"]
                == "connected"
                else None
            ),
        )
        assert dialed["joining_method"] == "dialed-out"
        invite = uas.result().received_requests("INVITE")[0]
        assert header_values(invite, "Content-Length") == ["0"], invite

        # -- lock: a new join gets 403; unlock lets it in -----------------------------------
        resp = admin.client.patch(f"/conferences/{conf_id}", json={"locked": True})
        assert resp.status_code == 200 and resp.json()["locked"] is True, resp.text
        wait_for("locked in the database", lambda: reader.get(f"/conferences/{conf_id}")["locked"])
        refused = ue("ue4-locked", "uac_refused.xml", conf_user, "user4_public1").wait()
        assert refused.ok, refused.report()
        assert [m.split("\n", 1)[0].strip() for m in refused.received()][-1].startswith(
            "SIP/2.0 403"
        )
        resp = admin.client.patch(f"/conferences/{conf_id}", json={"locked": False})
        assert resp.status_code == 200 and resp.json()["locked"] is False
        ue4 = ue("ue4", "uac_join_wait_bye.xml", conf_user, "user4_public1")
        wait_for("user4 connected after unlock", lambda: _joined(reader, conf_id, USER4))
        assert reader.get(f"/conferences/{conf_id}")["participant_count"] == 4

        # -- kick: BYE to the UE, booted in the NOTIFY, disconnected over REST ---------------
        before = len(notifies(watcher))
        resp = admin.client.delete(f"/conferences/{conf_id}/participants/{pid2}")
        assert resp.status_code == 204, resp.text
        kicked = ue2.wait(60)
        assert kicked.ok, kicked.report() + _logs(stack)
        assert len(kicked.received_requests("BYE")) == 1
        assert any(m.startswith("SIP/2.0 200") and "BYE" in m for m in kicked.sent())
        wait_for(
            "a NOTIFY with user2 booted",
            lambda: any(
                endpoint_states(n).get(USER2, {}).get("disconnection-method") == "booted"
                for n in notifies(watcher)[before:]
            ),
        )
        gone = wait_for(
            "user2 disconnected over REST",
            lambda: (
                p
                if (p := reader.get(f"/conferences/{conf_id}/participants/{pid2}"))["status"]
                == "disconnected"
                else None
            ),
        )
        assert gone["disconnection_method"] == "booted"
        assert gone["left_at"]
        wait_for(
            "the MRFP dropped user2",
            lambda: all(m.member_id != member2 for m in esl.members(conf_id)),
        )
        again = admin.client.delete(f"/conferences/{conf_id}/participants/{pid2}")
        assert again.status_code in (404, 409), again.text

        # -- the live stream and the metrics ----------------------------------------------------
        wait_for(
            "participant.left for user2 on /events",
            lambda: ("participant.left", pid2) in sse.kinds(conf_id),
        )
        kinds = sse.kinds(conf_id)
        assert ("participant.joined", pid2) in kinds
        assert ("participant.joined", pid3) in kinds
        assert kinds.index(("participant.joined", pid2)) < kinds.index(("participant.left", pid2))
        text = httpx.get(f"{stack.api}/metrics", timeout=10).text
        assert metric(text, "mrfc_conferences_active") == 1
        assert metric(text, "mrfc_participants_active") == 3
        assert metric(text, "mrfc_join_latency_seconds_count") >= 3
        assert metric(text, "mrfc_joins_total") == 4

        # -- end: BYE to everyone, final NOTIFY, ended, the URI answers 404 -------------------
        resp = admin.client.delete(f"/conferences/{conf_id}")
        assert resp.status_code == 204, resp.text
        for proc in (ue1, uas, ue4):
            result = proc.wait(60)
            assert result.ok, result.report() + _logs(stack)
            assert len(result.received_requests("BYE")) == 1
        watched = watcher.wait(60)
        assert watched.ok, watched.report()
        final = notifies(watcher)[-1]
        assert header_values(final, "Subscription-State")[0].startswith("terminated")
        assert all(
            not n.startswith("NOTIFY")
            or "terminated" not in header_values(n, "Subscription-State")[0]
            for n in notifies(watcher)[:-1]
        )
        ended = wait_for(
            "the conference ended over REST",
            lambda: c if (c := reader.get(f"/conferences/{conf_id}"))["state"] == "ended" else None,
        )
        assert ended["ended_at"]
        assert reader.get("/conferences", state="active")["items"] == []
        assert [c["id"] for c in reader.get("/conferences", state="ended")["items"]] == [conf_id]
        wait_for(
            "every participant disconnected",
            lambda: all(p["status"] == "disconnected" for p in reader.participants(conf_id)),
        )
        late = ue("ue5-ended", "uac_refused.xml", conf_user, "user4_public1").wait()
        assert late.ok, late.report()
        assert late.received()[-1].startswith("SIP/2.0 404")
        assert admin.client.delete(f"/conferences/{conf_id}").status_code == 409
        wait_for(
            "mrfc_conferences_active back to 0",
            lambda: metric(httpx.get(f"{stack.api}/metrics").text, "mrfc_conferences_active") == 0,
        )
        wait_for("the MRFP conference gone", lambda: esl.conference(conf_id) is None)
    finally:
        for proc in started:
            proc.stop()
        esl.close()
        admin.close()
        reader.close()


def test_readyz_follows_the_media_processor(stack: Stack) -> None:
    resp = httpx.get(f"{stack.api}/readyz", timeout=10)
    assert resp.status_code == 200
    assert resp.json()["checks"]["esl"] is True
    stack.mrfp.stop()

    def not_ready() -> dict[str, object] | None:
        r = httpx.get(f"{stack.api}/readyz", timeout=10)
        return r.json() if r.status_code == 503 else None

    body = wait_for("/readyz 503 without the media processor", not_ready)
    assert body["checks"] == {"database": True, "sip": True, "esl": False}
    text = httpx.get(f"{stack.api}/metrics", timeout=10).text
    assert 'mrfc_esl_connected{node="mrfp1"} 0.0' in text
