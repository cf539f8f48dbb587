"""Client assertions (private_key_jwt) and access tokens: every way one must be refused."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from gateway.auth.assertions import verify_assertion
from gateway.auth.clients import AuthConfigError, ClientRegistry, Role, load_clients
from gateway.auth.scopes import Permission, Scope, ScopeSet
from gateway.auth.tokens import AccessTokens
from gateway.errors import Forbidden, TokenRequestRejected, Unauthenticated
from tests.support.auth import TEST_SECRET, SmartClient, write_clients

TOKEN_URL = "https://gateway.example.org/auth/token"
HOSPITAL = SmartClient("hospital", "sender", ["system/ServiceRequest.c", "system/ServiceRequest.rs"])
PLATFORM = SmartClient("dac75", "platform", ["system/*.rs", "system/Task.u"], "dac-75", algorithm="RS384")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> ClientRegistry:
    return load_clients(write_clients(tmp_path_factory.mktemp("clients"), [HOSPITAL, PLATFORM]), frozenset({"dac-75"}))


def refused(registry: ClientRegistry, assertion: str) -> str:
    with pytest.raises(TokenRequestRejected) as caught:
        verify_assertion(assertion, registry, TOKEN_URL)
    assert caught.value.oauth_error == "invalid_client"
    return caught.value.issues[0].diagnostics


@pytest.mark.parametrize("client", [HOSPITAL, PLATFORM], ids=["ES384", "RS384"])
def test_a_well_formed_assertion_is_accepted(registry: ClientRegistry, client: SmartClient) -> None:
    verified = verify_assertion(client.assertion(TOKEN_URL, jti="one"), registry, TOKEN_URL)
    assert verified.client.client_id == client.client_id
    assert verified.jti == "one"


def test_expired(registry: ClientRegistry) -> None:
    assert "expired" in refused(registry, HOSPITAL.assertion(TOKEN_URL, exp=int(time.time()) - 60))


def test_exp_more_than_five_minutes_ahead(registry: ClientRegistry) -> None:
    assert "300 seconds" in refused(registry, HOSPITAL.assertion(TOKEN_URL, exp=int(time.time()) + 900))


def test_wrong_audience(registry: ClientRegistry) -> None:
    assert "aud" in refused(registry, HOSPITAL.assertion("https://elsewhere.example.org/token"))


def test_sub_other_than_iss(registry: ClientRegistry) -> None:
    assert "sub" in refused(registry, HOSPITAL.assertion(TOKEN_URL, sub="someone-else"))


def test_missing_jti(registry: ClientRegistry) -> None:
    token = jwt.encode(
        {"iss": "hospital", "sub": "hospital", "aud": TOKEN_URL, "exp": int(time.time()) + 60},
        HOSPITAL.private_key,
        algorithm="ES384",
        headers={"kid": HOSPITAL.kid},
    )
    assert "jti" in refused(registry, token)


def test_alg_none_is_refused(registry: ClientRegistry) -> None:
    claims = {"iss": "hospital", "sub": "hospital", "aud": TOKEN_URL, "exp": int(time.time()) + 60, "jti": "x"}
    token = jwt.encode(claims, None, algorithm="none", headers={"kid": HOSPITAL.kid})
    assert "alg" in refused(registry, token)


def test_hs256_signed_with_the_public_key_is_refused(registry: ClientRegistry) -> None:
    """The classic key-confusion attack: HMAC with the client's public key as the secret."""
    claims = {"iss": "hospital", "sub": "hospital", "aud": TOKEN_URL, "exp": int(time.time()) + 60, "jti": "x"}
    public = str(HOSPITAL.public_jwk()["x"])
    token = jwt.encode(
        claims, public + "-padding-to-32-bytes-for-hmac", algorithm="HS256", headers={"kid": HOSPITAL.kid}
    )
    assert "alg" in refused(registry, token)


def test_unknown_kid(registry: ClientRegistry) -> None:
    client = SmartClient("hospital", "sender", [], kid="not-registered")
    assert "kid" in refused(registry, client.assertion(TOKEN_URL))


def test_key_of_another_type_than_the_alg(registry: ClientRegistry) -> None:
    """The platform's key is RSA: an ES384 assertion naming it is refused before any verification."""
    token = jwt.encode(
        {"iss": "dac75", "sub": "dac75", "aud": TOKEN_URL, "exp": int(time.time()) + 60, "jti": "x"},
        HOSPITAL.private_key,
        algorithm="ES384",
        headers={"kid": PLATFORM.kid},
    )
    assert "RS384" in refused(registry, token)


def test_bad_signature(registry: ClientRegistry) -> None:
    intruder = ec.generate_private_key(ec.SECP384R1())
    claims = {"iss": "hospital", "sub": "hospital", "aud": TOKEN_URL, "exp": int(time.time()) + 60, "jti": "x"}
    token = jwt.encode(claims, intruder, algorithm="ES384", headers={"kid": HOSPITAL.kid})
    assert "signature" in refused(registry, token)


def test_tampered_claims(registry: ClientRegistry) -> None:
    header, _, signature = HOSPITAL.assertion(TOKEN_URL).split(".")
    other_payload = HOSPITAL.assertion(TOKEN_URL, jti="other").split(".")[1]
    assert "signature" in refused(registry, f"{header}.{other_payload}.{signature}")


def test_unknown_client(registry: ClientRegistry) -> None:
    stranger = SmartClient("stranger", "sender", [], kid=HOSPITAL.kid)
    assert "registered client" in refused(registry, stranger.assertion(TOKEN_URL))


def test_not_a_jwt(registry: ClientRegistry) -> None:
    assert "not a JWT" in refused(registry, "definitely-not-a-jwt")


# --- scopes ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "resource_type", "letters"),
    [
        ("system/ServiceRequest.c", "ServiceRequest", "c"),
        ("system/Task.ru", "Task", "ru"),
        ("system/*.rs", "*", "rs"),
        ("system/Task.read", "Task", "rs"),
        ("system/Task.write", "Task", "cud"),
        ("system/*.*", "*", "cruds"),
    ],
)
def test_scopes_parse_v2_and_v1_forms(text: str, resource_type: str, letters: str) -> None:
    scope = Scope.parse(text)
    assert scope is not None
    assert scope.resource_type == resource_type
    assert {p.value for p in scope.permissions} == set(letters)


@pytest.mark.parametrize("text", ["patient/Task.read", "user/*.rs", "system/Task.", "system/Task.sr", "openid", ""])
def test_other_scopes_are_not_understood(text: str) -> None:
    assert Scope.parse(text) is None


def test_granted_scopes_are_the_requested_ones_the_client_has() -> None:
    allowed = ScopeSet.parse(["system/ServiceRequest.cr", "system/Task.rs"])
    assert allowed.grant(["system/ServiceRequest.c", "system/Task.read", "system/Task.u", "system/*.rs"]) == [
        "system/ServiceRequest.c",
        "system/Task.read",
    ]


# --- access tokens --------------------------------------------------------------------------------------------


def test_an_access_token_carries_the_client_and_its_scopes(registry: ClientRegistry) -> None:
    tokens = AccessTokens(TEST_SECRET, 300)
    client = registry.get("dac75")
    assert client is not None
    verified = tokens.verify(tokens.issue(client, ["system/Task.u", "system/*.rs"]))
    assert (verified.client_id, verified.role, verified.platform) == ("dac75", Role.PLATFORM, "dac-75")
    verified.require("Patient", Permission.SEARCH)
    verified.require("Task", Permission.UPDATE)
    with pytest.raises(Forbidden):
        verified.require("Consent", Permission.CREATE)


def test_an_expired_access_token_is_refused(registry: ClientRegistry) -> None:
    tokens = AccessTokens(TEST_SECRET, 30)
    client = registry.get("hospital")
    assert client is not None
    token = tokens.issue(client, ["system/ServiceRequest.c"], now=time.time() - 120)
    with pytest.raises(Unauthenticated, match="expired"):
        tokens.verify(token)


def test_an_access_token_signed_by_another_key_is_refused(registry: ClientRegistry) -> None:
    client = registry.get("hospital")
    assert client is not None
    forged = AccessTokens("another-secret-of-at-least-thirty-two-bytes!", 300).issue(client, ["system/*.cruds"])
    with pytest.raises(Unauthenticated):
        AccessTokens(TEST_SECRET, 300).verify(forged)


# --- the clients file -------------------------------------------------------------------------------------------


def test_a_platform_client_must_name_a_known_platform(tmp_path: Path) -> None:
    path = write_clients(tmp_path, [SmartClient("x", "platform", ["system/*.rs"], "dac-99")])
    with pytest.raises(AuthConfigError, match="dac-99"):
        load_clients(path, frozenset({"dac-75"}))


@pytest.mark.parametrize(
    ("client", "refusal"),
    [
        pytest.param(SmartClient("gp", "practitioner", ["system/*.rs"]), "needs rpps", id="practitioner without"),
        pytest.param(SmartClient("gp", "practitioner", ["system/*.rs"], rpps=[]), "needs rpps", id="empty"),
        pytest.param(
            SmartClient("gp", "practitioner", ["system/*.rs"], rpps=["810100345676"]), "not an RPPS", id="an IDNPS"
        ),
        pytest.param(
            SmartClient("h", "sender", ["system/*.rs"], rpps=["10100345676"]), "only a practitioner", id="sender"
        ),
    ],
)
def test_a_practitioner_client_names_its_rpps_numbers_and_only_it(
    tmp_path: Path, client: SmartClient, refusal: str
) -> None:
    with pytest.raises(AuthConfigError, match=refusal):
        load_clients(write_clients(tmp_path, [client]), frozenset())


def test_a_practitioners_rpps_numbers_travel_in_its_access_token(tmp_path: Path) -> None:
    gp = SmartClient("cabinet", "practitioner", ["system/*.rs", "system/Task.u"], rpps=["10100345676", "10100246809"])
    registered = load_clients(write_clients(tmp_path, [gp]), frozenset()).get("cabinet")
    assert registered is not None and registered.role is Role.PRACTITIONER
    assert registered.rpps == ("10100345676", "10100246809")
    tokens = AccessTokens(TEST_SECRET, 300)
    caller = tokens.verify(tokens.issue(registered, ["system/Task.u"]))
    assert (caller.role, caller.rpps, caller.platform) == (Role.PRACTITIONER, ("10100345676", "10100246809"), None)


def test_a_private_key_in_the_clients_file_stops_start_up(tmp_path: Path) -> None:
    private = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP384R1()), as_dict=True) | {"kid": "k"}
    (tmp_path / "k.json").write_text(json.dumps({"keys": [private]}))
    (tmp_path / "clients.toml").write_text(
        '[[clients]]\nclient_id = "x"\nrole = "sender"\nscopes = []\njwks_file = "k.json"\n'
    )
    with pytest.raises(AuthConfigError, match="private key"):
        load_clients(tmp_path / "clients.toml", frozenset())


def test_verified_tokens_are_cached_only_until_they_expire(registry: ClientRegistry) -> None:
    tokens = AccessTokens(TEST_SECRET, 60)
    client = registry.get("hospital")
    assert client is not None
    token = tokens.issue(client, ["system/ServiceRequest.c"])
    verified = tokens.verify(token)
    assert tokens._verified[token] == (pytest.approx(time.time() + 60, abs=2), verified)
    tokens._verified[token] = (time.time() - 3600, verified)  # as if it had expired an hour ago
    tokens._verified["forged"] = (time.time() - 3600, verified)
    with pytest.raises(Unauthenticated):
        tokens.verify("forged")  # an expired entry is never served: the token is checked again, and refused


def test_the_verified_tokens_kept_are_bounded(registry: ClientRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 21 (memory): every client's tokens, renewed every few minutes, pass through the cache; past
    ``VERIFIED_CACHE_SIZE`` it starts again empty rather than growing with the process's age."""
    monkeypatch.setattr("gateway.auth.tokens.VERIFIED_CACHE_SIZE", 3)
    tokens = AccessTokens(TEST_SECRET, 60)
    client = registry.get("hospital")
    assert client is not None
    issued = [tokens.issue(client, ["system/ServiceRequest.c"]) for _ in range(7)]
    for token in issued:
        assert tokens.verify(token).client_id == "hospital"
        assert len(tokens._verified) <= 3
    assert issued[-1] in tokens._verified
