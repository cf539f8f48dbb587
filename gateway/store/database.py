"""The database: one async engine, SQLite or PostgreSQL, and the units of work opened on it.

Async SQLAlchemy because the whole gateway is one asyncio program — FastAPI routes, the delivery worker and its
httpx client share the event loop — so a driver that waits on a server would stall every request. On PostgreSQL
that is asyncpg.

SQLite is different: it is a library working on a local file, not a server to wait for. A statement takes
microseconds; handing it to a worker thread and back (what aiosqlite does: three or four hops per statement, each
a queue put, a thread wake-up and a self-pipe write) costs more than the statement — about 6 ms of CPU per
referral, measured, half of the intake's cost. So the SQLite connection keeps aiosqlite's interface (SQLAlchemy's
``sqlite+aiosqlite`` dialect drives it) but runs each call at once on the event loop's thread
(``_InlineSQLiteConnection``). What could block is a lock held by another process: writers inside this process
queue on an ``asyncio.Lock`` and never meet one; several processes on one SQLite file are not a deployment we
support (use PostgreSQL for that), and a short ``busy_timeout`` bounds the wait when an operator's command
(``gateway outbox replay``) writes beside a running server.

On PostgreSQL a pooled connection may have died while it waited (the server restarted, a failover), so one
idle for a while is pinged before it is handed out, and a dead one replaced (``_ping_when_idle``). Not every
checkout: SQLAlchemy's ``pool_pre_ping`` does that, and on asyncpg its ping is three round trips (BEGIN, an
empty query, ROLLBACK) — under load as many as the referral's own statements. A connection used a moment ago is
alive or died so recently that the request fails as it would have during the outage (a 503), and the pool
replaces it.

On PostgreSQL a unit of work also begins its transaction only when it first writes (``_begin_before_writing``):
its reads before that run on their own, as autocommit statements, and when its only write is the commit's
flush — one statement on PostgreSQL, atomic by itself — there is no BEGIN or COMMIT at all. A referral's intake
is three look-ups and that flush: four round trips instead of six. Nothing is lost by it: under READ COMMITTED,
which the gateway uses, every statement of a transaction takes a new snapshot anyway, so reads in a transaction
see nothing that reads on their own would not; what needs the transaction — a write, a locking read (``FOR
UPDATE``), any read after a write — comes after the BEGIN.

SQLite allows one writer at a time. Write transactions start with ``BEGIN IMMEDIATE`` (so two never deadlock
upgrading read locks), and inside one process they also queue on an ``asyncio.Lock`` (so they wait their turn
instead of spinning in SQLite's busy handler). Reads never wait: WAL lets them run beside the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any

import aiosqlite
import asyncpg
import structlog
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from gateway.config import async_database_url

log = structlog.get_logger("gateway.store")
_IMMEDIATE = "gateway_sqlite_immediate"
#: PostgreSQL channel on which a process tells the others that it committed deliveries to the outbox.
OUTBOX_CHANNEL = "gateway_outbox"
NOTIFY_GATHER = 0.005  # seconds: the commits of one such moment go out as one notification
_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=5000",
    "PRAGMA foreign_keys=ON",
)


async def wait_for_any(events: Sequence[asyncio.Event], seconds: float) -> None:
    """Until one of ``events`` is set, or ``seconds`` have passed."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


class _RunAtOnce:
    """Stands where aiosqlite keeps the queue to its worker thread: each call runs at once, on this thread, and
    its future is resolved before aiosqlite awaits it (so awaiting it does not even yield to the loop)."""

    def put_nowait(self, item: tuple[asyncio.Future[Any] | None, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except Exception as exc:
            if future is not None:
                future.set_exception(exc)
            return
        if future is not None:
            future.set_result(result)


class _InlineSQLiteConnection(aiosqlite.Connection):
    """aiosqlite's connection without its thread (see the module docstring for why)."""

    def __init__(self, connector: Callable[[], sqlite3.Connection]) -> None:
        super().__init__(connector, iter_chunk_size=64)
        self._tx = _RunAtOnce()  # type: ignore[assignment]

    def __await__(self) -> Generator[Any, None, aiosqlite.Connection]:
        return self._connect().__await__()  # no worker thread to start


def _sqlite_creator(url: str) -> Callable[[], Any]:
    path = make_url(url).database or ":memory:"

    def connect() -> sqlite3.Connection:
        # isolation_level None: we issue BEGIN ourselves (pysqlite's implicit transactions do not know IMMEDIATE).
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in _SQLITE_PRAGMAS:
            connection.execute(pragma)
        return connection

    async def create() -> aiosqlite.Connection:
        return await _InlineSQLiteConnection(connect)

    return create


#: A PostgreSQL connection idle longer than this is pinged before it is handed out again.
PING_AFTER_IDLE_SECONDS = 5.0
_IDLE_SINCE = "gateway_idle_since"


def _ping_when_idle(engine: AsyncEngine) -> None:
    """SQLAlchemy's pattern for pessimistic disconnect handling of its own: raising ``DisconnectionError`` at
    checkout makes the pool discard that connection and check out another (a new one if need be)."""
    pool = engine.sync_engine.pool

    @event.listens_for(pool, "connect")
    def _on_connect(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(pool, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get(_IDLE_SINCE)
        if idle_since is not None and time.monotonic() - idle_since <= PING_AFTER_IDLE_SECONDS:
            return
        try:
            dbapi_connection.ping()
        except Exception as exc:
            raise sa_exc.DisconnectionError(f"a pooled connection is dead ({type(exc).__name__})") from exc


#: Where a PostgreSQL unit of work stands, in its pooled connection's ``info`` (absent: an ordinary connection,
#: whose transaction SQLAlchemy begins before its first statement).
_TRANSACTION = "gateway_transaction"
_DEFERRED = "deferred"  # nothing written yet: statements run on their own (asyncpg autocommit)
_BEGUN = "begun"  # a write came: BEGIN was sent before it, COMMIT or ROLLBACK ends it
_COMMIT_ALONE = "commit-alone"  # the commit's single flush statement, on its own
#: A statement that only reads: a SELECT without a row lock. Anything else (INSERT, UPDATE, DELETE, a WITH that
#: may modify data, SELECT … FOR UPDATE / FOR SHARE) begins the transaction first.
_READ_ONLY = re.compile(r"\s*SELECT\b", re.IGNORECASE)
_LOCKING = re.compile(r"\bFOR\s+(?:NO\s+KEY\s+)?(?:UPDATE|SHARE|KEY\s+SHARE)\b", re.IGNORECASE)


def _begin_before_writing(engine: AsyncEngine) -> None:
    """The asyncpg adapter begins a transaction before a statement unless it is in autocommit mode. Before each
    statement of a deferred unit of work, this puts it in that mode for a plain read (and for the commit's flush
    when nothing was written before), and out of it for good at the first write — the adapter then sends BEGIN
    before that statement."""

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _on_statement(connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        info = connection.info
        state = info.get(_TRANSACTION)
        if state is None or state == _BEGUN:
            return
        adapter = connection.connection.dbapi_connection
        if state == _DEFERRED and not (_READ_ONLY.match(statement) and not _LOCKING.search(statement)):
            info[_TRANSACTION] = _BEGUN
            adapter.autocommit = False
        else:
            adapter.autocommit = True

    @event.listens_for(engine.sync_engine.pool, "checkin")
    def _on_checkin(dbapi_connection: Any, record: Any) -> None:
        if record is not None and record.info.pop(_TRANSACTION, None) is not None and dbapi_connection is not None:
            dbapi_connection.autocommit = False  # the next user of the connection gets an ordinary one


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get(_IMMEDIATE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Database:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = async_database_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        # hide_parameters: a failing statement's error never carries the values (patients' names, INS) into a log.
        options: dict[str, Any] = {"echo": echo, "hide_parameters": True}
        if not self.is_sqlite:
            # force_custom_plan: asyncpg prepares every statement, and after five runs PostgreSQL may switch to a
            # generic plan that cannot see how selective a search's values are — the opposition look-up at every
            # intake (a patient's identifier, status active) then walked every active Consent. Planning each run
            # with its values costs a fraction of a millisecond.
            options |= {
                "pool_size": 10,
                "max_overflow": 10,
                "connect_args": {"server_settings": {"plan_cache_mode": "force_custom_plan"}},
            }
        if self.is_sqlite:
            options["async_creator"] = _sqlite_creator(self.url)
        self.engine = create_async_engine(self.url, **options)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        else:
            _ping_when_idle(self.engine)
            _begin_before_writing(self.engine)
        self._write_lock: asyncio.Lock | None = None
        self._outbox_events: set[asyncio.Event] = set()
        self._notify_others = asyncio.Event()
        #: Called by each unit of work before it commits, with what it wrote (``gateway.store.unit_of_work``):
        #: how a higher room (``gateway.notify``) acts in the transaction of a change without the store knowing it.
        self.change_listeners: list[Any] = []

    @property
    def write_lock(self) -> asyncio.Lock | None:
        """Serialises this process's SQLite writers; None on PostgreSQL, which needs no such thing."""
        if not self.is_sqlite:
            return None
        if self._write_lock is None:
            self._write_lock = asyncio.Lock()
        return self._write_lock

    async def connect(self, *, write: bool) -> AsyncConnection:
        """A connection for a unit of work. On PostgreSQL its transaction is deferred until it first writes (see
        the module docstring)."""
        connection = await self.engine.connect()
        if write and self.is_sqlite:
            await connection.execution_options(**{_IMMEDIATE: True})
        if not self.is_sqlite:
            connection.info[_TRANSACTION] = _DEFERRED
        return connection

    def commit_alone(self, connection: AsyncConnection) -> None:
        """Before a unit of work's commit flush: when nothing was written yet on this PostgreSQL connection, the
        flush — one statement — runs on its own, atomic without BEGIN and COMMIT."""
        if not self.is_sqlite and connection.info.get(_TRANSACTION) == _DEFERRED:
            connection.info[_TRANSACTION] = _COMMIT_ALONE

    async def dispose(self) -> None:
        await self.engine.dispose()

    # --- deliveries committed: wake the workers now rather than at their next poll ---

    def outbox_event(self) -> asyncio.Event:
        """An event set each time deliveries are committed to the outbox — by this process, and on PostgreSQL by
        any process while ``listen_outbox`` runs. A worker waits on it as well as on its poll interval."""
        event = asyncio.Event()
        self._outbox_events.add(event)
        return event

    def drop_outbox_event(self, event: asyncio.Event) -> None:
        self._outbox_events.discard(event)

    def outbox_written(self) -> None:
        """Deliveries were committed by this process: wake its workers now, and (``listen_outbox``) the others'."""
        self._wake_workers()
        self._notify_others.set()

    def _notified(self, connection: Any, pid: int, _channel: str, _payload: str) -> None:
        if pid != connection.get_server_pid():  # not the echo of this process's own NOTIFY
            self._wake_workers()

    def _wake_workers(self) -> None:
        for waiting in self._outbox_events:
            waiting.set()

    async def listen_outbox(self, stop: asyncio.Event, check_every: float = 30.0) -> None:
        """PostgreSQL, until ``stop``, on a connection of its own (opened again when lost): ``LISTEN`` on
        ``OUTBOX_CHANNEL`` and wake this process's workers when another process notifies it; and ``NOTIFY`` it
        when this process committed deliveries.

        Why not NOTIFY inside the committing transaction: PostgreSQL serialises the commits of every notifying
        transaction of the cluster (a lock held through the commit's WAL flush), so intake commits would queue one
        behind the other. Here the notification follows the commit, from this connection, with
        ``synchronous_commit`` off (a notification is no data to make durable), once for all the commits of
        ``NOTIFY_GATHER``. Polling stays the fallback: a notification missed while reconnecting delays a delivery
        by one poll interval, never loses it."""
        if self.is_sqlite:
            return
        dsn = make_url(self.url).set(drivername="postgresql").render_as_string(hide_password=False)
        while not stop.is_set():
            # Any failure here only costs latency (the workers poll): logged, retried, never fatal.
            try:
                connection = await asyncpg.connect(dsn, server_settings={"synchronous_commit": "off"})
            except Exception as exc:
                log.warning("outbox_listen_failed", error_type=type(exc).__name__)
                await wait_for_any([stop], min(5.0, check_every))
                continue
            try:
                await connection.add_listener(OUTBOX_CHANNEL, self._notified)
                while not stop.is_set():
                    await wait_for_any([stop, self._notify_others], check_every)
                    if self._notify_others.is_set():
                        self._notify_others.clear()
                        await connection.execute(f"NOTIFY {OUTBOX_CHANNEL}")
                        await asyncio.sleep(NOTIFY_GATHER)
                    elif not stop.is_set():
                        await connection.execute("SELECT 1")  # a connection lost quietly shows here
            except Exception as exc:
                log.warning("outbox_listen_lost", error_type=type(exc).__name__)
            finally:
                with contextlib.suppress(Exception):
                    await connection.close(timeout=5)
            await wait_for_any([stop], 1.0)  # lost (stop aside): a breath before connecting again
