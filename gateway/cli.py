"""The ``gateway`` command: serve the API, migrate the database."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn

from gateway.config import Settings
from gateway.logging import configure_logging
from gateway.metrics import MULTIPROCESS_DIR

app = typer.Typer(help="DAC Gateway — FHIR R4 referrals to the DAC platforms.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _settings() -> Settings:
    """The settings, or a one-line message and exit status 2 (no traceback) when the environment is wrong."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(step) for step in error["loc"])
            typer.echo(
                f"invalid configuration: {'GATEWAY_' + where.upper() + ': ' if where else ''}{error['msg']}", err=True
            )
        raise typer.Exit(code=2) from exc


def _definitions(*, compile_engine: bool) -> None:
    """The FHIR definitions loaded (and compiled, for what validates), or a message and exit status 2: without
    them the gateway would take in whatever it is sent, so it never starts so (DESIGN §15)."""
    from gateway.conformance.files import DefinitionsNotFound, check_definitions

    try:
        check_definitions()
        if compile_engine:
            from gateway.validation.engine import warm_up

            warm_up()
    except DefinitionsNotFound as exc:
        typer.echo(f"cannot load the FHIR definitions: {exc}", err=True)
        raise typer.Exit(code=2) from exc


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host  # an IPv6 address, bracketed in a URL


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8080,
    workers: Annotated[
        int, typer.Option(min=1, help="API processes behind the port, each with its delivery worker (PostgreSQL)")
    ] = 1,
    mllp_port: Annotated[
        int | None,
        typer.Option(help="Also take HL7 v2 over MLLP on this port (GATEWAY_MLLP_HOST, default 127.0.0.1)"),
    ] = None,
) -> None:
    """Run the FHIR API. On the embedded SQLite default the schema is migrated first; on PostgreSQL run
    `gateway db upgrade` before (several processes may share one database)."""
    import signal

    # SIGHUP reads the clients file again once serving (gateway.api.app.reload_on_sighup); during the seconds of
    # start-up (profiles compiled, schema checked) it must not end the process, as it does by default.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    settings = _settings()
    _definitions(compile_engine=True)
    # Our own address, for the messages the worker sends (MessageHeader.source, fullUrls) when GATEWAY_BASE_URL is
    # unset; answers to requests take theirs from the request (gateway.api.base_url).
    settings = settings.model_copy(update={"listen_url": f"http://{_url_host(host)}:{port}/fhir"})
    if mllp_port is not None:
        settings = settings.model_copy(update={"mllp_port": mllp_port})
    configure_logging(settings.log_level, settings.log_json)
    from gateway.store import migrate  # here: the commands that need no database load none of it

    if settings.is_sqlite:
        if workers > 1:
            # One writer at a time, and statements run on each process's event loop: processes would wait on
            # each other's locks. Several processes are PostgreSQL's job.
            typer.echo("--workers > 1 needs PostgreSQL (GATEWAY_DATABASE_URL); SQLite serves one process", err=True)
            raise typer.Exit(code=2)
        migrate.upgrade(settings.database_url)
    elif not migrate.is_current(settings.database_url):
        typer.echo("the database schema is not current: run `gateway db upgrade` first", err=True)
        raise typer.Exit(code=2)
    from gateway.api.app import create_app, load_authority
    from gateway.auth.clients import AuthConfigError
    from gateway.inbound.mapping import MappingError
    from gateway.inbound.service import warm_up as warm_up_mappings
    from gateway.routing.config import RoutingConfigError, load_routing

    try:
        warm_up_mappings()  # the HL7 v2 and CDA rules (mappings/): a broken file stops start-up, named
    except MappingError as exc:
        typer.echo(f"invalid mapping rules: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    try:
        routing = load_routing(settings.routing)  # here, so a bad file stops start-up with its line number
    except RoutingConfigError as exc:
        typer.echo(f"invalid routing file: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    try:
        authority = load_authority(settings, routing)  # here too: every worker process would refuse the same way
        if settings.mllp_port is not None:
            from gateway.inbound.service import mllp_context

            mllp_context(settings, None, routing, authority)  # type: ignore[arg-type]  # the sender only
    except AuthConfigError as exc:
        typer.echo(f"authentication cannot start: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    # httptools, with the bound on headers it lacks (gateway.api.http_parser): a 10 MB header was accepted.
    from gateway.api.http_parser import BoundedHttpToolsProtocol

    if workers == 1:
        uvicorn.run(
            create_app(settings, routing=routing, with_worker=True),
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            proxy_headers=False,  # X-Forwarded-* are read by gateway.api.base_url, from GATEWAY_TRUSTED_PROXIES
            http=BoundedHttpToolsProtocol,
            h11_max_incomplete_event_size=settings.max_header_bytes,
        )
        return
    # Each process builds its own application from the environment: what this one decided goes there.
    os.environ["GATEWAY_LISTEN_URL"] = str(settings.listen_url)
    if settings.mllp_port is not None:
        os.environ["GATEWAY_MLLP_PORT"] = str(settings.mllp_port)
    with tempfile.TemporaryDirectory(prefix="gateway-metrics-") as metrics_dir:
        os.environ.setdefault(MULTIPROCESS_DIR, metrics_dir)
        config = uvicorn.Config(
            "gateway.api.app:create_served_app",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            proxy_headers=False,  # X-Forwarded-* are read by gateway.api.base_url, from GATEWAY_TRUSTED_PROXIES
            http=BoundedHttpToolsProtocol,
            h11_max_incomplete_event_size=settings.max_header_bytes,
        )
        _supervise(config)


def _supervise(config: uvicorn.Config) -> None:
    """uvicorn's supervisor of the ``--workers`` processes (what ``uvicorn.run`` runs for them), except that a
    ``SIGHUP`` is passed on to each process — each reads the clients file again (``gateway.auth.reload``) — where
    uvicorn would restart them all."""
    import signal

    from uvicorn.supervisors import Multiprocess

    class Supervisor(Multiprocess):
        def handle_hup(self) -> None:
            for process in self.processes:
                if process.pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(process.pid, signal.SIGHUP)

    with contextlib.suppress(KeyboardInterrupt):
        Supervisor(config, sockets=[config.bind_socket()]).run()


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="FHIR JSON or XML files", exists=True)],
    profile: Annotated[
        str | None, typer.Option(help="canonical URL of the profile to check against (default: by resource type)")
    ] = None,
) -> None:
    """Validate resources or referral bundles offline; exit status 1 when any has an error."""
    from gateway.errors import GatewayError
    from gateway.fhir.codec import parse_resource
    from gateway.fhir.media import FhirFormat
    from gateway.validation.validate import validate as validate_resource

    _definitions(compile_engine=True)
    failed = False
    for path in files:
        fmt = FhirFormat.XML if path.suffix.lower() == ".xml" else FhirFormat.JSON
        try:
            issues = validate_resource(parse_resource(path.read_bytes(), fmt), profile)
        except GatewayError as exc:
            issues = list(exc.issues)
        errors = [issue for issue in issues if issue.severity in ("error", "fatal")]
        failed = failed or bool(errors)
        typer.echo(
            f"{path}: {'INVALID' if errors else 'valid'} ({len(errors)} error(s), {len(issues) - len(errors)} other)"
        )
        for issue in issues:
            where = f" at {issue.expression}" if issue.expression else ""
            typer.echo(f"  {issue.severity:<11} {issue.code}{where}: {issue.diagnostics}")
    raise typer.Exit(code=1 if failed else 0)


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (it comes with uvicorn[standard], which ``serve`` already runs on): the worker spends
    much of its time in the event loop's socket handling."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


@app.command()
def worker() -> None:
    """Run only the background jobs (deadlines; deliveries); several workers may share one PostgreSQL."""
    import signal

    from gateway.auth.clients import AuthConfigError, ClientRegistry, load_clients
    from gateway.routing.config import RoutingConfigError, load_routing
    from gateway.store.database import Database
    from gateway.worker import run_worker, settle_heap

    settings = _settings()
    if settings.is_sqlite:
        # As for `serve --workers`: statements run inline on each process's event loop and SQLite has one writer,
        # so a worker process beside `gateway serve` on one file would block that loop on its locks (and the API's
        # would block it). On SQLite, `gateway serve` runs the worker in its own process.
        typer.echo(
            "`gateway worker` needs PostgreSQL (GATEWAY_DATABASE_URL); on SQLite `gateway serve` runs the worker",
            err=True,
        )
        raise typer.Exit(code=2)
    _definitions(compile_engine=False)  # what it sends and writes is built on them too
    try:
        routing = load_routing(settings.routing)
    except RoutingConfigError as exc:
        typer.echo(f"invalid routing file: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    registry: ClientRegistry | None = None  # the registrations' auth blocks: how updates back authenticate
    if settings.auth_enabled and settings.clients is not None:
        try:
            registry = load_clients(settings.clients, frozenset(routing.platforms))
        except AuthConfigError as exc:
            typer.echo(f"authentication cannot start: {exc}", err=True)
            raise typer.Exit(code=2) from exc
    configure_logging(settings.log_level, settings.log_json)
    from gateway.store import migrate

    if not migrate.is_current(settings.database_url):
        typer.echo("the database schema is not current: run `gateway db upgrade` first", err=True)
        raise typer.Exit(code=2)

    async def main() -> None:
        from gateway.auth.reload import ClientsReloader

        database = Database(settings.database_url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        watch = None
        if registry is not None and settings.clients is not None:  # the updates back follow the clients file
            reloader = ClientsReloader(settings.clients, frozenset(routing.platforms), registry)
            loop.add_signal_handler(signal.SIGHUP, reloader.reload)
            watch = asyncio.create_task(reloader.watch(stop))
        settle_heap()  # as `gateway serve` does once started
        try:
            await run_worker(database, routing, settings, stop, registry=registry)
        finally:
            if watch is not None:
                await watch
            await database.dispose()

    with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
        runner.run(main())


outbox_app = typer.Typer(help="Deliveries waiting, delivered and dead-lettered.", no_args_is_help=True)
app.add_typer(outbox_app, name="outbox")


def _run_store(job: Any) -> Any:
    import asyncio

    from gateway.store.database import Database

    async def main() -> Any:
        database = Database(Settings().database_url)
        try:
            return await job(database)
        finally:
            await database.dispose()

    return asyncio.run(main())


@outbox_app.command("list")
def outbox_list(
    status: Annotated[str | None, typer.Option(help="pending, delivered or dead")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first")] = 50,
) -> None:
    """List deliveries (id, destination, event, status, attempts, last error)."""
    from gateway.routing.destinations import shown_destination
    from gateway.store.unit_of_work import UnitOfWork

    async def job(database: Any) -> Any:
        async with UnitOfWork(database, write=False) as uow:
            return await uow.outbox.entries(status, limit)

    entries = _run_store(job)
    for entry in entries:
        shown = shown_destination(entry.destination)  # a sender's callback without its URL's credentials or token
        typer.echo(
            f"{entry.id}  {entry.status:<9} {shown:<24} {entry.event:<17} attempts={entry.attempts}"
            + (f"  last_error={entry.last_error}" if entry.last_error else "")
        )
    if not entries:
        typer.echo("no deliveries")


@outbox_app.command("replay")
def outbox_replay(delivery_id: Annotated[str, typer.Argument(help="The delivery (MessageHeader) id")]) -> None:
    """Queue a dead-lettered delivery again, under the same id (receivers drop duplicates by it); a Subscription's
    notification goes back ahead of the ones that waited behind it."""
    from gateway.fhir.primitives import utc_now
    from gateway.store.unit_of_work import UnitOfWork

    async def job(database: Any) -> bool:
        async with UnitOfWork(database) as uow:
            done = await uow.replay_delivery(delivery_id, utc_now())
            await uow.commit()
        return done

    if not _run_store(job):
        typer.echo(
            f"no delivery {delivery_id} to replay (or it is still queued, or its Subscription is off, in error or "
            "deleted)",
            err=True,
        )
        raise typer.Exit(code=1)
    typer.echo(f"delivery {delivery_id} queued again")


kit_app = typer.Typer(help="The conformance kit: every example posted, its answer checked.", no_args_is_help=True)
app.add_typer(kit_app, name="kit")


def _kit_client(base: str, client_id: str | None, key: Path | None) -> Any:
    """An httpx client on the FHIR base, with an access token when a client and its key are given."""
    import httpx

    from gateway.kit._run import TIMEOUT

    headers: dict[str, str] = {}
    if (client_id is None) != (key is None):
        typer.echo("--client-id and --key go together", err=True)
        raise typer.Exit(code=2)
    if client_id is not None and key is not None:
        from gateway.auth.client_tokens import TokenRequestFailed, request_token

        try:
            headers["Authorization"] = f"Bearer {request_token(base, client_id, key, [])}"
        except TokenRequestFailed as exc:
            typer.echo(f"no access token: {exc}", err=True)
            raise typer.Exit(code=2) from exc
    return httpx.Client(base_url=base.rstrip("/"), timeout=TIMEOUT, headers=headers)


def _kit_examples(examples: Path | None) -> tuple[Path, Any]:
    from gateway.conformance.files import examples_dir
    from gateway.kit import discover

    folder = examples or examples_dir()
    return folder, discover(folder)


BaseOption = Annotated[str, typer.Option("--base", help="The server's FHIR base URL (http://127.0.0.1:8080/fhir)")]
ClientIdOption = Annotated[str | None, typer.Option("--client-id", help="A registered client (authentication on)")]
KeyOption = Annotated[
    Path | None, typer.Option("--key", help="That client's private key (PEM or JWK)", exists=True, dir_okay=False)
]
ExamplesOption = Annotated[
    Path | None, typer.Option("--examples", help="The examples folder (default: those installed with the gateway)")
]


@kit_app.command("run")
def kit_run(
    base: BaseOption,
    client_id: ClientIdOption = None,
    key: KeyOption = None,
    junit: Annotated[Path | None, typer.Option("--junit", help="Also write a JUnit XML report there")] = None,
    examples: ExamplesOption = None,
) -> None:
    """Post every example to the server at --base and check what expected.json records: one line per example,
    then "N passed, M failed"; exit status 0 only when all pass."""
    import json

    from gateway.kit import junit_xml, run_kit

    folder, found = _kit_examples(examples)
    expected = json.loads((folder / "expected.json").read_text(encoding="utf-8"))
    with _kit_client(base, client_id, key) as client:
        outcomes = run_kit(client, found, expected, typer.echo)
    failed = sum(not outcome.passed for outcome in outcomes)
    typer.echo(f"{len(outcomes) - failed} passed, {failed} failed")
    if junit is not None:
        junit_xml(outcomes, junit)
    raise typer.Exit(code=1 if failed or not outcomes else 0)


@kit_app.command("record")
def kit_record(
    base: BaseOption,
    output: Annotated[Path, typer.Option("--output", help="Where to write the expectations")],
    client_id: ClientIdOption = None,
    key: KeyOption = None,
    examples: ExamplesOption = None,
) -> None:
    """Post every example and write what was observed as the expectations (to review before committing them),
    in the order of the existing expected.json, new examples last."""
    import json

    from gateway.kit import observe

    folder, found = _kit_examples(examples)
    current = folder / "expected.json"
    order = list(json.loads(current.read_text(encoding="utf-8"))) if current.is_file() else []
    by_name = {example.name: example for example in found}
    names = [name for name in order if name in by_name] + [name for name in by_name if name not in order]
    recorded = {}
    with _kit_client(base, client_id, key) as client:
        for name in names:
            recorded[name] = observe(client, by_name[name])
            typer.echo(f"{name}: {recorded[name]['status']}")
    output.write_text(json.dumps(recorded, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision")] = "head") -> None:
    """Migrate the schema of GATEWAY_DATABASE_URL to the latest revision."""
    from gateway.store import migrate

    settings = Settings()
    migrate.upgrade(settings.database_url, revision)
    typer.echo(f"database schema at {migrate.head_revision() if revision == 'head' else revision}")


clients_app = typer.Typer(
    help="The registered API clients (GATEWAY_CLIENTS): onboarding and key rotation (DESIGN §11). A running gateway "
    "takes the changes within a second, without restart.",
    no_args_is_help=True,
)
app.add_typer(clients_app, name="clients")
ClientsFileOption = Annotated[
    Path | None, typer.Option("--file", envvar="GATEWAY_CLIENTS", help="The clients file (TOML); created if missing")
]


def _fail(message: str, code: int = 1) -> typer.Exit:
    """One line on stderr saying what is wrong; the exit to raise."""
    typer.echo(message, err=True)
    return typer.Exit(code=code)


def _clients_file(path: Path | None) -> Path:
    if path is None:
        raise _fail("no clients file: set GATEWAY_CLIENTS (export GATEWAY_CLIENTS=clients.toml) or pass --file", 2)
    return path


def _platform_keys() -> frozenset[str]:
    """The routing file's platform keys (GATEWAY_ROUTING): what a platform client may name."""
    from gateway.routing.config import RoutingConfigError, load_routing

    try:
        return frozenset(load_routing(_settings().routing).platforms)
    except RoutingConfigError as exc:
        raise _fail(f"invalid routing file: {exc}", 2) from exc


def _grace(text: str) -> float:
    """Seconds of a grace period: ``90s``, ``15m``, ``12h``, ``7d``, or an ISO 8601 duration (``PT90S``, ``P7D``)."""
    import isodate

    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
            seconds = float(text[:-1]) * units[text[-1]]
        else:
            seconds = isodate.parse_duration(text).total_seconds()
    except (isodate.ISO8601Error, ValueError, AttributeError):
        raise _fail(f"--grace {text!r}: a duration such as 90s, 15m, 12h, 7d or P7D") from None
    if seconds <= 0:
        raise _fail(f"--grace {text!r}: a duration greater than zero")
    return float(seconds)


@clients_app.command("add")
def clients_add(
    client_id: Annotated[str, typer.Argument(help="The client id (also its key file's default name)")],
    role: Annotated[str, typer.Option(help="sender, platform, practitioner or operator")],
    platform: Annotated[str | None, typer.Option(help="A platform key of the routing file (role platform)")] = None,
    rpps: Annotated[
        list[str] | None, typer.Option(help="RPPS number of a professional it acts for (role practitioner; repeat)")
    ] = None,
    scope: Annotated[list[str] | None, typer.Option(help="A SMART scope (repeat); default: the role's")] = None,
    endpoint: Annotated[
        list[str] | None, typer.Option(help="An https base URL it may be called back at (repeat)")
    ] = None,
    key_out: Annotated[Path | None, typer.Option(help="Where to write its private key (default: ./ID.pem)")] = None,
    file: ClientsFileOption = None,
) -> None:
    """Register a client: make its EC P-384 key pair, write the private key (PEM, mode 0600, never printed) and add
    the client with its public key to the clients file."""
    from gateway.auth.keypairs import KeyFileError, new_private_key, public_jwk, write_private_key
    from gateway.onboarding import (
        RegistrationError,
        add_client,
        editing,
        new_client,
        read_document,
        write_document,
    )

    path = _clients_file(file)
    platforms = _platform_keys()
    key_path = key_out or Path(f"{client_id}.pem")
    try:
        client = new_client(
            client_id, role, sorted(platforms), platform=platform, rpps=rpps or (), scopes=scope or (),
            endpoints=endpoint or (),
        )  # fmt: skip
        with editing(path):
            document = read_document(path)
            key = new_private_key()
            jwk = public_jwk(key)
            add_client(document, client, jwk, path)
            write_private_key(key_path, key)
            try:
                write_document(path, document, platforms)
            except RegistrationError:
                key_path.unlink()  # no key left behind for a client that was not registered
                raise
    except (RegistrationError, KeyFileError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"client {client.client_id} ({client.role}) added to {path}, key {jwk['kid']}")
    typer.echo(f"scopes: {' '.join(client.scopes)}")
    typer.echo(f"private key written to {key_path} (mode 0600): keep it secret, it is stored nowhere else")


@clients_app.command("list")
def clients_list(file: ClientsFileOption = None) -> None:
    """List the registered clients: role, platform or RPPS numbers, scopes, endpoints, keys (with their end)."""
    from gateway.onboarding import RegistrationError, listing, read_document

    path = _clients_file(file)
    try:
        shown = listing(read_document(path))
    except RegistrationError as exc:
        raise _fail(str(exc)) from None
    for client in shown:
        bound = f" platform={client.platform}" if client.platform else ""
        bound += f" rpps={','.join(client.rpps)}" if client.rpps else ""
        typer.echo(f"{client.client_id}  {client.role}{bound}  scopes={' '.join(client.scopes)}")
        if client.endpoints:
            typer.echo(f"  endpoints: {' '.join(client.endpoints)}")
        if client.keys_from:
            typer.echo(f"  keys: {client.keys_from}")
        for key in client.keys:
            typer.echo(f"  key {key.kid}" + (f"  expires {key.expires.isoformat()}" if key.expires else ""))
    if not shown:
        typer.echo(f"no clients in {path}")


def _rewrite(path: Path, change: Callable[[Any], Any]) -> Any:
    """Reads the clients file, applies ``change`` to it and writes it back once the gateway would take it."""
    from gateway.onboarding import RegistrationError, editing, read_document, write_document

    platforms = _platform_keys()
    try:
        if not path.exists():
            raise RegistrationError(f"{path} does not exist")
        with editing(path):
            document = read_document(path)
            result = change(document)
            write_document(path, document, platforms)
    except RegistrationError as exc:
        raise _fail(str(exc)) from None
    return result


@clients_app.command("remove")
def clients_remove(
    client_id: Annotated[str, typer.Argument(help="The client id")], file: ClientsFileOption = None
) -> None:
    """Remove a client: within a second a running gateway refuses its token requests, and the access tokens it
    already holds."""
    from gateway.onboarding import remove_client

    path = _clients_file(file)
    _rewrite(path, lambda document: remove_client(document, client_id, path))
    typer.echo(f"client {client_id} removed from {path}")


@clients_app.command("rotate-key")
def clients_rotate_key(
    client_id: Annotated[str, typer.Argument(help="The client id")],
    grace: Annotated[
        str | None,
        typer.Option(help="How long its current keys stay accepted (90s, 15m, 12h, 7d); default: until remove-key"),
    ] = None,
    key_out: Annotated[
        Path | None, typer.Option(help="Where to write the new private key (default: ./ID-KID.pem)")
    ] = None,
    file: ClientsFileOption = None,
) -> None:
    """Give a client a new key pair: both the old and the new key are accepted until the old is removed
    (`remove-key`) or its grace period ends."""
    import math
    import time
    from datetime import UTC, datetime

    from gateway.auth.keypairs import KeyFileError, new_private_key, public_jwk, write_private_key
    from gateway.onboarding import rotate_key

    path = _clients_file(file)
    seconds = _grace(grace) if grace is not None else None
    expires = datetime.fromtimestamp(math.ceil(time.time() + seconds), UTC) if seconds is not None else None
    key = new_private_key()
    jwk = public_jwk(key)
    key_path = key_out or Path(f"{client_id}-{jwk['kid'][:8]}.pem")
    if key_path.exists():
        raise _fail(f"{key_path} exists already; a key file is never overwritten (choose another --key-out)")
    old = _rewrite(path, lambda document: rotate_key(document, client_id, jwk, expires, path))
    try:
        write_private_key(key_path, key)
    except KeyFileError as exc:  # the file was registered: say so, the operator removes the key or retries
        raise _fail(
            f"{exc}; the new key {jwk['kid']} is registered: gateway clients remove-key {client_id} {jwk['kid']}"
        ) from None
    typer.echo(f"client {client_id}: new key {jwk['kid']}, private key written to {key_path} (mode 0600)")
    until = (
        f"until {expires.isoformat()}" if expires is not None else f"until gateway clients remove-key {client_id} KID"
    )
    typer.echo(f"still accepted {until}: {', '.join(old)}")


@clients_app.command("remove-key")
def clients_remove_key(
    client_id: Annotated[str, typer.Argument(help="The client id")],
    kid: Annotated[str, typer.Argument(help="The key's kid (gateway clients list)")],
    file: ClientsFileOption = None,
) -> None:
    """Stop accepting one of a client's keys (the end of a rotation)."""
    from gateway.onboarding import remove_key

    path = _clients_file(file)
    _rewrite(path, lambda document: remove_key(document, client_id, kid, path))
    typer.echo(f"client {client_id}: key {kid} removed")


@app.command()
def token(
    client_id: Annotated[str, typer.Option(help="The client id it is registered under")],
    key: Annotated[Path, typer.Option(help="Its private key (PEM), as `gateway clients add` wrote it")],
    scope: Annotated[list[str] | None, typer.Option(help="A scope to ask for (repeat); default: all it has")] = None,
    base: Annotated[
        str, typer.Option(envvar="GATEWAY_BASE_URL", help="The gateway (its root or its FHIR base)")
    ] = "http://127.0.0.1:8080",
    kid: Annotated[str | None, typer.Option(help="The registered kid, when it is not the key's thumbprint")] = None,
) -> None:
    """Get an access token (SMART Backend Services: an assertion signed with the key, posted to /auth/token) and
    print it alone, for `curl -H "Authorization: Bearer $(gateway token …)"`."""
    from gateway.auth.client_tokens import TokenRequestFailed, request_token

    try:
        typer.echo(request_token(base, client_id, key, scope or [], kid=kid))
    except TokenRequestFailed as exc:
        raise _fail(f"no token: {exc}") from None


@app.command()
def secret() -> None:
    """Print a fresh GATEWAY_AUTH_SECRET (64 random characters): the key the gateway signs its access tokens with,
    the same for all its processes."""
    import secrets

    typer.echo(secrets.token_urlsafe(48))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
