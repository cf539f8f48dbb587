"""How a delivery's destination is named outside the outbox: in metrics, logs and audit events.

A platform's destination is its key in the routing file (``dac-75``): chosen by the operator, few, no secret. A
sender's updates go to the endpoint its referral named (``sender:{MessageHeader.source.endpoint}``), a URL the
sender chose — it may carry credentials (``https://user:password@host/…``) or a token in its query, and each new
URL would be one more metric series (issue 23). So metrics and logs name every sender's callback by one key,
``SENDER_CALLBACKS`` (the delivery id says which entry it was), and an audit event names the endpoint without its
credentials, query or fragment."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from gateway.store.subscriptions import SUBSCRIPTION_PREFIX

#: The outbox destination of a sender's updates: this prefix, then the endpoint.
SENDER_PREFIX = "sender:"
#: The one metric label and log value for every sender's callback.
SENDER_CALLBACKS = "sender-callback"
#: The one metric label for every Subscription's notifications (one series per Subscription would be unbounded).
SUBSCRIPTION_NOTIFICATIONS = "subscription-notification"


def destination_label(destination: str) -> str:
    """The destination as metrics and logs name it: a platform's key, ``SENDER_CALLBACKS`` or
    ``SUBSCRIPTION_NOTIFICATIONS``."""
    if destination.startswith(SUBSCRIPTION_PREFIX):
        return SUBSCRIPTION_NOTIFICATIONS
    return SENDER_CALLBACKS if destination.startswith(SENDER_PREFIX) else destination


def shown_destination(destination: str) -> str:
    """The destination as an audit event names it: a platform's key, or the callback's scheme, host, port and path
    (no user name, password, query or fragment)."""
    if not destination.startswith(SENDER_PREFIX):
        return destination
    try:
        parts = urlsplit(destination.removeprefix(SENDER_PREFIX))
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if parts.port is not None:
            netloc += f":{parts.port}"
    except ValueError:  # not a URL one can read (a bad port): nothing of it is shown
        return SENDER_CALLBACKS
    return SENDER_PREFIX + urlunsplit((parts.scheme, netloc, parts.path, "", ""))
