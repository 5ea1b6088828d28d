"""Where SIP messages go (RFC 3261 §18, RFC 3581, RFC 3263 without DNS records), sans-IO.

The transports carry bytes; the decisions live here so they can be tested without sockets:
which address a response goes back to (§18.2.2), which address a request goes to for a URI
(§18.1.1, RFC 3263 §4), and what a server transport writes into the top Via of a request it
received (§18.2.1, RFC 3581 §4).
"""

from __future__ import annotations

from app.sip.address import RELIABLE_TRANSPORTS, Address
from app.sip.headers import Via
from app.sip.message import Message
from app.sip.uri import SipUri

# RFC 3261 §19.1.2, RFC 7118 §5: default ports when a URI or sent-by names none.
DEFAULT_PORTS = {
    "UDP": 5060,
    "TCP": 5060,
    "SCTP": 5060,
    "TLS": 5061,
    "TLS-SCTP": 5061,
    "WS": 80,
    "WSS": 443,
}
# RFC 3261 §18.1.1: a request within 200 bytes of the path MTU, or larger than 1300 bytes when
# the MTU is unknown, goes over a congestion-controlled transport (TCP) instead of UDP.
UDP_SAFE_SIZE = 1300


def bare_host(host: str) -> str:
    """`[2001:db8::1]` -> `2001:db8::1`: sockets take IPv6 addresses without the brackets."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def default_port(transport: str) -> int:
    return DEFAULT_PORTS.get(transport.upper(), 5060)


def response_destination(via: Via, source: Address | None = None) -> Address:
    """Where a response goes, from the top Via of the request (RFC 3261 §18.2.2).

    `source` is where the request came from, if this element received it. A request that came
    over a stream connection is answered on that connection: §18.2.2 ties this to the Via's
    transport, but the Via only ever names another transport when a peer lies about it, and the
    connection is what reaches the peer. If that connection is gone, the transport opens a new
    one to `host`:`port` (the received address and the sent-by port, §18.2.2).
    """
    host = bare_host(via.received or via.host)
    if source is not None and source.connection is not None:
        port = via.port if via.port is not None else default_port(via.transport)
        return Address(source.transport, host, port, source.connection)
    if via.transport in RELIABLE_TRANSPORTS and (source is None or source.reliable):
        port = via.port if via.port is not None else default_port(via.transport)
        return Address(via.transport, host, port)
    # Unreliable transport (UDP; also a request that came over UDP with a Via naming another
    # transport, RFC 4475 §3.1.1.10): maddr first, then received (with rport, RFC 3581 §4),
    # then the sent-by itself; "port 5060 if none is specified explicitly".
    port = via.port if via.port is not None else default_port("UDP")
    maddr = via.params.get("maddr")
    if maddr:
        return Address("UDP", bare_host(maddr), port)
    rport = via.rport
    if via.received and rport is not None:
        port = rport
    if (
        source is not None
        and source.port == port
        and source.host == host
        and source.transport == "UDP"
        and source.connection is None
    ):
        # The usual case (RFC 3581: received and rport are the source): the source address
        # itself, one object fewer for every server transaction to keep for 64*T1.
        return source
    return Address("UDP", host, port)


def request_destination(uri: SipUri) -> Address:
    """Where a request for `uri` goes (RFC 3261 §18.1.1, RFC 3263 §4 without NAPTR/SRV).

    maddr overrides the host (§19.1.1); the transport parameter chooses the transport, sips:
    means TLS, and otherwise UDP; the port defaults per transport. A DNS name in `host` is left
    for the transport to resolve (A/AAAA records only).
    """
    transport = (uri.transport or ("tls" if uri.scheme == "sips" else "udp")).upper()
    if uri.scheme == "sips" and transport == "TCP":
        transport = "TLS"  # RFC 3261 §26.2.2: sips over TCP is TLS
    host = bare_host(uri.get_param("maddr") or uri.host)
    port = uri.port if uri.port is not None else default_port(transport)
    return Address(transport, host, port)


def needs_congestion_control(size: int, mtu: int | None = None) -> bool:
    """RFC 3261 §18.1.1: is a request of `size` bytes too large to go over UDP?"""
    limit = mtu - 200 if mtu is not None else UDP_SAFE_SIZE
    return size > limit


def received_via(via: Via, source: Address) -> Via:
    """The top Via as the server transport records it (RFC 3261 §18.2.1, RFC 3581 §4):
    `received` is added when the sent-by host is not the source address (always when the
    client asked for `rport`), and an empty `rport` gets the source port. Returns `via` itself
    when nothing needs adding."""
    rport_asked = "rport" in via.params and not via.params["rport"]
    if bare_host(via.host) == source.host and not rport_asked:
        return via
    params = dict(via.params)
    if rport_asked:
        params["rport"] = str(source.port)
    # RFC 3261 §25.1 writes an IPv6 `received` without brackets (RFC 5118 §4.5).
    params["received"] = source.host
    return Via(via.transport, via.host, via.port, params, via.protocol)


def stamp_received(msg: Message, source: Address) -> Via:
    """Write `received`/`rport` into the top Via of a received request (see `received_via`)
    and return it. Raises ParseError when the message has no parseable Via."""
    via = msg.top_via
    stamped = received_via(via, source)
    if stamped is not via:
        msg.set_top_via(stamped)
    return stamped


__all__ = [
    "DEFAULT_PORTS",
    "RELIABLE_TRANSPORTS",
    "UDP_SAFE_SIZE",
    "Address",
    "bare_host",
    "default_port",
    "needs_congestion_control",
    "received_via",
    "request_destination",
    "response_destination",
    "stamp_received",
]
