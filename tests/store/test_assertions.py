"""The assertion replay cache keeps a ``jti`` as long as the verifier would still accept its assertion."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.auth.assertions import LEEWAY_SECONDS
from gateway.store import Database, DuplicateKey, UnitOfWork


async def test_a_jti_is_kept_through_the_leeway_after_exp(database: Database) -> None:
    exp = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    async with UnitOfWork(database) as uow:
        await uow.assertions.remember("client-a", "jti-1", exp)
        await uow.commit()
    # exp has passed, but the verifier accepts the assertion for LEEWAY_SECONDS more: a replay must still fail
    async with UnitOfWork(database) as uow:
        await uow.assertions.prune(exp + timedelta(seconds=LEEWAY_SECONDS - 1))
        await uow.commit()
    with pytest.raises(DuplicateKey):
        async with UnitOfWork(database) as uow:
            await uow.assertions.remember("client-a", "jti-1", exp)
            await uow.commit()
    # past exp + leeway the assertion is refused for its exp: the row may go
    async with UnitOfWork(database) as uow:
        await uow.assertions.prune(exp + timedelta(seconds=LEEWAY_SECONDS + 1))
        await uow.assertions.remember("client-a", "jti-1", exp)
        await uow.commit()
