"""Free loopback ports, so tests run beside a `make run` stack and beside each other."""

from __future__ import annotations

import socket

_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on `host` (SIP listens on both, RFC 3261 §18)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            if port in _handed_out:
                continue
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                    udp.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port found")


def free_port_range(count: int, host: str = "127.0.0.1") -> int:
    """The first of `count` consecutive ports that are all free (UDP and TCP), e.g. for RTP."""
    for _ in range(200):
        first = free_port(host)
        first += first % 2  # RTP wants an even first port (RFC 3550 §11)
        ok = True
        for port in range(first, first + count):
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                    udp.bind((host, port))
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                    tcp.bind((host, port))
            except OSError:
                ok = False
                break
        if ok:
            _handed_out.update(range(first, first + count))
            return first
    raise RuntimeError(f"no run of {count} free ports found")
