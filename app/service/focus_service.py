"""Wires the sans-IO focus to the SIP endpoint, the MRFP nodes, the database and the API.

`FocusService` is the transaction user of the SIP endpoint: it passes requests, responses
and timeouts to `app.focus.core.Focus` and carries out the actions it returns. It also
implements `ConferenceControl` for the REST API.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import secrets
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from app.db.session import SessionFactory
from app.focus.actions import (
    Action,
    CancelTimer,
    Changed,
    MediaCommand,
    Respond,
    SendAck,
    SendRequest,
    SetTimer,
)
from app.focus.core import Focus, FocusConfig, FocusError, NoMediaNode
from app.focus.media import MediaEvent, NodeConnectionChanged
from app.mrfp.pool import MrfpPool
from app.mrfp.port import MrfpError, MrfpUnavailable
from app.net.endpoint import SipEndpoint, random_hex
from app.net.gc_freeze import GcFreezer
from app.service.control import (
    ConferenceNotFoundError,
    ConflictError,
    MediaUnavailableError,
    ParticipantNotFoundError,
)
from app.service.events import ChangeEvent, EventBus
from app.service.metrics import Metrics
from app.service.persistence import Stamped, WriteBehind
from app.service.restore import load_conferences, reconcile
from app.service.timer_queue import TimerQueue
from app.sip.address import Address
from app.sip.message import Request, Response, make_response
from app.sip.transaction import ClientTransaction, ServerTransaction

log = logging.getLogger(__name__)

Persist = Callable[[Changed], None]

# How long an operator's action waits for its changes to reach the database (seconds).
PERSIST_WAIT = 10.0
# gc.set_threshold: young collections every 7000 net allocations (default 700), see _tune_gc.
GC_THRESHOLDS = (7000, 10, 10)
# What has lived this long (seconds) is frozen out of the garbage collector's walks, and how
# often everything is walked once, to take back reference cycles among it (see GcFreezer).
GC_FREEZE_INTERVAL = 1.0
GC_FULL_SWEEP_INTERVAL = 3600.0
# Source hosts whose trust is remembered before the memory starts over.
TRUST_CACHE_SIZE = 1024


class RandomIds:
    """Identifiers for the focus: conference ids are URL-safe, 96 bits, never reused."""

    def __init__(self, endpoint: SipEndpoint) -> None:
        self._endpoint = endpoint

    def conference_id(self) -> str:
        return secrets.token_urlsafe(12).replace("_", "x").replace("-", "y").lower()

    def participant_id(self) -> str:
        return random_hex(8)

    def tag(self) -> str:
        return self._endpoint.new_tag()

    def call_id(self) -> str:
        return self._endpoint.new_call_id()

    def via(self, transport: str) -> str:
        return self._endpoint.via(transport)


class FocusService:
    def __init__(
        self,
        config: FocusConfig,
        endpoint: SipEndpoint,
        pool: MrfpPool,
        *,
        bus: EventBus | None = None,
        metrics: Metrics | None = None,
        persist: Persist | None = None,
        trusted: list[ipaddress.IPv4Network | ipaddress.IPv6Network] | None = None,
        untrusted_action: str = "reject",
    ) -> None:
        self.endpoint = endpoint
        self.pool = pool
        self.bus = bus
        self.metrics = metrics
        self.persist = persist
        self.trusted = trusted
        self.untrusted_action = untrusted_action
        self.focus = Focus(config, RandomIds(endpoint), choose_node=self._choose_node)
        self._timers = TimerQueue(endpoint.event_loop, self._fire)
        self._tasks: set[asyncio.Task[None]] = set()
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="db")
        # Changes are written behind, a batch per transaction (see app.service.persistence).
        self._writer: WriteBehind | None = None
        if persist is not None:
            self._writer = WriteBehind(_batch_writer(persist))
        self._invite_started: dict[str, float] = {}
        self._trusted_hosts: dict[str, bool] = {}
        self._trusted_for: object = None  # the `trusted` list the cache was made for
        # Metric children by label values: `.labels()` per message costs more than `.inc()`.
        self._request_counters: dict[tuple[str, str], Any] = {}
        self._response_counters: dict[tuple[str, int, str], Any] = {}
        self._gc_timer: GcPauseTimer | None = None
        self._freezer: GcFreezer | None = None
        self._handlers: dict[type, Callable[[Any], None]] = {
            Respond: self._do_respond,
            SendRequest: self._do_send_request,
            SendAck: self._do_send_ack,
            SetTimer: self._do_set_timer,
            CancelTimer: self._do_cancel_timer,
            MediaCommand: self._do_media,
            Changed: self._changed,
        }
        endpoint.user = self
        # Untrusted requests are refused before any transaction exists: "drop" stays silent
        # (no 100 Trying) and a flood of them leaves no transaction state behind.
        endpoint.screen = self._screen

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        _tune_gc()
        if self.metrics is not None:
            self._gc_timer = GcPauseTimer(self.metrics)
            gc.callbacks.append(self._gc_timer)
        self._freezer = GcFreezer(GC_FREEZE_INTERVAL, GC_FULL_SWEEP_INTERVAL)
        self._freezer.start(self.endpoint.event_loop())
        await self.pool.start(self._on_media_event)

    async def stop(self) -> None:
        if self._gc_timer is not None and self._gc_timer in gc.callbacks:
            gc.callbacks.remove(self._gc_timer)
        if self._freezer is not None:
            self._freezer.stop()
        self._timers.clear()
        await self.pool.stop()
        for task in list(self._tasks):
            task.cancel()
        if self._writer is not None:
            self._writer.close()  # nothing lost: what is pending is written first
        self._db.shutdown(wait=True)

    def flush_changes(self, timeout: float | None = None) -> bool:
        """Block until every change so far is in the database (tests, orderly shutdown)."""
        return self._writer is None or self._writer.flush(timeout)

    async def restore(self, session_factory: SessionFactory) -> int:
        """Take back the active conferences of the database (after a restart), then
        reconcile them with their nodes. Returns how many were restored."""
        loop = asyncio.get_running_loop()
        now = self._now()
        conferences = await loop.run_in_executor(self._db, load_conferences, session_factory, now)
        for conf in conferences:
            if conf.node:
                self.pool.bind(conf.id, conf.node)
            self._run(self.focus.restore(conf, now))
            if self.metrics is not None and conf.active:
                self.metrics.conferences_active.inc()
                self.metrics.participants_active.inc(len(conf.present()))
            log.info(
                "restored conference %s with %d participants and %d subscriptions",
                conf.id,
                len(conf.present()),
                len(conf.subscriptions),
            )
        live = [c for c in conferences if c.active]
        if live:
            self._spawn(reconcile(self, live))
        return len(live)

    def on_restored_member_gone(self, event: MediaEvent) -> None:
        self._run(self.focus.on_media_event(event, self._now(), self._wall()))

    def _choose_node(self, conference_id: str) -> str:
        try:
            return self.pool.place(conference_id).name
        except MrfpUnavailable as exc:
            raise NoMediaNode(str(exc) or "no media processor available") from exc

    # -- time -------------------------------------------------------------------------------

    def _now(self) -> float:
        return self.endpoint.event_loop().time()

    @staticmethod
    def _wall() -> datetime:
        return datetime.now(UTC)

    # -- TransactionUser --------------------------------------------------------------------

    def _is_trusted(self, source: Address) -> bool:
        trusted = self.trusted
        if trusted is None:
            return True
        # The peers are a handful of CSCFs and MRFP nodes: remember the answer per host
        # rather than parse the address for every message.
        host = source.host
        known = self._trusted_hosts.get(host)
        if known is None or self._trusted_for is not trusted:
            if self._trusted_for is not trusted or len(self._trusted_hosts) >= TRUST_CACHE_SIZE:
                self._trusted_hosts.clear()  # a flood of sources must not grow it
                self._trusted_for = trusted
            try:
                addr = ipaddress.ip_address(host)
            except ValueError:
                known = False
            else:
                known = any(addr in net for net in trusted)
            self._trusted_hosts[host] = known
        return known

    def on_request(self, request: Request, source: Address, txn: ServerTransaction | None) -> None:
        if self.metrics is not None:
            self._count_request(request.method, "in")
        now, wall = self._now(), self._wall()
        if request.method == "CANCEL" and txn is not None:
            invite_txn = self.endpoint.layer.find_invite_for_cancel(request)
            self._run(self.focus.on_cancel(request, txn, invite_txn, now, wall))
            return
        if request.method == "INVITE" and request.to.tag is None and self.metrics is not None:
            self._invite_started[request.call_id] = now
        self._run(self.focus.on_request(request, txn, now, wall))

    def _screen(self, request: Request, source: Address) -> bool:
        if self._is_trusted(source):
            return True
        self._refuse_untrusted(request, source)
        return False

    def _refuse_untrusted(self, request: Request, source: Address) -> None:
        # Only the S-CSCFs and the MRFP nodes may talk to the focus.
        action = self.untrusted_action
        if self.metrics is not None:
            self.metrics.sip_untrusted.labels(action).inc()
        log.warning("untrusted %s from %s: %s", request.method, source, action)
        if action != "reject" or request.method == "ACK":
            return  # RFC 3261 §17.1.1.3: an ACK is never answered
        refusal = make_response(request, 403, "Untrusted source", to_tag=self.endpoint.new_tag())
        # Stateless: a retransmission is simply refused again.
        self.endpoint.send_response_stateless(refusal)

    def on_response(
        self, response: Response, source: Address, txn: ClientTransaction | None
    ) -> None:
        if self.metrics is not None:
            self._count_status(response.cseq.method, response.status, "in")
        now, wall = self._now(), self._wall()
        if txn is None:
            self._run(self.focus.on_stray_2xx(response, now))
            return
        self._run(self.focus.on_response(response, txn.owner, now, wall))

    def on_timeout(self, txn: ClientTransaction | ServerTransaction) -> None:
        if isinstance(txn, ClientTransaction):
            self._run(self.focus.on_timeout(txn.owner, self._now(), self._wall()))

    def _on_media_event(self, event: MediaEvent) -> None:
        if isinstance(event, NodeConnectionChanged):
            if self.metrics is not None:
                self.metrics.esl_connected.labels(event.node).set(1 if event.connected else 0)
            log.info("MRFP node %s %s", event.node, "up" if event.connected else "down")
        self._run(self.focus.on_media_event(event, self._now(), self._wall()))

    # -- actions ----------------------------------------------------------------------------

    def _run(self, actions: list[Action]) -> None:
        # One dict lookup by the action's type instead of a chain of isinstance tests: some
        # twenty actions per join and leave.
        handlers = self._handlers
        for action in actions:
            try:
                handlers[type(action)](action)
            except Exception:
                log.exception("action %r failed", action)

    def _execute(self, action: Action) -> None:
        self._handlers[type(action)](action)

    def _do_respond(self, action: Respond) -> None:
        txn = action.txn
        if isinstance(txn, ServerTransaction):
            if self.metrics is not None:
                # The request's method is the response's CSeq method (RFC 3261 §8.2.6.2),
                # without parsing the CSeq of a response we built.
                self._count_response(action.response, txn.request.method, txn.request)
            self.endpoint.send_response(txn, action.response)
        else:
            # A 2xx retransmission by the TU (RFC 3261 §13.3.1.4) after its transaction
            # moved on: straight to where the request came from.
            if self.metrics is not None:
                self._count_response(action.response, action.response.cseq.method, None)
            self.endpoint.send_response_stateless(action.response)

    def _do_send_request(self, action: SendRequest) -> None:
        if self.metrics is not None:
            self._count_request(action.request.method, "out")
        endpoint = self.endpoint
        endpoint.send_request(
            action.request, endpoint.resolve(action.next_hop), owner=action.context
        )

    def _do_send_ack(self, action: SendAck) -> None:
        self.endpoint.send_stateless(action.request, self.endpoint.resolve(action.next_hop))

    def _do_set_timer(self, action: SetTimer) -> None:
        self._timers.set(action.key, action.at)

    def _do_cancel_timer(self, action: CancelTimer) -> None:
        self._timers.cancel(action.key)

    def _do_media(self, action: MediaCommand) -> None:
        self._spawn(self._media(action))

    def _count_response(self, response: Response, method: str, request: Request | None) -> None:
        if self.metrics is not None:
            self._count_status(method, response.status, "out")
            if response.status >= 200 and method == "INVITE":
                # Every final answer ends the wait (refusals too, or they would pile up).
                call_id = (request or response).call_id  # the request's is parsed already
                started = self._invite_started.pop(call_id, None)
                if started is not None and response.status < 300:
                    self.metrics.join_latency.observe(self._now() - started)

    def _count_request(self, method: str, direction: str) -> None:
        key = (method, direction)
        counter = self._request_counters.get(key)
        if counter is None:
            assert self.metrics is not None
            counter = self._request_counters[key] = self.metrics.sip_requests.labels(*key)
        counter.inc()

    def _count_status(self, method: str, status: int, direction: str) -> None:
        key = (method, status, direction)
        counter = self._response_counters.get(key)
        if counter is None:
            assert self.metrics is not None
            counter = self._response_counters[key] = self.metrics.sip_responses.labels(
                key[0], str(key[1]), direction
            )
        counter.inc()

    def _fire(self, key: Hashable) -> None:
        assert isinstance(key, tuple)
        self._run(self.focus.on_timer(key, self._now(), self._wall()))

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = self.endpoint.event_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _media(self, command: MediaCommand) -> None:
        node = next((n for n in self.pool.nodes if n.name == command.node), None)
        if node is None:
            log.error("no MRFP node %s for %s", command.node, command.verb)
            return
        try:
            if command.member_id is not None:
                await getattr(node, command.verb)(command.conference, command.member_id)
            else:
                await getattr(node, command.verb)(command.conference)
        except MrfpError as exc:
            log.warning(
                "MRFP %s %s on %s failed: %s",
                command.verb,
                command.member_id,
                command.conference,
                exc,
            )

    def _changed(self, change: Changed) -> None:
        if self.metrics is not None:
            self._update_metrics(change)
        if self.bus is not None and self.bus.subscriber_count:
            # Nobody listening (no SSE client): nothing to build.
            self.bus.publish(
                ChangeEvent(
                    change.kind, change.conference_id, change.participant_id, _jsonable(change.data)
                )
            )
        if self._writer is not None:
            self._writer.put(change, datetime.now(UTC))
        if change.kind == "conference.ended":
            self.pool.release(change.conference_id)

    def _update_metrics(self, change: Changed) -> None:
        m = self.metrics
        assert m is not None
        if change.kind == "conference.created":
            m.conferences_active.inc()
        elif change.kind == "conference.ended":
            m.conferences_active.dec()
        elif change.kind == "participant.joined":
            m.joins.inc()
            m.participants_active.inc()
        elif change.kind == "participant.left":
            method = change.data.get("disconnection_method") or "departed"
            m.leaves.labels(method).inc()
            if change.data.get("joined_at") is not None:
                m.participants_active.dec()

    # -- ConferenceControl ------------------------------------------------------------------

    async def _control(self, call: Callable[[], list[Action]]) -> None:
        try:
            actions = call()
        except FocusError as exc:
            raise _control_error(exc) from exc
        self._run(actions)
        await self._persisted()

    async def _persisted(self) -> None:
        """Return once the changes so far are in the database: an operator's action is
        acknowledged only when a read after it (REST reads the database) shows it."""
        if self._writer is not None:
            await asyncio.to_thread(self._writer.flush, PERSIST_WAIT)

    async def end_conference(self, conference_id: str, actor: str) -> None:
        await self._control(lambda: self.focus.end(conference_id, self._now(), actor))

    async def kick(self, conference_id: str, participant_id: str, actor: str) -> None:
        await self._control(
            lambda: self.focus.kick(conference_id, participant_id, self._now(), actor)
        )

    async def set_muted(
        self, conference_id: str, participant_id: str, muted: bool, actor: str
    ) -> None:
        await self._control(
            lambda: self.focus.set_muted(conference_id, participant_id, muted, self._now(), actor)
        )

    async def set_locked(self, conference_id: str, locked: bool, actor: str) -> None:
        await self._control(
            lambda: self.focus.set_locked(conference_id, locked, self._now(), actor)
        )

    async def dial_out(self, conference_id: str, uri: str, actor: str) -> str:
        try:
            pid, actions = self.focus.dial_out(conference_id, uri, self._now(), actor)
        except FocusError as exc:
            raise _control_error(exc) from exc
        self._run(actions)
        await self._persisted()
        return pid

    async def health(self) -> dict[str, bool]:
        nodes = self.pool.nodes
        return {"sip": True, "esl": bool(nodes) and any(n.connected for n in nodes)}


class GcPauseTimer:
    """A `gc.callbacks` hook timing each collection into `mrfc_gc_pause_seconds`: a pause
    holds every thread of the process, the SIP path included."""

    def __init__(self, metrics: Metrics) -> None:
        self._children = [metrics.gc_pause.labels(str(g)) for g in range(3)]
        self._collected = [metrics.gc_collected.labels(str(g)) for g in range(3)]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            generation = info["generation"]
            self._children[generation].observe(time.perf_counter() - self._started)
            if info["collected"]:
                self._collected[generation].inc(info["collected"])


def _tune_gc() -> None:
    """Keep the cyclic garbage collector's cost per join small (with GcFreezer, which freezes
    what start-up built and, from then on, whatever lives longer than a second).

    A join makes a few thousand short-lived objects (parsed messages, SDP, snapshots). With
    the default first threshold (700) many were still alive at a young collection and got
    promoted. A larger first threshold lets them die young. Measured at 100 joins/s over
    20 s: time in the collector 1.22 s -> 0.32 s (0.6 -> 0.16 ms per join).
    """
    gc.set_threshold(*GC_THRESHOLDS)


def _control_error(exc: FocusError) -> Exception:
    if exc.code == "conference_not_found":
        return ConferenceNotFoundError(str(exc))
    if exc.code == "participant_not_found":
        return ParticipantNotFoundError(str(exc))
    if exc.code in ("media_unavailable",):
        return MediaUnavailableError(str(exc))
    return ConflictError(str(exc))


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, datetime):
            out[key] = value.isoformat()
        elif key in ("dialog", "mrfp_dialog"):
            continue  # internal SIP state stays out of the public stream
        else:
            out[key] = value
    return out


def _batch_writer(persist: Persist) -> Callable[[list[Stamped]], None]:
    """A batch writer for `persist`: its own `write_batch` when it has one (one transaction
    per batch), else `persist` called once per change."""
    write_batch: Callable[[list[Stamped]], None] | None = getattr(persist, "write_batch", None)
    if write_batch is not None:
        return write_batch

    def one_by_one(batch: list[Stamped]) -> None:
        for change, _at in batch:
            try:
                persist(change)
            except Exception as exc:  # one failed change must not repeat the others
                log.error("persisting %s failed: %s", change.kind, exc, exc_info=exc)

    return one_by_one
