"""SipTransport over real loopback sockets: UDP and TCP on one port, stateless refusals,
connection reuse, idle close, and nothing that crashes it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from app.net.transport import _UDP_DRAIN_MAX, SipTransport
from app.sip.address import Address
from app.sip.message import Request, Response, make_response, parse_datagram
from app.sip.routing import response_destination
from tests.support.ports import free_port

HOST = "127.0.0.1"
WAIT = 10.0  # generous: the suite runs on a loaded 2-core machine


def options(
    via_host: str,
    via_port: int,
    *,
    rport: bool = True,
    cseq: str = "1 OPTIONS",
    transport: str = "UDP",
    branch: str = "z9hG4bKtest1",
) -> bytes:
    rp = ";rport" if rport else ""
    return (
        f"OPTIONS sip:focus@{HOST} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {via_host}:{via_port};branch={branch}{rp}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:user1_public1@home1.net>;tag=a1\r\n"
        "To: <sip:focus@home1.net>\r\n"
        "Call-ID: call-1@test\r\n"
        f"CSeq: {cseq}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class Server:
    """A SipTransport with a recording handler."""

    def __init__(self, transport: SipTransport) -> None:
        self.transport = transport
        self.received: list[tuple[Request | Response, Address]] = []
        self.event = asyncio.Event()
        self.reply: Callable[[Request | Response, Address], None] | None = None
        transport.on_message = self._on_message

    def _on_message(self, msg: Request | Response, source: Address) -> None:
        self.received.append((msg, source))
        self.event.set()
        if self.reply is not None:
            self.reply(msg, source)

    async def wait_for(self, count: int) -> None:
        async def until() -> None:
            while len(self.received) < count:
                self.event.clear()
                await self.event.wait()

        await asyncio.wait_for(until(), WAIT)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    transport = SipTransport(HOST, free_port(), max_message_size=4000, tcp_idle_timeout=30)
    await transport.start()
    try:
        yield Server(transport)
    finally:
        await transport.stop()


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.setblocking(False)
    return sock


async def recv_udp(sock: socket.socket, timeout: float = WAIT) -> bytes:
    loop = asyncio.get_running_loop()
    return await asyncio.wait_for(loop.sock_recv(sock, 70000), timeout)


async def wait_until(cond: Callable[[], bool]) -> None:
    async def loop() -> None:
        while not cond():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(loop(), WAIT)


async def test_udp_request_reaches_handler_with_received_and_rport(server: Server) -> None:
    with udp_socket() as sock:
        port = sock.getsockname()[1]
        # The Via names another host: the transport records where it really came from.
        sock.sendto(options("192.0.2.1", 5060), (HOST, server.transport.port))
        await server.wait_for(1)
    msg, source = server.received[0]
    assert isinstance(msg, Request) and msg.method == "OPTIONS"
    assert source == Address("UDP", HOST, port)
    via = msg.top_via
    assert via.received == HOST and via.rport == port  # RFC 3581 §4


async def test_udp_response_goes_back_per_rport(server: Server) -> None:
    server.reply = lambda msg, src: server.transport.send(
        make_response(msg, 200, to_tag="t1"),
        src,  # type: ignore[arg-type]
    )
    with udp_socket() as sock:
        sock.sendto(options(HOST, 9, rport=True), (HOST, server.transport.port))
        data = await recv_udp(sock)
    resp = parse_datagram(data)
    assert isinstance(resp, Response) and resp.status == 200 and resp.to.tag == "t1"


async def test_waiting_datagrams_are_taken_in_one_turn_of_the_loop(server: Server) -> None:
    with udp_socket() as sock:
        for n in range(20):  # on loopback each is in the transport's socket when sendto returns
            sock.sendto(options(HOST, 5060, cseq=f"{n + 1} OPTIONS"), (HOST, server.transport.port))
        turns = 0
        while len(server.received) < 20 and turns < 100:
            await asyncio.sleep(0)  # one turn of the event loop
            turns += 1
    # Turn 1 resumes this coroutine before the reader runs; turn 2 reads them all (one per
    # turn would take 20 turns).
    assert len(server.received) == 20 and turns <= 3, turns
    assert [m.cseq.number for m, _ in server.received] == list(range(1, 21))


async def test_more_datagrams_than_one_turn_takes_all_arrive_in_order(server: Server) -> None:
    count = 2 * _UDP_DRAIN_MAX + 5
    with udp_socket() as sock:
        for n in range(count):
            sock.sendto(options(HOST, 5060, cseq=f"{n + 1} OPTIONS"), (HOST, server.transport.port))
        await server.wait_for(count)
    assert [m.cseq.number for m, _ in server.received] == list(range(1, count + 1))
    assert server.transport.stats["received_datagrams"] == count


def _udp_bound_to(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind((HOST, port))
    return sock


async def test_any_port_tries_another_when_tcp_holds_the_one_udp_got(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    taken = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.bind((HOST, taken))
        tcp.listen()
        transport = SipTransport(HOST, 0)
        real = transport._bind_udp
        calls: list[int] = []

        async def first_gets_the_taken_port(loop: asyncio.AbstractEventLoop) -> socket.socket:
            calls.append(transport.port)
            # The kernel's first pick happens to be a port a TCP socket holds.
            return _udp_bound_to(taken) if len(calls) == 1 else await real(loop)

        monkeypatch.setattr(transport, "_bind_udp", first_gets_the_taken_port)
        await transport.start()
        try:
            assert len(calls) == 2 and calls[1] == 0  # the second try asked for any port again
            assert transport.port not in (0, taken)
            assert transport._udp is not None and transport._server is not None
            tcp_port = transport._server.sockets[0].getsockname()[1]
            assert transport._udp.get_extra_info("sockname")[1] == tcp_port == transport.port
        finally:
            await transport.stop()


async def test_a_fixed_port_held_for_tcp_is_an_error_not_another_port() -> None:
    taken = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.bind((HOST, taken))
        tcp.listen()
        transport = SipTransport(HOST, taken)
        with pytest.raises(OSError):
            await transport.start()
        assert transport._udp is None and transport.port == taken


async def test_malformed_request_gets_400_naming_the_fault(server: Server) -> None:
    with udp_socket() as sock:
        sock.sendto(options(HOST, 9, cseq="x OPTIONS"), (HOST, server.transport.port))
        data = await recv_udp(sock)
    resp = parse_datagram(data)
    assert isinstance(resp, Response) and resp.status == 400
    assert "CSeq" in resp.reason
    assert resp.to.tag  # RFC 3261 §8.2.6.2
    assert resp.call_id == "call-1@test"
    assert server.received == []
    assert server.transport.stats["rejected"] == 1


async def test_refusal_without_rport_goes_to_sent_by_port(server: Server) -> None:
    """§18.2.2: no rport, so the 400 goes to received (the source address) and the Via's
    port, not to the port the datagram came from."""
    with udp_socket() as listener, udp_socket() as sender:
        port = listener.getsockname()[1]
        sender.sendto(
            options("192.0.2.7", port, rport=False, cseq="1 INVITE"), (HOST, server.transport.port)
        )
        data = await recv_udp(listener)
    resp = parse_datagram(data)
    assert isinstance(resp, Response) and resp.status == 400
    assert "CSeq method" in resp.reason
    assert resp.top_via.received is None  # a response carries the request's Via unchanged


async def test_unsupported_version_gets_505(server: Server) -> None:
    with udp_socket() as sock:
        data = options(HOST, 9).replace(b"SIP/2.0\r\n", b"SIP/7.0\r\n", 1)
        sock.sendto(data, (HOST, server.transport.port))
        resp = parse_datagram(await recv_udp(sock))
    assert isinstance(resp, Response) and resp.status == 505


async def test_oversize_datagram_gets_513(server: Server) -> None:
    body = b"x" * 5000
    data = options(HOST, 9).replace(b"Content-Length: 0", f"Content-Length: {len(body)}".encode())
    with udp_socket() as sock:
        sock.sendto(data + body, (HOST, server.transport.port))
        resp = parse_datagram(await recv_udp(sock))
    assert isinstance(resp, Response) and resp.status == 513


async def test_garbage_and_bad_responses_are_dropped_and_it_keeps_running(
    server: Server,
) -> None:
    bad_response = (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\n"
        b"CSeq: x INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    with udp_socket() as sock:
        for junk in (
            b"\x00\xff" * 40,
            b"INVITE\r\n\r\n",
            bad_response,
            b"\r\n\r\n",
            b"SIP/2.0 99999 Nope\r\n\r\n",
            b":" * 300,
        ):
            sock.sendto(junk, (HOST, server.transport.port))
        sock.sendto(options(HOST, 9), (HOST, server.transport.port))
        await server.wait_for(1)
        # Nothing came back for the junk: the only datagram would be an answer to it.
        with pytest.raises(TimeoutError):
            await recv_udp(sock, timeout=0.3)
    assert server.transport.stats["dropped"] == 5
    assert isinstance(server.received[0][0], Request)


async def test_handler_exception_does_not_stop_the_transport(server: Server) -> None:
    def boom(msg: Request | Response, src: Address) -> None:
        raise RuntimeError("handler bug")

    server.reply = boom
    with udp_socket() as sock:
        for i in range(2):
            sock.sendto(options(HOST, 9, branch=f"z9hG4bK{i}"), (HOST, server.transport.port))
        await server.wait_for(2)
    assert server.transport.stats["handler_errors"] == 2


async def open_tcp(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection(HOST, port), WAIT)


async def read_message(reader: asyncio.StreamReader) -> Response:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    msg = parse_datagram(head)
    length = msg.content_length or 0
    if length:
        msg.body = await asyncio.wait_for(reader.readexactly(length), WAIT)
    assert isinstance(msg, Response)
    return msg


async def test_tcp_request_and_response_on_the_same_connection(server: Server) -> None:
    server.reply = lambda msg, src: server.transport.send(
        make_response(msg, 200, to_tag="t"),
        src,  # type: ignore[arg-type]
    )
    reader, writer = await open_tcp(server.transport.port)
    try:
        # Two messages in pieces, the second glued to the first: framing by Content-Length.
        first = options(HOST, 9, transport="TCP", branch="z9hG4bKa")
        second = options(HOST, 9, transport="TCP", branch="z9hG4bKb")
        writer.write(first[:17])
        await writer.drain()
        writer.write(first[17:] + second)
        await writer.drain()
        r1, r2 = await read_message(reader), await read_message(reader)
    finally:
        writer.close()
    assert [r1.status, r2.status] == [200, 200]
    assert [r.top_via.branch for r in (r1, r2)] == ["z9hG4bKa", "z9hG4bKb"]
    sources = {src for _, src in server.received}
    assert len(sources) == 1 and next(iter(sources)).connection is not None


async def test_tcp_framing_error_answers_and_closes(server: Server) -> None:
    reader, writer = await open_tcp(server.transport.port)
    try:
        bad = options(HOST, 9, transport="TCP").replace(b"Content-Length: 0", b"Content-Length: -5")
        writer.write(bad)
        await writer.drain()
        resp = await read_message(reader)
        assert resp.status == 400 and "Content-Length" in resp.reason
        # RFC 4475 §3.1.2.3: the stream cannot be resynchronised, so it is closed.
        assert await asyncio.wait_for(reader.read(), WAIT) == b""
    finally:
        writer.close()
    await wait_until(lambda: server.transport.connection_count == 0)


async def test_idle_tcp_connection_is_closed() -> None:
    transport = SipTransport(HOST, free_port(), tcp_idle_timeout=0.3)
    await transport.start()
    try:
        reader, writer = await open_tcp(transport.port)
        await wait_until(lambda: transport.connection_count == 1)
        assert await asyncio.wait_for(reader.read(), WAIT) == b""
        writer.close()
        assert transport.connection_count == 0
        assert transport.stats["tcp_idle_closed"] == 1
    finally:
        await transport.stop()


async def test_requests_reuse_one_tcp_connection_and_answers_come_back_on_it() -> None:
    a = Server(SipTransport(HOST, free_port()))
    b = Server(SipTransport(HOST, free_port()))
    await a.transport.start()
    await b.transport.start()
    b.reply = lambda msg, src: b.transport.send(
        make_response(msg, 200, to_tag="b"),
        src,  # type: ignore[arg-type]
    )
    try:
        dest = Address("TCP", HOST, b.transport.port)
        for i in range(3):
            req = parse_datagram(
                options(HOST, a.transport.port, transport="TCP", branch=f"z9hG4bKr{i}")
            )
            a.transport.send(req, dest)
        await a.wait_for(3)
        await b.wait_for(3)
    finally:
        await a.transport.stop()
        await b.transport.stop()
    assert {src.connection for _, src in b.received} == {1}
    assert b.transport.stats["tcp_connections"] == 1
    assert all(isinstance(m, Response) and m.status == 200 for m, _ in a.received)


async def test_send_to_a_name_uses_the_resolver() -> None:
    async def resolve(name: str) -> str:
        assert name == "mrfp.home1.net"
        return HOST

    transport = SipTransport(HOST, free_port(), resolver=resolve)
    await transport.start()
    try:
        with udp_socket() as sock:
            req = parse_datagram(options(HOST, 9))
            transport.send(req, Address("UDP", "mrfp.home1.net", sock.getsockname()[1]))
            got = parse_datagram(await recv_udp(sock))
    finally:
        await transport.stop()
    assert isinstance(got, Request) and got.method == "OPTIONS"


async def test_failed_tcp_connect_is_counted_not_raised() -> None:
    transport = SipTransport(HOST, free_port(), udp=False)
    await transport.start()
    try:
        req = parse_datagram(options(HOST, 9))
        transport.send(req, Address("TCP", HOST, free_port()))  # nobody listens there
        await wait_until(lambda: transport.stats["send_errors"] == 1)
    finally:
        await transport.stop()


async def test_peer_that_stops_reading_is_disconnected() -> None:
    transport = SipTransport(HOST, free_port(), max_write_buffer=10_000)
    await transport.start()
    # A raw listener that accepts and never reads.
    accepted: list[socket.socket] = []
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((HOST, 0))
    listener.listen()
    listener.setblocking(False)
    try:
        dest = Address("TCP", HOST, listener.getsockname()[1])
        big = parse_datagram(options(HOST, 9, transport="TCP"))
        big.body = b"x" * 60_000
        transport.send(big, dest)
        loop = asyncio.get_running_loop()
        conn, _ = await asyncio.wait_for(loop.sock_accept(listener), WAIT)
        accepted.append(conn)
        await wait_until(lambda: transport.connection_count == 1)

        def flood() -> bool:
            transport.send(big, dest)
            return transport.stats["tcp_overflow"] > 0

        await wait_until(flood)
        assert transport.connection_count == 0
    finally:
        for sock in (*accepted, listener):
            sock.close()
        await transport.stop()


async def test_udp_receive_buffer_is_grown() -> None:
    small = SipTransport(HOST, free_port(), tcp=False, udp_receive_buffer=0)
    big = SipTransport(HOST, free_port(), tcp=False, udp_receive_buffer=4 << 20)
    await small.start()
    await big.start()
    try:
        sizes = [
            t._udp.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            for t in (small, big)
            if t._udp is not None
        ]
    finally:
        await small.stop()
        await big.stop()
    if can_force_receive_buffer() or rmem_max() * 2 > sizes[0]:
        assert sizes[1] > sizes[0]
    else:  # capped at net.core.rmem_max, which is the default here: nothing to grow
        assert sizes[1] == sizes[0]


def rmem_max() -> int:
    try:
        return int(Path("/proc/sys/net/core/rmem_max").read_text())
    except (OSError, ValueError):
        return 0


def can_force_receive_buffer() -> bool:
    option = getattr(socket, "SO_RCVBUFFORCE", None)
    if option is None:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, 1 << 20)
        except OSError:
            return False
    return True


async def test_tcp_response_after_the_connection_closed_opens_a_new_one(server: Server) -> None:
    """RFC 3261 §18.2.2: if the request's connection is gone, connect to the received
    address and the sent-by port."""
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def listener(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.put_nowait(await reader.readuntil(b"\r\n\r\n"))
        writer.close()

    back = await asyncio.start_server(listener, HOST, 0)
    back_port = back.sockets[0].getsockname()[1]
    try:
        _, writer = await open_tcp(server.transport.port)
        writer.write(options("client.example.com", back_port, rport=False, transport="TCP"))
        await writer.drain()
        await server.wait_for(1)
        writer.close()
        await wait_until(lambda: server.transport.connection_count == 0)
        request, source = server.received[0]
        assert isinstance(request, Request)
        dest = response_destination(request.top_via, source)
        assert (dest.host, dest.port, dest.connection) == (HOST, back_port, source.connection)
        server.transport.send(make_response(request, 200, to_tag="late"), dest)
        resp = parse_datagram(await asyncio.wait_for(got.get(), WAIT))
    finally:
        back.close()
    assert isinstance(resp, Response) and resp.status == 200 and resp.to.tag == "late"
