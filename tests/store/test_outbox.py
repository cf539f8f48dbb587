"""The outbox's statements, built once per shape — and no more of them kept than a bound."""

from __future__ import annotations

from gateway.store.outbox import _claim_statement


def test_the_claim_statements_kept_are_bounded() -> None:
    """Issue 21 (memory): a claim's shape counts the destinations in flight (full, or with a room of their own),
    and every Subscription is a destination of its own: the shapes a process meets grow with the Subscriptions,
    and each statement was kept for the process's life."""
    _claim_statement.cache_clear()
    first = _claim_statement(False, 0, 1, True)
    for open_rooms in range(2, 202):
        _claim_statement(False, 0, open_rooms, True)
    assert _claim_statement.cache_info().currsize == 64
    assert _claim_statement(False, 0, 201, True) is _claim_statement(False, 0, 201, True)  # still built once
    assert _claim_statement(False, 0, 1, True) is not first  # the least recently used went
