"""Where a message comes from or goes to, as the core sees it (no sockets here)."""

from __future__ import annotations

from dataclasses import dataclass

RELIABLE_TRANSPORTS = frozenset({"TCP", "TLS", "SCTP", "WS", "WSS"})


@dataclass(frozen=True, slots=True)
class Address:
    """A transport address. `connection` names the stream a message arrived on (TCP), so a
    response can go back on it (RFC 3261 §18.2.2); None for datagrams or "any connection"."""

    transport: str  # "UDP" or "TCP" (upper case, as in Via)
    host: str
    port: int
    connection: int | None = None

    @property
    def reliable(self) -> bool:
        return self.transport in RELIABLE_TRANSPORTS

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{self.transport.lower()}:{host}:{self.port}"
