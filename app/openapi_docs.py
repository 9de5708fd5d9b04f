"""The OpenAPI document as the service really answers, in one place.

FastAPI documents a response's ``model`` under ``application/json`` and leaves our
``application/problem+json`` empty; it knows nothing of the 422 that
:mod:`app.request_guard` sends for any path or query string. :func:`install_openapi`
rewrites the generated document once, so that routers only name their status codes:

- every problem answer (4xx/5xx with the ``Problem`` model, or no body documented) is
  ``application/problem+json`` only, typed (``ValidationProblem`` for 422, else
  ``Problem``) and with an example; answers that are something else on purpose (an HTML
  page, the ``Health`` of ``/readyz``) keep what they say;
- every operation documents the guard's 422;
- the models' examples keep their nulls (FastAPI drops every ``None`` from the document,
  fastapi/fastapi#5559, and with them required fields of the examples);
- every JSON request body and 2xx answer without an example gets the first example of its
  schema (``json_schema_extra`` of the model in :mod:`app.schemas`).
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from app.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    ProblemError,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    Unprocessable,
    UnsupportedMediaType,
)
from app.http_errors import PROBLEM_BASE, PROBLEM_CONTENT_TYPE, VALIDATION_DETAIL
from app.request_guard import UNSTORABLE_DETAIL, UNSTORABLE_MESSAGE, UNSTORABLE_TYPE
from app.schemas import Problem, ValidationProblem

REF_PREFIX = "#/components/schemas/"
PROBLEM_REF = REF_PREFIX + Problem.__name__
VALIDATION_PROBLEM_REF = REF_PREFIX + ValidationProblem.__name__
# FastAPI's own 422 model, replaced by ValidationProblem wherever it appears.
_FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")
_PROBLEM_REFS = {PROBLEM_REF, VALIDATION_PROBLEM_REF, REF_PREFIX + _FASTAPI_VALIDATION[0]}

GUARD_422 = (
    "The path or a query parameter holds a character that cannot be stored (NUL or a lone "
    "surrogate); nothing was changed."
)
_GUARD_EXAMPLE = {
    "type": PROBLEM_BASE + Unprocessable.slug,
    "title": Unprocessable.title,
    "status": Unprocessable.status,
    "detail": UNSTORABLE_DETAIL,
    "errors": [{"loc": ["query", "cursor"], "msg": UNSTORABLE_MESSAGE, "type": UNSTORABLE_TYPE}],
}
_ERRORS: dict[int, type[ProblemError]] = {
    cls.status: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        PayloadTooLarge,
        UnsupportedMediaType,
        Unprocessable,
        TooManyRequests,
        ServiceUnavailable,
        ProblemError,
    )
}


def problem_example(error: type[ProblemError], detail: str) -> dict[str, Any]:
    """A problem document as :func:`app.http_errors.problem_response` renders ``error``."""
    example: dict[str, Any] = {
        "type": PROBLEM_BASE + error.slug,
        "title": error.title,
        "status": error.status,
        "detail": detail,
    }
    if error.status == Unprocessable.status:
        example["detail"] = VALIDATION_DETAIL
        example["errors"] = [
            {"loc": ["body", "subject", "tenant_id"], "msg": "Input should be a valid UUID",
             "type": "uuid_parsing"},
            {"loc": ["query", "limit"], "msg": "Input should be less than or equal to 200",
             "type": "less_than_equal"},
        ]  # fmt: skip
    return example


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def _app_models() -> dict[str, list[type[BaseModel]]]:
    """The service's pydantic models by name (the name FastAPI gives their schemas)."""
    found: dict[str, list[type[BaseModel]]] = {}
    stack = list(BaseModel.__subclasses__())
    while stack:
        model = stack.pop()
        stack.extend(model.__subclasses__())
        if model.__module__.startswith("app."):
            found.setdefault(model.__name__, []).append(model)
    return found


def _restore_examples(components: dict[str, Any]) -> None:
    """Put back the nulls FastAPI dropped from the models' examples: for each schema, the
    examples of the model whose examples, without their nulls, are the ones it kept."""
    models = _app_models()
    for name, component in components.items():
        kept = component.get("examples")
        if not kept:
            continue
        for model in models.get(name.removesuffix("-Output").removesuffix("-Input"), []):
            examples = model.model_json_schema().get("examples")
            if examples and _without_none(examples) == kept:
                component["examples"] = copy.deepcopy(examples)
                break


def _problem_schemas() -> dict[str, Any]:
    _, defs = models_json_schema(
        [(Problem, "serialization"), (ValidationProblem, "serialization")],
        ref_template=REF_PREFIX + "{model}",
    )
    return dict(defs.get("$defs", {}))


def _refs(schema: Any) -> set[str]:
    """Every ``$ref`` inside a schema or any part of the document."""
    if isinstance(schema, dict):
        found = {schema["$ref"]} if isinstance(schema.get("$ref"), str) else set()
        return found.union(*(_refs(value) for value in schema.values()))
    if isinstance(schema, list):
        return set().union(*(_refs(value) for value in schema))
    return set()


def _document_problem(status: int, response: dict[str, Any]) -> None:
    content: dict[str, Any] = response.setdefault("content", {})
    json_body = content.get("application/json")
    json_is_problem = json_body is not None and bool(_refs(json_body) & _PROBLEM_REFS)
    if content and not json_is_problem and PROBLEM_CONTENT_TYPE not in content:
        return  # an HTML page or another body, sent as documented
    if json_is_problem:
        del content["application/json"]
    given = content.get(PROBLEM_CONTENT_TYPE) or {}
    error = _ERRORS.get(status, ProblemError)
    ref = VALIDATION_PROBLEM_REF if status == Unprocessable.status else PROBLEM_REF
    content[PROBLEM_CONTENT_TYPE] = {
        "schema": {"$ref": ref},
        "example": copy.deepcopy(given.get("example"))
        or problem_example(error, response["description"]),
    }


def _schema_example(media: dict[str, Any], components: dict[str, Any]) -> None:
    if "example" in media or "examples" in media:
        return
    schema = media.get("schema", {})
    for ref in [schema.get("$ref"), *(part.get("$ref") for part in schema.get("anyOf", []))]:
        if isinstance(ref, str) and ref.startswith(REF_PREFIX):
            examples = components.get(ref.removeprefix(REF_PREFIX), {}).get("examples")
            if examples:
                media["example"] = copy.deepcopy(examples[0])
                return


def document_answers(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (FastAPI's document) with problems and examples as described above."""
    components: dict[str, Any] = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(_problem_schemas())
    _restore_examples(components)
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            responses.setdefault(
                str(Unprocessable.status),
                {
                    "description": GUARD_422,
                    "content": {PROBLEM_CONTENT_TYPE: {"example": copy.deepcopy(_GUARD_EXAMPLE)}},
                },
            )
            for code, response in responses.items():
                if code.isdigit() and int(code) >= 400:
                    _document_problem(int(code), response)
                elif code.startswith("2") and "application/json" in response.get("content", {}):
                    _schema_example(response["content"]["application/json"], components)
            for media in operation.get("requestBody", {}).get("content", {}).values():
                _schema_example(media, components)
    used = _refs(schema["paths"]) | _refs(components)
    for name in _FASTAPI_VALIDATION:
        if REF_PREFIX + name not in used:
            components.pop(name, None)
    schema["components"]["schemas"] = dict(sorted(components.items()))
    return schema


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` (and ``/openapi.json``) the rewritten document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_answers(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
