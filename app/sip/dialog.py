"""SIP dialogs (RFC 3261 §12), sans-IO.

A `Dialog` holds the state §12.1 lists (Call-ID, tags, CSeq numbers, route set, remote
target) and builds in-dialog requests (§12.2.1.1) and checks incoming ones (§12.2.2). It can
be turned into a plain dict and back so a restarted process keeps its dialogs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from app.sip.errors import LocalProtocolError
from app.sip.headers import MAX_CSEQ
from app.sip.message import Request, Response
from app.sip.uri import NameAddr, SipUri, parse_uri


class DialogState(Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(frozen=True, slots=True)
class DialogId:
    """RFC 3261 §12: Call-ID, local tag, remote tag."""

    call_id: str
    local_tag: str
    remote_tag: str


# Requests that refresh the remote target (RFC 3261 §12.2, RFC 3311 §5.2, RFC 6665 §4.1.2.3).
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})


@dataclass(eq=False)
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: NameAddr
    remote_uri: NameAddr
    remote_target: SipUri
    local_contact: NameAddr
    route_set: list[NameAddr] = field(default_factory=list)
    local_cseq: int = 1
    remote_cseq: int | None = None
    is_uac: bool = False
    state: DialogState = DialogState.EARLY
    secure: bool = False
    # Opaque slot for the TU (the participant or subscription that owns the dialog).
    owner: object | None = None
    # to_dict's text of the addresses, with the objects it was written from: a dialog is
    # snapshotted at every change of its participant, its addresses seldom change.
    _texts: tuple[tuple[object, ...], dict[str, str], list[str]] | None = field(
        default=None, init=False, repr=False
    )

    # _header_texts's From/To/Contact, with what they were written from.
    _heads: tuple[tuple[object, ...], NameAddr, tuple[str, str, str]] | None = field(
        default=None, init=False, repr=False
    )

    @property
    def id(self) -> DialogId:
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    # -- creation ---------------------------------------------------------------------------

    @classmethod
    def uas(
        cls,
        request: Request,
        local_tag: str,
        local_contact: NameAddr,
        *,
        state: DialogState = DialogState.EARLY,
    ) -> Dialog:
        """The UAS side of a dialog created by `request` (RFC 3261 §12.1.1)."""
        contact = request.contact
        if contact is None or not isinstance(contact.uri, SipUri):
            raise LocalProtocolError("a dialog-creating request needs a SIP Contact")
        # §12.1.1: the route set is the Record-Route list in order.
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=request.from_.tag or "",
            local_uri=_without_tag(request.to),
            remote_uri=_without_tag(request.from_),
            remote_target=contact.uri.copy(),
            local_contact=local_contact,
            route_set=[r.copy() for r in request.record_routes],
            local_cseq=0,
            remote_cseq=request.cseq.number,
            is_uac=False,
            state=state,
            secure=request.sip_uri.scheme == "sips",
        )

    @classmethod
    def uac(cls, request: Request, response: Response) -> Dialog:
        """The UAC side, from a 101-199 with a To tag or a 2xx (RFC 3261 §12.1.2)."""
        contact = response.contact
        remote_tag = response.to.tag
        if remote_tag is None:
            raise LocalProtocolError("a dialog needs the remote tag")
        if contact is None or not isinstance(contact.uri, SipUri):
            raise LocalProtocolError("the response has no SIP Contact")
        local_contact = request.contact
        if local_contact is None:
            raise LocalProtocolError("the request has no Contact")
        # §12.1.2: the route set is the Record-Route list in reverse order.
        return cls(
            call_id=request.call_id,
            local_tag=request.from_.tag or "",
            remote_tag=remote_tag,
            local_uri=_without_tag(request.from_),
            remote_uri=_without_tag(response.to),
            remote_target=contact.uri.copy(),
            local_contact=local_contact,
            route_set=[r.copy() for r in reversed(response.record_routes)],
            local_cseq=request.cseq.number,
            remote_cseq=None,
            is_uac=True,
            state=DialogState.CONFIRMED if response.is_success else DialogState.EARLY,
            secure=request.sip_uri.scheme == "sips",
        )

    # -- requests we send -------------------------------------------------------------------

    def next_cseq(self) -> int:
        self.local_cseq += 1
        if self.local_cseq > MAX_CSEQ:
            raise LocalProtocolError("local CSeq exhausted")
        return self.local_cseq

    def create_request(
        self,
        method: str,
        via: str,
        *,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        cseq: int | None = None,
        max_forwards: int = 70,
    ) -> tuple[Request, SipUri]:
        """An in-dialog request (RFC 3261 §12.2.1.1) and the URI of its next hop.

        `via` is the complete top Via value (with a fresh branch). ACK and CANCEL reuse the
        INVITE's CSeq number, so they pass `cseq`; everything else takes the next one.
        """
        number = cseq if cseq is not None else self.next_cseq()
        out: list[tuple[str, str]] = [("Via", via), ("Max-Forwards", str(max_forwards))]
        next_hop: SipUri
        if not self.route_set:
            uri = self.remote_target.copy()
            next_hop = uri
        elif self.route_set[0].sip_uri.lr:
            # Loose routing: the remote target in the Request-URI, the route set as Route.
            uri = self.remote_target.copy()
            out.extend(("Route", str(r)) for r in self.route_set)
            next_hop = self.route_set[0].sip_uri
        else:
            # Strict routing (RFC 2543 proxies): the first route becomes the Request-URI.
            first = self.route_set[0].sip_uri.copy()
            first.headers = None
            uri = first
            out.extend(("Route", str(r)) for r in self.route_set[1:])
            out.append(("Route", f"<{self.remote_target}>"))
            next_hop = first
        from_, to, contact = self._header_texts()
        out += [
            ("From", from_),
            ("To", to),
            ("Call-ID", self.call_id),
            ("CSeq", f"{number} {method}"),
        ]
        if method not in ("ACK", "CANCEL", "BYE", "PRACK"):
            out.append(("Contact", contact))
        out.extend(headers or ())
        return Request(method, uri, out, body), next_hop

    def _header_texts(self) -> tuple[str, str, str]:
        """From (our tag), To (theirs) and Contact of our requests, written once for every
        request of the dialog until one of their parts is replaced."""
        sources = (self.local_uri, self.local_tag, self.remote_uri, self.remote_tag)
        cached = self._heads
        if cached is not None:
            old = cached[0]
            if (
                old[0] is sources[0]
                and old[1] == sources[1]
                and old[2] is sources[2]
                and old[3] == sources[3]
                and cached[1] is self.local_contact
            ):
                return cached[2]
        local = self.local_uri.copy()
        local.params["tag"] = self.local_tag
        remote = self.remote_uri.copy()
        if self.remote_tag:
            remote.params["tag"] = self.remote_tag
        texts = (str(local), str(remote), str(self.local_contact))
        self._heads = (sources, self.local_contact, texts)
        return texts

    # -- requests we receive ----------------------------------------------------------------

    def check_request(self, request: Request) -> tuple[int, str] | None:
        """RFC 3261 §12.2.2: a (status, reason) to refuse the request with, or None.

        A lower CSeq than the last one is out of order (500). ACK and CANCEL carry the
        INVITE's number and are not checked here.
        """
        if request.method in ("ACK", "CANCEL"):
            return None
        number = request.cseq.number
        if self.remote_cseq is not None and number <= self.remote_cseq:
            return (500, "CSeq out of order")
        return None

    def accept_request(self, request: Request) -> None:
        """Record an accepted in-dialog request: remote CSeq and target refresh (§12.2.2)."""
        if request.method not in ("ACK", "CANCEL"):
            self.remote_cseq = request.cseq.number
        if request.method in TARGET_REFRESH_METHODS:
            contact = request.contact
            if contact is not None and isinstance(contact.uri, SipUri):
                self.remote_target = contact.uri.copy()

    def accept_response(self, request: Request, response: Response) -> None:
        """A response to a request we sent in this dialog: confirm an early dialog on 2xx
        (§13.2.2.4, taking the 2xx's route set) and refresh the target (§12.2.1.2)."""
        if response.is_success and request.method == "INVITE":
            if self.state is DialogState.EARLY and self.is_uac:
                self.route_set = [r.copy() for r in reversed(response.record_routes)]
            self.state = DialogState.CONFIRMED
        if 200 <= response.status < 300 and request.method in TARGET_REFRESH_METHODS:
            contact = response.contact
            if contact is not None and isinstance(contact.uri, SipUri):
                self.remote_target = contact.uri.copy()

    def matches(self, message: Request | Response) -> bool:
        """Whether an incoming request belongs to this dialog (§12.2.2)."""
        if message.call_id != self.call_id:
            return False
        if isinstance(message, Request):
            return message.to.tag == self.local_tag and (message.from_.tag or "") == self.remote_tag
        return message.from_.tag == self.local_tag and (message.to.tag or "") == self.remote_tag

    # -- persistence ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        # The addresses are replaced, never edited in place (see accept_request/_response),
        # so the same objects mean the same text.
        cached = self._texts
        fresh = False
        if cached is not None:
            old = cached[0]
            fresh = (
                old[0] is self.local_uri
                and old[1] is self.remote_uri
                and old[2] is self.remote_target
                and old[3] is self.local_contact
                and old[4] is self.route_set
            )
        if cached is None or not fresh:
            sources = (
                self.local_uri,
                self.remote_uri,
                self.remote_target,
                self.local_contact,
                self.route_set,
            )
            texts = {
                "local_uri": str(self.local_uri),
                "remote_uri": str(self.remote_uri),
                "remote_target": str(self.remote_target),
                "local_contact": str(self.local_contact),
            }
            self._texts = cached = (sources, texts, [str(r) for r in self.route_set])
        return {
            "call_id": self.call_id,
            "local_tag": self.local_tag,
            "remote_tag": self.remote_tag,
            **cached[1],
            "route_set": list(cached[2]),
            "local_cseq": self.local_cseq,
            "remote_cseq": self.remote_cseq,
            "is_uac": self.is_uac,
            "state": self.state._value_,  # (the attribute `.value` reads, without its lookup)
            "secure": self.secure,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Dialog:
        target = parse_uri(data["remote_target"])
        if not isinstance(target, SipUri):
            raise ValueError("remote target is not a SIP URI")
        return cls(
            call_id=data["call_id"],
            local_tag=data["local_tag"],
            remote_tag=data["remote_tag"],
            local_uri=NameAddr.parse(data["local_uri"]),
            remote_uri=NameAddr.parse(data["remote_uri"]),
            remote_target=target,
            local_contact=NameAddr.parse(data["local_contact"]),
            route_set=[NameAddr.parse(r) for r in data["route_set"]],
            local_cseq=int(data["local_cseq"]),
            remote_cseq=None if data["remote_cseq"] is None else int(data["remote_cseq"]),
            is_uac=bool(data["is_uac"]),
            state=DialogState(data["state"]),
            secure=bool(data["secure"]),
        )


def _without_tag(addr: NameAddr) -> NameAddr:
    copy = addr.copy()
    copy.params.pop("tag", None)
    return copy


class DialogTable:
    """Dialogs by id, for matching in-dialog requests (RFC 3261 §12.2.2: 481 when none)."""

    def __init__(self) -> None:
        self._by_id: dict[DialogId, Dialog] = {}

    def add(self, dialog: Dialog) -> None:
        self._by_id[dialog.id] = dialog

    def remove(self, dialog: Dialog) -> None:
        self._by_id.pop(dialog.id, None)

    def find_for_request(self, request: Request) -> Dialog | None:
        local = request.to.tag
        if local is None:
            return None
        return self._by_id.get(DialogId(request.call_id, local, request.from_.tag or ""))

    def find_for_response(self, response: Response) -> Dialog | None:
        local = response.from_.tag
        if local is None:
            return None
        return self._by_id.get(DialogId(response.call_id, local, response.to.tag or ""))

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Dialog]:
        return iter(list(self._by_id.values()))
