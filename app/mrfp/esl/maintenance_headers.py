"""The header layout of FreeSWITCH 1.10.12's `CUSTOM conference::maintenance` events, as
recorded in `../shared/fixtures/freeswitch/events-plain/` (the json events carry the same
headers in the same order). Data for whoever must produce these events (the built-in media
processor's ESL server): fill `maintenance_headers(action, values)` and render it with
`render_event_plain` / `render_event_json`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# switch_event_prep_for_delivery: every event starts with these.
EVENT_HEADERS: tuple[str, ...] = (
    "Event-Subclass",
    "Event-Name",
    "Core-UUID",
    "FreeSWITCH-Hostname",
    "FreeSWITCH-Switchname",
    "FreeSWITCH-IPv4",
    "FreeSWITCH-IPv6",
    "Event-Date-Local",
    "Event-Date-GMT",
    "Event-Date-Timestamp",
    "Event-Calling-File",
    "Event-Calling-Function",
    "Event-Calling-Line-Number",
    "Event-Sequence",
)

# conference_event_add_data
CONFERENCE_HEADERS: tuple[str, ...] = (
    "Conference-Name",
    "Conference-Domain",
    "Conference-Size",
    "Conference-Ghosts",
    "Conference-Profile-Name",
    "Conference-Unique-ID",
)

# conference_member_add_event_data, first part (Floor + switch_channel_event_set_basic_data).
# A member whose channel already hung up gets `Hangup-Cause` right after `Answer-State`.
CHANNEL_STATE_HEADERS: tuple[str, ...] = (
    "Floor",
    "Channel-State",
    "Channel-Call-State",
    "Channel-State-Number",
    "Channel-Name",
    "Unique-ID",
    "Call-Direction",
    "Presence-Call-Direction",
    "Channel-HIT-Dialplan",
    "Channel-Call-UUID",
    "Answer-State",
)

CHANNEL_CALLER_HEADERS: tuple[str, ...] = (
    "Channel-Read-Codec-Name",
    "Channel-Read-Codec-Rate",
    "Channel-Read-Codec-Bit-Rate",
    "Channel-Write-Codec-Name",
    "Channel-Write-Codec-Rate",
    "Channel-Write-Codec-Bit-Rate",
    "Caller-Direction",
    "Caller-Logical-Direction",
    "Caller-Username",
    "Caller-Dialplan",
    "Caller-Caller-ID-Name",
    "Caller-Caller-ID-Number",
    "Caller-Orig-Caller-ID-Name",
    "Caller-Orig-Caller-ID-Number",
    "Caller-Network-Addr",
    "Caller-ANI",
    "Caller-Destination-Number",
    "Caller-Unique-ID",
    "Caller-Source",
    "Caller-Context",
    "Caller-Channel-Name",
    "Caller-Profile-Index",
    "Caller-Profile-Created-Time",
    "Caller-Channel-Created-Time",
    "Caller-Channel-Answered-Time",
    "Caller-Channel-Progress-Time",
    "Caller-Channel-Progress-Media-Time",
    "Caller-Channel-Hangup-Time",
    "Caller-Channel-Transfer-Time",
    "Caller-Channel-Resurrect-Time",
    "Caller-Channel-Bridged-Time",
    "Caller-Channel-Last-Hold",
    "Caller-Channel-Hold-Accum",
    "Caller-Screen-Bit",
    "Caller-Privacy-Hide-Name",
    "Caller-Privacy-Hide-Number",
)

# With `verbose-events=true` the channel's `variable_*` headers come here, between the caller
# headers and these (see events-verbose/).
MEMBER_STATE_HEADERS: tuple[str, ...] = (
    "Video",
    "Hear",
    "See",
    "Speak",
    "Talking",
    "Mute-Detect",
    "Hold",
    "Member-ID",
    "Member-Type",
    "Member-Ghost",
    "Energy-Level",
    "Current-Energy",
)

MEMBER_HEADERS = CHANNEL_STATE_HEADERS + CHANNEL_CALLER_HEADERS + MEMBER_STATE_HEADERS

# stop-talking adds the talk detector's figures before Action.
TALKING_STATS_HEADERS: tuple[str, ...] = (
    "talking-gate-hits",
    "talking-total-packets",
    "talking-duration-ms",
    "talking-average-energy",
    "talking-delta-average",
    "talking-hit-on-percent",
    "talking-non-hit-ratio",
    "talking-hit-off-percent",
    "talking-hit-off-differential",
)

_MEMBER_EVENT = EVENT_HEADERS + CONFERENCE_HEADERS + MEMBER_HEADERS + ("Action",)

# Full header order per action. `floor-change` repeats the conference headers (FreeSWITCH
# adds them twice); `floor-change-none` is the one sent when the floor goes to nobody.
HEADER_ORDER: dict[str, tuple[str, ...]] = {
    "conference-create": EVENT_HEADERS + CONFERENCE_HEADERS + ("Action",),
    "conference-destroy": EVENT_HEADERS + CONFERENCE_HEADERS + ("Action",),
    "add-member": _MEMBER_EVENT,
    "del-member": _MEMBER_EVENT,
    "mute-member": _MEMBER_EVENT,
    "unmute-member": _MEMBER_EVENT,
    "deaf-member": _MEMBER_EVENT,
    "undeaf-member": _MEMBER_EVENT,
    "kick-member": _MEMBER_EVENT,
    "hup-member": _MEMBER_EVENT,
    "start-talking": _MEMBER_EVENT,
    "stop-talking": EVENT_HEADERS
    + CONFERENCE_HEADERS
    + MEMBER_HEADERS
    + TALKING_STATS_HEADERS
    + ("Action",),
    "floor-change": EVENT_HEADERS
    + CONFERENCE_HEADERS
    + ("Action", "Old-ID")
    + CONFERENCE_HEADERS
    + MEMBER_HEADERS
    + ("New-ID",),
    "floor-change-none": EVENT_HEADERS + CONFERENCE_HEADERS + ("Action", "Old-ID", "New-ID"),
    "lock": EVENT_HEADERS + CONFERENCE_HEADERS + ("Action",),
    "unlock": EVENT_HEADERS + CONFERENCE_HEADERS + ("Action",),
}

# Event-Calling-File / -Function / -Line-Number FreeSWITCH 1.10.12 reports per action
# (recorded; lock/unlock/deaf/hup were not recorded and are left out).
CALLING_SITE: dict[str, tuple[str, str, str]] = {
    "conference-create": ("mod_conference.c", "conference_new", "3848"),
    "conference-destroy": ("mod_conference.c", "conference_thread_run", "863"),
    "add-member": ("conference_member.c", "conference_member_add", "962"),
    "del-member": ("conference_member.c", "conference_member_del", "1355"),
    "floor-change": ("conference_member.c", "conference_member_set_floor_holder", "1158"),
    "start-talking": ("conference_loop.c", "conference_loop_input", "1154"),
    "stop-talking": ("conference_loop.c", "stop_talking_handler", "783"),
    "mute-member": ("conference_api.c", "conference_api_sub_mute", "339"),
    "unmute-member": ("conference_api.c", "conference_api_sub_unmute", "492"),
    "kick-member": ("conference_api.c", "conference_api_sub_kick", "902"),
}


def maintenance_headers(
    action: str,
    values: Mapping[str, str],
    *,
    variables: Iterable[tuple[str, str]] = (),
    hangup_cause: str | None = None,
) -> list[tuple[str, str]]:
    """Headers of one maintenance event in FreeSWITCH's order.

    `values` maps header names to values (`Action` and `Event-Calling-*` default to the
    recorded ones; `floor-change-none` is sent with Action `floor-change`); names without a
    value are left out. `variables` (verbose events) go before `Video`; `hangup_cause` after
    `Answer-State`, as FreeSWITCH writes them for a member whose leg hung up.
    """
    order = HEADER_ORDER[action]
    wire_action = "floor-change" if action == "floor-change-none" else action
    defaults: dict[str, str] = {"Action": wire_action}
    site = CALLING_SITE.get(wire_action)
    if site is not None:
        defaults.update(
            zip(
                ("Event-Calling-File", "Event-Calling-Function", "Event-Calling-Line-Number"),
                site,
                strict=True,
            )
        )
    out: list[tuple[str, str]] = []
    for name in order:
        if name == "Video":
            out.extend(variables)
        value = values.get(name, defaults.get(name))
        if value is not None:
            out.append((name, value))
        if name == "Answer-State" and hangup_cause is not None:
            out.append(("Hangup-Cause", hangup_cause))
    return out
