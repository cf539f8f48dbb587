from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from gateway.config import EXAMPLE_ROUTING
from gateway.errors import BusinessRuleViolation
from gateway.routing.config import PlatformKind, RoutingConfigError, load_routing
from gateway.routing.router import route
from gateway.routing.territory import INSEE_CODE_EXTENSION, department_of_postal_code, territory_of
from gateway.workflow.policies import Policy


def _patient(*addresses: dict[str, object]) -> dict[str, object]:
    return {"resourceType": "Patient", "address": list(addresses)}


def _insee(code: str) -> dict[str, object]:
    return {"extension": [{"url": INSEE_CODE_EXTENSION, "valueCoding": {"code": code}}]}


@pytest.mark.parametrize(
    ("postal_code", "department"),
    [("75011", "75"), ("20000", "2A"), ("20167", "2A"), ("20200", "2B"), ("20600", "2B"), ("97400", "974"),
     ("97100", "971"), ("97600", "976"), ("98000", None), ("97500", None), ("7501", None), ("ABCDE", None)],
)  # fmt: skip
def test_department_of_postal_code(postal_code: str, department: str | None) -> None:
    assert department_of_postal_code(postal_code) == department


def test_territory_prefers_the_insee_code_of_the_home_address() -> None:
    patient = _patient({"use": "work", **_insee("75056")}, {"use": "home", **_insee("2A004"), "postalCode": "20000"})
    territory = territory_of(patient)
    assert (territory.commune, territory.department) == ("2A004", "2A")
    assert territory_of(_patient({"district": "97411"})).department == "974"
    assert territory_of(_patient({"postalCode": "59100"})).commune is None
    assert territory_of(_patient({"use": "old", "postalCode": "59100"})).known is False


def test_example_routing_file() -> None:
    routing = load_routing(EXAMPLE_ROUTING)
    assert routing.default == "dac-75"
    hainaut = routing.platforms["dac-59-hainaut"]
    assert hainaut.policy is Policy.PTA_2016 and hainaut.gp_validation_delay == timedelta(days=5)
    assert routing.platforms["dac-67"].kind is PlatformKind.PEER_GATEWAY
    assert routing.platform_for_codes("59606", "59") is hainaut  # the commune row beats the department row
    assert routing.platform_for_codes("59512", "59").key == "dac-59-metropole"
    assert routing.platform_for_codes(None, "2B").key == "dac-corse"
    assert routing.platform_for_codes(None, "44").key == "dac-75"  # default


def test_route_without_default_is_422_on_the_address(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("code,platform\n75,p\n")
    (tmp_path / "r.toml").write_text(
        'territories = "t.csv"\n[platforms.p]\nname = "P"\nendpoint = "https://p.example/fhir"\n'
        'policy = "dac-2022"\norganization = { system = "https://finess.esante.gouv.fr", value = "750000010" }\n'
    )
    routing = load_routing(tmp_path / "r.toml")
    assert route(routing, _patient({"postalCode": "75001"}), "x").key == "p"
    with pytest.raises(BusinessRuleViolation) as caught:
        route(routing, _patient({"postalCode": "13001"}), "Bundle.entry[1].resource.address")
    assert caught.value.issues[0].code == "territory-unknown"
    assert caught.value.issues[0].expression == "Bundle.entry[1].resource.address"


@pytest.mark.parametrize(
    ("toml", "csv", "message"),
    [
        ('territories = "t.csv"\n[platforms.p]\nname = "P"\nendpoint = "https://p.example"\npolicy = "pta-2099"\n'
         'organization = { system = "s", value = "v" }\n', "code,platform\n", "r.toml:5: platform 'p': policy"),
        ('territories = "t.csv"\n[platforms.p]\nname = "P"\nendpoint = "ftp://p"\npolicy = "dac-2022"\n'
         'organization = { system = "s", value = "v" }\n', "code,platform\n", "r.toml:4: platform 'p': endpoint"),
        ('territories = "t.csv"\n[platforms.p]\nname = "P"\nendpoint = "https://p.example"\npolicy = "dac-2022"\n'
         'gp_validation_delay = "7 days"\norganization = { system = "s", value = "v" }\n', "code,platform\n",
         "r.toml:6: platform 'p': gp_validation_delay"),
        ('territories = "t.csv"\n[platforms.p]\nname = "P"\nendpoint = "https://p.example"\npolicy = "dac-2022"\n'
         'organization = { system = "s", value = "v" }\n', "code,platform\n75,p\n7X,p\n", "t.csv:3: '7X'"),
        ('territories = "t.csv"\n[platforms.p]\nname = "P"\nendpoint = "https://p.example"\npolicy = "dac-2022"\n'
         'organization = { system = "s", value = "v" }\n', "code,platform\n75,q\n", "t.csv:2: unknown platform 'q'"),
        ('territories = "t.csv"\ndefault = "zz"\n[platforms.p]\nname = "P"\nendpoint = "https://p.example"\n'
         'policy = "dac-2022"\norganization = { system = "s", value = "v" }\n', "code,platform\n", "r.toml:2: default"),
        ("territories = [", "", "r.toml:1: not valid TOML"),
    ],
)  # fmt: skip
def test_invalid_routing_files_name_the_line(tmp_path: Path, toml: str, csv: str, message: str) -> None:
    (tmp_path / "r.toml").write_text(toml)
    (tmp_path / "t.csv").write_text(csv)
    with pytest.raises(RoutingConfigError) as caught:
        load_routing(tmp_path / "r.toml")
    assert message in str(caught.value)


_SMART = (
    'territories = "t.csv"\n[platforms.p]\nname = "P"\nendpoint = "https://p.example/fhir"\npolicy = "dac-2022"\n'
    'organization = { system = "s", value = "v" }\n'
    'auth = { type = "smart-backend", token_url = "https://p.example/auth/token", client_id = "gw", '
    'key_file = "keys/gw.pem", kid = "k1", scope = "system/ServiceRequest.c" }\n'
)


def test_a_smart_backend_destination_reads_its_key_relative_to_the_routing_file(tmp_path: Path) -> None:
    from tests.support.auth import write_private_key

    (tmp_path / "r.toml").write_text(_SMART)
    (tmp_path / "t.csv").write_text("code,platform\n")
    with pytest.raises(RoutingConfigError) as caught:
        load_routing(tmp_path / "r.toml")
    assert "r.toml:7: platform 'p': key_file" in str(caught.value) and "keys/gw.pem cannot be read" in str(caught.value)
    write_private_key(tmp_path / "keys" / "gw.pem")
    smart = load_routing(tmp_path / "r.toml").platforms["p"].auth.smart
    assert smart is not None
    assert (smart.token_url, smart.client_id, smart.key.kid, smart.scope) == (
        "https://p.example/auth/token",
        "gw",
        "k1",
        "system/ServiceRequest.c",
    )
    assert [auth.key.kid for auth in load_routing(tmp_path / "r.toml").outbound_auths()] == ["k1"]
