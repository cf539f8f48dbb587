"""The ``gateway`` command: serve the API, migrate the database."""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn

from gateway.config import Settings
from gateway.logging import configure_logging
from gateway.store import migrate

app = typer.Typer(help="DAC Gateway — FHIR R4 referrals to the DAC platforms.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8080,
) -> None:
    """Run the FHIR API. On the embedded SQLite default the schema is migrated first; on PostgreSQL run
    `gateway db upgrade` before (several processes may share one database)."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    if settings.is_sqlite:
        migrate.upgrade(settings.database_url)
    elif not migrate.is_current(settings.database_url):
        typer.echo("the database schema is not current: run `gateway db upgrade` first", err=True)
        raise typer.Exit(code=2)
    from gateway.api.app import create_app
    from gateway.routing.config import RoutingConfigError

    try:
        application = create_app(settings, with_worker=True)
    except RoutingConfigError as exc:
        typer.echo(f"invalid routing file: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    uvicorn.run(application, host=host, port=port, log_config=None, access_log=False)


@app.command()
def worker() -> None:
    """Run only the background jobs (deadlines; deliveries); several workers may share one PostgreSQL."""
    import asyncio
    import signal

    from gateway.store.database import Database
    from gateway.worker import run_worker

    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    if not migrate.is_current(settings.database_url):
        typer.echo("the database schema is not current: run `gateway db upgrade` first", err=True)
        raise typer.Exit(code=2)

    async def main() -> None:
        database = Database(settings.database_url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            await run_worker(database, settings.scheduler_interval, stop)
        finally:
            await database.dispose()

    asyncio.run(main())


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision")] = "head") -> None:
    """Migrate the schema of GATEWAY_DATABASE_URL to the latest revision."""
    settings = Settings()
    migrate.upgrade(settings.database_url, revision)
    typer.echo(f"database schema at {migrate.head_revision() if revision == 'head' else revision}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
