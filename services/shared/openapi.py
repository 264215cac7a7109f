"""`GET /openapi.json`: each service's OpenAPI 3.1 document, built from the pydantic models
that validate its requests and describe its answers, so the document cannot drift from the code."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, jsonify
from pydantic import BaseModel, TypeAdapter

from .events import WireEvent


class Error(BaseModel):
    error: str


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "path" or "query"
    schema: dict
    required: bool = False


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # OpenAPI style: /posts/{post_id}/comments
    summary: str
    responses: dict[int, Any]  # status -> a type pydantic can describe (None: no body)
    body: Any = None  # the request body's type
    params: tuple[Param, ...] = field(default_factory=tuple)


# Answers any route can give besides its own.
COMMON = {404: Error, 405: Error, 413: Error, 500: Error, 503: Error}
HEALTH = Operation("get", "/health", "What the service is and how it is doing", {200: dict[str, Any]})
METRICS = Operation("get", "/metrics", "What the service has done, in Prometheus' text format", {200: None})
EVENTS_IN = Operation(
    "post", "/events", "Deliver one event, or an array of events, to this service",
    {200: dict[str, Any], 400: Error, 401: Error}, body=WireEvent | list[WireEvent],
)


def _schema(kind: Any, defs: dict) -> dict:
    """The JSON schema of `kind`; named models go to components and are referred to."""
    schema = TypeAdapter(kind).json_schema(ref_template="#/components/schemas/{model}")
    defs.update(schema.pop("$defs", {}))
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        defs[kind.__name__] = schema
        return {"$ref": f"#/components/schemas/{kind.__name__}"}
    return schema


def document(title: str, operations: list[Operation]) -> dict:
    defs: dict[str, Any] = {}
    paths: dict[str, dict] = {}
    for op in [*operations, HEALTH, METRICS]:
        responses = {}
        json_only = {415: Error} if op.body is not None else {}  # a body not sent as application/json
        for status, kind in {**COMMON, **json_only, **op.responses}.items():
            description = "error" if kind is Error else "success"
            responses[str(status)] = {"description": description}
            if kind is not None:
                responses[str(status)]["content"] = {"application/json": {"schema": _schema(kind, defs)}}
        spec: dict[str, Any] = {"summary": op.summary, "responses": responses}
        if op.params:
            spec["parameters"] = [
                {"name": p.name, "in": p.where, "required": p.required or p.where == "path", "schema": p.schema}
                for p in op.params
            ]
        if op.body is not None:
            spec["requestBody"] = {"required": True, "content": {"application/json": {"schema": _schema(op.body, defs)}}}
        paths.setdefault(op.path, {})[op.method] = spec
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1"},
        "paths": paths,
        "components": {"schemas": defs},
    }


def register_openapi(app: Flask, title: str, operations: list[Operation]) -> None:
    """`GET /openapi.json`, built at its first request: building it takes longer than the rest of
    a service's start-up together, and most runs never ask for it."""
    spec = functools.cache(lambda: document(title, operations))

    @app.get("/openapi.json")
    def openapi():
        return jsonify(spec())
