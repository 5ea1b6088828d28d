"""The MRFC-AS process: SIP focus, MRFP control and REST API in one asyncio event loop."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from contextlib import nullcontext, suppress

from app.api import create_app
from app.db.migrate import migrate
from app.db.session import make_engine, make_session_factory
from app.focus.core import FocusConfig
from app.mrfp.freeswitch import FreeSwitchNode
from app.mrfp.pool import MrfpPool
from app.net.endpoint import SipEndpoint
from app.net.transport import SipTransport
from app.service.events import EventBus
from app.service.focus_service import FocusService
from app.service.metrics import Metrics
from app.service.persistence import DatabaseWriter
from app.settings import Settings
from app.sip.transaction import Timers

log = logging.getLogger("mrfc")


def focus_config(settings: Settings) -> FocusConfig:
    sip = settings.sip
    return FocusConfig(
        factory_uris=list(settings.conference.factory_uris),
        conference_domain=settings.conference.uri_domain,
        local_contact=f"sip:mrfc@{sip.contact_host}:{sip.listen_port}",
        mrfp_uri={n.name: f"sip:{n.sip_host}:{n.sip_port}" for n in settings.mrfp.nodes},
        participant_limit=settings.conference.max_participants,
        outbound_proxy=sip.outbound_proxy or None,
        t1=settings.timers.t1_ms / 1000,
        t2=settings.timers.t2_ms / 1000,
    )


async def run(settings: Settings, *, ready: asyncio.Event | None = None) -> None:
    """Run until cancelled (SIGINT/SIGTERM in `main`)."""
    import uvicorn

    migrate(settings.database.url)
    engine = make_engine(settings.database.url)
    session_factory = make_session_factory(engine)
    bus = EventBus()
    metrics = Metrics()
    sip = settings.sip
    transport = SipTransport(sip.listen_host, sip.listen_port)
    endpoint = SipEndpoint(
        transport,
        sip.contact_host,
        sip.listen_port,
        timers=Timers(
            settings.timers.t1_ms / 1000, settings.timers.t2_ms / 1000, settings.timers.t4_ms / 1000
        ),
    )
    transport.on_message = endpoint.receive
    nodes = [
        FreeSwitchNode(n.name, n.esl_host, n.esl_port, n.esl_password.get_secret_value())
        for n in settings.mrfp.nodes
    ]
    writer = DatabaseWriter(session_factory)
    service = FocusService(
        focus_config(settings),
        endpoint,
        MrfpPool(nodes),
        bus=bus,
        metrics=metrics,
        persist=writer,
        trusted=sip.trusted_networks(),
        untrusted_action=sip.untrusted_action,
    )
    api = create_app(settings, session_factory, service, bus, metrics=metrics)
    server = uvicorn.Server(
        uvicorn.Config(
            api,
            host=settings.api.host,
            port=settings.api.port,
            log_level=settings.log.level.lower(),
            access_log=False,
            lifespan="on",
        )
    )
    # The process's own handlers stop everything in order; uvicorn must not take the signals.
    server.capture_signals = nullcontext  # type: ignore[method-assign,assignment]
    await transport.start()
    await service.start()
    # Restart without loss: conferences that were running come back before SIP is served.
    await service.restore(session_factory)
    api_task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if api_task.done():
                api_task.result()
                raise RuntimeError("the REST API did not start")
            await asyncio.sleep(0.05)
        log.info(
            "ready sip=%s:%d api=http://%s:%d",
            sip.listen_host,
            sip.listen_port,
            settings.api.host,
            settings.api.port,
        )
        print(
            f"ready sip={sip.listen_host}:{sip.listen_port} "
            f"api=http://{settings.api.host}:{settings.api.port}",
            flush=True,
        )
        if ready is not None:
            ready.set()
        # Shielded: a stop (SIGTERM cancels this task) must not cancel the server mid-way;
        # it is asked to exit below and finishes its lifespan cleanly.
        await asyncio.shield(api_task)
    finally:
        server.should_exit = True
        with suppress(Exception):
            await asyncio.wait_for(api_task, 5)
        await service.stop()  # the last changes are written before it returns
        writer.close()
        await transport.stop()
        endpoint.close()
        bus.close()
        engine.dispose()


def main(settings: Settings) -> int:
    async def runner() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with suppress(asyncio.CancelledError):
            await run(settings)

    try:
        asyncio.run(runner())
    except Exception as exc:
        log.exception("the MRFC-AS stopped: %s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    import argparse

    from app.settings import SettingsError, load_settings

    parser = argparse.ArgumentParser(prog="python -m app.main", description=__doc__)
    parser.add_argument("--config", help="TOML configuration file (default: $MRFC_CONFIG)")
    args = parser.parse_args()
    try:
        loaded = load_settings(args.config)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(
        level=loaded.log.level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    sys.exit(main(loaded))
