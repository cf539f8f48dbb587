"""Narrative XHTML checked per R4 (txt-1, txt-2; issue 23: ``<script>`` and ``onerror`` in a narrative were stored
and passed on to platforms)."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from gateway.validation.narrative import narrative_problems
from gateway.validation.validate import validate
from tests.auth.conftest import SENDER, clients_file, secure, secure_app, token_of
from tests.conftest import load_example

X = 'xmlns="http://www.w3.org/1999/xhtml"'
__all__ = ["clients_file", "secure", "secure_app"]  # the fixtures with authentication on


@pytest.mark.parametrize(
    "div",
    [
        f"<div {X}>Anne Martin</div>",
        f'<div {X} xml:lang="fr" lang="fr"><p class="a" style="color:red">Anne</p><br/></div>',
        f'<div {X}><table border="1"><tbody><tr><td colspan="2" valign="top">x</td></tr></tbody></table></div>',
        f'<div {X}><a href="#p1" name="n">lien</a> <a href="https://example.org/x">y</a></div>',
        f'<div {X}><img src="#photo" alt=""/></div>',  # txt-2: an image with a source is content
    ],
    ids=["text", "lang-class-style", "table", "links", "image-only"],
)
def test_the_xhtml_r4_allows_passes(div: str) -> None:
    assert narrative_problems(div) == []


@pytest.mark.parametrize(
    ("div", "key", "says"),
    [
        (f"<div {X}><script>alert(1)</script>x</div>", "txt-1", "<script>"),
        (f'<div {X}><img src="x" onerror="alert(1)"/></div>', "txt-1", "'onerror' on <img>"),
        (f'<div {X}><p onclick="go()">x</p></div>', "txt-1", "'onclick' on <p>"),
        (f"<div {X}><style>p {{color: red}}</style>x</div>", "txt-1", "<style>"),
        (f"<div {X}><head><title>t</title></head>x</div>", "txt-1", "<head>"),
        (f"<div {X}><body>x</body></div>", "txt-1", "<body>"),
        (f'<div {X}><iframe src="https://example.org"/>x</div>', "txt-1", "<iframe>"),
        (f'<div {X}><form action="x"><input name="a"/></form>x</div>', "txt-1", "<form>"),
        (f'<div {X}><object data="x"/>x</div>', "txt-1", "<object>"),
        (f'<div {X}><a href=" JavaScript:alert(1)">x</a></div>', "txt-1", "script URL"),
        (f'<div {X}><svg xmlns="http://www.w3.org/2000/svg"><circle r="1"/></svg>x</div>', "txt-1", "<svg>"),
        (f"<p {X}>x</p>", "txt-1", "root is a <div>"),
        ("<div>x</div>", "txt-1", "root is a <div>"),
        (f"<div {X}><p>x</div>", "txt-1", "not well-formed"),
        (f"<div {X}>&nbsp;x</div>", "txt-1", "not well-formed"),
        ('<!DOCTYPE d [<!ENTITY e "x">]><div>&e;</div>', "txt-1", "DOCTYPE"),
        (f"<div {X}>  \n </div>", "txt-2", "no non-whitespace content"),
        (f"<div {X}><p> </p><img alt=''/></div>", "txt-2", "no non-whitespace content"),
    ],
    ids=[
        "script",
        "onerror",
        "onclick",
        "style-element",
        "head",
        "body",
        "iframe",
        "form",
        "object",
        "javascript-url",
        "svg",
        "root-p",
        "no-namespace",
        "unclosed",
        "html-entity",
        "doctype",
        "blank",
        "image-without-src",
    ],
)
def test_what_r4_forbids_fails_its_invariant(div: str, key: str, says: str) -> None:
    problems = narrative_problems(div)
    assert [k for k, _ in problems] == [key]
    assert says in problems[0][1]


def _referral_with_narrative(div: str) -> tuple[dict[str, Any], int]:
    referral = copy.deepcopy(load_example("referral-gp.json"))
    index = next(i for i, e in enumerate(referral["entry"]) if e["resource"]["resourceType"] == "Patient")
    referral["entry"][index]["resource"]["text"] = {"status": "generated", "div": div}
    return referral, index


def test_validation_names_the_div_of_the_resource() -> None:
    patient = {"resourceType": "Patient", "text": {"status": "generated", "div": f"<div {X}><script/>x</div>"}}
    failures = [(i.expression, i.diagnostics[:7]) for i in validate(patient) if i.diagnostics.startswith("txt-")]
    assert failures == [("Patient.text.div", "txt-1: ")]


@pytest.mark.parametrize("auth", ["off", "on"])
async def test_a_referral_carrying_script_in_its_narrative_is_422_and_not_stored(
    auth: str, client: httpx.AsyncClient, secure: httpx.AsyncClient
) -> None:
    http = secure if auth == "on" else client
    headers = await token_of(secure, SENDER) if auth == "on" else {}
    for div in (f"<div {X}><script>alert(1)</script>Anne</div>", f'<div {X}><img src="x" onerror="alert(1)"/></div>'):
        referral, index = _referral_with_narrative(div)
        answer = await http.post("/fhir", json=referral, headers=headers)
        assert answer.status_code == 422, answer.text
        issues = [i for i in answer.json()["issue"] if i["details"]["coding"][0]["code"] == "invariant-failed"]
        assert [i["expression"] for i in issues] == [[f"Bundle.entry[{index}].resource.text.div"]]
        assert issues[0]["diagnostics"].startswith("txt-1: ")
    assert (await http.get("/fhir/ServiceRequest", headers=headers)).json()["total"] == 0
    referral, _ = _referral_with_narrative(f'<div {X}><p class="x">Anne Martin</p></div>')
    assert (await http.post("/fhir", json=referral, headers=headers)).status_code == 200
