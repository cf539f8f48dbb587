"""The schema. Resources are kept as FHIR JSON; what search and uniqueness need is indexed beside them.

- ``resources``: the current version of each resource; ``resource_versions``: the versions it replaced (history,
  vread). Each version's content is stored once: in ``resources`` while it is current, moved to
  ``resource_versions`` by the update that replaces it (0013; before, ``resource_versions`` held the current one
  too — a copy of every resource written, with three index entries more per write). ``all_versions`` in
  ``gateway.store.repository`` reads them as one.
- ``search_index``: one row per (resource, search parameter, value) — tokens, references, strings (with their
  folded form, for searches that ignore case and accents), dates (as periods).
- ``resource_identities``: the identifiers that make a resource unique (INS for a Patient, RPPS for a
  Practitioner, FINESS for an Organization, the sender's identifier for a ServiceRequest). The primary key makes a
  duplicate impossible, whatever the concurrency: the second writer's transaction fails and is retried.
- ``idempotency_keys``: what a referral's answer was, under each key a resubmission may carry (ServiceRequest
  identifier, Bundle.identifier, MessageHeader id), per client that posted it ('' with authentication off): two
  senders may use the same identifier value, and neither can take, nor learn of, the other's.
- ``outbox``: messages to deliver (to platforms, peer gateways, senders), written in the transaction of the
  change they announce; workers lease rows, send, and record the outcome.
- ``referral_origins``: where a referral that came as a message wants its updates sent.
- ``referral_members`` / ``referral_senders``: which resources belong to which referral, and which clients sent
  it — who may see what (``gateway.store.visibility``).
- ``subscriptions`` / ``subscription_events``: FHIR Subscriptions (DESIGN §12) — each one's owner and what it may
  see, its status, its event counter (event numbers assigned in the transaction of the change, without gaps) —
  and the events numbered for each, kept 7 days for ``$events``.
- ``pending_deadlines``: each GP validation still waiting for its answer, with its deadline — what the escalation
  scan reads (``gateway.workflow.deadlines``), so that its cost follows the open validations only, never every Task
  that ever had a deadline. Written in the transaction that creates the Task, removed in the one that decides or
  escalates it; the Task stays the truth (a row whose Task is no longer waiting is dropped when it comes due).
- ``client_assertions``: the ``jti`` of every client assertion accepted at the token endpoint, until it
  expires — shared by the gateway's processes, so an assertion replayed to another process is refused too.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER only

resources = sa.Table(
    "resources",
    metadata,
    sa.Column("resource_type", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("version_id", sa.Integer, nullable=False),
    sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("method", sa.String(8), nullable=True),  # what wrote this version (POST, PUT, PATCH); 0013
    sa.Index(None, "resource_type", "last_updated", "id"),
)

resource_versions = sa.Table(
    "resource_versions",
    metadata,
    sa.Column("resource_type", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("version_id", sa.Integer, primary_key=True),
    sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("method", sa.String(8), nullable=True),  # what wrote it (POST, PUT, PATCH); NULL before 0008
    sa.Index(None, "last_updated"),
    sa.Index(None, "resource_type", "last_updated"),
)

search_index = sa.Table(
    "search_index",
    metadata,
    sa.Column("row_id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("resource_type", sa.String(64), nullable=False),
    sa.Column("resource_id", sa.String(64), nullable=False),
    sa.Column("param", sa.String(64), nullable=False),
    sa.Column("system", sa.String(512), nullable=True),
    sa.Column("value", sa.String(1024), nullable=False),
    # A string's value folded (case, accents: ``gateway.fhir.search.fold``), what a search without :exact compares.
    sa.Column("folded", sa.String(1024), nullable=True),
    sa.Index(None, "resource_type", "param", "value"),
    # String rows only (the others' folded is NULL): a fifth of what a referral wrote to the index (0012).
    sa.Index(
        None,
        "resource_type",
        "param",
        "folded",
        sqlite_where=sa.text("folded IS NOT NULL"),
        postgresql_where=sa.text("folded IS NOT NULL"),
    ),
    sa.Index(None, "resource_type", "resource_id"),
)

resource_identities = sa.Table(
    "resource_identities",
    metadata,
    sa.Column("resource_type", sa.String(64), primary_key=True),
    sa.Column("system", sa.String(512), primary_key=True),
    sa.Column("value", sa.String(512), primary_key=True),
    sa.Column("resource_id", sa.String(64), nullable=False),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("client_id", sa.String(255), primary_key=True),
    sa.Column("key", sa.String(1100), primary_key=True),
    sa.Column("service_request_id", sa.String(64), nullable=False),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # = the MessageHeader id: the same on every retry
    sa.Column("destination", sa.String(128), nullable=False),  # platform key, or the sender's endpoint for updates
    sa.Column("endpoint", sa.String(1024), nullable=False),  # FHIR base; POST {endpoint}/$process-message
    sa.Column("event", sa.String(64), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),  # the message Bundle, as built when the change was committed
    sa.Column("task_id", sa.String(64), nullable=True),  # the platform-intake Task that shows the delivery
    sa.Column("status", sa.String(16), nullable=False),  # pending | delivered | dead
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index(None, "status", "next_attempt_at"),
    sa.Index(None, "destination", "status"),
)

referral_origins = sa.Table(
    "referral_origins",
    metadata,
    sa.Column("service_request_id", sa.String(64), primary_key=True),
    sa.Column("endpoint", sa.String(1024), nullable=False),  # MessageHeader.source.endpoint of the referral
)

client_assertions = sa.Table(
    "client_assertions",
    metadata,
    sa.Column("client_id", sa.String(255), primary_key=True),
    sa.Column("jti", sa.String(255), primary_key=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index(None, "expires_at"),
)

referral_members = sa.Table(
    "referral_members",
    metadata,
    sa.Column("resource_type", sa.String(64), primary_key=True),
    sa.Column("resource_id", sa.String(64), primary_key=True),
    sa.Column("service_request_id", sa.String(64), primary_key=True),
)

referral_senders = sa.Table(
    "referral_senders",
    metadata,
    sa.Column("service_request_id", sa.String(64), primary_key=True),
    sa.Column("client_id", sa.String(255), primary_key=True),
)

subscriptions = sa.Table(
    "subscriptions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False),  # the client that created it ('' with authentication off)
    sa.Column("viewer", sa.Text, nullable=False),  # what the owner may see (JSON), as when it subscribed
    sa.Column("topic", sa.String(255), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # requested | active | error | off
    sa.Column("content", sa.Text, nullable=False),  # the Subscription as stored (its status from the column above)
    sa.Column("version_id", sa.Integer, nullable=False),
    sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
    sa.Column("events_count", sa.BigInteger, nullable=False),  # the last event number given
    sa.Column("notifications_count", sa.BigInteger, nullable=False),  # notifications queued (handshake included)
    sa.Column("last_queued_at", sa.DateTime(timezone=True), nullable=True),  # for heartbeats
    sa.Column("heartbeat_period", sa.Integer, nullable=True),  # seconds
    sa.Column("error", sa.Text, nullable=True),
    sa.Index(None, "topic", "status"),
    sa.Index(None, "owner"),
)

subscription_events = sa.Table(
    "subscription_events",
    metadata,
    sa.Column("subscription_id", sa.String(64), primary_key=True),
    sa.Column("event_number", sa.BigInteger, primary_key=True),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("focus_type", sa.String(64), nullable=False),
    sa.Column("focus_id", sa.String(64), nullable=False),
    sa.Column("focus_version", sa.Integer, nullable=False),
    sa.Index(None, "occurred_at"),
)

pending_deadlines = sa.Table(
    "pending_deadlines",
    metadata,
    sa.Column("task_id", sa.String(64), primary_key=True),
    sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index(None, "due_at"),
)

ALL_TABLES = (
    resources,
    resource_versions,
    search_index,
    resource_identities,
    idempotency_keys,
    outbox,
    referral_origins,
    client_assertions,
    referral_members,
    referral_senders,
    subscriptions,
    subscription_events,
    pending_deadlines,
)
