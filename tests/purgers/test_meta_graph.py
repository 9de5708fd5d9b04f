"""The Graph API purger against a fake Meta Graph API served over real HTTP
(testsupport/fake_graph.py).

Each test seeds a SoundOps database of its own (testsupport/seed.py: tenant alpha with a
Facebook Login account and an Instagram Login account, tenant bravo with a Facebook
Login account, tenant charlie with none); the fake knows the same accounts, tokens,
Pages and subscriptions, and records every call with the token it carried.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest
import structlog
from cryptography.fernet import Fernet
from sqlalchemy.ext.asyncio import AsyncEngine

from app.datamap import DataMap, load_datamap
from app.db import create_engine
from app.models import RequestKind
from app.pii import Pii
from app.purgers.base import PurgeFailed, PurgeRetriable, Subject
from app.purgers.meta_graph import USAGE_HOLD, MetaGraphPurger
from app.services.resolution import Resolver
from testsupport.fake_graph import (
    FakeGraph,
    Family,
    GraphCall,
    Reply,
    graph_error,
    http_error,
    slow,
    usage,
)
from testsupport.harness.services import FreshPgDatabase
from testsupport.seed import FERNET_KEY, Account, World, make_world, seed_postgres

DATAMAP: DataMap = load_datamap()
VERSION = "v25.0"
ALL_FOUR = {
    "facebook unsubscribe": 1,
    "facebook revoke": 1,
    "instagram unsubscribe": 1,
    "instagram revoke": 1,
}


class FakeClock:
    """Monotonic seconds that only move when told to."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Target:
    def __init__(
        self, dsn: str, engine: AsyncEngine, world: World, graph: FakeGraph, http: httpx.AsyncClient
    ) -> None:
        self.dsn, self.engine, self.world, self.graph, self.http = dsn, engine, world, graph, http
        self.clock = FakeClock()

    @property
    def alpha(self) -> tuple[Account, Account]:
        fb, ig = self.world.tenants["alpha"].accounts
        return fb, ig

    @property
    def bravo(self) -> Account:
        (account,) = self.world.tenants["bravo"].accounts
        return account

    def purger(self, *, timeout: float = 15.0) -> MetaGraphPurger:
        return MetaGraphPurger(
            self.engine,
            DATAMAP,
            self.http,
            Fernet(FERNET_KEY),
            facebook_url=self.graph.facebook_url,
            instagram_url=self.graph.instagram_url,
            version=VERSION,
            timeout=timeout,
            clock=self.clock,
        )

    async def subject(self, kind: RequestKind, **identities: str) -> Subject:
        resolution = await Resolver(self.engine, DATAMAP.postgres).resolve(kind, identities)
        return Subject(uuid.uuid4(), kind, {k: Pii(v) for k, v in identities.items()}, resolution)

    async def tenant(self, name: str) -> Subject:
        return await self.subject(RequestKind.account, tenant_id=str(self.world.tenants[name].id))

    async def fb_person(self) -> Subject:
        """alpha's Facebook Login person: one account, calls on the Facebook host only."""
        return await self.subject(
            RequestKind.meta_data, facebook_user_id=self.alpha[0].facebook_user_id or ""
        )

    async def ig_person(self) -> Subject:
        """alpha's Instagram Login user: one account, calls on the Instagram host only."""
        return await self.subject(RequestKind.meta_data, ig_user_id=self.alpha[1].ig_user_id)

    async def execute(self, sql: str, *args: Any) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(sql, *args)
        finally:
            await conn.close()

    def tokens(self) -> list[str]:
        return [
            token
            for tenant in self.world.tenants.values()
            for account in tenant.accounts
            for token in (account.user_token, account.page_token)
            if token
        ]


@pytest.fixture
def graph() -> Iterator[FakeGraph]:
    fake = FakeGraph(VERSION).start()
    try:
        yield fake
    finally:
        fake.close()
    assert fake.errors == []


@pytest.fixture
async def target(
    fresh_pg_database: FreshPgDatabase, soundops_template_database: str, graph: FakeGraph
) -> AsyncIterator[Target]:
    database = fresh_pg_database(template=soundops_template_database, prefix="soundops_meta")
    world = make_world()
    await seed_postgres(database.url, world)
    graph.add_world(world)
    engine = create_engine(database.url)
    try:
        async with httpx.AsyncClient() as http:
            yield Target(database.url, engine, world, graph, http)
    finally:
        await engine.dispose()


def calls_of(graph: FakeGraph, family: Family) -> list[tuple[str, str, str | None]]:
    return [(c.method, c.path, c.token) for c in graph.calls if c.family == family]


def fb_calls(account: Account, method: str = "DELETE") -> list[tuple[str, str, str | None]]:
    return [
        (method, f"/{VERSION}/{account.facebook_page_id}/subscribed_apps", account.page_token),
        (method, f"/{VERSION}/{account.facebook_user_id}/permissions", account.user_token),
    ]


def ig_calls(account: Account) -> list[tuple[str, str, str | None]]:
    return [
        ("DELETE", f"/{VERSION}/{account.ig_user_id}/subscribed_apps", account.user_token),
        ("DELETE", f"/{VERSION}/me/permissions", account.user_token),
    ]


def no_app_wide_call(calls: list[GraphCall]) -> bool:
    return not any(c.edge == "subscriptions" for c in calls) and all(
        c.family is not None for c in calls
    )


# --- what is called, with which token ---------------------------------------------------


async def test_account_deletion_unsubscribes_and_revokes_each_account_with_its_own_tokens(
    target: Target,
) -> None:
    graph, (fb, ig), bravo = target.graph, target.alpha, target.bravo
    subject = await target.tenant("alpha")
    purger = target.purger()

    result = await purger.purge(subject)

    assert result.deleted == ALL_FOUR
    assert calls_of(graph, "facebook") == fb_calls(fb)
    assert calls_of(graph, "instagram") == ig_calls(ig)
    assert len(graph.calls) == 4 and no_app_wide_call(graph.calls)
    assert not graph.subscribed("facebook", fb.facebook_page_id or "")
    assert not graph.granted("facebook", fb.facebook_user_id or "")
    assert not graph.subscribed("instagram", ig.ig_user_id)
    assert not graph.granted("instagram", ig.ig_user_id)
    # Other tenants keep their subscriptions and grants.
    assert graph.subscribed("facebook", bravo.facebook_page_id or "")
    assert graph.granted("facebook", bravo.facebook_user_id or "")

    graph.clear_calls()
    assert await purger.verify(subject) == {
        "facebook unsubscribe": 0,
        "facebook revoke": 0,
        "instagram unsubscribe": 0,
    }
    # verify only asks (GET), on the same paths; the undocumented /me/permissions is skipped.
    assert calls_of(graph, "facebook") == fb_calls(fb, "GET")
    assert calls_of(graph, "instagram") == [
        ("GET", f"/{VERSION}/{ig.ig_user_id}/subscribed_apps", ig.user_token)
    ]


async def test_verify_reports_subscriptions_and_grants_still_in_place(target: Target) -> None:
    subject = await target.tenant("alpha")
    assert await target.purger().verify(subject) == {
        "facebook unsubscribe": 1,
        "facebook revoke": 1,
        "instagram unsubscribe": 1,
    }
    assert {c.method for c in target.graph.calls} == {"GET"}
    assert target.graph.subscribed("facebook", target.alpha[0].facebook_page_id or "")


async def test_verify_finds_a_revocation_that_meta_acknowledged_but_did_not_apply(
    target: Target,
) -> None:
    target.graph.script("DELETE", "/fb/*/permissions", Reply(status=200, body='{"success": true}'))
    subject = await target.fb_person()
    purger = target.purger()
    assert await purger.purge(subject) == await purger.preview(subject)
    assert await purger.verify(subject) == {"facebook unsubscribe": 0, "facebook revoke": 1}


async def test_a_second_purge_finds_everything_already_gone(target: Target) -> None:
    subject = await target.tenant("alpha")
    purger = target.purger()
    await purger.purge(subject)
    again = await purger.purge(subject)
    assert again.deleted == {f"{key} (already gone)": 1 for key in ALL_FOUR}


async def test_meta_data_deletion_of_an_instagram_user_calls_only_the_instagram_host(
    target: Target,
) -> None:
    _, ig = target.alpha
    result = await target.purger().purge(await target.ig_person())
    assert result.deleted == {"instagram unsubscribe": 1, "instagram revoke": 1}
    assert calls_of(target.graph, "instagram") == ig_calls(ig)
    assert calls_of(target.graph, "facebook") == []


async def test_a_page_another_connected_account_uses_stays_subscribed(target: Target) -> None:
    fb, _ = target.alpha
    await target.execute(
        "UPDATE instagram_accounts SET facebook_page_id = $1 WHERE id = $2",
        fb.facebook_page_id,
        target.bravo.id,
    )
    result = await target.purger().purge(await target.tenant("alpha"))
    # The Page stays subscribed; the person, connected nowhere else, is revoked.
    assert calls_of(target.graph, "facebook") == fb_calls(fb)[1:]
    assert result.deleted == {k: v for k, v in ALL_FOUR.items() if k != "facebook unsubscribe"}
    assert target.graph.subscribed("facebook", fb.facebook_page_id or "")
    assert not target.graph.granted("facebook", fb.facebook_user_id or "")


async def test_a_page_shared_only_with_a_disconnected_account_is_unsubscribed(
    target: Target,
) -> None:
    fb, _ = target.alpha
    await target.execute(
        "UPDATE instagram_accounts SET facebook_page_id = $1, status = 'disconnected',"
        " access_token_encrypted = NULL, page_token_encrypted = NULL WHERE id = $2",
        fb.facebook_page_id,
        target.bravo.id,
    )
    await target.purger().purge(await target.tenant("alpha"))
    assert calls_of(target.graph, "facebook") == fb_calls(fb)
    assert not target.graph.subscribed("facebook", fb.facebook_page_id or "")


async def test_a_person_still_connected_elsewhere_keeps_the_apps_permissions(
    target: Target,
) -> None:
    fb, _ = target.alpha
    await target.execute(
        "UPDATE instagram_accounts SET facebook_user_id = $1 WHERE id = $2",
        fb.facebook_user_id,
        target.bravo.id,
    )
    await target.purger().purge(await target.tenant("alpha"))
    assert calls_of(target.graph, "facebook") == fb_calls(fb)[:1]
    assert target.graph.granted("facebook", fb.facebook_user_id or "")


async def test_accounts_without_tokens_cause_no_call(target: Target) -> None:
    await target.execute(
        "UPDATE instagram_accounts SET access_token_encrypted = NULL, page_token_encrypted = NULL,"
        " status = 'disconnected' WHERE tenant_id = $1",
        target.world.tenants["alpha"].id,
    )
    subject = await target.tenant("alpha")
    purger = target.purger()
    assert (await purger.preview(subject)).deleted == {}
    assert (await purger.purge(subject)).deleted == {}
    assert await purger.verify(subject) == {}
    assert target.graph.calls == []


async def test_preview_counts_the_planned_calls_and_calls_nothing(target: Target) -> None:
    preview = await target.purger().preview(await target.tenant("alpha"))
    assert preview.deleted == ALL_FOUR
    assert target.graph.calls == []
    assert target.graph.subscribed("facebook", target.alpha[0].facebook_page_id or "")


async def test_nothing_is_called_for_a_tenant_without_instagram(target: Target) -> None:
    result = await target.purger().purge(await target.tenant("charlie"))
    assert result.deleted == {}
    assert target.graph.calls == []


# --- errors: already gone, transient, permanent -------------------------------------


@pytest.mark.parametrize(
    ("pattern", "reply", "gone"),
    [
        ("/fb/*/subscribed_apps", graph_error(190, 460), "facebook unsubscribe"),
        ("/fb/*/permissions", graph_error(190), "facebook revoke"),
        ("/fb/*/permissions", graph_error(100, 33), "facebook revoke"),
        ("/fb/*/subscribed_apps", graph_error(10), "facebook unsubscribe"),
        ("/ig/*/subscribed_apps", graph_error(200), "instagram unsubscribe"),
        ("/ig/*/subscribed_apps", graph_error(100, 33), "instagram unsubscribe"),
    ],
    ids=["190-page", "190-revoke", "100/33-revoke", "10-unsubscribe", "200-ig", "100/33-ig"],
)
async def test_an_already_gone_answer_counts_as_done(
    target: Target, pattern: str, reply: Reply, gone: str
) -> None:
    target.graph.script("DELETE", pattern, reply)
    result = await target.purger().purge(await target.tenant("alpha"))
    assert result.deleted == {
        **{k: v for k, v in ALL_FOUR.items() if k != gone},
        f"{gone} (already gone)": 1,
    }
    assert len(target.graph.calls) == 4  # and the steps after it still ran


@pytest.mark.parametrize(
    "reply",
    [
        graph_error(613),
        graph_error(4),
        graph_error(17),
        graph_error(80001),
        graph_error(100, is_transient=True),
        graph_error(2, status=500),
        http_error(500),
        http_error(503, "upstream unavailable"),
    ],
    ids=["613", "4", "17", "80001", "is_transient", "2-http500", "http500", "http503"],
)
async def test_a_transient_error_is_retriable(target: Target, reply: Reply) -> None:
    target.graph.script("DELETE", "/fb/*/subscribed_apps", reply)
    with pytest.raises(PurgeRetriable):
        await target.purger().purge(await target.tenant("alpha"))
    assert target.graph.subscribed("facebook", target.alpha[0].facebook_page_id or "")


async def test_rate_limited_twice_then_done_on_the_third_purge(target: Target) -> None:
    fb, _ = target.alpha
    target.graph.script("DELETE", "/fb/*/subscribed_apps", graph_error(613), graph_error(613))
    subject = await target.fb_person()
    purger = target.purger()
    for _ in range(2):
        with pytest.raises(PurgeRetriable, match="613"):
            await purger.purge(subject)
    assert (await purger.purge(subject)).deleted == {
        "facebook unsubscribe": 1,
        "facebook revoke": 1,
    }
    page_calls = [
        c for c in target.graph.calls if c.edge == "subscribed_apps" and c.family == "facebook"
    ]
    assert len(page_calls) == 3
    assert not target.graph.subscribed("facebook", fb.facebook_page_id or "")
    assert not target.graph.granted("facebook", fb.facebook_user_id or "")


async def test_a_graph_api_slower_than_the_timeout_is_retriable(target: Target) -> None:
    target.graph.script("DELETE", "/fb/*/subscribed_apps", slow(5.0))
    started = time.monotonic()
    with pytest.raises(PurgeRetriable, match="timed out"):
        await target.purger(timeout=0.3).purge(await target.tenant("alpha"))
    assert time.monotonic() - started < 3.0
    # The call after the one that timed out was not made.
    assert not any(c.edge == "permissions" and c.family == "facebook" for c in target.graph.calls)


@pytest.mark.parametrize(
    ("pattern", "reply", "described"),
    [
        ("/fb/*/subscribed_apps", graph_error(100, 2), "unsubscribe: error 100/2"),
        ("/fb/*/permissions", graph_error(3), "revoke: error 3/None"),
        ("/fb/*/permissions", graph_error(10), "revoke: error 10/None"),  # 10 only on unsubscribe
        ("/ig/*/subscribed_apps", graph_error(459), "unsubscribe: error 459/None"),
    ],
    ids=["100/2", "3", "10-on-revoke", "459"],
)
async def test_another_error_fails_with_code_and_trace_but_not_metas_message(
    target: Target, pattern: str, reply: Reply, described: str
) -> None:
    fb, _ = target.alpha
    quoted = (
        f"Meta says: token {fb.user_token} of {fb.facebook_user_id} on page {fb.facebook_page_id}"
    )
    scripted = Reply(
        status=reply.status,
        code=reply.code,
        subcode=reply.subcode,
        message=quoted,
        fbtrace_id="AbCdTrace42",
    )
    target.graph.script("DELETE", pattern, scripted)
    with pytest.raises(PurgeFailed) as failed:
        await target.purger().purge(await target.tenant("alpha"))
    message = str(failed.value)
    assert described in message and "AbCdTrace42" in message
    assert "Meta says" not in message
    assert not any(value in message for value in target.world.identifiers())


async def test_a_failure_of_the_undocumented_instagram_revocation_is_tolerated(
    target: Target,
) -> None:
    target.graph.script("DELETE", "/ig/*/me/permissions", graph_error(100, 2))
    with structlog.testing.capture_logs() as logs:
        result = await target.purger().purge(await target.tenant("alpha"))
    assert result.deleted == {
        **{k: v for k, v in ALL_FOUR.items() if k != "instagram revoke"},
        "instagram revoke (already gone)": 1,
    }
    assert [e["event"] for e in logs] == ["graph_best_effort_failed"]
    assert logs[0]["code"] == 100


async def test_a_transient_failure_of_the_instagram_revocation_is_still_retried(
    target: Target,
) -> None:
    target.graph.script("DELETE", "/ig/*/me/permissions", graph_error(613))
    with pytest.raises(PurgeRetriable):
        await target.purger().purge(await target.tenant("alpha"))


# --- rate-limit usage headers ------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [usage(call_count=96), usage(total_cputime=96), usage(total_time=97, business_id="1234")],
    ids=["app-call_count", "app-cputime", "business-total_time"],
)
async def test_usage_near_the_limit_holds_back_the_next_purge_for_a_while(
    target: Target, reply: Reply
) -> None:
    target.graph.script("DELETE", "/ig/*/me/permissions", reply)
    purger = target.purger()
    first = await purger.purge(await target.ig_person())
    assert first.deleted == {"instagram unsubscribe": 1, "instagram revoke": 1}
    made = len(target.graph.calls)

    bravo = await target.tenant("bravo")
    with pytest.raises(PurgeRetriable, match="usage") as held:
        await purger.purge(bravo)
    assert held.value.after is not None
    assert timedelta(0) < held.value.after <= USAGE_HOLD
    assert len(target.graph.calls) == made  # the call was not made

    target.clock.advance(held.value.after.total_seconds())
    assert (await purger.purge(bravo)).deleted == {"facebook unsubscribe": 1, "facebook revoke": 1}
    assert len(target.graph.calls) == made + 2


async def test_usage_near_the_limit_stops_the_purge_before_its_next_call(target: Target) -> None:
    target.graph.script("DELETE", "/fb/*/subscribed_apps", usage(call_count=96))
    with pytest.raises(PurgeRetriable) as held:
        await target.purger().purge(await target.fb_person())
    assert held.value.after is not None
    assert [c.edge for c in target.graph.calls] == ["subscribed_apps"]


async def test_usage_below_the_limit_lets_calls_through(target: Target) -> None:
    target.graph.script(
        "DELETE", "/fb/*/subscribed_apps", usage(call_count=80, total_time=10, total_cputime=5)
    )
    result = await target.purger().purge(await target.tenant("alpha"))
    assert result.deleted == ALL_FOUR


# --- tokens ------------------------------------------------------------------------------


async def test_a_token_under_another_key_fails_naming_the_key_setting(target: Target) -> None:
    fb, _ = target.alpha
    await target.execute(
        "UPDATE instagram_accounts SET access_token_encrypted = $1 WHERE id = $2",
        Fernet(Fernet.generate_key()).encrypt(fb.user_token.encode()),
        fb.id,
    )
    subject = await target.tenant("alpha")
    purger = target.purger()
    for step in (purger.preview, purger.purge):
        with pytest.raises(PurgeFailed, match="DELETION_TOKEN_ENCRYPTION_KEY"):
            await step(subject)
    assert target.graph.calls == []


def _texts(error: BaseException) -> list[str]:
    """The messages of an exception and of everything it was raised from."""
    texts: list[str] = []
    seen: BaseException | None = error
    while seen is not None and len(texts) < 20:
        texts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return texts


async def test_no_token_reaches_an_exception_or_a_log(
    target: Target, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # Also when an app built earlier in the session quieted httpx (configure_logging does):
    # this test wants every line the driver could log.
    for name in ("httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    fb, ig = target.alpha
    quoting = f"token {fb.user_token} {fb.page_token} {ig.user_token}"
    scenarios: list[tuple[str, Reply]] = [
        ("/fb/*/subscribed_apps", graph_error(100, 2, message=quoting)),
        ("/fb/*/permissions", graph_error(613, message=quoting)),
        ("/fb/*/subscribed_apps", http_error(500, quoting)),
        ("/fb/*/subscribed_apps", slow(5.0)),
        ("/ig/*/subscribed_apps", graph_error(3, message=quoting)),
    ]
    subject = await target.tenant("alpha")
    errors: list[BaseException] = []
    with structlog.testing.capture_logs() as logs:
        for pattern, reply in scenarios:
            target.graph.script("DELETE", pattern, reply)
            try:
                await target.purger(timeout=0.3).purge(subject)
            except (PurgeFailed, PurgeRetriable) as exc:
                errors.append(exc)
        target.graph.script("DELETE", "/ig/*/me/permissions", graph_error(100, message=quoting))
        await target.purger().purge(subject)  # best effort: logged, not raised
        purger = target.purger()
        target.graph.script("DELETE", "/ig/*/me/permissions", usage(call_count=99))
        await purger.purge(await target.ig_person())
        try:
            await purger.purge(subject)
        except PurgeRetriable as exc:
            errors.append(exc)
    await target.execute(
        "UPDATE instagram_accounts SET page_token_encrypted = $1 WHERE id = $2",
        Fernet(Fernet.generate_key()).encrypt(fb.page_token.encode() if fb.page_token else b""),
        fb.id,
    )
    try:
        await target.purger().purge(subject)
    except PurgeFailed as exc:
        errors.append(exc)

    assert len(errors) == 7, errors
    assert any(e["event"] == "graph_best_effort_failed" for e in logs)
    assert caplog.records  # httpx logged its requests: the check below has something to read
    captured = capsys.readouterr()
    everything = [
        *(text for error in errors for text in _texts(error)),
        repr(logs),
        caplog.text,
        captured.out,
        captured.err,
    ]
    for token in target.tokens():
        assert not any(token in text for text in everything), token
    # The purger's own messages name no identifier of anyone either.
    for error in errors:
        assert not any(value in str(error) for value in target.world.identifiers()), error
