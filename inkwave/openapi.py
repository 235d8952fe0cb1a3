"""The OpenAPI 3.1 description of the HTTP API, built from the code that serves it.

A view declares what it accepts and answers with `@operation(...)`: the pydantic model that
validates its body and the TypedDicts its answers are typed with (mypy holds the view to them).
The paths come from the URL patterns, the schemas from pydantic, so the document cannot drift
from either; nothing in it is written by hand beside the code.
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from django.http import HttpRequest, JsonResponse
from django.urls import URLPattern, URLResolver, get_resolver
from django.views.decorators.http import require_GET
from pydantic import TypeAdapter
from pydantic.json_schema import JsonSchemaMode

OPENAPI_VERSION = "3.1.0"
REF_TEMPLATE = "#/components/schemas/{model}"

ViewT = TypeVar("ViewT", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class SecurityScheme:
    name: str
    spec: Mapping[str, Any]  # an OpenAPI Security Scheme Object


@dataclass(frozen=True, slots=True)
class Answer:
    description: str
    body: Any  # any type pydantic can describe: a TypedDict, a model, dict[str, Any]


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    summary: str
    responses: Mapping[int, Answer]
    body: Any = None
    auth: Sequence[SecurityScheme] = ()
    tags: tuple[str, ...] = ()
    headers: tuple[Mapping[str, Any], ...] = ()


SESSION = SecurityScheme(
    "session",
    {
        "type": "apiKey",
        "in": "cookie",
        "name": "sessionid",
        "description": "A Django session from the admin's sign-in; writes also need X-CSRFToken.",
    },
)


def operation(
    method: str,
    *,
    summary: str,
    responses: Mapping[int, Answer],
    body: Any = None,
    auth: Sequence[SecurityScheme] = (),
    tags: Sequence[str] = (),
    headers: Sequence[Mapping[str, Any]] = (),
) -> Callable[[ViewT], ViewT]:
    """Declare one HTTP method of a view; stack it for a view that serves several. `headers`
    are OpenAPI parameter objects for the request headers it reads (`"in": "header"`)."""

    def attach(view: ViewT) -> ViewT:
        declared: tuple[Operation, ...] = getattr(view, "openapi_operations", ())
        spec = Operation(
            method.lower(), summary, responses, body, tuple(auth), tuple(tags), tuple(headers)
        )
        view.openapi_operations = (*declared, spec)  # type: ignore[attr-defined]
        return view

    return attach


def _routes(patterns: Sequence[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for entry in patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from _routes(entry.url_patterns, route)
        elif isinstance(entry, URLPattern) and getattr(entry.callback, "openapi_operations", None):
            yield route, entry.callback


_PARAMETER = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>[^>]+)>")
# Django's path converters as JSON Schema; anything else is a string.
_CONVERTERS: dict[str, dict[str, Any]] = {
    "int": {"type": "integer", "minimum": 0},
    "slug": {"type": "string", "pattern": "^[-a-zA-Z0-9_]+$"},
    "uuid": {"type": "string", "format": "uuid"},
}


def _path(route: str) -> tuple[str, list[dict[str, Any]]]:
    parameters = [
        {
            "name": match["name"],
            "in": "path",
            "required": True,
            "schema": _CONVERTERS.get(match["converter"] or "str", {"type": "string"}),
        }
        for match in _PARAMETER.finditer(route)
    ]
    return "/" + _PARAMETER.sub(r"{\g<name>}", route), parameters


def _schemas(
    found: list[tuple[str, Any]],
) -> tuple[dict[tuple[int, JsonSchemaMode], Any], dict[str, Any]]:
    """Every body's JSON Schema, sharing one set of component definitions."""
    adapters: dict[int, TypeAdapter[Any]] = {}
    inputs: list[tuple[int, JsonSchemaMode, TypeAdapter[Any]]] = []
    for _, view in found:
        for spec in view.openapi_operations:
            typed: list[tuple[Any, JsonSchemaMode]] = [
                (answer.body, "serialization") for answer in spec.responses.values()
            ]
            if spec.body is not None:
                typed.append((spec.body, "validation"))
            for kind, mode in typed:
                if id(kind) not in adapters:
                    adapters[id(kind)] = TypeAdapter(kind)
                inputs.append((id(kind), mode, adapters[id(kind)]))
    schemas, definitions = TypeAdapter.json_schemas(inputs, ref_template=REF_TEMPLATE)
    return schemas, definitions.get("$defs", {})


def _json(schema: Any) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def build_document(patterns: Sequence[Any] | None = None) -> dict[str, Any]:
    found = list(_routes(get_resolver().url_patterns if patterns is None else patterns))
    schemas, definitions = _schemas(found)
    paths: dict[str, dict[str, Any]] = {}
    schemes: dict[str, Any] = {}
    for route, view in found:
        path, parameters = _path(route)
        for spec in view.openapi_operations:
            entry: dict[str, Any] = {
                "operationId": f"{view.__name__}_{spec.method}",
                "summary": spec.summary,
                "tags": list(spec.tags),
                "security": [{scheme.name: []} for scheme in spec.auth],
                "responses": {
                    str(status): {
                        "description": answer.description,
                        "content": _json(schemas[(id(answer.body), "serialization")]),
                    }
                    for status, answer in sorted(spec.responses.items())
                },
            }
            if parameters or spec.headers:
                entry["parameters"] = [*parameters, *(dict(h) for h in spec.headers)]
            if spec.body is not None:
                entry["requestBody"] = {
                    "required": True,
                    "content": _json(schemas[(id(spec.body), "validation")]),
                }
            schemes.update({scheme.name: dict(scheme.spec) for scheme in spec.auth})
            paths.setdefault(path, {})[spec.method] = entry
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Inkwave Ops API",
            "version": importlib.metadata.version("inkwave-ops"),
            "description": "Orders, health and monitoring. Generated from the code that "
            "validates requests.",
        },
        "paths": paths,
        "components": {"schemas": definitions, "securitySchemes": schemes},
    }


@functools.cache
def document() -> dict[str, Any]:
    """The URL patterns and the types do not change while a process runs: build it once."""
    return build_document()


@operation(
    "get",
    summary="This document",
    responses={200: Answer("The OpenAPI 3.1 description of this API", dict[str, Any])},
    tags=["meta"],
)
@require_GET
def openapi_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse(document())
