"""idempotency keys per client

Idempotency keys were global: a sender could pre-post another sender's next ServiceRequest identifier (or
Bundle.identifier), whose real referral then got 409 for ever, and the 409 told which identifiers existed. A key is
now the posting client's (``client_id``; '' with authentication off, where there is one caller): the primary key
becomes (client_id, key). Existing keys go to their referral's senders (``referral_senders``; one row each) or to
'' when it had none. A ServiceRequest's identifier is no longer a unique identity either (``resource_identities``):
two senders may use one value.

The downgrade keeps one row per key (the earliest client's) and the keys' former primary key; the ServiceRequest
identities are written again from the ServiceRequests (one per identifier, the first one stored).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 12:00:00.000000
"""

from collections.abc import Sequence

import orjson
import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_keys = sa.table(
    "idempotency_keys",
    sa.column("client_id", sa.String),
    sa.column("key", sa.String),
    sa.column("service_request_id", sa.String),
    sa.column("outcome", sa.Text),
    sa.column("created_at", sa.DateTime(timezone=True)),
)
_senders = sa.table("referral_senders", sa.column("service_request_id", sa.String), sa.column("client_id", sa.String))
_identities = sa.table(
    "resource_identities",
    sa.column("resource_type", sa.String),
    sa.column("system", sa.String),
    sa.column("value", sa.String),
    sa.column("resource_id", sa.String),
)
_resources = sa.table(
    "resources", sa.column("resource_type", sa.String), sa.column("id", sa.String), sa.column("content", sa.Text)
)


def upgrade() -> None:
    with op.batch_alter_table("idempotency_keys", recreate="always") as batch:
        batch.add_column(sa.Column("client_id", sa.String(length=255), nullable=False, server_default=""))
    # Each key to its referral's first sender, then a copy for each other sender (set-wise, one statement each).
    first = (
        sa.select(sa.func.min(_senders.c.client_id))
        .where(_senders.c.service_request_id == _keys.c.service_request_id)
        .scalar_subquery()
    )
    op.execute(_keys.update().values(client_id=sa.func.coalesce(first, "")))
    with op.batch_alter_table("idempotency_keys", recreate="always") as batch:
        batch.alter_column("client_id", server_default=None)
        batch.drop_constraint("pk_idempotency_keys", type_="primary")
        batch.create_primary_key("pk_idempotency_keys", ["client_id", "key"])
    k, s = _keys.alias("k"), _senders.alias("s")
    op.execute(
        _keys.insert().from_select(
            ["client_id", "key", "service_request_id", "outcome", "created_at"],
            sa.select(s.c.client_id, k.c.key, k.c.service_request_id, k.c.outcome, k.c.created_at)
            .select_from(k.join(s, s.c.service_request_id == k.c.service_request_id))
            .where(s.c.client_id != k.c.client_id),
        )
    )
    op.execute(_identities.delete().where(_identities.c.resource_type == "ServiceRequest"))


def downgrade() -> None:
    # One row per key: the smallest client's (a key two senders used is then the first's, as before 0006).
    k, other = _keys.alias("k"), _keys.alias("other")
    shadowed = sa.exists().where(other.c.key == k.c.key, other.c.client_id < k.c.client_id)
    duplicates = sa.select(k.c.client_id, k.c.key).where(shadowed)
    connection = op.get_bind()
    for client_id, key in connection.execute(duplicates).all():
        connection.execute(_keys.delete().where(_keys.c.client_id == client_id, _keys.c.key == key))
    with op.batch_alter_table("idempotency_keys", recreate="always") as batch:
        batch.drop_constraint("pk_idempotency_keys", type_="primary")
        batch.create_primary_key("pk_idempotency_keys", ["key"])
        batch.drop_column("client_id")
    rows = connection.execute(
        sa.select(_resources.c.id, _resources.c.content)
        .where(_resources.c.resource_type == "ServiceRequest")
        .order_by(_resources.c.id)
    )
    identities: dict[tuple[str, str], str] = {}
    for resource_id, content in rows:
        for identifier in orjson.loads(content).get("identifier") or []:
            system, value = identifier.get("system"), identifier.get("value")
            if isinstance(system, str) and isinstance(value, str) and system and value:
                identities.setdefault((system, value), resource_id)
    if identities:
        op.bulk_insert(
            _identities,
            [
                {"resource_type": "ServiceRequest", "system": system, "value": value, "resource_id": resource_id}
                for (system, value), resource_id in identities.items()
            ],
        )
