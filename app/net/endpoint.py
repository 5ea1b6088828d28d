"""The asyncio driver of the sans-IO transaction layer.

`SipEndpoint` feeds what the transport receives into `TransactionLayer`, transmits what it
returns, runs its timers on the event loop's clock, and hands transaction-user events to a
handler. It makes the random parts the core leaves to its caller (branches, tags, Call-IDs).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from typing import Protocol

from app.sip.address import Address
from app.sip.errors import LocalProtocolError
from app.sip.message import Request, Response
from app.sip.transaction import (
    MAGIC_COOKIE,
    ClientTransaction,
    Output,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    Timers,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimeout,
    Transmit,
)
from app.sip.uri import SipUri

log = logging.getLogger(__name__)


class MessageTransport(Protocol):
    """What the endpoint needs of a transport (UDP+TCP on one port)."""

    def send(self, message: Request | Response, dest: Address) -> None: ...


class TransactionUser(Protocol):
    def on_request(
        self, request: Request, source: Address, txn: ServerTransaction | None
    ) -> None: ...

    def on_response(
        self, response: Response, source: Address, txn: ClientTransaction | None
    ) -> None: ...

    def on_timeout(self, txn: ClientTransaction | ServerTransaction) -> None: ...


DEFAULT_PORTS = {"UDP": 5060, "TCP": 5060, "TLS": 5061}


class _Entropy:
    """`os.urandom` read a block at a time and handed out in slices.

    The same kernel randomness as `secrets.token_hex` (RFC 3261 §19.3 asks for tags and
    Call-IDs that cannot be guessed), one system call per 4 KiB instead of one per
    identifier: a conference join needs about seven (branches, tags, a Call-ID, ids).
    Thread-safe; a forked child starts with a fresh block, never its parent's.
    """

    def __init__(self, block: int = 4096) -> None:
        self._block = block
        self._buf = b""
        self._pos = 0
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._buf = b""
        self._pos = 0
        self._lock = threading.Lock()

    def hex(self, nbytes: int) -> str:
        with self._lock:
            pos = self._pos
            if pos + nbytes > len(self._buf):
                self._buf = os.urandom(max(self._block, nbytes))
                pos = 0
            self._pos = pos + nbytes
            return self._buf[pos : pos + nbytes].hex()


_entropy = _Entropy()


def random_hex(nbytes: int) -> str:
    """`nbytes` random bytes as hex, like `secrets.token_hex(nbytes)`."""
    return _entropy.hex(nbytes)


class SipEndpoint:
    def __init__(
        self,
        transport: MessageTransport,
        local_host: str,
        local_port: int,
        *,
        timers: Timers | None = None,
        auto_trying: bool = True,
        host_map: dict[str, tuple[str, int]] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.transport = transport
        self._local_host = local_host
        self._local_port = local_port
        self._hostport = f"{local_host}:{local_port}"  # every Via we send carries it
        self.layer = TransactionLayer(timers, auto_trying=auto_trying)
        self.user: TransactionUser | None = None
        # Asked about every request before the transaction layer sees it; False drops it
        # there (an INVITE transaction would otherwise answer 100 Trying at once, §17.2.1).
        self.screen: Callable[[Request, Address], bool] | None = None
        # Domains served without DNS: `home1.net` -> (S-CSCF host, port) and so on.
        self.host_map = dict(host_map or {})
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._clock = clock
        # How deep `_run` is nested (a TU's answer goes out while its request is handled):
        # the loop's timer is set again once, when the outermost returns.
        self._depth = 0

    @property
    def local_host(self) -> str:
        return self._local_host

    @local_host.setter
    def local_host(self, host: str) -> None:
        self._local_host = host
        self._hostport = f"{host}:{self._local_port}"

    @property
    def local_port(self) -> int:
        return self._local_port

    @local_port.setter
    def local_port(self, port: int) -> None:
        self._local_port = port
        self._hostport = f"{self._local_host}:{port}"

    # -- ids --------------------------------------------------------------------------------

    @staticmethod
    def new_branch() -> str:
        return f"{MAGIC_COOKIE}-{random_hex(8)}"

    @staticmethod
    def new_tag() -> str:
        return random_hex(6)

    def new_call_id(self) -> str:
        return f"{random_hex(10)}@{self.local_host}"

    def via(self, transport: str = "UDP") -> str:
        # RFC 3581: ask for rport so responses come back to the port we sent from.
        return f"SIP/2.0/{transport} {self._hostport};rport;branch={MAGIC_COOKIE}-{random_hex(8)}"

    # -- time -------------------------------------------------------------------------------

    def now(self) -> float:
        if self._clock is not None:
            return self._clock()
        return self.event_loop().time()

    def event_loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, looked up once: `asyncio.get_running_loop()` makes a getpid()
        system call every time (CPython's check for a fork), some thirty per conference join."""
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def _reschedule(self) -> None:
        deadline = self.layer.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            loop = self.event_loop()
            # Deadlines are on the endpoint's clock, which need not be the loop's.
            self._timer = loop.call_later(max(deadline - self.now(), 0.0), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._run(self.layer.expire(self.now()))

    # -- inputs -----------------------------------------------------------------------------

    def receive(self, message: Request | Response, source: Address) -> None:
        """Called by the transport for every valid message."""
        if isinstance(message, Request) and self.screen is not None:
            try:
                admitted = self.screen(message, source)
            except Exception:
                log.exception("screening %r from %s failed", message, source)
                return
            if not admitted:
                return
        now = self.now()
        try:
            if isinstance(message, Request):
                outputs = self.layer.receive_request(message, source, now)
            else:
                outputs = self.layer.receive_response(message, source, now)
        except Exception:  # a bug must not take the endpoint down
            log.exception("transaction layer failed on %r from %s", message, source)
            return
        self._run(outputs)

    def send_request(
        self, request: Request, dest: Address, *, owner: object | None = None
    ) -> ClientTransaction:
        txn, outputs = self.layer.send_request(request, dest, self.now(), owner=owner)
        self._run(outputs)
        return txn

    def send_response(self, txn: ServerTransaction, response: Response) -> None:
        try:
            outputs = self.layer.send_response(txn, response, self.now())
        except LocalProtocolError as exc:
            log.debug("not sent: %s", exc)
            return
        self._run(outputs)

    def send_stateless(self, message: Request | Response, dest: Address) -> None:
        """ACK for a 2xx, or a stateless response: no transaction (RFC 3261 §13.2.2.4)."""
        self.transport.send(message, dest)

    def send_response_stateless(self, response: Response) -> None:
        """A response sent outside its transaction (the TU's 2xx retransmissions): to where
        the top Via says (RFC 3261 §18.2.2, RFC 3581 §4)."""
        via = response.top_via
        host = via.received or via.host
        if host.startswith("["):
            host = host[1:-1]
        port = via.rport or via.port or DEFAULT_PORTS.get(via.transport, 5060)
        self.transport.send(response, Address(via.transport, host, port))

    def resolve(self, uri: SipUri, transport: str | None = None) -> Address:
        """RFC 3263 without DNS: a numeric host as is, a domain through `host_map`."""
        proto = (transport or uri.transport or "udp").upper()
        host = uri.get_param("maddr") or uri.host
        if host.startswith("["):
            host = host[1:-1]
        mapped = self.host_map.get(host.lower())
        if mapped is not None and uri.port is None:
            return Address(proto, mapped[0], mapped[1])
        if mapped is not None:
            return Address(proto, mapped[0], uri.port or mapped[1])
        return Address(proto, host, uri.port or DEFAULT_PORTS.get(proto, 5060))

    # -- outputs ----------------------------------------------------------------------------

    def _run(self, outputs: list[Output]) -> None:
        user = self.user
        self._depth += 1
        try:
            self._dispatch(outputs, user)
        finally:
            self._depth -= 1
        if not self._depth:
            self._reschedule()

    def _dispatch(self, outputs: list[Output], user: TransactionUser | None) -> None:
        for out in outputs:
            try:
                if isinstance(out, Transmit):
                    self.transport.send(out.message, out.dest)
                elif user is None:
                    continue
                elif isinstance(out, RequestReceived):
                    user.on_request(out.request, out.source, out.transaction)
                elif isinstance(out, ResponseReceived):
                    user.on_response(out.response, out.source, out.transaction)
                elif isinstance(out, TransactionTimeout):
                    user.on_timeout(out.transaction)
                elif isinstance(out, TransactionTerminated):
                    pass
            except Exception:
                log.exception("handling %r failed", out)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
