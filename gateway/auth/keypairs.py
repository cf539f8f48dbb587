"""A client's key pair, as ``gateway clients add`` makes it and ``gateway token`` reads it back.

The private key is an EC P-384 key (ES384) in an unencrypted PKCS#8 PEM file, created with mode 0600 and never
printed; its public half goes to the clients file as a JWK, encoded by PyJWT. The JWK's ``kid`` is its RFC 7638
thumbprint (SHA-256 over the key's required members), so the private key file alone says which registered key it
is: ``gateway token`` needs no ``--kid``, and two keys never share a ``kid``. RSA keys (RS384) are read too, for
clients that bring their own.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from gateway.auth.outbound import SigningKey

#: RFC 7638 §3.2: the members of a public JWK that its thumbprint covers, by key type.
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}


class KeyFileError(ValueError):
    """A private key file cannot be written or used (the message names the file, never the key's content)."""


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 JWK thumbprint (SHA-256, base64url without padding) of a public JWK."""
    members = _THUMBPRINT_MEMBERS.get(str(jwk.get("kty")))
    if members is None:
        raise ValueError(f"no thumbprint for a key of type {jwk.get('kty')!r}")
    canonical = json.dumps({name: jwk[name] for name in members}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_private_key() -> ec.EllipticCurvePrivateKey:
    """A fresh EC P-384 private key (ES384)."""
    return ec.generate_private_key(ec.SECP384R1())


def public_jwk(private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> dict[str, str]:
    """The public JWK of ``private_key`` (no private member), with its thumbprint as ``kid``, ``alg`` and ``use``."""
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        encoded = ECAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
        algorithm = "ES384"
    else:
        encoded = RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
        algorithm = "RS384"
    jwk = {name: str(value) for name, value in encoded.items() if name != "d"}
    return {**jwk, "kid": thumbprint(jwk), "alg": algorithm, "use": "sig"}


def write_private_key(path: Path, private_key: ec.EllipticCurvePrivateKey) -> None:
    """Writes the key as PEM to a new file readable by its owner only (0600 from its creation: never a moment
    readable by others). An existing file is never overwritten."""
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(
            f"{path} exists already; a key file is never overwritten (choose another --key-out)"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"{path} cannot be created ({exc.strerror})") from None
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)


def read_signing_key(path: Path, kid: str | None = None) -> SigningKey:
    """The private key in the PEM file ``path``, ready to sign assertions; its ``kid`` is its thumbprint unless
    ``kid`` names the registered one (a key registered under another ``kid``)."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path} cannot be read ({exc.strerror})") from None
    try:
        private_key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise KeyFileError(f"{path} is not an unencrypted PEM private key") from None
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        if not isinstance(private_key.curve, ec.SECP384R1):
            raise KeyFileError(f"{path}: an EC key must be on P-384 (ES384), not {private_key.curve.name}")
    elif not isinstance(private_key, rsa.RSAPrivateKey):
        raise KeyFileError(f"{path}: the key must be EC P-384 (ES384) or RSA (RS384)")
    jwk = public_jwk(private_key)
    if kid is not None:
        jwk["kid"] = kid
    return SigningKey(jwk["kid"], jwk["alg"], private_key, jwk)
