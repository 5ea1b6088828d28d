"""One error tree for the SIP core (STYLE.md rule 3).

`RemoteProtocolError` is the peer's fault: the message is malformed, and for a request the
element answers with `status` (400 unless said otherwise) and a reason phrase naming the fault.
`LocalProtocolError` is ours: the TU asked for something the protocol does not allow.
"""

from __future__ import annotations


class SipError(Exception):
    """Base of every error the SIP core raises."""


class RemoteProtocolError(SipError):
    """The peer sent something malformed (RFC 3261 §21.4.1 400 unless `status` says otherwise)."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class ParseError(RemoteProtocolError):
    """A message, header or URI could not be parsed."""


class LocalProtocolError(SipError):
    """The transaction user asked for something RFC 3261 forbids."""
