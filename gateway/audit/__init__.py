"""The audit trail: an AuditEvent (IHE BALP style) for every create, read, search, update and delivery.

- ``events``: the AuditEvent resources themselves (pure);
- ``context``: what the current request is (who, which interaction), carried in a context variable from the
  HTTP layer to the unit of work, which writes a change's AuditEvent in the change's own transaction;
- ``buffer``: reads, searches and refusals — which change nothing, so have no transaction to join — are queued
  and written in bulk every ~100 ms.
"""
