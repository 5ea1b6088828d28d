"""RFC 4575 conference-info documents: the model, full and partial bodies, and a reader.

The focus keeps one `ConferenceInfo` per conference and changes it in place as users join,
leave or are muted. What subscribers get:

- `full_template(info)` / `full_document(info, version)`: the whole state (`state="full"`), sent
  in the first NOTIFY of a subscription (RFC 4575 §4.1) and whenever a subscriber needs a resync.
- A `Change` (built by `user_added`, `user_updated`, `user_removed`, `state_changed`, or by hand)
  and `partial_template(change)` / `partial_document(change, version)`: only what changed
  (`state="partial"`), sent to every subscriber after each change.

Each subscription counts its own `version` (RFC 4575 §4.1: one higher per NOTIFY), but the body
is otherwise the same for everyone, so a change is rendered once into a `DocumentTemplate` whose
`render(version)` only splices the number in: O(size of the change) per subscriber.

For subscribers (UEs in tests, or a cascaded focus), `parse_document(data)` reads a document into
the model and `ConferenceView.receive(data)` keeps a local copy current by applying partial
documents as RFC 4575 §4.1 says, rejecting version gaps.

Times are `datetime`s passed in by the caller (this module reads no clock); naive ones are taken
as UTC.
"""

from __future__ import annotations

import copy
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import TypeVar

__all__ = [
    "CONTENT_TYPE",
    "EVENT_PACKAGE",
    "NAMESPACE",
    "Change",
    "ConferenceInfo",
    "ConferenceInfoError",
    "ConferenceState",
    "ConferenceView",
    "DisconnectionMethod",
    "Document",
    "DocumentTemplate",
    "ElementState",
    "Endpoint",
    "EndpointStatus",
    "Execution",
    "JoiningMethod",
    "Media",
    "MediaStatus",
    "User",
    "UserUpdate",
    "full_document",
    "full_template",
    "parse_document",
    "partial_document",
    "partial_template",
    "state_changed",
    "user_added",
    "user_removed",
    "user_updated",
]

NAMESPACE = "urn:ietf:params:xml:ns:conference-info"
CONTENT_TYPE = "application/conference-info+xml"
EVENT_PACKAGE = "conference"  # RFC 4575 §3.1: Event: conference


class ConferenceInfoError(ValueError):
    """A document that cannot be read, or a partial one that does not follow the last seen."""


class ElementState(StrEnum):
    """The `state` attribute (RFC 4575 §4.1, §5.1)."""

    FULL = "full"
    PARTIAL = "partial"
    DELETED = "deleted"


class EndpointStatus(StrEnum):
    """RFC 4575 §5.7.3."""

    PENDING = "pending"
    DIALING_OUT = "dialing-out"
    DIALING_IN = "dialing-in"
    ALERTING = "alerting"
    ON_HOLD = "on-hold"
    CONNECTED = "connected"
    MUTED_VIA_FOCUS = "muted-via-focus"
    DISCONNECTING = "disconnecting"
    DISCONNECTED = "disconnected"


class JoiningMethod(StrEnum):
    """RFC 4575 §5.7.4."""

    DIALED_IN = "dialed-in"
    DIALED_OUT = "dialed-out"
    FOCUS_OWNER = "focus-owner"


class DisconnectionMethod(StrEnum):
    """RFC 4575 §5.7.6."""

    DEPARTED = "departed"
    BOOTED = "booted"
    FAILED = "failed"
    BUSY = "busy"


class MediaStatus(StrEnum):
    """RFC 4575 §5.8.5 (the SDP direction of the stream as the focus sees it)."""

    RECVONLY = "recvonly"
    SENDONLY = "sendonly"
    SENDRECV = "sendrecv"
    INACTIVE = "inactive"


@dataclass(slots=True)
class Execution:
    """execution-type (RFC 4575 §5.7.5): when, why and by whom something happened."""

    when: datetime | None = None
    reason: str | None = None
    by: str | None = None


@dataclass(slots=True)
class Media:
    """One stream of an endpoint (RFC 4575 §5.8), keyed by `id` within the endpoint."""

    id: str
    type: str | None = None
    label: str | None = None
    src_id: str | None = None
    status: MediaStatus | None = None
    display_text: str | None = None


@dataclass(slots=True)
class Endpoint:
    """One device of a user (RFC 4575 §5.7), keyed by `entity` (for SIP, its contact/dialog)."""

    entity: str
    display_text: str | None = None
    status: EndpointStatus | None = None
    joining_method: JoiningMethod | None = None
    joining_info: Execution | None = None
    disconnection_method: DisconnectionMethod | None = None
    disconnection_info: Execution | None = None
    media: dict[str, Media] = field(default_factory=dict)


@dataclass(slots=True)
class User:
    """A participant (RFC 4575 §5.6), keyed by `entity` (its AoR)."""

    entity: str
    display_text: str | None = None
    roles: list[str] = field(default_factory=list)
    endpoints: dict[str, Endpoint] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ConferenceState:
    """conference-state (RFC 4575 §5.5); always sent whole, so no reader can misapply it."""

    user_count: int | None = None
    active: bool | None = None
    locked: bool | None = None


@dataclass(slots=True)
class ConferenceInfo:
    """The state of one conference, as the focus publishes it.

    `user_count` None means "the number of users listed" (what the focus publishes); a parsed
    document keeps the number it carried, which RFC 4575 §5.5.1 allows to differ.
    """

    entity: str
    display_text: str | None = None
    subject: str | None = None
    active: bool | None = None
    locked: bool | None = None
    user_count: int | None = None
    users: dict[str, User] = field(default_factory=dict)

    def conference_state(self) -> ConferenceState:
        count = len(self.users) if self.user_count is None else self.user_count
        return ConferenceState(count, self.active, self.locked)


@dataclass(frozen=True, slots=True)
class UserUpdate:
    """One user element of a partial document.

    FULL: `user` is the whole user (it joined, or is resent whole). PARTIAL: only `user`'s
    endpoints are sent, each whole (`state="full"`), plus its display-text and roles when set.
    DELETED: the user left; its endpoints, as given, tell how (RFC 4575 §5.7.6).
    """

    user: User
    state: ElementState


@dataclass(frozen=True, slots=True)
class Change:
    """What one partial document carries (RFC 4575 §4.1)."""

    entity: str
    conference_state: ConferenceState | None = None
    users: tuple[UserUpdate, ...] = ()


# --- Building documents -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DocumentTemplate:
    """A rendered document with a gap for the `version` attribute (RFC 4575 §4.1)."""

    head: bytes
    tail: bytes

    def render(self, version: int) -> bytes:
        if not 0 <= version <= 0xFFFFFFFF:  # xs:unsignedInt
            raise ValueError(f"version out of range: {version}")
        return b"%b%d%b" % (self.head, version, self.tail)


_XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'


# Characters XML 1.0 (§2.2) cannot carry at all: dropped rather than producing a broken body
# (display names come from SIP headers the focus does not control).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _text(value: str) -> str:
    value = _NOT_XML.sub("", value)
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _attr(value: str) -> str:
    return _text(value).replace('"', "&quot;")


def _when(value: datetime) -> str:
    # xs:dateTime; UTC written with "Z" as in the RFC 4575 §6 examples.
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    spec = "seconds" if value.microsecond == 0 else "milliseconds"
    return value.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def _element(out: list[str], name: str, value: str | None) -> None:
    if value is not None:
        out.append(f"<{name}>{_text(value)}</{name}>")


def _execution(out: list[str], name: str, value: Execution | None) -> None:
    if value is None:
        return
    out.append(f"<{name}>")
    if value.when is not None:
        out.append(f"<when>{_when(value.when)}</when>")
    _element(out, "reason", value.reason)
    _element(out, "by", value.by)
    out.append(f"</{name}>")


def _write_endpoint(out: list[str], endpoint: Endpoint, state: str) -> None:
    # Element order is the xs:sequence of endpoint-type (RFC 4575 §5.9).
    out.append(f'<endpoint entity="{_attr(endpoint.entity)}"{state}>')
    _element(out, "display-text", endpoint.display_text)
    _element(out, "status", endpoint.status)
    _element(out, "joining-method", endpoint.joining_method)
    _execution(out, "joining-info", endpoint.joining_info)
    _element(out, "disconnection-method", endpoint.disconnection_method)
    _execution(out, "disconnection-info", endpoint.disconnection_info)
    for m in endpoint.media.values():
        out.append(f'<media id="{_attr(m.id)}">')
        _element(out, "display-text", m.display_text)
        _element(out, "type", m.type)
        _element(out, "label", m.label)
        _element(out, "src-id", m.src_id)
        _element(out, "status", m.status)
        out.append("</media>")
    out.append("</endpoint>")


def _write_user(out: list[str], user: User, state: ElementState) -> None:
    out.append(f'<user entity="{_attr(user.entity)}" state="{state}">')
    _element(out, "display-text", user.display_text)
    if user.roles:
        out.append("<roles>")
        out.extend(f"<entry>{_text(r)}</entry>" for r in user.roles)
        out.append("</roles>")
    # Inside a partial user each endpoint is sent whole, so no reader has to merge its fields.
    endpoint_state = "" if state is ElementState.FULL else ' state="full"'
    for endpoint in user.endpoints.values():
        _write_endpoint(out, endpoint, endpoint_state)
    out.append("</user>")


def _write_state(out: list[str], state: ConferenceState) -> None:
    out.append("<conference-state>")
    if state.user_count is not None:
        out.append(f"<user-count>{state.user_count}</user-count>")
    if state.active is not None:
        out.append(f"<active>{'true' if state.active else 'false'}</active>")
    if state.locked is not None:
        out.append(f"<locked>{'true' if state.locked else 'false'}</locked>")
    out.append("</conference-state>")


def _template(entity: str, state: ElementState, body: list[str]) -> DocumentTemplate:
    head = (
        f'{_XML_DECL}<conference-info xmlns="{NAMESPACE}" entity="{_attr(entity)}" '
        f'state="{state}" version="'
    )
    tail = '">\n' + "\n".join(body) + "\n</conference-info>\n"
    return DocumentTemplate(head.encode("utf-8"), tail.encode("utf-8"))


def full_template(info: ConferenceInfo) -> DocumentTemplate:
    """The whole conference state, ready to render per subscriber."""
    body: list[str] = []
    if info.display_text is not None or info.subject is not None:
        body.append("<conference-description>")
        _element(body, "display-text", info.display_text)
        _element(body, "subject", info.subject)
        body.append("</conference-description>")
    _write_state(body, info.conference_state())
    body.append("<users>")
    for user in info.users.values():
        _write_user(body, user, ElementState.FULL)
    body.append("</users>")
    return _template(info.entity, ElementState.FULL, body)


def full_document(info: ConferenceInfo, version: int) -> bytes:
    return full_template(info).render(version)


def partial_template(change: Change) -> DocumentTemplate:
    """The document for one change, built once for all subscribers."""
    body: list[str] = []
    if change.conference_state is not None:
        _write_state(body, change.conference_state)
    if change.users:
        # users-type defaults to state="full", which would drop everyone not listed.
        body.append('<users state="partial">')
        for update in change.users:
            _write_user(body, update.user, update.state)
        body.append("</users>")
    return _template(change.entity, ElementState.PARTIAL, body)


def partial_document(change: Change, version: int) -> bytes:
    return partial_template(change).render(version)


# --- Changes the focus makes ------------------------------------------------------------------


def user_added(info: ConferenceInfo, entity: str) -> Change:
    """`info.users[entity]` has just been added: send it whole, with the new user count."""
    return Change(
        info.entity,
        info.conference_state(),
        (UserUpdate(info.users[entity], ElementState.FULL),),
    )


def user_updated(
    info: ConferenceInfo, entity: str, endpoints: Iterable[str] | None = None
) -> Change:
    """Endpoints of `info.users[entity]` changed (status, mute, media): send those endpoints.

    `endpoints` names the changed ones (all of the user's when None).
    """
    user = info.users[entity]
    keys = user.endpoints.keys() if endpoints is None else endpoints
    partial = User(entity, endpoints={k: user.endpoints[k] for k in keys})
    return Change(info.entity, None, (UserUpdate(partial, ElementState.PARTIAL),))


def user_removed(
    info: ConferenceInfo,
    user: User,
    method: DisconnectionMethod,
    when: datetime,
    reason: str | None = None,
    by: str | None = None,
) -> Change:
    """`user` has been taken out of `info.users`: delete it, saying how its endpoints went.

    RFC 4575 §5.7.3/§5.7.6: each endpoint is reported disconnected with its disconnection-method
    and -info inside the deleted user, so subscribers learn why (departed, booted, failed...).
    """
    gone = Execution(when, reason, by)
    endpoints = {
        key: replace(
            ep,
            status=EndpointStatus.DISCONNECTED,
            disconnection_method=method,
            disconnection_info=gone,
            media={},
        )
        for key, ep in user.endpoints.items()
    }
    departed = User(user.entity, user.display_text, [], endpoints)
    return Change(
        info.entity, info.conference_state(), (UserUpdate(departed, ElementState.DELETED),)
    )


def state_changed(info: ConferenceInfo) -> Change:
    """conference-state changed (locked, active): send it alone."""
    return Change(info.entity, info.conference_state())


# --- Reading documents ------------------------------------------------------------------------


@dataclass(slots=True)
class Document:
    """A parsed document: its model, its `state` and its `version` (None if absent)."""

    info: ConferenceInfo
    state: ElementState
    version: int | None


_NS = "{" + NAMESPACE + "}"
_E = TypeVar("_E", bound=StrEnum)


def _child(element: ET.Element, name: str) -> ET.Element | None:
    return element.find(_NS + name)


def _child_text(element: ET.Element, name: str) -> str | None:
    child = element.find(_NS + name)
    return None if child is None else (child.text or "")


def _state_of(element: ET.Element) -> ElementState:
    try:
        return ElementState(element.get("state", "full"))
    except ValueError:
        raise ConferenceInfoError(f"bad state attribute: {element.get('state')!r}") from None


def _bool(text: str) -> bool:
    if text.strip() in ("true", "1"):
        return True
    if text.strip() in ("false", "0"):
        return False
    raise ConferenceInfoError(f"not an xs:boolean: {text!r}")


def _read_execution(element: ET.Element | None) -> Execution | None:
    if element is None:
        return None
    when = _child_text(element, "when")
    try:
        moment = datetime.fromisoformat(when.strip()) if when is not None else None
    except ValueError:
        raise ConferenceInfoError(f"not an xs:dateTime: {when!r}") from None
    return Execution(moment, _child_text(element, "reason"), _child_text(element, "by"))


def _enum(kind: type[_E], element: ET.Element, name: str) -> _E | None:
    text = _child_text(element, name)
    if text is None:
        return None
    try:
        return kind(text.strip())
    except ValueError:
        raise ConferenceInfoError(f"bad {name}: {text!r}") from None


def _read_media(element: ET.Element) -> Media:
    media_id = element.get("id")
    if media_id is None:
        raise ConferenceInfoError("media without id")
    return Media(
        media_id,
        _child_text(element, "type"),
        _child_text(element, "label"),
        _child_text(element, "src-id"),
        _enum(MediaStatus, element, "status"),
        _child_text(element, "display-text"),
    )


def _read_endpoint(element: ET.Element) -> Endpoint:
    return Endpoint(
        element.get("entity", ""),
        _child_text(element, "display-text"),
        _enum(EndpointStatus, element, "status"),
        _enum(JoiningMethod, element, "joining-method"),
        _read_execution(_child(element, "joining-info")),
        _enum(DisconnectionMethod, element, "disconnection-method"),
        _read_execution(_child(element, "disconnection-info")),
        {m.id: m for m in map(_read_media, element.iterfind(_NS + "media"))},
    )


def _read_roles(element: ET.Element) -> list[str] | None:
    roles = _child(element, "roles")
    if roles is None:
        return None
    return [e.text or "" for e in roles.iterfind(_NS + "entry")]


def _read_user(element: ET.Element) -> User:
    return User(
        element.get("entity", ""),
        _child_text(element, "display-text"),
        _read_roles(element) or [],
        {e.entity: e for e in map(_read_endpoint, element.iterfind(_NS + "endpoint"))},
    )


def _apply_state(info: ConferenceInfo, element: ET.Element) -> None:
    # RFC 4575 §4.1: a child element present in a partial document replaces the local one.
    count = _child_text(element, "user-count")
    if count is not None:
        try:
            info.user_count = int(count)
        except ValueError:
            raise ConferenceInfoError(f"bad user-count: {count!r}") from None
    active = _child_text(element, "active")
    if active is not None:
        info.active = _bool(active)
    locked = _child_text(element, "locked")
    if locked is not None:
        info.locked = _bool(locked)


def _apply_endpoint(old: Endpoint, element: ET.Element) -> None:
    new = _read_endpoint(element)
    for name in (
        "display_text",
        "status",
        "joining_method",
        "joining_info",
        "disconnection_method",
        "disconnection_info",
    ):
        value = getattr(new, name)
        if value is not None:
            setattr(old, name, value)
    old.media.update(new.media)  # media elements are replaced by id


def _apply_user(old: User, element: ET.Element) -> None:
    display = _child_text(element, "display-text")
    if display is not None:
        old.display_text = display
    roles = _read_roles(element)
    if roles is not None:
        old.roles = roles
    for e in element.iterfind(_NS + "endpoint"):
        entity = e.get("entity", "")
        state = _state_of(e)
        if state is ElementState.DELETED:
            old.endpoints.pop(entity, None)
        elif state is ElementState.FULL or entity not in old.endpoints:
            old.endpoints[entity] = _read_endpoint(e)
        else:
            _apply_endpoint(old.endpoints[entity], e)


def _apply(info: ConferenceInfo, root: ET.Element) -> None:
    """Apply a partial document's content onto `info` (RFC 4575 §4.1)."""
    description = _child(root, "conference-description")
    if description is not None:
        info.display_text = _child_text(description, "display-text")
        info.subject = _child_text(description, "subject")
    state = _child(root, "conference-state")
    if state is not None:
        _apply_state(info, state)
    users = _child(root, "users")
    if users is None:
        return
    if _state_of(users) is ElementState.FULL:
        info.users = {u.entity: u for u in map(_read_user, users.iterfind(_NS + "user"))}
        return
    for element in users.iterfind(_NS + "user"):
        entity = element.get("entity", "")
        user_state = _state_of(element)
        if user_state is ElementState.DELETED:
            info.users.pop(entity, None)
        elif user_state is ElementState.FULL or entity not in info.users:
            info.users[entity] = _read_user(element)
        else:
            _apply_user(info.users[entity], element)


def _parse_root(data: bytes | str) -> ET.Element:
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise ConferenceInfoError(f"not XML: {exc}") from None
    if root.tag != _NS + "conference-info":
        raise ConferenceInfoError(f"root element is {root.tag}, not conference-info")
    if root.get("entity") is None:
        raise ConferenceInfoError("conference-info without entity")
    return root


def _version(root: ET.Element) -> int | None:
    text = root.get("version")
    try:
        return None if text is None else int(text)
    except ValueError:
        raise ConferenceInfoError(f"bad version: {text!r}") from None


def parse_document(data: bytes | str) -> Document:
    """Read any conference-info document (full or partial) into the model.

    Only what the model holds is read; other elements (host-info, sidebars, call-info...) are
    skipped. For a partial document the model holds just what it carried.
    """
    root = _parse_root(data)
    info = ConferenceInfo(root.get("entity", ""))
    _apply(info, root)
    return Document(info, _state_of(root), _version(root))


@dataclass(slots=True)
class ConferenceView:
    """A subscriber's copy of a conference, fed with each NOTIFY body in turn (RFC 4575 §4.1)."""

    info: ConferenceInfo | None = None
    version: int | None = None

    def receive(self, data: bytes | str) -> ConferenceInfo:
        """Take a NOTIFY body; returns the updated copy.

        A full document replaces the copy. A partial one must carry the next version and is
        applied; otherwise ConferenceInfoError (RFC 4575 §4.1: the subscriber then re-fetches
        full state, e.g. by refreshing the subscription).
        """
        root = _parse_root(data)
        version = _version(root)
        state = _state_of(root)
        if state is ElementState.DELETED:
            raise ConferenceInfoError("state=deleted is not allowed on conference-info")
        if state is ElementState.PARTIAL:
            if self.info is None or self.version is None or version != self.version + 1:
                raise ConferenceInfoError(
                    f"partial document version {version} does not follow {self.version}"
                )
            info = copy.deepcopy(self.info)
        else:
            if self.version is not None and version is not None and version <= self.version:
                raise ConferenceInfoError(f"stale full document version {version}")
            info = ConferenceInfo(root.get("entity", ""))
        _apply(info, root)
        self.info, self.version = info, version
        return info
