"""RFC 4575 documents: schema validity, RFC 4575 §6 vectors, partial state applied in order."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import xmlschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.focus.conference_info import (
    CONTENT_TYPE,
    NAMESPACE,
    Change,
    ConferenceInfo,
    ConferenceInfoError,
    ConferenceView,
    DisconnectionMethod,
    ElementState,
    Endpoint,
    EndpointStatus,
    Execution,
    JoiningMethod,
    Media,
    MediaStatus,
    User,
    full_document,
    full_template,
    parse_document,
    partial_document,
    partial_template,
    state_changed,
    user_added,
    user_removed,
    user_updated,
)

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "rfc4575"
T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
CONF = "sip:conf-AbC123xyz@mrfc1.home1.net"


@functools.cache
def schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(VECTORS / "conference-info.xsd"))


def valid(document: bytes) -> bytes:
    """`document`, once the RFC 4575 schema has accepted it (raises otherwise)."""
    schema().validate(document.decode("utf-8"))
    return document


def participant(n: int, *, joined: datetime = T0, host: str = "home1.net") -> User:
    aor = f"sip:user{n}_public1@{host}"
    endpoint = Endpoint(
        f"{aor};dialog={n}",
        status=EndpointStatus.CONNECTED,
        joining_method=JoiningMethod.DIALED_IN,
        joining_info=Execution(joined),
        media={"1": Media("1", "audio", src_id=str(1000 + n), status=MediaStatus.SENDRECV)},
    )
    return User(aor, f"User {n}", ["participant"], {endpoint.entity: endpoint})


def test_constants() -> None:
    assert NAMESPACE == "urn:ietf:params:xml:ns:conference-info"
    assert CONTENT_TYPE == "application/conference-info+xml"


@pytest.mark.parametrize("name", ["rfc4575-6.1-basic.xml", "rfc4575-6.2-rich.xml"])
def test_rfc_examples_validate_and_parse(name: str) -> None:
    data = valid((VECTORS / name).read_bytes())
    doc = parse_document(data)
    assert doc.state is ElementState.FULL
    assert doc.version == 1
    assert doc.info.entity == "sips:conf233@example.com"
    assert doc.info.users
    # What the model holds survives a write and a read, and what is written is valid.
    assert parse_document(valid(full_document(doc.info, 1))).info == doc.info


def test_rfc_basic_example_content() -> None:
    info = parse_document((VECTORS / "rfc4575-6.1-basic.xml").read_bytes()).info
    assert info.subject == "Agenda: This month's goals"
    assert info.user_count == 33  # RFC 4575 §5.5.1: may exceed the users listed
    bob = info.users["sip:bob@example.com"].endpoints["sip:bob@pc33.example.com"]
    assert bob.status is EndpointStatus.DISCONNECTED
    assert bob.disconnection_method is DisconnectionMethod.DEPARTED
    assert bob.disconnection_info == Execution(
        datetime(2005, 3, 4, 20, 0, tzinfo=UTC), "bad voice quality", "sip:mike@example.com"
    )
    assert bob.media["1"] == Media(
        "1", "audio", "34567", "432424", MediaStatus.SENDRECV, "main audio"
    )


def test_full_document_shape() -> None:
    info = ConferenceInfo(CONF, 'Demo <&> "conf"', "Q1", active=True, locked=False)
    info.users["sip:user1_public1@home1.net"] = participant(1)
    doc = valid(full_document(info, 7))
    assert doc.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<conference-info xmlns=')
    assert f'entity="{CONF}" state="full" version="7">'.encode() in doc
    assert b"<user-count>1</user-count><active>" not in doc  # one element per line
    assert b"<user-count>1</user-count>" in doc
    assert b"<when>2025-01-02T03:04:05Z</when>" in doc
    parsed = parse_document(doc)
    assert parsed.version == 7
    assert parsed.info.display_text == 'Demo <&> "conf"'
    assert parsed.info.users == info.users


def test_template_splices_only_the_version() -> None:
    info = ConferenceInfo(CONF, active=True, locked=False)
    for n in range(3):
        info.users[participant(n).entity] = participant(n)
    template = full_template(info)
    assert template.render(1) == full_document(info, 1)
    assert template.render(2).replace(b'version="2"', b'version="1"') == template.render(1)
    with pytest.raises(ValueError):
        template.render(-1)
    with pytest.raises(ValueError):
        template.render(2**32)


def test_partial_on_leave_deletes_user_with_disconnection_method() -> None:
    info = ConferenceInfo(CONF, active=True, locked=False)
    for n in (1, 2):
        info.users[participant(n).entity] = participant(n)
    gone = info.users.pop("sip:user2_public1@home1.net")
    change = user_removed(info, gone, DisconnectionMethod.BOOTED, T0, "kicked", "sip:admin@x")
    doc = valid(partial_document(change, 5))
    assert b'state="partial" version="5"' in doc
    assert b'<users state="partial">' in doc
    assert b'<user entity="sip:user2_public1@home1.net" state="deleted">' in doc
    assert b"<status>disconnected</status>" in doc
    assert b"<disconnection-method>booted</disconnection-method>" in doc
    assert b"<reason>kicked</reason>" in doc
    assert b"<user-count>1</user-count>" in doc
    assert gone.endpoints[next(iter(gone.endpoints))].status is EndpointStatus.CONNECTED


def test_partial_for_mute_sends_only_the_endpoint() -> None:
    info = ConferenceInfo(CONF, active=True, locked=False)
    user = participant(1)
    info.users[user.entity] = user
    endpoint = next(iter(user.endpoints.values()))
    endpoint.status = EndpointStatus.MUTED_VIA_FOCUS
    doc = valid(partial_document(user_updated(info, user.entity), 3))
    assert b"<conference-state>" not in doc
    assert b"<display-text>" not in doc
    assert f'<endpoint entity="{endpoint.entity}" state="full">'.encode() in doc
    assert b"<status>muted-via-focus</status>" in doc


def test_state_change_and_empty_partial_are_valid() -> None:
    info = ConferenceInfo(CONF, active=True, locked=True)
    doc = valid(partial_document(state_changed(info), 2))
    assert b"<locked>true</locked>" in doc
    valid(partial_document(Change(CONF), 2))


def test_text_that_xml_cannot_carry_is_dropped() -> None:
    info = ConferenceInfo(CONF)
    info.users["sip:a@b"] = User("sip:a@b", "bell\x07 and \ud800 gone")
    assert parse_document(valid(full_document(info, 1))).info.users["sip:a@b"].display_text == (
        "bell and  gone"
    )


def test_view_rejects_gaps_and_stale_documents() -> None:
    info = ConferenceInfo(CONF, active=True, locked=False)
    view = ConferenceView()
    with pytest.raises(ConferenceInfoError):
        view.receive(partial_document(state_changed(info), 1))  # no full state yet
    view.receive(full_document(info, 1))
    with pytest.raises(ConferenceInfoError):
        view.receive(partial_document(state_changed(info), 3))  # version 2 was lost
    with pytest.raises(ConferenceInfoError):
        view.receive(full_document(info, 1))
    view.receive(partial_document(state_changed(info), 2))
    assert view.version == 2


@pytest.mark.parametrize(
    "data",
    [
        b"not xml",
        b'<conference-info entity="x"/>',  # no namespace
        f'<conference-info xmlns="{NAMESPACE}"/>'.encode(),  # no entity
        f'<conference-info xmlns="{NAMESPACE}" entity="x" version="v"/>'.encode(),
        f'<conference-info xmlns="{NAMESPACE}" entity="x" state="gone"/>'.encode(),
        f'<conference-info xmlns="{NAMESPACE}" entity="x"><conference-state>'
        "<active>maybe</active></conference-state></conference-info>".encode(),
    ],
)
def test_bad_documents_raise(data: bytes) -> None:
    with pytest.raises(ConferenceInfoError):
        parse_document(data)


# --- Property: successive partials rebuild the next full state, and every body is valid ------

_display = st.none() | st.text(min_size=0, max_size=12)
_op = st.tuples(
    st.sampled_from(["join", "leave", "kick", "mute", "unmute", "lock", "unlock", "hold"]),
    st.integers(0, 7),
    _display,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_op, max_size=25))
def test_partials_applied_in_order_equal_full_state(ops: list[tuple[str, int, str | None]]) -> None:
    info = ConferenceInfo(CONF, "conference", active=True, locked=False)
    version = 1
    view = ConferenceView()
    view.receive(valid(full_document(info, version)))
    now = T0
    for action, n, display in ops:
        now += timedelta(seconds=1, microseconds=n * 1000)
        aor = f"sip:user{n}_public1@home1.net"
        change: Change | None = None
        if action == "join" and aor not in info.users:
            user = participant(n, joined=now)
            user.display_text = display
            info.users[aor] = user
            change = user_added(info, aor)
        elif action in ("leave", "kick") and aor in info.users:
            method = (
                DisconnectionMethod.DEPARTED if action == "leave" else DisconnectionMethod.BOOTED
            )
            change = user_removed(info, info.users.pop(aor), method, now)
        elif action in ("mute", "unmute", "hold") and aor in info.users:
            status = {
                "mute": EndpointStatus.MUTED_VIA_FOCUS,
                "unmute": EndpointStatus.CONNECTED,
                "hold": EndpointStatus.ON_HOLD,
            }[action]
            for endpoint in info.users[aor].endpoints.values():
                endpoint.status = status
            change = user_updated(info, aor)
        elif action in ("lock", "unlock"):
            info.locked = action == "lock"
            change = state_changed(info)
        if change is None:
            continue
        version += 1
        template = partial_template(change)
        view.receive(valid(template.render(version)))
        expected = parse_document(valid(full_document(info, version))).info
        assert view.info == expected
