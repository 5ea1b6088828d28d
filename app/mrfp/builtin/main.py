"""`mrfp-builtin`: the built-in media processor as its own process.

    mrfp-builtin --sip-host 127.0.0.1 --sip-port 5080 --esl-port 8021 --rtp-ports 20000-29999

Every option also comes from an environment variable (`MRFP_SIP_HOST`, `MRFP_SIP_PORT`,
`MRFP_ESL_HOST`, `MRFP_ESL_PORT`, `MRFP_ESL_PASSWORD`, `MRFP_RTP_HOST`, `MRFP_RTP_PORTS`,
`MRFP_MEDIA_TIMEOUT`, `MRFP_LOG_LEVEL`); the command line wins. Logs go to stderr. Once SIP
and ESL listen, one line `ready sip=<host:port> esl=<host:port>` goes to stdout (port 0 asks
for any free port; the line tells which). SIGINT/SIGTERM: BYE to every open leg, then stop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

from app.mrfp.builtin.conference import ConferenceRegistry, EventContext
from app.mrfp.builtin.engine import EngineEvent, MediaEngine
from app.mrfp.builtin.esl_server import EslServer
from app.mrfp.builtin.sip_side import SipSide
from app.net.endpoint import SipEndpoint
from app.net.gc_freeze import GcFreezer
from app.net.transport import SipTransport

log = logging.getLogger("mrfp.builtin")


def _env(name: str, default: str) -> str:
    return os.environ.get(f"MRFP_{name}", default)


def _port_range(text: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    try:
        first, last = int(low), int(high if sep else low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port range: {text!r}") from None
    if not (1 <= first < last <= 65535):
        raise argparse.ArgumentTypeError(f"port range {text!r} must be low-high within 1-65535")
    return first, last


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="mrfp-builtin",
        description="Built-in media processor: FreeSWITCH-compatible SIP + ESL conference bridge",
    )
    p.add_argument("--sip-host", default=_env("SIP_HOST", "127.0.0.1"))
    p.add_argument("--sip-port", type=int, default=int(_env("SIP_PORT", "5080")))
    p.add_argument("--esl-host", default=_env("ESL_HOST", "127.0.0.1"))
    p.add_argument("--esl-port", type=int, default=int(_env("ESL_PORT", "8021")))
    p.add_argument("--esl-password", default=_env("ESL_PASSWORD", "ClueCon"))
    p.add_argument("--rtp-host", default=_env("RTP_HOST", ""), help="default: --sip-host")
    p.add_argument(
        "--rtp-ports", type=_port_range, default=_port_range(_env("RTP_PORTS", "20000-29999"))
    )
    p.add_argument(
        "--media-timeout",
        type=float,
        default=float(_env("MEDIA_TIMEOUT", "30")),
        help="seconds without RTP before a member is dropped (0: never)",
    )
    p.add_argument(
        "--pre-answer",
        action=argparse.BooleanOptionalAction,
        default=_env("PRE_ANSWER", "false").lower() in ("1", "true", "yes"),
        help="send a 183 with the answer before the 200, as FreeSWITCH does with a dialplan "
        "that runs pre_answer before answer (default: the 200 alone, as freeswitch/'s dialplan)",
    )
    p.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"))
    return p.parse_args(argv)


async def run(args: argparse.Namespace, stop: asyncio.Event | None = None) -> None:
    """Run until `stop` is set (or SIGINT/SIGTERM)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    rtp_host = args.rtp_host or args.sip_host
    registry = ConferenceRegistry(
        EventContext(
            ipv4=args.sip_host if ":" not in args.sip_host else "127.0.0.1", domain=args.sip_host
        )
    )
    side: SipSide | None = None
    freezer: GcFreezer | None = None

    def on_media(event: EngineEvent) -> None:
        if side is not None:
            side.on_media_event(event)

    timeout = args.media_timeout if args.media_timeout > 0 else float("inf")
    low, high = args.rtp_ports
    engine = MediaEngine(rtp_host, low, high, media_timeout=timeout, on_event=on_media)
    registry.media = engine
    transport = SipTransport(args.sip_host, args.sip_port)
    await transport.start()
    endpoint = SipEndpoint(transport, args.sip_host, transport.port)
    transport.on_message = endpoint.receive
    side = SipSide(endpoint, registry, engine, rtp_host=rtp_host, pre_answer=args.pre_answer)
    esl = EslServer(registry, args.esl_host, args.esl_port, args.esl_password)
    try:
        await engine.start()
        await esl.start()
        # Calls and transactions are held for 64*T1: kept out of the collector's walks.
        freezer = GcFreezer()
        freezer.start(asyncio.get_running_loop())
        print(
            f"ready sip={args.sip_host}:{transport.port} esl={args.esl_host}:{esl.port}",
            flush=True,
        )
        log.info(
            "mrfp-builtin ready: sip %s:%d, esl %s:%d, rtp %s:%d-%d",
            args.sip_host,
            transport.port,
            args.esl_host,
            esl.port,
            rtp_host,
            low,
            high,
        )
        await stop.wait()
        log.info("stopping: hanging up %d leg(s)", len(side.calls))
    finally:
        if freezer is not None:
            freezer.stop()
        await side.close()
        await esl.stop()
        await engine.stop()
        endpoint.close()
        await transport.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(run(args))
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
