"""Notifications: FHIR Subscriptions (DESIGN §12, Subscriptions R5 Backport IG) — topics and filters
(``topics``), notification Bundles (``bundles``), events numbered and queued in the transaction of each change
(``events``), what their owners do with them (``service``) and the worker's jobs (``jobs``). Sent through the
outbox (``gateway.store.outbox``, ``gateway.routing.delivery``)."""
