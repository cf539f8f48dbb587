"""SMART Backend Services authentication: registered clients, their scopes, and the gateway's access tokens.

A client proves who it is with a JWT signed by its private key (``private_key_jwt``, RFC 7523) at
``POST /auth/token`` and receives a short-lived access token; every API call carries that token
(``Authorization: Bearer``), verified locally by whichever ``gateway serve`` process receives it.
"""
