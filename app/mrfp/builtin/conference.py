"""The conference/member registry of the built-in media processor, shared by its SIP side,
media engine and ESL server, and the `CUSTOM conference::maintenance` events it emits.

It plays the part of FreeSWITCH 1.10's mod_conference as the MRFC-AS sees it over ESL:
- conferences are created by their first member and destroyed after their last one leaves;
- member ids come from one per-process counter starting at 1 (FreeSWITCH numbers members
  across all conferences of the process, see `events-plain/22-add-member-room2.txt`: id 3);
- member lists put the newest member first (mod_conference prepends to its member list);
- events go out in FreeSWITCH's order (`../shared/fixtures/freeswitch/events-plain/`):
  `conference-create` before the first `add-member`; `add-member`, then a `floor-change` when
  the floor was free; `start-talking` then `floor-change` when a talker takes the floor;
  `kick-member`/`hup-member` before the leg goes; a `floor-change` to nobody before the
  floor holder's `del-member`, a `floor-change` to the next member after it;
  `conference-destroy` after the last `del-member`.

Header layout and values follow the recordings; host facts (Core-UUID, hostname, addresses)
come from `EventContext`. Media control goes through the `MediaControl` protocol (the engine)
and a member's hang-up through the callback the SIP side gives at `join`.
"""

from __future__ import annotations

import itertools
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from app.mrfp.esl.maintenance_headers import maintenance_headers

MAINTENANCE_SUBCLASS = "conference::maintenance"

# The `Event-Calling-*` sites FreeSWITCH was not recorded with (lock/unlock/deaf/hup); values
# from conference_api.c of 1.10.12 by function name. Nothing parses them.
_EXTRA_SITES: dict[str, tuple[str, str, str]] = {
    "lock": ("conference_api.c", "conference_api_sub_lock", "1738"),
    "unlock": ("conference_api.c", "conference_api_sub_unlock", "1767"),
    "deaf-member": ("conference_api.c", "conference_api_sub_deaf", "560"),
    "undeaf-member": ("conference_api.c", "conference_api_sub_undeaf", "585"),
    "hup-member": ("conference_api.c", "conference_api_sub_hup", "860"),
}

# Hang-up causes (Q.850 values and FreeSWITCH's names) the SIP side puts in Reason headers.
NORMAL_CLEARING = (16, "NORMAL_CLEARING")
MEDIA_TIMEOUT = (604, "MEDIA_TIMEOUT")


class ConferenceError(Exception):
    """A conference command failed; `str()` is FreeSWITCH's reply text without `-ERR `."""


class ConferenceNotFound(ConferenceError):
    def __init__(self, name: str) -> None:
        super().__init__(f"Conference {name} not found")


class MemberNotFound(ConferenceError):
    def __init__(self, member_id: str) -> None:
        # FreeSWITCH's spelling, kept: the adapter matches on it.
        super().__init__(f"Non-Existant ID {member_id}")


class ConferenceLocked(ConferenceError):
    def __init__(self, name: str) -> None:
        super().__init__(f"Conference {name} is locked")


class MediaControl(Protocol):
    """What the registry needs of the media engine (keys are the legs' channel UUIDs)."""

    def set_muted(self, member_id: str, muted: bool) -> None: ...

    def set_deaf(self, member_id: str, deaf: bool) -> None: ...


@dataclass(frozen=True, slots=True)
class EventContext:
    """Facts of this host that every FreeSWITCH event carries."""

    core_uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    hostname: str = field(default_factory=socket.gethostname)
    ipv4: str = "127.0.0.1"
    ipv6: str = "::1"
    domain: str = "127.0.0.1"  # Conference-Domain: the SIP profile's address
    profile: str = "default"  # Conference-Profile-Name
    sofia_profile: str = "mrfp"  # in channel names: sofia/<profile>/<user>@<host>
    context: str = "mrfp"  # Caller-Context (the dialplan context)
    verbose: bool = True  # channel variables on member events (verbose-events=true)


@dataclass(slots=True)
class Leg:
    """The SIP leg of a member, as the channel variables and caller fields describe it."""

    call_id: str
    channel_uuid: str
    from_user: str
    from_host: str  # host[:port] of the From URI
    from_display: str | None = None
    from_tag: str = ""
    destination: str = ""  # Request-URI user
    participant: str | None = None  # X-Participant header
    conference_header: str | None = None  # X-Conference header
    network_ip: str = "127.0.0.1"
    network_port: int = 0
    transport: str = "udp"
    codec: str = "PCMU"
    local_media_port: int = 0
    remote_media: tuple[str, int] | None = None
    created_us: int = field(default_factory=lambda: int(time.time() * 1_000_000))
    answered_us: int = 0

    @property
    def channel_name(self) -> str:
        return f"{self.from_user}@{self.from_host}"

    @property
    def caller_id_name(self) -> str:
        return self.from_display or self.from_user


HangupCallback = Callable[["Member", tuple[int, str]], None]


@dataclass(eq=False, slots=True)
class Member:
    member_id: int
    conference: Conference
    leg: Leg
    on_hangup: HangupCallback | None = None
    muted: bool = False
    deaf: bool = False
    talking: bool = False
    hold: bool = False
    energy: int = 0
    joined_at: float = field(default_factory=time.monotonic)
    last_talking: float | None = None
    talk_started: float | None = None
    talk_packets: int = 0
    gone: bool = False

    @property
    def key(self) -> str:
        """The engine's member key: the leg's channel UUID."""
        return self.leg.channel_uuid


@dataclass(eq=False, slots=True)
class Conference:
    name: str
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    members: list[Member] = field(default_factory=list)  # newest first, as FreeSWITCH lists
    locked: bool = False
    floor: Member | None = None
    created_at: float = field(default_factory=time.monotonic)

    def member(self, member_id: str) -> Member:
        for m in self.members:
            if str(m.member_id) == member_id:
                return m
        raise MemberNotFound(member_id)


@dataclass(frozen=True, slots=True)
class MaintenanceEvent:
    """One `CUSTOM conference::maintenance` event: headers in FreeSWITCH's order."""

    action: str
    headers: list[tuple[str, str]]


EventListener = Callable[[MaintenanceEvent], None]


def _bool(value: bool) -> str:
    return "true" if value else "false"


class ConferenceRegistry:
    """Conferences by name and the members in them; every change emits its events."""

    def __init__(
        self,
        context: EventContext | None = None,
        media: MediaControl | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.context = context or EventContext()
        self.media = media
        self.conferences: dict[str, Conference] = {}
        self.listeners: list[EventListener] = []
        self._ids = itertools.count(1)
        self._sequence = itertools.count(1)
        self._clock = clock
        self._by_key: dict[str, Member] = {}
        self.sessions_since_start = 0

    # -- lookups ------------------------------------------------------------------------------

    def conference(self, name: str) -> Conference:
        conf = self.conferences.get(name)
        if conf is None:
            raise ConferenceNotFound(name)
        return conf

    def member_by_key(self, key: str) -> Member | None:
        return self._by_key.get(key)

    def members(self) -> list[Member]:
        return list(self._by_key.values())

    def is_locked(self, name: str) -> bool:
        conf = self.conferences.get(name)
        return conf is not None and conf.locked

    # -- joining and leaving ------------------------------------------------------------------

    def join(self, name: str, leg: Leg, on_hangup: HangupCallback | None = None) -> Member:
        """Put an answered leg into conference `name` (created on first join)."""
        conf = self.conferences.get(name)
        if conf is not None and conf.locked:
            raise ConferenceLocked(name)
        if conf is None:
            conf = Conference(name)
            self.conferences[name] = conf
            self._emit("conference-create", conf)
        member = Member(next(self._ids), conf, leg, on_hangup)
        if not leg.answered_us:
            leg.answered_us = int(self._clock() * 1_000_000)
        conf.members.insert(0, member)
        self._by_key[member.key] = member
        self.sessions_since_start += 1
        self._emit("add-member", conf, member)
        if conf.floor is None:
            self._set_floor(conf, member)
        return member

    def leave(self, member: Member, *, hangup: bool = True) -> None:
        """The member's leg is gone (BYE either way, CANCEL, media timeout). `hangup` says the
        channel hung up (FreeSWITCH then reports `Answer-State: hangup` and a cause)."""
        if member.gone:
            return
        member.gone = True
        conf = member.conference
        self._by_key.pop(member.key, None)
        was_floor = conf.floor is member
        if was_floor:
            # Recorded (15, 18): the floor goes to nobody before the holder's del-member.
            conf.floor = None
            self._emit("floor-change-none", conf)
        conf.members.remove(member)
        self._emit("del-member", conf, member, hangup=hangup)
        if conf.members:
            if was_floor:
                self._set_floor(conf, conf.members[0])
            return
        del self.conferences[conf.name]
        self._emit("conference-destroy", conf)

    # -- commands (conference <name> <verb> <id>) ---------------------------------------------

    def kick(self, name: str, member_id: str) -> Member:
        member = self.conference(name).member(member_id)
        self._emit("kick-member", member.conference, member)
        self._hang_up(member)
        return member

    def hup(self, name: str, member_id: str) -> Member:
        member = self.conference(name).member(member_id)
        self._emit("hup-member", member.conference, member)
        self._hang_up(member)
        return member

    def set_mute(self, name: str, member_id: str, muted: bool) -> Member:
        member = self.conference(name).member(member_id)
        member.muted = muted
        if muted:
            # conference_api_sub_mute clears the talking flag with the speak flag (recorded 11).
            member.talking = False
            member.talk_started = None
        if self.media is not None:
            self.media.set_muted(member.key, muted)
        self._emit("mute-member" if muted else "unmute-member", member.conference, member)
        return member

    def set_deaf(self, name: str, member_id: str, deaf: bool) -> Member:
        member = self.conference(name).member(member_id)
        member.deaf = deaf
        if self.media is not None:
            self.media.set_deaf(member.key, deaf)
        self._emit("deaf-member" if deaf else "undeaf-member", member.conference, member)
        return member

    def set_lock(self, name: str, locked: bool) -> Conference:
        conf = self.conference(name)
        conf.locked = locked
        self._emit("lock" if locked else "unlock", conf)
        return conf

    def set_hold(self, member: Member, hold: bool) -> None:
        member.hold = hold

    # -- media events -------------------------------------------------------------------------

    def talking_changed(self, key: str, talking: bool, energy: int = 0) -> None:
        """From the engine's talk detector (keyed by channel UUID)."""
        member = self._by_key.get(key)
        if member is None or member.talking == talking:
            return
        if talking and member.muted:
            return  # a muted member's speech goes nowhere; FreeSWITCH reports none either
        now = time.monotonic()
        member.talking = talking
        member.energy = energy
        conf = member.conference
        if talking:
            member.talk_started = now
            member.last_talking = now
            self._emit("start-talking", conf, member)
            if conf.floor is not member:
                self._set_floor(conf, member, old=conf.floor)
        else:
            member.last_talking = now
            self._emit("stop-talking", conf, member)
            member.talk_started = None

    # -- internals ----------------------------------------------------------------------------

    def _hang_up(self, member: Member) -> None:
        callback = member.on_hangup
        if callback is not None:
            callback(member, NORMAL_CLEARING)
        else:
            self.leave(member, hangup=False)

    def _set_floor(self, conf: Conference, member: Member, old: Member | None = None) -> None:
        conf.floor = member
        self._emit("floor-change", conf, member, old=old)

    def _emit(
        self,
        action: str,
        conf: Conference,
        member: Member | None = None,
        *,
        old: Member | None = None,
        hangup: bool = False,
    ) -> None:
        if not self.listeners:
            return
        values = self._event_values(action, conf)
        variables: list[tuple[str, str]] = []
        if member is not None:
            values.update(self._member_values(conf, member, hangup=hangup))
            if self.context.verbose:
                variables = self._variables(conf, member)
        if action == "floor-change":
            values["Old-ID"] = str(old.member_id) if old is not None else "none"
            values["New-ID"] = str(member.member_id) if member is not None else "none"
        elif action == "floor-change-none":
            values["Old-ID"] = "none"
            values["New-ID"] = "none"
        if action == "stop-talking" and member is not None:
            values.update(self._talking_stats(member))
        headers = maintenance_headers(
            action,
            values,
            variables=variables,
            hangup_cause="NORMAL_CLEARING" if hangup and member is not None else None,
        )
        event = MaintenanceEvent(
            "floor-change" if action == "floor-change-none" else action, headers
        )
        for listener in list(self.listeners):
            listener(event)

    def _event_values(self, action: str, conf: Conference) -> dict[str, str]:
        ctx = self.context
        now = self._clock()
        local = time.localtime(now)
        values = {
            "Event-Subclass": MAINTENANCE_SUBCLASS,
            "Event-Name": "CUSTOM",
            "Core-UUID": ctx.core_uuid,
            "FreeSWITCH-Hostname": ctx.hostname,
            "FreeSWITCH-Switchname": ctx.hostname,
            "FreeSWITCH-IPv4": ctx.ipv4,
            "FreeSWITCH-IPv6": ctx.ipv6,
            "Event-Date-Local": time.strftime("%Y-%m-%d %H:%M:%S", local),
            "Event-Date-GMT": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)),
            "Event-Date-Timestamp": str(int(now * 1_000_000)),
            "Event-Sequence": str(next(self._sequence)),
            "Conference-Name": conf.name,
            "Conference-Domain": ctx.domain,
            "Conference-Size": str(len(conf.members)),
            "Conference-Ghosts": "0",
            "Conference-Profile-Name": ctx.profile,
            "Conference-Unique-ID": conf.uuid,
        }
        site = _EXTRA_SITES.get(action)
        if site is not None:
            values["Event-Calling-File"], values["Event-Calling-Function"] = site[0], site[1]
            values["Event-Calling-Line-Number"] = site[2]
        return values

    def _member_values(self, conf: Conference, member: Member, *, hangup: bool) -> dict[str, str]:
        leg = member.leg
        ctx = self.context
        channel = f"sofia/{ctx.sofia_profile}/{leg.channel_name}"
        answered = str(leg.answered_us)
        return {
            "Floor": _bool(conf.floor is member),
            "Channel-State": "CS_EXECUTE",
            "Channel-Call-State": "ACTIVE",
            # CS_HANGUP is 10, CS_EXECUTE 4 (switch_types.h); recorded 16 vs 19.
            "Channel-State-Number": "10" if hangup else "4",
            "Channel-Name": channel,
            "Unique-ID": leg.channel_uuid,
            "Call-Direction": "inbound",
            "Presence-Call-Direction": "inbound",
            "Channel-HIT-Dialplan": "true",
            "Channel-Call-UUID": leg.channel_uuid,
            "Answer-State": "hangup" if hangup else "answered",
            "Channel-Read-Codec-Name": "L16",
            "Channel-Read-Codec-Rate": "8000",
            "Channel-Read-Codec-Bit-Rate": "128000",
            "Channel-Write-Codec-Name": leg.codec,
            "Channel-Write-Codec-Rate": "8000",
            "Channel-Write-Codec-Bit-Rate": "64000",
            "Caller-Direction": "inbound",
            "Caller-Logical-Direction": "inbound",
            "Caller-Username": leg.from_user,
            "Caller-Dialplan": "XML",
            "Caller-Caller-ID-Name": leg.caller_id_name,
            "Caller-Caller-ID-Number": leg.from_user,
            "Caller-Orig-Caller-ID-Name": leg.caller_id_name,
            "Caller-Orig-Caller-ID-Number": leg.from_user,
            "Caller-Network-Addr": leg.network_ip,
            "Caller-ANI": leg.from_user,
            "Caller-Destination-Number": leg.destination,
            "Caller-Unique-ID": leg.channel_uuid,
            "Caller-Source": "mod_sofia",
            "Caller-Context": ctx.context,
            "Caller-Channel-Name": channel,
            "Caller-Profile-Index": "1",
            "Caller-Profile-Created-Time": str(leg.created_us),
            "Caller-Channel-Created-Time": str(leg.created_us),
            "Caller-Channel-Answered-Time": answered,
            "Caller-Channel-Progress-Time": "0",
            "Caller-Channel-Progress-Media-Time": answered,
            "Caller-Channel-Hangup-Time": "0",
            "Caller-Channel-Transfer-Time": "0",
            "Caller-Channel-Resurrect-Time": "0",
            "Caller-Channel-Bridged-Time": "0",
            "Caller-Channel-Last-Hold": "0",
            "Caller-Channel-Hold-Accum": "0",
            "Caller-Screen-Bit": "true",
            "Caller-Privacy-Hide-Name": "false",
            "Caller-Privacy-Hide-Number": "false",
            "Video": "false",
            "Hear": _bool(not member.deaf),
            "See": "true",
            "Speak": _bool(not member.muted),
            "Talking": _bool(member.talking),
            "Mute-Detect": "false",
            "Hold": _bool(member.hold),
            "Member-ID": str(member.member_id),
            "Member-Type": "member",
            "Member-Ghost": "false",
            "Energy-Level": "0",
            "Current-Energy": str(member.energy),
        }

    def _variables(self, conf: Conference, member: Member) -> list[tuple[str, str]]:
        """The channel variables of a verbose event, a subset of the recorded ones in their
        order; `sip_call_id` and `sip_h_X-Participant` are what the MRFC-AS ties legs by."""
        leg = member.leg
        ctx = self.context
        host = leg.from_host.split(":", 1)[0]
        out = [
            ("variable_direction", "inbound"),
            ("variable_uuid", leg.channel_uuid),
            ("variable_sip_from_user", leg.from_user),
            ("variable_sip_from_uri", f"{leg.from_user}@{leg.from_host}"),
            ("variable_sip_from_host", host),
            ("variable_channel_name", f"sofia/{ctx.sofia_profile}/{leg.channel_name}"),
            ("variable_sip_call_id", leg.call_id),
            ("variable_sip_network_ip", leg.network_ip),
            ("variable_sip_network_port", str(leg.network_port)),
            ("variable_sip_via_protocol", leg.transport),
            ("variable_sip_from_tag", leg.from_tag),
            ("variable_sip_req_user", leg.destination),
        ]
        if leg.conference_header is not None:
            out.append(("variable_sip_h_X-Conference", leg.conference_header))
        # Always sent (empty when the leg had no header) so the MRFC-AS can rely on it.
        out.append(("variable_sip_h_X-Participant", leg.participant or ""))
        out += [
            ("variable_rtp_use_codec_name", leg.codec),
            ("variable_rtp_use_codec_rate", "8000"),
            ("variable_rtp_use_codec_ptime", "20"),
            ("variable_local_media_port", str(leg.local_media_port)),
        ]
        if leg.remote_media is not None:
            out += [
                ("variable_remote_media_ip", leg.remote_media[0]),
                ("variable_remote_media_port", str(leg.remote_media[1])),
            ]
        out += [
            ("variable_conference_name", conf.name),
            ("variable_conference_member_id", str(member.member_id)),
            ("variable_conference_uuid", conf.uuid),
        ]
        return out

    @staticmethod
    def _talking_stats(member: Member) -> dict[str, str]:
        # The talk detector's figures FreeSWITCH adds to stop-talking; ours are coarser.
        started = member.talk_started
        duration_ms = int((time.monotonic() - started) * 1000) if started is not None else 0
        packets = duration_ms // 20
        return {
            "talking-gate-hits": str(packets),
            "talking-total-packets": str(packets),
            "talking-duration-ms": str(duration_ms),
            "talking-average-energy": f"{float(member.energy):f}",
            "talking-delta-average": f"{0.0:f}",
            "talking-hit-on-percent": f"{100.0 if packets else 0.0:f}",
            "talking-non-hit-ratio": f"{0.0:f}",
            "talking-hit-off-percent": f"{0.0:f}",
            "talking-hit-off-differential": f"{100.0 if packets else 0.0:f}",
        }
