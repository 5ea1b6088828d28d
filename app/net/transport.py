"""SIP over UDP and TCP on one host and port, on asyncio (RFC 3261 §18).

`SipTransport` moves bytes and nothing else: parsing and validation come from
`app.sip.message`, every routing decision (where a response goes, what goes into the top Via
of a received request) from `app.sip.routing`. What it adds is the I/O:

- a UDP endpoint and a TCP server bound to the same host and port;
- one `StreamFramer` per TCP connection, connections known by an integer id that travels in
  `Address.connection`, so a response goes back on the connection its request came on
  (§18.2.2) and a request to a host:port reuses an open connection (§18.1.1);
- idle TCP connections closed after `tcp_idle_timeout` seconds;
- malformed input never reaches the caller: a request gets a stateless 400 (505, 513 ...)
  whose reason phrase names the fault, sent where §18.2.2 says, unless not even a Via can be
  read (then it is dropped); a malformed response is dropped (§18.1.2); a framing error on a
  stream closes the connection (RFC 4475 §3.1.2.3);
- counters in `stats` and a log line for everything dropped;
- under load, the datagrams waiting in the UDP socket are taken in one turn of the event loop
  (up to `_UDP_DRAIN_MAX` after the one that woke it), not one per turn: each turn costs an
  `epoll_wait` and the loop's bookkeeping. At 600 conference joins/s that was 7-10% of the
  MRFC-AS's CPU per join and leave.

Nothing raises out of a receive path: an exception in the parser or in `on_message` is
logged and counted, and the transport keeps running.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import secrets
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from app.sip.address import Address
from app.sip.errors import ParseError
from app.sip.message import (
    MAX_HEADERS,
    MAX_MESSAGE_SIZE,
    Request,
    Response,
    StreamFramer,
    error_response,
    lenient_top_via,
    parse_datagram,
    validate_request,
    validate_response,
)
from app.sip.routing import received_via, response_destination, stamp_received

log = logging.getLogger(__name__)

Message = Request | Response
MessageHandler = Callable[[Message, Address], None]
Resolver = Callable[[str], Awaitable[str]]

_SOURCES_MAX = 1024
# Datagrams read after the one asyncio hands over, in the same turn: enough to empty the queue
# a burst leaves, few enough (a few ms of work) that timers and TCP still get their turn.
_UDP_DRAIN_MAX = 32
# No UDP payload is larger (IPv4 65,507; IPv6 65,527 without jumbograms), so nothing is cut;
# a message over the configured maximum is still refused by the parser.
_UDP_READ_SIZE = 65536
# Binds tried when port 0 asks for any port and the port UDP got is taken for TCP.
_ANY_PORT_TRIES = 20


@dataclass(eq=False)
class _Connection:
    """One TCP connection, accepted or opened."""

    id: int
    peer: tuple[str, int]
    writer: asyncio.WriteTransport
    framer: StreamFramer
    last_activity: float
    idle_timer: asyncio.TimerHandle | None = None
    closed: bool = False
    keys: list[tuple[str, int]] = field(default_factory=list)


class SipTransport:
    """UDP and TCP on `host`:`port` (port 0: any free port, the same for both).

    `on_message(message, source)` receives every message that parsed and validated; a request
    already carries `received`/`rport` in its top Via (RFC 3261 §18.2.1, RFC 3581 §4). It may
    be set after construction. `send(message, dest)` never blocks and never raises.
    """

    def __init__(
        self,
        host: str,
        port: int,
        on_message: MessageHandler | None = None,
        *,
        udp: bool = True,
        tcp: bool = True,
        max_message_size: int = MAX_MESSAGE_SIZE,
        max_headers: int = MAX_HEADERS,
        tcp_idle_timeout: float = 300.0,
        connect_timeout: float = 5.0,
        max_write_buffer: int = 1 << 20,
        udp_receive_buffer: int = 4 << 20,
        resolver: Resolver | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.on_message = on_message
        self.stats: Counter[str] = Counter()
        self._udp_enabled = udp
        self._tcp_enabled = tcp
        self._max_size = max_message_size
        self._max_headers = max_headers
        self._idle_timeout = tcp_idle_timeout
        self._connect_timeout = connect_timeout
        self._max_write_buffer = max_write_buffer
        self._udp_receive_buffer = udp_receive_buffer
        self._resolver = resolver
        self._loop: asyncio.AbstractEventLoop | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self._connections: dict[int, _Connection] = {}
        # (peer host, peer port) -> connection, for reuse by requests (§18.1.1).
        self._by_peer: dict[tuple[str, int], _Connection] = {}
        self._connecting: dict[tuple[str, int], asyncio.Task[_Connection | None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_id = 1
        # Source addresses of datagrams -> their Address (see _datagram).
        self._sources: dict[tuple[Any, ...], Address] = {}

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        # Port 0 asks for any port: UDP gets one from the kernel and TCP takes the same
        # number, which a TCP socket may already hold. Then both try again with another.
        any_port = self.port == 0 and self._udp_enabled and self._tcp_enabled
        tries = _ANY_PORT_TRIES if any_port else 1
        for attempt in range(1, tries + 1):
            try:
                await self._listen(loop)
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or attempt == tries:
                    raise
                log.debug("TCP port %d taken; another port for UDP and TCP", self.port)
                self.port = 0
        log.info(
            "SIP transport listening on %s:%d (udp=%s tcp=%s)",
            self.host,
            self.port,
            self._udp_enabled,
            self._tcp_enabled,
        )

    async def _listen(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._udp_enabled:
            sock = await self._bind_udp(loop)
            udp, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self, sock), sock=sock
            )
            self._udp = udp
            self._grow_receive_buffer(udp)
            # Port 0 asked for any port: TCP takes the one UDP got.
            self.port = int(udp.get_extra_info("sockname")[1])
        if self._tcp_enabled:
            try:
                self._server = await loop.create_server(
                    lambda: _TcpProtocol(self, None), self.host, self.port, reuse_address=True
                )
            except OSError:
                if self._udp is not None:
                    self._udp.close()
                    self._udp = None
                raise
            if not self._udp_enabled:
                self.port = int(self._server.sockets[0].getsockname()[1])

    async def _bind_udp(self, loop: asyncio.AbstractEventLoop) -> socket.socket:
        """The UDP socket, made here (as create_datagram_endpoint would from local_addr) so
        that the protocol can read it directly (see _UdpProtocol)."""
        infos = await loop.getaddrinfo(
            self.host, self.port, type=socket.SOCK_DGRAM, proto=socket.IPPROTO_UDP
        )
        error: OSError | None = None
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                sock.bind(address)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            return sock
        raise error or OSError(f"no address to bind UDP {self.host}:{self.port}")

    def _grow_receive_buffer(self, udp: asyncio.DatagramTransport) -> None:
        """A burst of datagrams (retransmissions, a conference's worth of NOTIFY answers)
        must not overflow the kernel's default receive buffer while the loop is busy.
        SO_RCVBUFFORCE passes net.core.rmem_max when allowed (CAP_NET_ADMIN); otherwise
        SO_RCVBUF gets what the kernel grants."""
        sock = udp.get_extra_info("socket")
        if sock is None or not self._udp_receive_buffer:
            return
        for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
            if option is None:
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, self._udp_receive_buffer)
                break
            except OSError:
                continue
        log.debug(
            "UDP receive buffer: %d bytes", sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        )

    async def stop(self) -> None:
        for task in list(self._connecting.values()):
            task.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks or self._connecting:
            await asyncio.gather(*self._tasks, *self._connecting.values(), return_exceptions=True)
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections.values()):
            self._close(conn, "transport stopped")
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        if self._udp is not None:
            self._udp.close()
            self._udp = None

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    # -- sending ----------------------------------------------------------------------------

    def send(self, message: Message, dest: Address) -> None:
        """Send `message` to `dest`. UDP goes out at once; TCP uses `dest.connection` if it is
        still open, else an open connection to `dest.host`:`dest.port`, else a new one. A DNS
        name in `dest.host` is resolved first. Failures are logged and counted, not raised."""
        try:
            data = bytes(message)
        except Exception:
            self._count("send_errors")
            log.exception("cannot serialize %r", message)
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug("sending %r to %s", message, dest)
        if dest.transport == "UDP" and _is_ip(dest.host):
            self._send_udp(data, dest.host, dest.port)
            return
        if dest.reliable:
            conn = self._connections.get(dest.connection) if dest.connection else None
            if conn is None:
                conn = self._by_peer.get((dest.host, dest.port))
            if conn is not None and not conn.closed:
                self._write(conn, data)
                return
        self._spawn(self._send_later(data, dest))

    def _send_udp(self, data: bytes, host: str, port: int) -> None:
        if self._udp is None:
            self._count("send_errors")
            log.warning("no UDP socket to send to %s:%d", host, port)
            return
        try:
            self._udp.sendto(data, (host, port))
            self.stats["sent"] += 1
        except (OSError, ValueError, TypeError) as exc:  # e.g. an IPv6 peer on an IPv4 socket
            self._count("send_errors")
            log.warning("UDP send to %s:%d failed: %s", host, port, exc)

    async def _send_later(self, data: bytes, dest: Address) -> None:
        host = dest.host
        if not _is_ip(host):
            try:
                host = await self._resolve(host)
            except OSError as exc:
                self._count("send_errors")
                log.warning("cannot resolve %s: %s", dest.host, exc)
                return
        if dest.transport == "UDP":
            self._send_udp(data, host, dest.port)
            return
        if dest.transport != "TCP":
            self._count("send_errors")
            log.warning("transport %s not supported (to %s)", dest.transport, dest)
            return
        conn = await self._connection_to(host, dest.port)
        if conn is None:
            self._count("send_errors")
            return
        self._write(conn, data)

    async def _resolve(self, name: str) -> str:
        if self._resolver is not None:
            return await self._resolver(name)
        assert self._loop is not None
        # RFC 3263 §4.2 without NAPTR/SRV: the A/AAAA records of the name.
        infos = await self._loop.getaddrinfo(name, None, type=socket.SOCK_DGRAM)
        if not infos:
            raise OSError(f"no address for {name}")
        return str(infos[0][4][0])

    async def _connection_to(self, host: str, port: int) -> _Connection | None:
        key = (host, port)
        conn = self._by_peer.get(key)
        if conn is not None and not conn.closed:
            return conn
        task = self._connecting.get(key)
        if task is None:
            task = asyncio.ensure_future(self._connect(host, port))
            self._connecting[key] = task
            task.add_done_callback(lambda _t: self._connecting.pop(key, None))
        return await asyncio.shield(task)

    async def _connect(self, host: str, port: int) -> _Connection | None:
        assert self._loop is not None
        try:
            _, protocol = await asyncio.wait_for(
                self._loop.create_connection(lambda: _TcpProtocol(self, (host, port)), host, port),
                self._connect_timeout,
            )
        except (TimeoutError, OSError) as exc:
            log.warning("TCP connect to %s:%d failed: %s", host, port, exc)
            return None
        self._count("tcp_connected")
        return protocol.conn

    def _write(self, conn: _Connection, data: bytes) -> None:
        if conn.writer.get_write_buffer_size() > self._max_write_buffer:
            # A peer that stops reading must not make us buffer without bound.
            self._count("tcp_overflow")
            log.warning("connection %d to %s:%d is not reading; closing it", conn.id, *conn.peer)
            self._close(conn, "write buffer full")
            return
        try:
            conn.writer.write(data)
        except Exception as exc:  # a transport closed under us
            self._count("send_errors")
            log.warning("TCP send on connection %d failed: %s", conn.id, exc)
            self._close(conn, "send failed")
            return
        self._count("sent")
        self._touch(conn)

    # -- receiving --------------------------------------------------------------------------

    def _datagram(self, data: bytes, addr: tuple[Any, ...]) -> None:
        # The same few peers (CSCFs, media processors, UEs) send datagram after datagram:
        # their Address (immutable) is made once, not for every datagram.
        source = self._sources.get(addr)
        if source is None:
            source = Address("UDP", str(addr[0]), int(addr[1]))
            if len(self._sources) >= _SOURCES_MAX:
                self._sources.clear()  # bounded; the busy peers come back at once
            self._sources[addr] = source
        self.stats["received_datagrams"] += 1
        if len(data) <= 4 and not data.strip(b"\r\n"):
            return  # keep-alive: CRLF or CRLFCRLF (RFC 5626 §4.4.1)
        try:
            message = parse_datagram(data, self._max_size, self._max_headers)
        except ParseError as exc:
            self._refuse(data, exc, source)
            return
        except Exception:
            self._count("internal_errors")
            log.exception("parser failed on a datagram from %s", source)
            return
        self._accept(message, data, source)

    def _stream_data(self, conn: _Connection, data: bytes) -> None:
        self._touch(conn)
        source = Address("TCP", conn.peer[0], conn.peer[1], conn.id)
        framer = conn.framer
        try:
            for message in framer.feed(data):
                self._accept(message, None, source)
                if conn.closed:
                    return
        except ParseError as exc:
            # RFC 4475 §3.1.2.3, §3.3.9: a framing error on a stream is unrecoverable; answer
            # what can be answered, then close.
            self._refuse(framer.buffered(), exc, source)
            self._close(conn, f"framing error: {exc.reason}")
        except Exception:
            self._count("internal_errors")
            log.exception("parser failed on connection %d from %s", conn.id, source)
            self._close(conn, "internal error")

    def _accept(self, message: Message, data: bytes | None, source: Address) -> None:
        try:
            if isinstance(message, Request):
                validate_request(message)
                stamp_received(message, source)
                counter = "received_requests"
            else:
                validate_response(message)
                counter = "received_responses"
        except ParseError as exc:
            self._refuse(data if data is not None else bytes(message), exc, source)
            return
        except Exception:
            self._count("internal_errors")
            log.exception("validation failed on %r from %s", message, source)
            return
        self.stats[counter] += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("received %r from %s", message, source)
        handler = self.on_message
        if handler is None:
            self._count("dropped_no_handler")
            return
        try:
            handler(message, source)
        except Exception:
            self._count("handler_errors")
            log.exception("on_message failed for %r from %s", message, source)

    def _refuse(self, data: bytes, exc: ParseError, source: Address) -> None:
        """A malformed message: a request gets a stateless error response (RFC 3261 §8.2.6,
        §18.2.2); a response, or a request without a readable Via, is dropped (§18.1.2)."""
        self._count("malformed")
        try:
            response = error_response(data, exc, to_tag=secrets.token_hex(6))
        except Exception:
            response = None
            log.exception("cannot build an error response for a message from %s", source)
        if response is None:
            self._count("dropped")
            log.info("dropped malformed message from %s: %s", source, exc.reason)
            return
        via = lenient_top_via(response.headers)
        assert via is not None  # error_response returns None otherwise
        dest = response_destination(received_via(via, source), source)
        self._count("rejected")
        log.info("refused request from %s with %d %s", source, exc.status, exc.reason)
        self.send(response, dest)

    # -- connections ------------------------------------------------------------------------

    def _register(
        self, writer: asyncio.WriteTransport, peer: tuple[str, int], key: tuple[str, int] | None
    ) -> _Connection:
        assert self._loop is not None
        conn = _Connection(
            self._next_id,
            peer,
            writer,
            StreamFramer(self._max_size, self._max_headers),
            self._loop.time(),
        )
        self._next_id += 1
        self._connections[conn.id] = conn
        # Reuse toward the peer's address (for an accepted connection, its ephemeral port is
        # what a response's Via-based fallback may name) and toward the address we dialled.
        for k in {peer, key} - {None}:
            assert k is not None
            conn.keys.append(k)
            self._by_peer[k] = conn
        self._arm_idle(conn)
        self._count("tcp_connections")
        return conn

    def _touch(self, conn: _Connection) -> None:
        assert self._loop is not None
        conn.last_activity = self._loop.time()

    def _arm_idle(self, conn: _Connection) -> None:
        assert self._loop is not None
        delay = conn.last_activity + self._idle_timeout - self._loop.time()
        conn.idle_timer = self._loop.call_later(max(delay, 0.0), self._idle_check, conn)

    def _idle_check(self, conn: _Connection) -> None:
        assert self._loop is not None
        if conn.closed:
            return
        if self._loop.time() - conn.last_activity >= self._idle_timeout:
            self._count("tcp_idle_closed")
            self._close(conn, "idle")
        else:
            self._arm_idle(conn)

    def _close(self, conn: _Connection, why: str) -> None:
        if not conn.closed:
            log.debug("closing connection %d to %s:%d: %s", conn.id, *conn.peer, why)
        self._forget(conn)
        conn.writer.close()

    def _forget(self, conn: _Connection) -> None:
        conn.closed = True
        if conn.idle_timer is not None:
            conn.idle_timer.cancel()
            conn.idle_timer = None
        self._connections.pop(conn.id, None)
        for key in conn.keys:
            if self._by_peer.get(key) is conn:
                del self._by_peer[key]

    # -- helpers ----------------------------------------------------------------------------

    def _count(self, what: str) -> None:
        self.stats[what] += 1

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._count("internal_errors")
            log.error("send task failed", exc_info=task.exception())


@lru_cache(maxsize=1024)
def _is_ip(host: str) -> bool:
    # Cached: called for every message sent, with the same few peer addresses.
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport, sock: socket.socket) -> None:
        self.owner = owner
        self._recvfrom = sock.recvfrom

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        owner = self.owner
        owner._datagram(data, addr)  # (host, port), or (host, port, flow, scope) for IPv6
        # The others already waiting, in this turn (module docstring). The socket is
        # non-blocking: an empty queue ends the loop at once.
        recvfrom = self._recvfrom
        for _ in range(_UDP_DRAIN_MAX):
            try:
                data, addr = recvfrom(_UDP_READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # as asyncio's own read reports it
                self.error_received(exc)
                return
            owner._datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable for an earlier send, and the like: nothing to do but count.
        self.owner._count("udp_errors")
        log.debug("UDP error: %s", exc)


class _TcpProtocol(asyncio.Protocol):
    def __init__(self, owner: SipTransport, dialled: tuple[str, int] | None) -> None:
        self.owner = owner
        self.dialled = dialled
        self.conn: _Connection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        peer = transport.get_extra_info("peername")
        self.conn = self.owner._register(transport, (str(peer[0]), int(peer[1])), self.dialled)

    def data_received(self, data: bytes) -> None:
        if self.conn is not None and not self.conn.closed:
            self.owner._stream_data(self.conn, data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            if self.conn.framer.pending:
                # RFC 4475 §3.1.2.2: an incomplete message at close is discarded.
                log.info(
                    "connection %d closed with %d bytes unframed",
                    self.conn.id,
                    self.conn.framer.pending,
                )
            self.owner._forget(self.conn)


__all__ = ["MessageHandler", "Resolver", "SipTransport"]
