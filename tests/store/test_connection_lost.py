"""Which database errors mean "the database is out of reach" (a 503 store-unavailable, retry later) rather than
a failed statement. Regression: a connection lost mid-transaction (PostgreSQL restarted) was a 500."""

from __future__ import annotations

from sqlalchemy import exc as sa_exc

from gateway.store.unit_of_work import connection_lost


class _DriverError(Exception):
    def __init__(self, sqlstate: str | None) -> None:
        super().__init__("driver error")
        self.sqlstate = sqlstate


def _dbapi(cls: type[sa_exc.DBAPIError], sqlstate: str | None = None, invalidated: bool = False) -> sa_exc.DBAPIError:
    return cls("SELECT 1", {}, _DriverError(sqlstate), connection_invalidated=invalidated)


def test_a_connection_closed_mid_transaction_is_lost() -> None:
    assert connection_lost(_dbapi(sa_exc.DBAPIError, invalidated=True))


def test_an_administrator_shutdown_is_lost() -> None:
    assert connection_lost(_dbapi(sa_exc.InternalError, "57P01"))  # terminating connection: admin command
    assert connection_lost(_dbapi(sa_exc.OperationalError, "08006"))  # connection failure


def test_refused_connections_are_lost() -> None:
    assert connection_lost(ConnectionRefusedError())


def test_a_failed_statement_is_not() -> None:
    assert not connection_lost(_dbapi(sa_exc.ProgrammingError, "42P01"))  # undefined table
    assert not connection_lost(_dbapi(sa_exc.IntegrityError, "23505"))
    assert not connection_lost(ValueError())
    assert not connection_lost(None)
