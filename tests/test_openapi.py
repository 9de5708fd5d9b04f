"""The repository's openapi.yaml is the app's schema."""

from __future__ import annotations

from pathlib import Path

import yaml

from app.openapi_export import current_schema, render

SPEC = Path(__file__).resolve().parent.parent / "openapi.yaml"


def test_openapi_yaml_is_the_apps_schema() -> None:
    assert SPEC.exists(), "run `make openapi` to write openapi.yaml"
    assert yaml.safe_load(SPEC.read_text(encoding="utf-8")) == current_schema(), (
        "openapi.yaml is stale: run `make openapi`"
    )
    assert SPEC.read_text(encoding="utf-8") == render(current_schema())


def test_docs_have_a_bearer_scheme_for_the_authorize_button() -> None:
    schema = current_schema()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["bearerAuth"]["description"],
    }
    create = schema["paths"]["/v1/deletion-requests"]["post"]
    assert create["security"] == [{"bearerAuth": []}]
    assert set(create["requestBody"]["content"]["application/json"]["examples"]) == {
        "account",
        "meta_data",
        "instagram_disconnect",
    }


def test_every_operation_is_documented_for_operators() -> None:
    schema = current_schema()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            assert operation.get("summary") and operation.get("description"), where
            responses = operation["responses"]
            for code, response in responses.items():
                assert response.get("description"), f"{where} {code}"
            if operation.get("security"):
                assert {"401", "403"} <= set(responses), where
                problem = responses["401"]["content"]
                assert "application/problem+json" in problem, where
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query":
                    assert parameter.get("description"), f"{where} {parameter['name']}"
