"""FastAPI dependencies, as ``Annotated`` aliases that routes declare."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from gateway.config import Settings
from gateway.fhir.codec import parse_resource
from gateway.fhir.media import ResponseFormat, request_format, response_format
from gateway.fhir.types import Resource
from gateway.routing.config import RoutingTable
from gateway.store.database import Database


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


def _routing(request: Request) -> RoutingTable:
    routing: RoutingTable = request.app.state.routing
    return routing


def _answer(request: Request) -> ResponseFormat:
    return response_format(request.headers.get("accept"), request.query_params.get("_format"))


def _base_url(request: Request, settings: Annotated[Settings, Depends(_settings)]) -> str:
    if settings.base_url:
        return settings.base_url.rstrip("/")
    return str(request.base_url).rstrip("/") + "/fhir"


async def _body(request: Request) -> Resource:
    fmt = request_format(request.headers.get("content-type"))
    return parse_resource(await request.body(), fmt)


SettingsDep = Annotated[Settings, Depends(_settings)]
DatabaseDep = Annotated[Database, Depends(_database)]
RoutingDep = Annotated[RoutingTable, Depends(_routing)]
AnswerDep = Annotated[ResponseFormat, Depends(_answer)]
BaseUrlDep = Annotated[str, Depends(_base_url)]
ResourceBodyDep = Annotated[Resource, Depends(_body)]
