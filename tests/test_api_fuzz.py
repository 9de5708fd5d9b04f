"""Schemathesis over the live app's OpenAPI: no request it can make gets a 5xx.

The app runs in uvicorn on a real socket, on the real PostgreSQL tracking store, with the
SoundOps database (the e-mail world), an SMTP server and both Meta secrets configured, so
that bodies reach the services and the database rather than stopping at a missing
setting. Each operation gets schema-valid (positive) and invalid (negative) requests with
an admin token, derandomized (a fixed seed: the same requests on every run); operations
on one request also run against real requests in review and awaiting confirmation. Every
answer must be no 5xx and conform to the schema: documented status code, content type,
and body.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok

from app.main import create_app
from app.models import RequestKind
from app.services.intake.email import filing
from app.settings import Settings
from app.state import AppState
from tests.app_fixtures import ALL_SCOPES, PgServerLike, bearer, make_settings, mint
from tests.services.intake.email.corpus import TRUSTED_AUTHSERV_ID
from tests.services.intake.email.world import seed_email_world
from testsupport.receivers import SmtpSink, free_port

# A raw e-mail (POST /v1/inbound-email) travels as the bytes generated for it.
schemathesis.serializer.alias("message/rfc822", "application/octet-stream")

EXAMPLES = 6  # per operation and mode (and per real request): about 400 in all
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@dataclass
class Live:
    base_url: str
    settings: Settings
    state: AppState
    loop: asyncio.AbstractEventLoop

    def run(self, coroutine: Any) -> Any:
        """Run a coroutine on the server's event loop (its engines live there)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)


@pytest.fixture
def live(
    pg_server: PgServerLike,
    tracking_template: str,
    fresh_pg_database: Any,
    soundops_template_database: str,
) -> Iterator[Live]:
    tracking = f"tracking_fuzz_{uuid.uuid4().hex[:8]}"
    pg_server.create_database(tracking, template=tracking_template)
    soundops = fresh_pg_database(template=soundops_template_database, prefix="fuzz")
    asyncio.run(seed_email_world(soundops.url))
    smtp = SmtpSink()
    settings = make_settings(
        pg_server.url(tracking),
        target_postgres_url=soundops.url,
        smtp_url=smtp.url,
        email_authserv_id=TRUSTED_AUTHSERV_ID,
        meta_app_secret="fuzz-facebook-app-secret-0123456789",
        instagram_app_secret="fuzz-instagram-app-secret-0123456789",
    )
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    loops: list[asyncio.AbstractEventLoop] = []

    def serve() -> None:
        loop = asyncio.new_event_loop()
        loops.append(loop)
        loop.run_until_complete(server.serve())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        yield Live(f"http://127.0.0.1:{port}", settings, app.state.services, loops[0])
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        smtp.close()
        pg_server.drop_database(tracking)


async def _file(state: AppState, status: str, site: str) -> uuid.UUID:
    """A request from e-mail in `status`, as intake files it."""
    async with state.sessionmaker() as session:
        filed = await filing.file_email_request(
            session,
            kind=RequestKind.account,
            subject={"site_name": site},
            status=status,  # type: ignore[arg-type]
            review_reason="no_match" if status == "needs_review" else None,
            message_id=f"<{uuid.uuid4()}@fuzz.example>",
            recipients=["owner@fuzz.example"] if status == "awaiting_confirmation" else [],
            settings=state.settings,
        )
    return filed.request.id


def _strings(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Where the strings of a JSON value are."""
    if isinstance(value, str):
        return [path]
    if isinstance(value, dict):
        return [p for key, sub in value.items() for p in _strings(sub, (*path, key))]
    if isinstance(value, list):
        return [p for index, sub in enumerate(value) for p in _strings(sub, (*path, index))]
    return []


def _with_nul(value: Any, path: tuple[Any, ...]) -> Any:
    """`value` with a NUL appended to the string at `path`."""
    if not path:
        return value + "\x00"
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _with_nul(value[path[0]], path[1:])
    return copy


def _exercise(
    operation: Any,
    mode: GenerationMode,
    live: Live,
    headers: dict[str, str],
    *,
    nul: bool = False,
    **fixed: Any,
) -> str | None:
    """Run EXAMPLES generated requests; the first failure's report, or None.

    With `nul`, the requests are the schema's own examples where it has some (realistic
    bodies that reach the database), and one string of each JSON body, drawn at random,
    ends in a NUL: schema-valid, refused by PostgreSQL, and seldom generated otherwise.
    """
    strategy = operation.as_strategy(generation_mode=mode, **fixed)
    if nul and (examples := operation.get_strategies_from_examples()):
        strategy = st.one_of(examples)

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy, data=st.data())
    def run(case: Any, data: st.DataObject) -> None:
        if nul:
            case.path_parameters.update(fixed.get("path_parameters", {}))
            strings = [p for p in _strings(case.body) if p != ("kind",)]  # kind: a 422
            if isinstance(case.body, dict | list) and strings:
                case.body = _with_nul(case.body, data.draw(st.sampled_from(strings)))
        response = case.call(base_url=live.base_url, headers=headers, timeout=30)
        case.validate_response(response, checks=CHECKS, headers=headers)

    try:
        run()
    except Unsatisfiable:  # nothing to make invalid (no parameters, any string goes): fine
        return None
    except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup is the latter
        how = f"{mode.value}{', a NUL' if nul else ''}, {fixed or 'generated'}"
        return f"{operation.label} ({how}):\n{exc}"
    return None


@pytest.mark.slow
def test_no_generated_request_gets_a_server_error_or_an_undocumented_answer(live: Live) -> None:
    headers = bearer(mint(ALL_SCOPES, ttl=600))
    schema = schemathesis.openapi.from_url(f"{live.base_url}/openapi.json")
    in_review = live.run(_file(live.state, "needs_review", "fuzz-review"))
    awaiting = live.run(_file(live.state, "awaiting_confirmation", "fuzz-awaiting"))
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()  # the schema loads whole
        operation = result.ok()
        operations += 1
        fixed: list[dict[str, Any]] = [{}]
        if "{request_id}" in operation.path:
            fixed += [{"path_parameters": {"request_id": str(i)}} for i in (in_review, awaiting)]
        for mode, nul in (
            (GenerationMode.POSITIVE, False),
            (GenerationMode.NEGATIVE, False),
            (GenerationMode.POSITIVE, True),
        ):
            for extra in fixed:
                failure = _exercise(operation, mode, live, headers, nul=nul, **extra)
                if failure is not None:
                    failures.append(failure)
    assert operations >= 20  # the whole API, not a part that happened to load
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)
    # The server is still answering after everything it was sent.
    assert httpx.get(f"{live.base_url}/healthz", timeout=5).status_code == 200


def test_the_live_server_refuses_a_chunked_body_over_64_kib(live: Live) -> None:
    """Over a real socket, without Content-Length: 413 once 64 KiB have come, and the
    server goes on serving."""

    def chunks() -> Iterator[bytes]:
        yield b'{"kind":"account","subject":{"site_name":"the-band"},"reason":"'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    headers = {**bearer(mint(ALL_SCOPES)), "Content-Type": "application/json"}
    with httpx.Client(base_url=live.base_url, timeout=30) as client:
        response = client.post("/v1/deletion-requests", content=chunks(), headers=headers)
        assert response.request.headers["transfer-encoding"] == "chunked"
        assert response.status_code == 413
        assert response.headers["content-type"] == "application/problem+json"
    assert httpx.get(f"{live.base_url}/healthz", timeout=5).status_code == 200
