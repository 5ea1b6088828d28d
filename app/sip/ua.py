"""Building blocks a user agent needs beside transactions and dialogs, sans-IO.

- `Retransmitter`: the retransmissions that belong to the TU, not to a transaction:
  a 2xx to an INVITE until its ACK (RFC 3261 §13.3.1.4: T1 doubling up to T2, given up after
  64*T1) and a reliable provisional until its PRACK (RFC 3262 §3: T1 doubling without a cap,
  given up after 64*T1). Like the transaction layer it keeps deadlines: the driver calls
  `expire(now)` at `next_deadline()` and sends what comes out.
- `ReliableProvisionals`: RSeq numbering and RAck matching for one INVITE (RFC 3262 §3, §7).
- `unsupported_extensions`: what a request's Require names that the UAS does not support
  (RFC 3261 §8.2.2.3: answer 420 with those in Unsupported).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from app.sip.errors import LocalProtocolError
from app.sip.headers import MAX_CSEQ, RAck
from app.sip.message import Request, Response
from app.sip.transaction import Timers


@dataclass(frozen=True, slots=True)
class Resend:
    """Time to send `message` again."""

    key: Hashable
    message: Request | Response


@dataclass(frozen=True, slots=True)
class GiveUp:
    """64*T1 passed without the ACK (the TU ends the session with BYE, §13.3.1.4) or without
    the PRACK (the TU answers the INVITE with a 5xx, RFC 3262 §3)."""

    key: Hashable
    message: Request | Response


RetransmitEvent = Resend | GiveUp


@dataclass(eq=False, slots=True)
class _Entry:
    key: Hashable
    message: Request | Response
    interval: float
    cap: float | None
    next_at: float
    give_up_at: float


class Retransmitter:
    """TU-level retransmissions keyed by anything hashable (a dialog id, a Call-ID ...).

    Starting a key that is already running replaces it (e.g. a re-INVITE's 2xx after the
    first one's ACK). Not thread-safe; one event loop drives it.
    """

    def __init__(self, timers: Timers | None = None) -> None:
        self.timers = timers or Timers()
        self._entries: dict[Hashable, _Entry] = {}
        self._heap: list[tuple[float, int, _Entry]] = []
        self._seq = itertools.count()

    def start(
        self, key: Hashable, message: Request | Response, now: float, *, cap: float | None
    ) -> None:
        """Retransmit `message` at now+T1, then doubling (up to `cap` if given), until
        `stop(key)` or 64*T1 from now. The first transmission is the caller's."""
        entry = _Entry(key, message, self.timers.t1, cap, now + self.timers.t1, now + self.timers.b)
        self._entries[key] = entry
        heapq.heappush(self._heap, (entry.next_at, next(self._seq), entry))

    def start_2xx(self, key: Hashable, response: Response, now: float) -> None:
        # RFC 3261 §13.3.1.4: "an interval that starts at T1 seconds and doubles for each
        # retransmission until it reaches T2 seconds".
        self.start(key, response, now, cap=self.timers.t2)

    def start_reliable_provisional(self, key: Hashable, response: Response, now: float) -> None:
        # RFC 3262 §3: T1, doubling for each retransmission; no T2 cap is named.
        self.start(key, response, now, cap=None)

    def stop(self, key: Hashable) -> Request | Response | None:
        """Stop (the ACK or PRACK came); the message that was being retransmitted, if any."""
        entry = self._entries.pop(key, None)
        return entry.message if entry is not None else None

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def _live(self, entry: _Entry) -> bool:
        return self._entries.get(entry.key) is entry

    def next_deadline(self) -> float | None:
        while self._heap and not self._live(self._heap[0][2]):
            heapq.heappop(self._heap)
        if not self._heap:
            return None
        entry = self._heap[0][2]
        return min(entry.next_at, entry.give_up_at)

    def expire(self, now: float) -> list[RetransmitEvent]:
        out: list[RetransmitEvent] = []
        while self._heap and self._heap[0][0] <= now:
            _, _, entry = heapq.heappop(self._heap)
            if not self._live(entry):
                continue
            if entry.next_at >= entry.give_up_at:
                del self._entries[entry.key]
                out.append(GiveUp(entry.key, entry.message))
                continue
            out.append(Resend(entry.key, entry.message))
            entry.interval *= 2
            if entry.cap is not None:
                entry.interval = min(entry.interval, entry.cap)
            entry.next_at = min(entry.next_at + entry.interval, entry.give_up_at)
            heapq.heappush(self._heap, (entry.next_at, next(self._seq), entry))
        return out


class ReliableProvisionals:
    """RSeq state of one INVITE server transaction (RFC 3262 §3).

    `first_rseq` comes from the caller (the sans-IO core has no randomness source); RFC 3262
    §3 asks for a value chosen uniformly between 1 and 2**31 - 1.
    """

    def __init__(self, invite_cseq: int, first_rseq: int) -> None:
        if not 1 <= first_rseq <= MAX_CSEQ:
            raise LocalProtocolError("RSeq must be between 1 and 2**31-1")
        self.invite_cseq = invite_cseq
        self._next = first_rseq
        # The RSeq of the reliable provisional still waiting for its PRACK, if any.
        self.pending: int | None = None
        self.last_acknowledged: int | None = None

    def next_rseq(self) -> int:
        """The RSeq for a new reliable provisional response. §3: the UAS MUST NOT send a
        second one before the first is acknowledged."""
        if self.pending is not None:
            raise LocalProtocolError("a reliable provisional response is still unacknowledged")
        rseq = self._next
        self._next = rseq + 1  # §3: each subsequent one is one higher
        self.pending = rseq
        return rseq

    def matches(self, rack: RAck) -> bool:
        """§7.2: RAck names the RSeq, and the CSeq number and method of the INVITE."""
        return (
            self.pending is not None
            and rack.rseq == self.pending
            and rack.cseq == self.invite_cseq
            and rack.method == "INVITE"
        )

    def acknowledge(self, rack: RAck | None) -> bool:
        """A PRACK came: True if it acknowledges the pending provisional (answer it 2xx and
        stop retransmitting); False means §3's 481 for a PRACK that matches none."""
        if rack is None or not self.matches(rack):
            return False
        self.last_acknowledged = self.pending
        self.pending = None
        return True


def unsupported_extensions(request: Request, supported: Iterable[str]) -> list[str]:
    """Option tags in Require (RFC 3261 §8.2.2.3) that are not in `supported`, sorted; a
    non-empty list means 420 Bad Extension with an Unsupported header listing them. CANCEL
    and ACK are never refused this way (§8.2.2.3)."""
    if request.method in ("ACK", "CANCEL"):
        return []
    ours = {tag.lower() for tag in supported}
    return sorted(tag for tag in request.require if tag not in ours)


__all__ = [
    "GiveUp",
    "ReliableProvisionals",
    "Resend",
    "RetransmitEvent",
    "Retransmitter",
    "unsupported_extensions",
]
