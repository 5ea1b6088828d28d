"""baresip 1.0 as a scripted audio UE: sends a tone WAV, records what it hears.

One `Baresip` is one process with its own config directory, SIP/RTP/control ports, tone and
recording directory (`sndfile` names files by the second, so two UEs must never share one).
It is driven over `ctrl_tcp` (netstring-framed JSON commands; events arrive on the same
socket) and stopped by pid. `DnsStub` answers the RFC 3263 look-ups a UE makes for a SIP
domain such as `mrfc1.home1.net`, so a UE can reach the focus without the CSCFs: the focus's
Contact (RFC 4579 §5.1: the conference URI) names that domain, and without a Record-Route
every in-dialog request (ACK, BYE) is sent there.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.ports import free_port, free_port_range

MODULE_PATH = Path("/usr/lib/baresip/modules")

Event = dict[str, Any]


def baresip_available() -> bool:
    return shutil.which("baresip") is not None and (MODULE_PATH / "sndfile.so").exists()


# ================================================================== DNS (RFC 1035) =======

_A, _SRV, _AAAA = 1, 33, 28
_CLASS_IN = 1


def _encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii")
        out += bytes([len(raw)]) + raw
    return out + b"\x00"


def _decode_question(packet: bytes) -> tuple[str, int, int]:
    """(qname, qtype, offset after the question) of the first question."""
    labels: list[str] = []
    pos = 12
    while packet[pos]:
        length = packet[pos]
        labels.append(packet[pos + 1 : pos + 1 + length].decode("ascii", "replace"))
        pos += 1 + length
    qtype = struct.unpack_from("!H", packet, pos + 1)[0]
    return ".".join(labels).lower(), qtype, pos + 5


class DnsStub:
    """A tiny authoritative DNS server on 127.0.0.1 for a few SIP domains.

    For each domain it answers A with the address and SRV `_sip._udp.<domain>` and
    `_sip._tcp.<domain>` with the port (RFC 3263 §4.2: NAPTR first, SRV next, then A);
    NAPTR and anything else get an empty NOERROR, which sends the resolver on to SRV.
    """

    def __init__(self, domains: Mapping[str, tuple[str, int]]) -> None:
        self.domains = {d.lower(): v for d, v in domains.items()}
        self.port = free_port()
        self.queries: list[tuple[str, int]] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", self.port))
        self._sock.settimeout(0.2)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="dns-stub", daemon=True)

    def start(self) -> DnsStub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)
        self._sock.close()

    def _answers(self, qname: str, qtype: int) -> list[tuple[int, bytes]]:
        if qtype == _A and qname in self.domains:
            return [(_A, socket.inet_aton(self.domains[qname][0]))]
        for proto in ("_sip._udp.", "_sip._tcp."):
            domain = qname.removeprefix(proto)
            if qtype == _SRV and qname.startswith(proto) and domain in self.domains:
                port = self.domains[domain][1]
                return [(_SRV, struct.pack("!HHH", 0, 0, port) + _encode_name(domain))]
        return []

    def _reply(self, packet: bytes) -> bytes:
        qname, qtype, end = _decode_question(packet)
        self.queries.append((qname, qtype))
        answers = self._answers(qname, qtype)
        # QR=1, AA=1, RD copied from the query, RA=1, RCODE=0 (RFC 1035 §4.1.1).
        flags = 0x8480 | (struct.unpack_from("!H", packet, 2)[0] & 0x0100)
        out = packet[:2] + struct.pack("!HHHHH", flags, 1, len(answers), 0, 0) + packet[12:end]
        for rtype, rdata in answers:
            # 0xC00C: a pointer to the name in the question (RFC 1035 §4.1.4).
            out += struct.pack("!HHHIH", 0xC00C, rtype, _CLASS_IN, 60, len(rdata)) + rdata
        return out

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                packet, peer = self._sock.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                self._sock.sendto(self._reply(packet), peer)
            except (IndexError, struct.error, OSError):
                continue  # a malformed query: a real server would answer FORMERR; ignore it


# ================================================================== baresip ==============


class BaresipError(RuntimeError):
    pass


@dataclass
class Baresip:
    """One baresip process; `aor` is its account (From), `tone` the WAV it sends.

    The tone must be 8 kHz mono S16 for PCMU and longer than every call: aufile hangs up
    the call when its file ends.
    """

    name: str
    workdir: Path
    aor: str
    tone: Path
    dns_port: int | None = None
    sip_trace: bool = True
    sip_port: int = field(init=False, default=0)
    ctrl_port: int = field(init=False, default=0)
    events: list[Event] = field(init=False, default_factory=list)
    _proc: subprocess.Popen[bytes] | None = field(init=False, default=None)
    _sock: socket.socket | None = field(init=False, default=None)
    _reader: threading.Thread | None = field(init=False, default=None)
    _cond: threading.Condition = field(init=False, default_factory=threading.Condition)
    _responses: list[Event] = field(init=False, default_factory=list)
    _token: int = field(init=False, default=0)

    @property
    def config_dir(self) -> Path:
        return self.workdir / "config"

    @property
    def record_dir(self) -> Path:
        return self.workdir / "rec"

    @property
    def log(self) -> Path:
        return self.workdir / "baresip.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def output(self, tail: int = 6000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text[-tail:]

    # ---------------------------------------------------------------- start ------------

    def _write_config(self) -> None:
        # SIP uses port and port+1 (notes: the next port is taken too); RTP needs even ports.
        self.sip_port = free_port_range(2)
        rtp = free_port_range(10)
        self.ctrl_port = free_port()
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.record_dir.mkdir(parents=True, exist_ok=True)
        dns = f"127.0.0.1:{self.dns_port}" if self.dns_port else "127.0.0.1:53"
        (self.config_dir / "config").write_text(
            "\n".join(
                [
                    "poll_method epoll",
                    f"sip_listen 127.0.0.1:{self.sip_port}",
                    "net_interface 127.0.0.1",
                    f"dns_server {dns}",
                    f"rtp_ports {rtp}-{rtp + 9}",
                    "rtcp_mux no",
                    "jitter_buffer_delay 5-10",
                    f"audio_source aufile,{self.tone}",
                    "audio_buffer 20-160",
                    f"module_path {MODULE_PATH}",
                    "module g711.so",
                    "module aufile.so",
                    "module sndfile.so",
                    "module_tmp account.so",
                    "module_app menu.so",
                    "module_app ctrl_tcp.so",
                    f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}",
                    f"snd_path {self.record_dir}",
                    "ringback_disabled yes",
                    "",
                ]
            )
        )
        # regint=0: no REGISTER; the UE calls the focus directly.
        (self.config_dir / "accounts").write_text(f"<{self.aor}>;regint=0;audio_codecs=pcmu\n")

    def start(self, timeout: float = 20.0) -> Baresip:
        self._write_config()
        args = ["baresip", "-f", str(self.config_dir)] + (["-s"] if self.sip_trace else [])
        with self.log.open("wb") as out:
            self._proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise BaresipError(f"{self.name} exited at start:\n{self.output()}")
            try:
                self._sock = socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise BaresipError(f"{self.name}: no ctrl_tcp in {timeout} s") from None
                time.sleep(0.05)
        self._sock.settimeout(None)
        self._reader = threading.Thread(target=self._read, name=f"{self.name}-ctrl", daemon=True)
        self._reader.start()
        return self

    # ---------------------------------------------------------------- control ----------

    def _read(self) -> None:
        assert self._sock is not None
        buf = b""
        while True:
            try:
                chunk = self._sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cond:
                    self._cond.notify_all()
                return
            buf += chunk
            # Netstrings: `<length>:<payload>,` (the ctrl_tcp framing).
            while b":" in buf:
                head, _, rest = buf.partition(b":")
                length = int(head)
                if len(rest) < length + 1:
                    break
                message = json.loads(rest[:length])
                buf = rest[length + 1 :]
                with self._cond:
                    if message.get("event"):
                        message["at"] = time.monotonic()
                        self.events.append(message)
                    else:
                        self._responses.append(message)
                    self._cond.notify_all()

    def command(self, command: str, params: str = "", timeout: float = 10.0) -> Event:
        """Send one command; returns its response (ok only means it was accepted)."""
        if self._sock is None:
            raise BaresipError(f"{self.name} is not running")
        self._token += 1
        token = str(self._token)
        payload = json.dumps({"command": command, "params": params, "token": token}).encode()
        self._sock.sendall(str(len(payload)).encode() + b":" + payload + b",")
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for resp in self._responses:
                    if resp.get("token") == token:
                        self._responses.remove(resp)
                        return resp
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BaresipError(f"{self.name}: no response to {command} in {timeout} s")
                self._cond.wait(left)

    def dial(self, uri: str) -> None:
        resp = self.command("dial", uri)
        if not resp.get("ok"):
            raise BaresipError(f"{self.name}: dial refused: {resp}")

    def hangup(self) -> None:
        self.command("hangup")

    def wait_event(
        self,
        kind: str,
        *,
        since: int = 0,
        timeout: float = 30.0,
        fail_on: tuple[str, ...] = ("CALL_CLOSED",),
        match: Callable[[Event], bool] = lambda _e: True,
    ) -> Event:
        """The first event of `kind` at index >= `since` in `events`.

        Raises at once on a `fail_on` event (a call that closed while we wait for it to be
        established), with the event's reason and the tail of the SIP trace.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events[since:]:
                    if event.get("type") == kind and match(event):
                        return event
                    if event.get("type") in fail_on:
                        raise BaresipError(
                            f"{self.name}: {event.get('type')} ({event.get('param')}) while "
                            f"waiting for {kind}\n{self.output()}"
                        )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BaresipError(
                        f"{self.name}: no {kind} in {timeout} s; events "
                        f"{[e.get('type') for e in self.events]}\n{self.output()}"
                    )
                if self._proc is not None and self._proc.poll() is not None:
                    raise BaresipError(f"{self.name} exited\n{self.output()}")
                self._cond.wait(min(left, 0.5))

    def recordings(self, kind: str = "dec") -> list[Path]:
        """sndfile's files, oldest first: `dec` is what the UE heard, `enc` what it sent."""
        return sorted(self.record_dir.glob(f"dump-*-{kind}.wav"))

    # ---------------------------------------------------------------- stop -------------

    def stop(self, quit_timeout: float = 10.0) -> int | None:
        """quit over ctrl_tcp, then SIGTERM twice, then SIGKILL: always by our own pid.

        `quit` can wait a long time for open SIP transactions, hence the timeouts; the
        first SIGTERM still closes calls, so sndfile completes its WAV headers.
        """
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None and self._sock is not None:
            with contextlib.suppress(BaresipError, OSError):
                self.command("quit", timeout=2)
        try:
            proc.wait(quit_timeout)
        except subprocess.TimeoutExpired:
            for _ in range(2):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(5)
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._reader is not None:
            self._reader.join(2)
        return proc.returncode
