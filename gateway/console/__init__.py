"""The integrator console (DESIGN §14) at ``/console``: Examples, Validate, Referral timeline, Outbox and the API
page — server-rendered pages (Jinja2) and one plain script, every file served by the gateway itself.

An edge room, like api: its pages call the gateway's own FHIR API; what that API does not show (the outbox) it
reads through ``gateway.console.data``, a thin layer over the store. ``GATEWAY_CONSOLE`` turns it on or off; it is
on by default only with authentication off, and with authentication on its data needs an operator's token.
"""

from gateway.console.routes import install_console

__all__ = ["install_console"]
