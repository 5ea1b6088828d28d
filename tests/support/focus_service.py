"""A FocusService in the test process, wired as `app.main` wires it, without sockets.

`service_on_captured_udp` puts a SipTransport in front whose UDP sends are kept in a list;
datagrams go in with `transport._datagram(data, source)`, as its UDP protocol hands them over.
"""

from __future__ import annotations

from typing import Any

from app.focus.core import FocusConfig
from app.mrfp.pool import MrfpPool
from app.net.endpoint import SipEndpoint
from app.net.transport import SipTransport
from app.service.focus_service import FocusService

FOCUS_HOST, FOCUS_PORT = "127.0.0.1", 5070


def focus_config(**overrides: Any) -> FocusConfig:
    settings: dict[str, Any] = {
        "factory_uris": ["sip:conf-factory1@mrfc1.home1.net"],
        "conference_domain": "mrfc1.home1.net",
        "local_contact": f"sip:mrfc@{FOCUS_HOST}:{FOCUS_PORT}",
        "mrfp_uri": {"mrfp1": "sip:127.0.0.1:5080"},
    }
    settings.update(overrides)
    return FocusConfig(**settings)


class NoTransport:
    """For a service that must send nothing."""

    def send(self, message: object, dest: object) -> None:
        raise AssertionError("nothing is sent")


class CapturedUdp:
    """Stands for the asyncio datagram transport: keeps what is sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))

    def close(self) -> None:
        pass


def service_on_captured_udp(
    config: FocusConfig, pool: MrfpPool | None = None, **service_options: Any
) -> tuple[SipTransport, CapturedUdp, SipEndpoint, FocusService]:
    transport = SipTransport(FOCUS_HOST, FOCUS_PORT, udp=True, tcp=False)
    udp = CapturedUdp()
    transport._udp = udp  # type: ignore[assignment]
    endpoint = SipEndpoint(transport, FOCUS_HOST, FOCUS_PORT)
    transport.on_message = endpoint.receive
    service = FocusService(config, endpoint, pool or MrfpPool([]), **service_options)
    return transport, udp, endpoint, service
