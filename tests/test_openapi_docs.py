"""The OpenAPI document tells its readers the truth: every schema and property described,
an example on every request body and JSON answer (valid against its schema), and every
problem documented as the service sends it (``application/problem+json``, typed).

The checks walk the whole document, so that a schema or an operation added later is held
to the same rules; each failure names every offender at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jsonschema
import pytest

from app.openapi_export import current_schema
from tests.app_fixtures import bearer, mint
from tests.test_pinned_requests import ADMIN, STRANGER, URL, Stack, stack  # noqa: F401  (a fixture)

Auth = Callable[..., dict[str, str]]
PROBLEM = "application/problem+json"
REF = "#/components/schemas/"
# Answers that are not problems, on purpose: readiness answers its checks as JSON (the
# same Health body as its 200), public pages for browsers answer HTML.
HEALTH_ANSWERS = {("get", "/readyz", "503"), ("get", "/readyz/stores", "503")}
HTML = "text/html"


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return current_schema()


def _operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            yield method, path, operation


def _errors(instance: Any, subschema: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Why ``instance`` does not match ``subschema`` (its refs resolved in ``schema``)."""
    root = {**subschema, "components": schema["components"]}
    validator = jsonschema.Draft202012Validator(root)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(instance)]


def _examples(media: dict[str, Any]) -> list[Any]:
    if "example" in media:
        return [media["example"]]
    return [example["value"] for example in media.get("examples", {}).values()]


def test_every_component_schema_and_property_has_a_description(schema: dict[str, Any]) -> None:
    missing = []
    for name, component in schema["components"]["schemas"].items():
        if not component.get("description", "").strip():
            missing.append(name)
        for prop, sub in component.get("properties", {}).items():
            if not sub.get("description", "").strip():
                missing.append(f"{name}.{prop}")
    assert not missing, f"no description: {', '.join(missing)}"


def test_component_examples_match_their_schemas(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    with_examples = [name for name, component in components.items() if "examples" in component]
    assert len(with_examples) >= 10  # the answers' models carry examples
    wrong = [
        f"{name}: {error}"
        for name in with_examples
        for example in components[name]["examples"]
        for error in _errors(example, {"$ref": REF + name}, schema)
    ]
    assert not wrong, "\n".join(wrong)


def test_every_request_body_has_an_example_that_matches_its_schema(
    schema: dict[str, Any],
) -> None:
    problems = []
    for method, path, operation in _operations(schema):
        for media_type, media in operation.get("requestBody", {}).get("content", {}).items():
            where = f"{method.upper()} {path} {media_type}"
            examples = _examples(media)
            if not examples:
                problems.append(f"{where}: no example")
            for example in examples:
                problems += [f"{where}: {e}" for e in _errors(example, media["schema"], schema)]
    assert not problems, "\n".join(problems)


def test_every_2xx_json_answer_has_an_example_that_matches_its_schema(
    schema: dict[str, Any],
) -> None:
    problems = []
    answers = 0
    for method, path, operation in _operations(schema):
        for code, response in operation["responses"].items():
            media = response.get("content", {}).get("application/json")
            if not code.startswith("2") or media is None:
                continue
            answers += 1
            where = f"{method.upper()} {path} {code}"
            examples = _examples(media)
            if not examples:
                problems.append(f"{where}: no example")
            for example in examples:
                problems += [f"{where}: {e}" for e in _errors(example, media["schema"], schema)]
    assert answers >= 15  # the whole API was walked
    assert not problems, "\n".join(problems)


def test_every_problem_answer_is_documented_as_problem_json_only(
    schema: dict[str, Any],
) -> None:
    problems = []
    for method, path, operation in _operations(schema):
        responses = operation["responses"]
        if "422" not in responses:  # the request guard answers 422 on every route
            problems.append(f"{method.upper()} {path}: no 422")
        for code, response in responses.items():
            if int(code) < 400:
                continue
            where = f"{method.upper()} {path} {code}"
            content = response.get("content", {})
            if (method, path, code) in HEALTH_ANSWERS:
                assert set(content) == {"application/json"}, where
                continue
            if set(content) == {HTML}:
                continue  # a page for a browser, sent as HTML only
            if set(content) - {PROBLEM, HTML} or PROBLEM not in content:
                problems.append(f"{where}: documented as {sorted(content)}")
                continue
            media = content[PROBLEM]
            expected = REF + ("ValidationProblem" if code == "422" else "Problem")
            if media.get("schema") != {"$ref": expected}:
                problems.append(f"{where}: schema {media.get('schema')}, not {expected}")
                continue
            example = media.get("example")
            if example is None:
                problems.append(f"{where}: no example")
                continue
            problems += [f"{where}: {e}" for e in _errors(example, media["schema"], schema)]
            if example["status"] != int(code):
                problems.append(f"{where}: example of a {example['status']}")
    assert not problems, "\n".join(problems)


def test_the_documented_422_requires_located_errors(schema: dict[str, Any]) -> None:
    """The 422 schema is strict enough to catch a wrong answer, not a mere object."""
    ref = {"$ref": REF + "ValidationProblem"}
    base = {"type": "https://x.example/p", "title": "t", "status": 422, "detail": "d"}
    assert not _errors(
        {**base, "errors": [{"loc": ["body"], "msg": "m", "type": "t"}]}, ref, schema
    )
    assert _errors({**base, "errors": [{"loc": ["body"], "msg": "no type"}]}, ref, schema)
    assert _errors({**base, "errors": [{"loc": [0], "msg": "m", "type": "t"}]}, ref, schema)
    assert _errors({"title": "t", "status": 422, "detail": "d"}, ref, schema)


def assert_documented_problem(
    schema: dict[str, Any], method: str, path: str, answer: httpx.Response
) -> None:
    """``answer`` is a problem the operation documents, and matches its documented schema."""
    where = f"{method.upper()} {path} {answer.status_code}"
    assert answer.headers["content-type"] == PROBLEM, where
    response = schema["paths"][path][method]["responses"].get(str(answer.status_code))
    assert response is not None, f"{where}: not documented"
    assert list(response.get("content", {})) == [PROBLEM], f"{where}: {response}"
    documented = response["content"][PROBLEM].get("schema")
    assert documented, f"{where}: no schema"
    assert not _errors(answer.json(), documented, schema), f"{where}: {answer.text}"


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        pytest.param(
            "post",
            "/v1/deletion-requests",
            {"kind": "account", "subject": {"tenant_id": "not-a-uuid"}, "extra": 1},
            id="invalid-body",
        ),
        pytest.param("post", "/v1/deletion-requests", {"subject": {}}, id="no-kind"),
        pytest.param("get", "/v1/deletion-requests?limit=0&overdue=perhaps", None, id="bad-query"),
        pytest.param("get", "/v1/deletion-requests?cursor=a%00b", None, id="nul-in-query"),
        pytest.param("get", "/v1/deletion-requests?subject=no-equals-sign", None, id="no-errors"),
    ],
)
async def test_a_real_422_matches_the_documented_schema(
    client: httpx.AsyncClient,
    auth: Auth,
    schema: dict[str, Any],
    method: str,
    url: str,
    body: dict[str, Any] | None,
) -> None:
    response = await client.request(method, url, json=body, headers=auth())
    assert response.status_code == 422, response.text
    assert_documented_problem(schema, method, url.split("?")[0], response)


async def test_approve_refusals_match_the_documented_problems(
    stack: Stack,  # noqa: F811  (the fixture of tests/test_pinned_requests.py)
    schema: dict[str, Any],
) -> None:
    """A review of a Page name at two tenants: approve without a choice (409, with the
    number of candidates) and with a tenant_id that is no UUID (422) answer documented
    problems, and change nothing."""
    alpha, bravo = stack.world.tenants["alpha"], stack.world.tenants["bravo"]
    page = alpha.accounts[0].facebook_page_name
    assert page is not None
    await stack.name_page(bravo.accounts[0].id, page)
    filed = await stack.mail(STRANGER, page)
    assert filed["outcome"] == "needs_review"
    before = await stack.snapshots()
    path = URL + "/{request_id}/approve"
    url = f"{URL}/{filed['request_id']}/approve"
    admin = bearer(mint(ADMIN))
    for body, status in (({}, 409), ({"subject": {"tenant_id": "not-a-uuid"}}, 422)):
        answer = await stack.client.post(url, json=body, headers=admin)
        assert answer.status_code == status, answer.text
        assert_documented_problem(schema, "post", path, answer)
    assert await stack.snapshots() == before
