"""/metrics moves as a deletion runs: queue gauges from the DB, task counters and histograms."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.state import AppState
from tests.engine_support import Script, new_script, run_until_settled

Auth = Callable[..., dict[str, str]]


@pytest.fixture
def script(tmp_path: Path) -> Script:
    return new_script(tmp_path, purgers={"mongodb": {"default": ["transient", "ok"]}})


@pytest.fixture
def settings_overrides(script: Script) -> dict[str, Any]:
    return {"testing_purgers": script.path, "retry_base_seconds": 0.05, "worker_poll_seconds": 0.05}


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_move_during_and_after_a_deletion(
    client: httpx.AsyncClient, auth: Auth, state: AppState
) -> None:
    before = await scrape(client)
    created = await client.post(
        "/v1/deletion-requests",
        json={"kind": "account", "subject": {"site_name": "metrics-band"}},
        headers=auth(),
    )
    request_id = created.json()["id"]
    during = await scrape(client)
    assert value(during, "deletion_requests_open") == 1
    assert value(during, "deletion_requests", kind="account", status="pending") == 1
    assert value(during, "deletion_oldest_open_request_age_seconds") >= 0

    assert await run_until_settled(state, [request_id]) == {request_id: "completed"}
    after = await scrape(client)
    assert value(after, "deletion_requests_open") == 0
    assert value(after, "deletion_requests", kind="account", status="completed") == 1

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    for purger in ("meta_graph", "postgres", "mongodb", "s3"):
        assert delta("deletion_tasks_total", purger=purger, outcome="succeeded") == 1
        assert delta("deletion_items_deleted_total", store=purger) == 1
        assert delta("deletion_task_duration_seconds_count", purger=purger) == 1
    assert delta("deletion_tasks_total", purger="mongodb", outcome="retrying") == 1
    assert delta("deletion_task_retries_total", purger="mongodb") == 1
    labels = {
        label
        for name, sample_labels in after
        if name.startswith("deletion_")
        for label, _ in sample_labels
    }
    # Bounded, non-personal label values only (via: http|imap; result: of a reply).
    # method, route: HTTP metrics, by route template (a bounded set).
    allowed = {"kind", "status", "purger", "outcome", "store", "le", "via", "result"}
    assert labels <= allowed | {"method", "route"}, labels


async def test_http_requests_are_counted_by_route_template_not_by_path(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    unknown = "0b7c2a9e-5d1f-4c3e-9a8b-123456789abc"
    code = "StatusCodeOfSomebody123456"
    assert (await client.get(f"/v1/deletion-requests/{unknown}", headers=auth())).status_code == 404
    assert (await client.get(f"/deletion-status/{code}")).status_code == 404
    assert (await client.get("/no/such/path/for-somebody")).status_code == 404
    response = await client.get("/metrics")
    samples = await scrape(client)

    route = "/v1/deletion-requests/{request_id}"
    assert value(samples, "deletion_http_requests_total", method="GET", route=route, status="404")
    assert value(
        samples, "deletion_http_requests_total", method="GET", route="unmatched", status="404"
    )
    assert value(samples, "deletion_http_request_duration_seconds_count", method="GET", route=route)
    for secret in (unknown, code, "for-somebody"):
        assert secret not in response.text
    # One series per sample that carries meaning: no `_created` companions.
    assert "_created" not in response.text
