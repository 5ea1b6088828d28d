"""Send every RFC 4475 / RFC 5118 message to a running SipTransport; report what came back.

Run by tests/vectors/test_over_the_wire.py inside a network namespace of its own
(`unshare -n`, loopback only), never directly on a host: the vectors' Via headers name
documentation addresses and well-known ports, and inside the namespace nothing can leave the
machine and every port is free, so the fixed ports below (5060 and the ports the Vias name)
cannot clash with anything.

Why the answers arrive here without rewriting any vector: every Via names a host other than
127.0.0.1, so the server transport adds `received=127.0.0.1` (RFC 3261 §18.2.1) and sends the
response to 127.0.0.1 at the sent-by port, or 5060 without one (§18.2.2; no vector asks for
`rport` except mpart01, whose Via is 127.0.0.1:5070;rport and is answered at the source
port). So the sender binds 127.0.0.1:5060 and a listener sits on every other port a Via names;
which listener an answer reaches is part of the report.

The server's application answers every request it is handed with a 200 sent where §18.2.2
says, so an accepted request shows up as a 200, a refused one as the transport's 400/505,
and a dropped message as silence. Prints one JSON object: {vector: {transport: observation}}.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.net.transport import SipTransport
from app.sip.address import Address
from app.sip.message import Request, Response, make_response, parse_datagram
from app.sip.routing import response_destination

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "vectors"
HOST = "127.0.0.1"
SENDER_PORT = 5060
QUIET = 0.3  # how long silence must last to count as "no answer"
WAIT = 10.0  # the longest an expected answer may take on a loaded machine
# Sent over TCP too: the framing cases of RFC 4475 plus a few well-formed ones.
TCP_VECTORS = {
    "clerr",
    "ncl",
    "mcl01",
    "baddn",
    "dblreq",
    "inv2543",
    "wsinv",
    "mpart01",
    "badinv01",
}
IDLE = 1.0  # the server's TCP idle timeout: clerr's connection must close "in reasonable time"


def vectors() -> list[tuple[str, bytes]]:
    out = []
    for sub in ("rfc4475", "rfc5118"):
        for path in sorted((SHARED / sub).glob("*.sip")):
            out.append((path.stem, path.read_bytes()))
    return out


def via_ports(data: bytes) -> set[int]:
    ports = set()
    for line in re.findall(rb"(?im)^(?:via|v)[ \t]*:[^\r\n]*", data):
        # A sent-by port ends the sent-by: ";", "," or the end of the line follows it (a bare
        # IPv6 received value can look alike: one listener too many, harmless).
        ports.update(int(p) for p in re.findall(rb"[\]A-Za-z0-9]:(\d{2,5})[ \t]*(?=[;,]|$)", line))
    return ports


class Listener(asyncio.DatagramProtocol):
    def __init__(self, port: int, queue: asyncio.Queue[tuple[int, bytes]]) -> None:
        self.port = port
        self.queue = queue

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait((self.port, data))


class App:
    """The server's application: records what it is handed, answers requests with 200."""

    def __init__(self, transport: SipTransport) -> None:
        self.transport = transport
        self.handed: list[str] = []
        self.event = asyncio.Event()
        transport.on_message = self.on_message

    def on_message(self, msg: Request | Response, source: Address) -> None:
        self.handed.append(msg.method if isinstance(msg, Request) else f"{msg.status}")
        self.event.set()
        if isinstance(msg, Request) and msg.method != "ACK":
            self.transport.send(
                make_response(msg, 200, to_tag="wire"), response_destination(msg.top_via, source)
            )


def describe(data: bytes) -> list[Any]:
    """[status, Call-ID] of an answer (the Call-ID ties it to the vector that caused it)."""
    try:
        msg = parse_datagram(data)
    except Exception as exc:  # report, do not die: the outer test decides
        return [f"unparseable answer: {exc}", None]
    if not isinstance(msg, Response):
        return [f"request {msg.method}", None]
    return [msg.status, msg.get("Call-ID")]


async def collect(queue: asyncio.Queue[tuple[int, bytes]], timeout: float) -> list[Any]:
    """Answers arriving within `timeout`, and then any that follow within QUIET."""
    got: list[Any] = []
    while True:
        try:
            port, data = await asyncio.wait_for(queue.get(), timeout)
        except TimeoutError:
            return got
        got.append([*describe(data), port])
        timeout = QUIET if queue.empty() else WAIT


async def over_udp(
    app: App,
    sender: asyncio.DatagramTransport,
    queue: asyncio.Queue[Any],
    data: bytes,
    answer_expected: bool,
) -> dict[str, Any]:
    before = len(app.handed)
    sender.sendto(data, (HOST, app.transport.port))
    if answer_expected:
        # One answer is due: take it as soon as it comes. A second one would come with the
        # same Call-ID and show up in the next vector's list (or the final drain).
        try:
            port, answer = await asyncio.wait_for(queue.get(), WAIT)
            answers = [[*describe(answer), port]]
        except TimeoutError:
            answers = []
    else:
        answers = await collect(queue, QUIET)
    return {"answers": answers, "handed": app.handed[before:]}


async def over_tcp(app: App, data: bytes) -> dict[str, Any]:
    before = len(app.handed)
    reader, writer = await asyncio.open_connection(HOST, app.transport.port)
    writer.write(data)
    await writer.drain()
    received = b""
    closed = False
    # Until the server closes (framing error, idle timeout) or goes quiet after answering:
    # the first wait outlasts the idle timeout, so clerr's and baddn's close is seen.
    timeout = IDLE + WAIT / 2
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), timeout)
            except TimeoutError:
                break
            if not chunk:
                closed = True
                break
            received += chunk
            timeout = QUIET
    finally:
        writer.close()
    answers = []
    for part in received.split(b"SIP/2.0 ")[1:]:
        answers.append(int(part[:3]))
    return {"answers": answers, "closed": closed, "handed": app.handed[before:]}


async def main() -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    items = vectors()
    ports = {SENDER_PORT}
    for _, data in items:
        ports |= via_ports(data)
    server_port = max(ports) + 1
    transport = SipTransport(HOST, server_port, tcp_idle_timeout=IDLE)
    app = App(transport)
    await transport.start()
    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    endpoints: dict[int, asyncio.DatagramTransport] = {}
    for port in sorted(ports):
        ep, _ = await loop.create_datagram_endpoint(
            lambda p=port: Listener(p, queue), local_addr=(HOST, port)
        )
        endpoints[port] = ep
    report: dict[str, Any] = {"_ports": sorted(ports)}
    try:
        for name, data in items:
            # Responses are never answered; everything else is (200, or a refusal).
            answer_expected = not data.startswith(b"SIP/")
            entry = {
                "udp": await over_udp(app, endpoints[SENDER_PORT], queue, data, answer_expected)
            }
            if name in TCP_VECTORS:
                entry["tcp"] = await over_tcp(app, data)
            report[name] = entry
        # Still running: a plain OPTIONS is answered.
        probe = (
            b"OPTIONS sip:probe@127.0.0.1 SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKprobe;rport\r\n"
            b"Max-Forwards: 70\r\nFrom: <sip:t@x>;tag=1\r\nTo: <sip:probe@x>\r\n"
            b"Call-ID: probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        report["_strays"] = await collect(queue, QUIET)
        report["_probe"] = await over_udp(app, endpoints[SENDER_PORT], queue, probe, True)
        report["_stats"] = dict(transport.stats)
    finally:
        for ep in endpoints.values():
            ep.close()
        await transport.stop()
    return report


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
