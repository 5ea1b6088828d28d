"""mod_conference over ESL, sans-IO: command strings, replies, member lists, and the
`CUSTOM conference::maintenance` events mapped to the focus's `MediaEvent`s.

Reply formats are those of FreeSWITCH 1.10.12 (`../shared/fixtures/freeswitch/api/`): success
texts start with `+OK` (or are data: `json_list` is JSON, `list` is `;`-separated rows), errors
with `-ERR` (`-ERR Conference room1 not found`, `-ERR Non-Existant ID 2` [sic]) or `-USAGE`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from app.focus.media import (
    ConferenceCreated,
    ConferenceDestroyed,
    ConferenceLockChanged,
    MediaEvent,
    MemberAdded,
    MemberInfo,
    MemberMuteChanged,
    MemberRemovalCause,
    MemberRemoved,
    MemberTalkingChanged,
)
from app.mrfp.port import CommandFailed, ConferenceNotFound, MemberNotFound, MrfpError

MAINTENANCE_SUBCLASS = "conference::maintenance"
SUBSCRIBE_PLAIN = f"event plain CUSTOM {MAINTENANCE_SUBCLASS}"
SUBSCRIBE_JSON = f"event json CUSTOM {MAINTENANCE_SUBCLASS}"

# The channel variable the drop-in dialplan (freeswitch/dialplan/mrfc.xml) sets from the
# X-Participant header of the leg; with verbose-events it comes as `variable_<name>`.
PARTICIPANT_VARIABLE = "mrfc_participant"


# ---------------------------------------------------------------------------------------------
# commands


def _token(value: str, what: str) -> str:
    # mod_conference splits its arguments on spaces and ESL ends a command at a newline, so an
    # id with either would change the command (or inject another one).
    if not value or any(ch.isspace() or ord(ch) < 0x20 for ch in value):
        raise CommandFailed(f"invalid {what} {value!r}")
    return value


def conference_command(conference: str, verb: str, *args: str) -> str:
    """`conference <id> <verb> <args...>` as an `api` argument, arguments checked."""
    parts = [_token(conference, "conference id"), verb]
    parts += [_token(a, "argument") for a in args]
    return "conference " + " ".join(parts)


# ---------------------------------------------------------------------------------------------
# replies


def check_api_reply(body: str) -> str:
    """The reply body if it reports success, else the fitting `MrfpError`."""
    text = body.strip()
    if text.startswith("-ERR"):
        message = text[4:].strip()
        if message.startswith("Conference ") and message.endswith(" not found"):
            raise ConferenceNotFound(message)
        if message.startswith("Non-Existant ID") or message.startswith("Non-Existent ID"):
            raise MemberNotFound(message)
        raise CommandFailed(message)
    if text.startswith("-USAGE"):
        raise CommandFailed(text)
    return body


def check_command_reply(reply_text: str | None) -> str:
    """The `Reply-Text` of a `command/reply` if `+OK`, else `CommandFailed`."""
    if reply_text is None or not reply_text.startswith("+OK"):
        raise CommandFailed(reply_text or "no Reply-Text")
    return reply_text


@dataclass(frozen=True, slots=True)
class ConferenceInfo:
    """One conference of `conference [<id>] json_list` / `conference list`."""

    name: str
    uuid: str | None
    member_count: int
    locked: bool
    members: list[MemberInfo] = field(default_factory=list)
    flags: dict[str, bool] = field(default_factory=dict)


def _member_from_json(m: Mapping[str, Any]) -> MemberInfo:
    flags = {k: bool(v) for k, v in dict(m.get("flags") or {}).items()}
    return MemberInfo(
        member_id=str(m.get("id")),
        call_id=None,  # json_list carries the channel uuid, not the SIP Call-ID
        channel_uuid=m.get("uuid"),
        caller_id_number=m.get("caller_id_number"),
        muted=not flags.get("can_speak", True),
        deaf=not flags.get("can_hear", True),
        talking=flags.get("talking", False),
        flags=flags,
    )


def parse_json_list(body: str) -> list[ConferenceInfo]:
    """`conference json_list` (all) or `conference <id> json_list` (a one-element list)."""
    check_api_reply(body)
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise CommandFailed(f"json_list reply is not JSON: {exc}") from exc
    if not isinstance(data, list):
        raise CommandFailed("json_list reply is not a list")
    out: list[ConferenceInfo] = []
    for conf in data:
        # A recording shows up as a member of type `recording_node`; only callers are legs.
        members = [
            _member_from_json(m)
            for m in conf.get("members", [])
            if m.get("type", "caller") == "caller"
        ]
        out.append(
            ConferenceInfo(
                name=str(conf.get("conference_name")),
                uuid=conf.get("conference_uuid"),
                member_count=int(conf.get("member_count", len(members))),
                locked=bool(conf.get("locked", False)),
                members=members,
                flags={k: v for k, v in conf.items() if isinstance(v, bool)},
            )
        )
    return out


def members_from_json_list(body: str, conference: str) -> list[MemberInfo]:
    """The members of `conference` in a `conference <id> json_list` reply."""
    for conf in parse_json_list(body):
        if conf.name == conference:
            return conf.members
    raise ConferenceNotFound(f"Conference {conference} not found")


# `list` flag words (conference_api.c, conference_list) and their json_list names.
_LIST_FLAG_NAMES = {
    "hear": "can_hear",
    "see": "can_see",
    "speak": "can_speak",
    "talking": "talking",
    "floor": "has_floor",
    "video": "has_video",
    "moderator": "is_moderator",
    "ghost": "ghost",
}


def _member_from_list_row(row: str) -> MemberInfo:
    # id;channel name;uuid;caller id name;caller id number;flags;volume in;volume out;energy
    fields = row.split(";")
    if len(fields) < 6:
        raise CommandFailed(f"unexpected list row {row!r}")
    words = [w for w in fields[5].split("|") if w]
    flags = {_LIST_FLAG_NAMES.get(w, w): True for w in words}
    return MemberInfo(
        member_id=fields[0],
        call_id=None,
        channel_uuid=fields[2] or None,
        caller_id_number=fields[4] or None,
        muted="speak" not in words,
        deaf="hear" not in words,
        talking="talking" in words,
        flags=flags,
    )


def parse_list(body: str) -> list[ConferenceInfo]:
    """`conference list` (all: a `+OK Conference <id> (...)` line before each one's rows) or
    `conference <id> list` (rows only, returned as one conference named "")."""
    check_api_reply(body)
    out: list[ConferenceInfo] = []
    current: ConferenceInfo | None = None
    for line in body.splitlines():
        if not line.strip():
            continue
        if line.startswith("+OK No active conferences"):
            return []
        if line.startswith("+OK Conference "):
            name = line[len("+OK Conference ") :].split(" ", 1)[0]
            detail = line.split("(", 1)[1] if "(" in line else ""
            count = int(detail.split(" ", 1)[0]) if detail[:1].isdigit() else 0
            flag_text = detail.split("flags: ", 1)[1].rstrip(")") if "flags: " in detail else ""
            current = ConferenceInfo(
                name=name,
                uuid=None,
                member_count=count,
                locked="locked" in flag_text.split("|"),
                flags={f: True for f in flag_text.split("|") if f},
            )
            out.append(current)
            continue
        if current is None:
            current = ConferenceInfo(name="", uuid=None, member_count=0, locked=False)
            out.append(current)
        current.members.append(_member_from_list_row(line))
    return [replace(c, member_count=c.member_count or len(c.members)) for c in out]


# ---------------------------------------------------------------------------------------------
# conference::maintenance events


# The headers `MaintenanceMapper.map` reads for each action it handles, besides
# Event-Subclass and Action (a test holds it to that). For every other action
# (`floor-change`, `deaf-member`, `energy-level`...) it returns nothing and changes nothing,
# so a reader may drop those events unread, and read only these headers of the others.
_MEMBER = ("Conference-Name", "Member-ID")
MAPPED_HEADERS: dict[str, tuple[str, ...]] = {
    "conference-create": ("Conference-Name",),
    "conference-destroy": ("Conference-Name",),
    "lock": ("Conference-Name",),
    "unlock": ("Conference-Name",),
    "add-member": (
        *_MEMBER,
        "variable_sip_call_id",
        "variable_sip_h_X-Participant",
        f"variable_{PARTICIPANT_VARIABLE}",
        "Unique-ID",
        "Caller-Caller-ID-Number",
    ),
    "kick-member": _MEMBER,
    "del-member": (*_MEMBER, "variable_sip_call_id"),
    "mute-member": _MEMBER,
    "unmute-member": _MEMBER,
    "start-talking": _MEMBER,
    "stop-talking": _MEMBER,
}


def _flag(value: str | None) -> bool:
    return value == "true"


class MaintenanceMapper:
    """Maps `conference::maintenance` events of one node to `MediaEvent`s and keeps what the
    node is known to hold (conferences, members and their SIP Call-IDs), so that after an ESL
    reconnect `reconcile` can tell which members vanished while the link was down.

    `kick-member` is followed by `del-member` for the same member (recorded 14 then 16): the
    kick only marks the member so the `del-member` becomes `MemberRemoved(cause=KICKED)`.
    """

    def __init__(self, node: str) -> None:
        self.node = node
        # conference -> member id -> SIP Call-ID (None when the MRFP did not report it)
        self._members: dict[str, dict[str, str | None]] = {}
        self._kicked: set[tuple[str, str]] = set()
        # Removals already reported by `reconcile`, so a late `del-member` is not reported twice.
        self._gone: set[tuple[str, str]] = set()
        self._gone_conferences: set[str] = set()

    def conferences(self) -> list[str]:
        """Conferences this node is known to hold."""
        return list(self._members)

    def members(self, conference: str) -> dict[str, str | None]:
        """Member id -> SIP Call-ID for one conference (empty if unknown)."""
        return dict(self._members.get(conference, {}))

    def call_id(self, conference: str, member_id: str) -> str | None:
        return self._members.get(conference, {}).get(member_id)

    def map(self, headers: Mapping[str, str]) -> list[MediaEvent]:
        """The focus's events for one ESL event (none for `floor-change` and the like)."""
        if headers.get("Event-Subclass") != MAINTENANCE_SUBCLASS:
            return []
        action = headers.get("Action")
        conf = headers.get("Conference-Name")
        if not action or not conf:
            return []
        node = self.node
        if action == "conference-create":
            self._members.setdefault(conf, {})
            self._gone_conferences.discard(conf)
            return [ConferenceCreated(node, conf)]
        if action == "conference-destroy":
            if conf in self._gone_conferences:
                self._gone_conferences.discard(conf)
                return []
            self._forget(conf)
            return [ConferenceDestroyed(node, conf)]
        if action == "lock":
            return [ConferenceLockChanged(node, conf, True)]
        if action == "unlock":
            return [ConferenceLockChanged(node, conf, False)]
        member = headers.get("Member-ID")
        if member is None:
            return []
        if action == "add-member":
            call_id = headers.get("variable_sip_call_id")
            participant = headers.get("variable_sip_h_X-Participant") or headers.get(
                f"variable_{PARTICIPANT_VARIABLE}"
            )
            self._members.setdefault(conf, {})[member] = call_id
            self._gone.discard((conf, member))
            self._gone_conferences.discard(conf)
            return [
                MemberAdded(
                    node,
                    conf,
                    member,
                    call_id,
                    channel_uuid=headers.get("Unique-ID"),
                    caller_id_number=headers.get("Caller-Caller-ID-Number"),
                    participant=participant,
                )
            ]
        if action == "kick-member":
            self._kicked.add((conf, member))
            return []
        if action == "del-member":
            key = (conf, member)
            if key in self._gone:
                self._gone.discard(key)
                return []
            known = self._members.get(conf, {})
            call_id = known.pop(member, None) or headers.get("variable_sip_call_id")
            cause = MemberRemovalCause.HANGUP
            if key in self._kicked:
                self._kicked.discard(key)
                cause = MemberRemovalCause.KICKED
            return [MemberRemoved(node, conf, member, call_id, cause)]
        if action in ("mute-member", "unmute-member"):
            return [MemberMuteChanged(node, conf, member, action == "mute-member")]
        if action in ("start-talking", "stop-talking"):
            return [MemberTalkingChanged(node, conf, member, action == "start-talking")]
        return []

    def reconcile(self, conference: str, listed: list[MemberInfo] | None) -> list[MediaEvent]:
        """Events that bring what this mapper knew in line with a fresh `json_list`.

        `listed` None means the node answered `Conference <id> not found`: every member known
        is reported removed (cause UNKNOWN), then the conference destroyed. Members the node
        lists but the mapper never saw added (joined while ESL was down) are reported added,
        without a Call-ID since `json_list` does not carry it.
        """
        node = self.node
        known = self._members.get(conference, {})
        events: list[MediaEvent] = []
        present = {m.member_id: m for m in listed} if listed is not None else {}
        for member_id, call_id in list(known.items()):
            if member_id not in present:
                del known[member_id]
                self._gone.add((conference, member_id))
                self._kicked.discard((conference, member_id))
                events.append(
                    MemberRemoved(node, conference, member_id, call_id, MemberRemovalCause.UNKNOWN)
                )
        if listed is None:
            self._forget(conference)
            self._gone_conferences.add(conference)
            events.append(ConferenceDestroyed(node, conference))
            return events
        for member_id, info in present.items():
            if member_id not in known:
                known[member_id] = info.call_id
                events.append(
                    MemberAdded(
                        node,
                        conference,
                        member_id,
                        info.call_id,
                        channel_uuid=info.channel_uuid,
                        caller_id_number=info.caller_id_number,
                    )
                )
        self._members[conference] = known
        return events

    def with_call_ids(self, conference: str, members: list[MemberInfo]) -> list[MemberInfo]:
        """`members` with the Call-IDs learned from `add-member` filled in."""
        known = self._members.get(conference, {})
        return [
            replace(m, call_id=m.call_id or known.get(m.member_id)) if known else m for m in members
        ]

    def _forget(self, conference: str) -> None:
        self._members.pop(conference, None)
        self._kicked = {k for k in self._kicked if k[0] != conference}


def error_for(message: str) -> MrfpError:
    """The typed error for an `-ERR ...` reply text (without raising it)."""
    try:
        check_api_reply(message if message.startswith("-") else "-ERR " + message)
    except MrfpError as exc:
        return exc
    return CommandFailed(message)
