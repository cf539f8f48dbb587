"""The one place that wires the HTTP application: settings, database, middleware, routes, error handlers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from gateway import __version__
from gateway.api.audit import AuditMiddleware
from gateway.api.errors import install_error_handlers
from gateway.api.http_methods import HttpMethodsMiddleware
from gateway.api.middleware import BodyLimitMiddleware, RequestContextMiddleware
from gateway.api.openapi import install_openapi
from gateway.api.routes import (
    auth,
    conformance,
    consents,
    inbound,
    operations,
    resources,
    subscriptions,
    system,
    tasks,
)
from gateway.audit.buffer import AuditBuffer
from gateway.audit.context import AuditContext, close_audit, open_audit
from gateway.auth.clients import AuthConfigError, load_clients
from gateway.auth.reload import ClientsReloader
from gateway.auth.token_endpoint import Authority
from gateway.auth.tokens import DEVELOPMENT_CLIENT, AccessTokens
from gateway.config import Settings, comma_list, proxy_networks
from gateway.fhir.models import warm_up as warm_up_models
from gateway.inbound.mllp import start_listener
from gateway.inbound.service import mllp_context, take_in_hl7v2, unregistered_sender_ack
from gateway.inbound.service import warm_up as warm_up_mappings
from gateway.logging import configure_logging
from gateway.metrics import MULTIPROCESS_DIR
from gateway.notify.events import listen as notify_changes
from gateway.routing.config import RoutingTable, load_routing
from gateway.store.database import Database
from gateway.validation.engine import warm_up as warm_up_engine
from gateway.worker import notification_base_url, run_worker, settle_heap

log = structlog.get_logger("gateway.auth")
#: What a browser page may send (beyond the CORS-safelisted headers) and read of our answers.
CORS_REQUEST_HEADERS = [
    "Authorization", "Content-Type", "If-Match", "If-None-Exist", "If-None-Match", "If-Modified-Since", "Prefer",
    "X-Provenance", "X-Request-Id",
]  # fmt: skip
CORS_EXPOSED_HEADERS = ["ETag", "Location", "Content-Location", "Last-Modified", "X-Request-Id"]


def load_authority(settings: Settings, routing: RoutingTable) -> Authority | None:
    """Authentication's run-time pieces; None when it is off. A missing secret or clients file, or a bad one,
    stops start-up (AuthConfigError): authentication is on unless GATEWAY_AUTH=off says otherwise."""
    if not settings.auth_enabled:
        return None
    if settings.clients is None:
        raise AuthConfigError("GATEWAY_CLIENTS (the registered clients file) is required; GATEWAY_AUTH=off to develop")
    secret = settings.access_token_secret()
    if secret is None:
        raise AuthConfigError("GATEWAY_AUTH_SECRET or GATEWAY_AUTH_SECRET_FILE is required when GATEWAY_AUTH is on")
    registry = load_clients(settings.clients, frozenset(routing.platforms))
    return Authority(registry, AccessTokens(secret, settings.access_token_lifetime), settings.token_url)


@contextlib.contextmanager
def reload_on_sighup(reloader: ClientsReloader) -> Iterator[None]:
    """``SIGHUP`` reads the clients file again, while the block runs (the process's main thread only: elsewhere, as
    in tests driving the application in a thread, the file watch alone does it)."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, reloader.reload)
    except (NotImplementedError, RuntimeError, ValueError, AttributeError):  # not the main thread; no SIGHUP
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)


def create_app(
    settings: Settings | None = None,
    database: Database | None = None,
    routing: RoutingTable | None = None,
    *,
    with_worker: bool = False,
) -> FastAPI:
    """The application; the routing file is read here, so a bad one stops start-up (RoutingConfigError)."""
    settings = settings or Settings()
    database = database or Database(settings.database_url)
    routing = routing or load_routing(settings.routing)
    authority = load_authority(settings, routing)
    # The clients file, watched and read again on SIGHUP once serving: registrations change without restart (DESIGN
    # §11). Made here, just after the file was read, so that a change during start-up is seen as one.
    reloader = (
        ClientsReloader(settings.clients, frozenset(routing.platforms), authority.registry)
        if authority is not None and settings.clients is not None
        else None
    )
    audit = AuditBuffer(database)
    # Subscriptions' events are numbered and queued in the transaction of each change (gateway.notify).
    notify_changes(database, notification_base_url(settings))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        warm_up_models()  # XML and the Task / Consent paths still build R4B models
        warm_up_engine()  # the profiles compiled once, before the first request
        warm_up_mappings()  # the HL7 v2 and CDA rules read once: a broken file stops start-up
        # What start-up built (profiles, compiled FHIRPath, models, routing) lives as long as the process: frozen,
        # the garbage collector stops walking it at every full collection (a few % of a referral's CPU).
        settle_heap()
        if authority is None:
            log.warning(
                "authentication_off",
                detail="GATEWAY_AUTH=off: every caller is an operator allowed everything. For development only; "
                "never with real patients' data.",
            )
        audit.start()
        stop = asyncio.Event()
        registry = authority.registry if authority is not None else None
        worker = (
            asyncio.create_task(run_worker(database, routing, settings, stop, registry=registry))
            if with_worker
            else None
        )
        watch = asyncio.create_task(reloader.watch(stop)) if reloader is not None else None
        listener = await _start_mllp(settings, database, routing, authority)
        try:
            with reload_on_sighup(reloader) if reloader is not None else contextlib.nullcontext():
                yield
        finally:
            if listener is not None:
                listener.close()
            stop.set()
            if watch is not None:
                await watch
            if worker is not None:
                await worker
            await audit.stop()
            if authority is not None:
                await authority.remote_keys.aclose()
            await database.dispose()

    app = FastAPI(
        title="DAC Gateway",
        version=__version__,
        description="FHIR R4 gateway for referrals to the French DAC platforms",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's page loads its scripts from a CDN: the console's API page is ours (/console/api)
        redoc_url=None,
        redirect_slashes=False,  # HttpMethodsMiddleware answers /fhir/ as /fhir, without a redirect
    )
    app.state.settings = settings
    app.state.database = database
    app.state.routing = routing
    app.state.authority = authority
    app.state.audit = audit
    install_error_handlers(app)
    install_openapi(app)
    app.include_router(operations.router)
    app.include_router(auth.router)
    app.include_router(system.router)
    app.include_router(tasks.router)
    app.include_router(consents.router)
    app.include_router(subscriptions.router)
    app.include_router(conformance.router)  # before resources: /fhir/StructureDefinition… are its own
    app.include_router(resources.router)
    app.include_router(inbound.router)
    if settings.console_enabled:
        from gateway.console import install_console

        install_console(app)
    app.add_middleware(AuditMiddleware, buffer=audit)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes, body_timeout=settings.body_timeout)
    app.add_middleware(RequestContextMiddleware)
    app.add_middleware(HttpMethodsMiddleware, routes=app.router.routes)
    if origins := comma_list(settings.cors_origins):
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "OPTIONS"],
            allow_headers=CORS_REQUEST_HEADERS,
            expose_headers=CORS_EXPOSED_HEADERS,
        )
    return app


async def _start_mllp(
    settings: Settings, database: Database, routing: RoutingTable, authority: Authority | None
) -> asyncio.Server | None:
    """The MLLP listener (DESIGN §13) on this process's event loop, when ``GATEWAY_MLLP_PORT`` is set; several
    ``serve --workers`` processes share its port (SO_REUSEPORT). Whom it takes messages in as: ``mllp_context``,
    read again for each message (a clients file changed while running applies)."""
    if settings.mllp_port is None:
        return None
    mllp_context(settings, database, routing, authority)  # a sender that cannot be stops start-up

    async def handle(payload: bytes) -> bytes:
        try:
            context = mllp_context(settings, database, routing, authority)
        except AuthConfigError:
            log.error("mllp_sender_unregistered", client_id=settings.mllp_client_id)
            context = None
        if context is None:
            return unregistered_sender_ack(payload)
        # No request to audit: what its intake commits is audited in its transaction, as the MLLP sender's.
        audit = open_audit(AuditContext("transaction", client_id=context.sender or DEVELOPMENT_CLIENT.client_id))
        try:
            return (await take_in_hl7v2(payload, context)).ack
        finally:
            close_audit(audit)

    allowed = proxy_networks(settings.mllp_allow)
    server = await start_listener(
        handle, settings.mllp_host, settings.mllp_port, allowed, reuse_port=MULTIPROCESS_DIR in os.environ
    )
    log.info("mllp_listening", host=settings.mllp_host, port=settings.mllp_port)
    return server


def create_served_app() -> FastAPI:
    """What each process of ``gateway serve --workers N`` runs: the settings from the environment ``serve``
    prepared (``GATEWAY_LISTEN_URL`` included), the API and the delivery worker."""
    # SIGHUP reads the clients file again (``reload_on_sighup``, once the application runs); until then it must not
    # end the process, as it does by default: ``serve`` passes it on to every process.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    return create_app(settings, with_worker=True)
