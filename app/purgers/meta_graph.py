"""The Meta Graph API purger: stop webhooks and revoke the app's permissions at Meta.

For each of the subject's connected Instagram accounts that still has tokens,
decrypts them (Fernet, ``DELETION_TOKEN_ENCRYPTION_KEY``) and:

- Facebook Login: ``DELETE /{page-id}/subscribed_apps`` with the Page token
  (never for a Page that another still-connected SoundOps account uses), then
  ``DELETE /{facebook-user-id}/permissions`` with the user token (never while
  another still-connected account of the same person remains).
- Instagram Login: ``DELETE /{ig-user-id}/subscribed_apps``, then
  ``DELETE /me/permissions`` (undocumented by Meta: best effort), on the
  Instagram Graph host.

For ``account`` and ``meta_data`` it deletes nothing in SoundOps' stores: the
PostgreSQL step, which waits for this one, deletes the tokens. For a disconnect
(``Subject.revoke_deadline`` set) the PostgreSQL step has already cut the account
(posts, automations, status) without waiting, and this step owns the tokens: once
Meta confirms (the same check as ``verify``) it sets the token columns of the
request's accounts to NULL; when the deadline passes first, it sets them to NULL
anyway and raises :class:`RevokeNotConfirmed` (``skipped``, "revoke not confirmed
by Meta before the deadline"). Before the deadline, every failure, permanent ones
included, is retried; ``verify`` then also counts tokens left. It never calls the app-wide
``/{app-id}/subscriptions``. Errors are classified per ``meta.md``:
"already gone" counts as done, transient ones raise ``PurgeRetriable``
(respecting the usage headers), others ``PurgeFailed`` with Meta's error code
and trace id — never the token, never Meta's message (it can quote ids).
``verify`` asks Meta again: the app's subscription must be gone, and the
permissions revoked (or the token no longer valid).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar

import httpx
import sqlalchemy as sa
import structlog
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from app import metrics
from app.datamap import DataMap
from app.models import utcnow
from app.purgers.base import (
    NotConfigured,
    PurgeFailed,
    PurgeResult,
    PurgeRetriable,
    PurgerName,
    RevokeNotConfirmed,
    Subject,
)
from app.settings import Settings
from app.stores import StoreConfigError, Stores

log = structlog.get_logger(__name__)

TRANSIENT_CODES = frozenset({1, 2, 4, 17, 32, 341, 613, *range(80001, 80015)})
USAGE_HEADERS = ("x-app-usage", "x-business-use-case-usage")
SLOW_DOWN_AT = 75.0
STOP_AT = 95.0
# How long a usage reading counts: past it, the next response tells the current usage.
USAGE_HOLD = timedelta(minutes=5)
# What a disconnect's Meta step counts for the token columns it cleared (per account row).
_TOKENS = "access tokens destroyed"
DEFAULT_TIMEOUT = 15.0


@dataclass(frozen=True)
class Connection:
    account_id: str
    family: str
    ig_user_id: str
    facebook_user_id: str | None
    facebook_page_id: str | None
    user_token: bytes | None
    page_token: bytes | None


@dataclass(frozen=True)
class Call:
    step: str  # "unsubscribe" or "revoke": names the counters, never an id
    host: str
    path: str
    token: str
    best_effort: bool = False


def usage_percent(headers: httpx.Headers) -> float:
    """The highest percentage in Meta's usage headers (0 when absent or unreadable)."""
    highest = 0.0
    for name in USAGE_HEADERS:
        raw = headers.get(name)
        if not raw:
            continue
        try:
            data = json.loads(raw)
        except ValueError:
            continue
        entries: list[Any] = []
        if isinstance(data, dict) and any(isinstance(v, list) for v in data.values()):
            for value in data.values():
                entries.extend(value if isinstance(value, list) else [])
        else:
            entries = [data]
        for entry in entries:
            if isinstance(entry, dict):
                for key in ("call_count", "total_cputime", "total_time"):
                    value = entry.get(key)
                    if isinstance(value, int | float):
                        highest = max(highest, float(value))
    return highest


class MetaGraphPurger:
    name: ClassVar[PurgerName] = PurgerName.meta_graph

    def __init__(
        self,
        engine: AsyncEngine,
        datamap: DataMap,
        http: httpx.AsyncClient,
        fernet: Fernet,
        *,
        facebook_url: str,
        instagram_url: str,
        version: str,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``timeout`` bounds each Graph API call (seconds); ``clock`` (monotonic
        seconds) dates the usage readings, so that a high one holds calls back for
        ``USAGE_HOLD`` and no longer."""
        self._engine = engine
        self._map = datamap
        self._http = http
        self._fernet = fernet
        self._hosts = {"facebook": facebook_url.rstrip("/"), "instagram": instagram_url.rstrip("/")}
        self._version = version
        self._timeout = httpx.Timeout(timeout, connect=min(5.0, timeout))
        self._clock = clock
        self._usage = 0.0
        self._usage_at = 0.0

    @classmethod
    def build(
        cls, settings: Settings, datamap: DataMap, stores: Stores
    ) -> MetaGraphPurger | NotConfigured:
        if settings.token_encryption_key is None:
            return NotConfigured("the Graph API calls need DELETION_TOKEN_ENCRYPTION_KEY")
        if stores.target_engine is None:
            return NotConfigured(
                "the Graph API calls need the SoundOps database for the tokens "
                "(DELETION_TARGET_POSTGRES_URL)"
            )
        try:
            fernet = Fernet(settings.token_encryption_key.get_secret_value().encode())
        except (ValueError, TypeError) as exc:
            raise StoreConfigError("DELETION_TOKEN_ENCRYPTION_KEY is not a Fernet key") from exc
        return cls(
            stores.target_engine,
            datamap,
            stores.http,
            fernet,
            facebook_url=settings.meta_graph_url,
            instagram_url=settings.instagram_graph_url,
            version=settings.meta_graph_version,
        )

    # --- reading the connections ---------------------------------------------------

    def _col(self, column: str) -> sa.ColumnClause[Any]:
        return sa.literal_column(f'"{self._map.postgres.account_table}"."{column}"')

    async def _connections(self, subject: Subject) -> list[Connection]:
        if not subject.resolution.account_ids:
            return []
        c = self._map.meta_graph.columns
        key = self._map.postgres.tables[self._map.postgres.account_table].key
        query = (
            sa.select(
                self._col(key),
                self._col(c.login_family),
                self._col(c.ig_user_id),
                self._col(c.facebook_user_id),
                self._col(c.facebook_page_id),
                self._col(c.user_token),
                self._col(c.page_token),
            )
            .select_from(sa.table(self._map.postgres.account_table))
            .where(
                sa.literal_column(f'"{self._map.postgres.account_table}"."{key}"', sa.Uuid).in_(
                    [uuid.UUID(a) for a in subject.resolution.account_ids]
                )
            )
            .order_by(self._col(key))  # the same calls in the same order on every run
        )
        rows = await self._query(query)
        return [Connection(str(r[0]), str(r[1]), str(r[2]), r[3], r[4], r[5], r[6]) for r in rows]

    async def _still_connected_elsewhere(
        self, subject: Subject, column: str, value: str | None
    ) -> bool:
        """Does a connected account outside this request share this Page or person?"""
        if not value:
            return False
        key = self._map.postgres.tables[self._map.postgres.account_table].key
        c = self._map.meta_graph.columns
        query = (
            sa.select(sa.func.count())
            .select_from(sa.table(self._map.postgres.account_table))
            .where(
                self._col(column) == value,
                self._col(c.status) == self._map.meta_graph.connected,
                sa.literal_column(f'"{self._map.postgres.account_table}"."{key}"', sa.Uuid).not_in(
                    [uuid.UUID(a) for a in subject.resolution.account_ids]
                ),
            )
        )
        rows = await self._query(query)
        return bool(rows[0][0])

    async def _query(self, query: sa.Select[Any]) -> list[Any]:
        try:
            async with self._engine.connect() as conn:
                return list((await conn.execute(query)).all())
        except (OperationalError, InterfaceError, OSError, TimeoutError) as exc:
            raise PurgeRetriable(f"PostgreSQL unreachable ({type(exc).__name__})") from exc
        except DBAPIError as exc:
            raise PurgeFailed(f"reading connections failed ({type(exc.orig).__name__})") from exc

    def _decrypt(self, token: bytes | None) -> str | None:
        if token is None:
            return None
        try:
            return self._fernet.decrypt(bytes(token)).decode()
        except InvalidToken as exc:
            raise PurgeFailed(
                "a stored token cannot be decrypted with DELETION_TOKEN_ENCRYPTION_KEY"
            ) from exc

    # --- the calls -------------------------------------------------------------------

    async def _plan(self, subject: Subject) -> list[Call]:
        calls = await self._all_calls(subject)
        if subject.revoked_at_meta:
            # A deauthorization: Meta already removed the permissions; webhooks still go.
            calls = [call for call in calls if call.step != "revoke"]
        return calls

    async def _all_calls(self, subject: Subject) -> list[Call]:
        c = self._map.meta_graph.columns
        calls: list[Call] = []
        for conn in await self._connections(subject):
            user_token = self._decrypt(conn.user_token)
            page_token = self._decrypt(conn.page_token)
            if conn.family == "facebook":
                shared_page = await self._still_connected_elsewhere(
                    subject, c.facebook_page_id, conn.facebook_page_id
                )
                if conn.facebook_page_id and page_token and not shared_page:
                    calls.append(
                        Call(
                            "unsubscribe",
                            "facebook",
                            f"{conn.facebook_page_id}/subscribed_apps",
                            page_token,
                        )
                    )
                same_person = await self._still_connected_elsewhere(
                    subject, c.facebook_user_id, conn.facebook_user_id
                )
                if conn.facebook_user_id and user_token and not same_person:
                    calls.append(
                        Call(
                            "revoke", "facebook", f"{conn.facebook_user_id}/permissions", user_token
                        )
                    )
            elif user_token:
                shared = await self._still_connected_elsewhere(
                    subject, c.ig_user_id, conn.ig_user_id
                )
                if not shared:
                    calls.append(
                        Call(
                            "unsubscribe",
                            "instagram",
                            f"{conn.ig_user_id}/subscribed_apps",
                            user_token,
                        )
                    )
                    calls.append(
                        Call("revoke", "instagram", "me/permissions", user_token, best_effort=True)
                    )
        return calls

    def _url(self, call: Call) -> str:
        return f"{self._hosts[call.host]}/{self._version}/{call.path}"

    async def _request(self, method: str, call: Call) -> httpx.Response:
        held = self._clock() - self._usage_at
        usage = self._usage if held < USAGE_HOLD.total_seconds() else 0.0
        if usage >= STOP_AT:
            wait = max(USAGE_HOLD - timedelta(seconds=held), timedelta(seconds=1))
            raise PurgeRetriable("Graph API usage near its limit", after=wait)
        if usage >= SLOW_DOWN_AT:
            await asyncio.sleep((usage - SLOW_DOWN_AT) / 10)
        try:
            response = await self._http.request(
                method,
                self._url(call),
                headers={"Authorization": f"Bearer {call.token}"},
                timeout=self._timeout,
            )
        except httpx.TimeoutException as exc:
            raise PurgeRetriable(f"Graph API {call.step}: timed out") from exc
        except httpx.TransportError as exc:
            raise PurgeRetriable(
                f"Graph API {call.step}: unreachable ({type(exc).__name__})"
            ) from exc
        self._usage, self._usage_at = usage_percent(response.headers), self._clock()
        metrics.GRAPH_USAGE.set(self._usage)
        return response

    @staticmethod
    def _error(response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            return {}
        error = body.get("error") if isinstance(body, dict) else None
        return error if isinstance(error, dict) else {}

    def _classify(self, call: Call, response: httpx.Response) -> str:
        """``done``, ``gone`` (already done at Meta) or raises."""
        if response.is_success:
            if _says_failure(response):
                raise PurgeRetriable(f"Graph API {call.step}: Meta answered success=false")
            return "done"
        error = self._error(response)
        code, subcode = error.get("code"), error.get("error_subcode")
        if code == 190 or (code == 100 and subcode == 33):
            return "gone"
        if (
            call.step == "unsubscribe"
            and isinstance(code, int)
            and (code == 10 or 200 <= code <= 299)
        ):
            return "gone"
        trace = error.get("fbtrace_id", "-")
        described = f"Graph API {call.step}: error {code}/{subcode} (fbtrace_id {trace})"
        if (
            response.status_code >= 500
            or error.get("is_transient") is True
            or code in TRANSIENT_CODES
        ):
            raise PurgeRetriable(described)
        if call.best_effort:
            log.info("graph_best_effort_failed", step=call.step, code=code)
            return "gone"
        raise PurgeFailed(described)

    # --- the protocol ----------------------------------------------------------------

    async def preview(self, subject: Subject) -> PurgeResult:
        calls = await self._plan(subject)
        return PurgeResult(deleted=_count(calls))

    async def purge(self, subject: Subject) -> PurgeResult:
        if subject.revoke_deadline is None:
            return await self._revoke(subject)
        deadline = subject.revoke_deadline
        try:
            result = await self._revoke(subject)
            left = {k: v for k, v in (await self._at_meta(subject)).items() if v}
            if left:
                raise PurgeRetriable("Meta still shows: " + ", ".join(sorted(left)))
        except (PurgeRetriable, PurgeFailed) as exc:
            now = utcnow()
            if now < deadline:
                # Retried until the deadline (the engine's backoff, never past it); a
                # permanent failure waits for the deadline itself: the tokens go then.
                wait = deadline - now
                after = exc.after if isinstance(exc, PurgeRetriable) else wait
                raise PurgeRetriable(str(exc), after=min(after, wait) if after else None) from exc
            await self._destroy_tokens(subject)
            raise RevokeNotConfirmed(str(exc)[:300]) from exc
        destroyed = await self._destroy_tokens(subject)
        return PurgeResult(
            deleted={**result.deleted, **({_TOKENS: destroyed} if destroyed else {})}
        )

    async def _revoke(self, subject: Subject) -> PurgeResult:
        # No progress reports: every attempt makes all of its calls again (the tokens stay
        # until they are destroyed), so only an attempt that ends counts them, once.
        done: dict[str, int] = {}
        for call in await self._plan(subject):
            outcome = self._classify(call, await self._request("DELETE", call))
            key = f"{call.host} {call.step}" + (" (already gone)" if outcome == "gone" else "")
            done[key] = done.get(key, 0) + 1
        return PurgeResult(deleted=done)

    def _tokens_left(self, subject: Subject) -> sa.ColumnElement[bool]:
        """The request's accounts (and no other) that still hold a token."""
        c = self._map.meta_graph.columns
        key = self._map.postgres.tables[self._map.postgres.account_table].key
        return sa.and_(
            sa.literal_column(f'"{self._map.postgres.account_table}"."{key}"', sa.Uuid).in_(
                [uuid.UUID(a) for a in subject.resolution.account_ids]
            ),
            sa.or_(self._col(c.user_token).is_not(None), self._col(c.page_token).is_not(None)),
        )

    async def _destroy_tokens(self, subject: Subject) -> int:
        """Set the token columns of the request's accounts to NULL: how many rows held one."""
        if not subject.resolution.account_ids:
            return 0
        c = self._map.meta_graph.columns
        table = sa.table(
            self._map.postgres.account_table, sa.column(c.user_token), sa.column(c.page_token)
        )
        statement = (
            sa.update(table)
            .where(self._tokens_left(subject))
            .values({c.user_token: None, c.page_token: None})
        )
        try:
            async with self._engine.begin() as conn:
                return int((await conn.execute(statement)).rowcount)
        except (OperationalError, InterfaceError, OSError, TimeoutError) as exc:
            raise PurgeRetriable(f"PostgreSQL unreachable ({type(exc).__name__})") from exc
        except DBAPIError as exc:
            raise PurgeFailed(f"clearing tokens failed ({type(exc.orig).__name__})") from exc

    async def verify(self, subject: Subject) -> dict[str, int]:
        """Ask Meta: is the app still subscribed, are permissions still granted? For a
        disconnect also: is a token of the request's accounts left?"""
        left = await self._at_meta(subject)
        if subject.revoke_deadline is not None and subject.resolution.account_ids:
            query = (
                sa.select(sa.func.count())
                .select_from(sa.table(self._map.postgres.account_table))
                .where(self._tokens_left(subject))
            )
            left["access tokens"] = int((await self._query(query))[0][0])
        return left

    async def _at_meta(self, subject: Subject) -> dict[str, int]:
        left: dict[str, int] = {}
        for call in await self._plan(subject):
            if call.best_effort:
                continue
            response = await self._request("GET", call)
            key = f"{call.host} {call.step}"
            left.setdefault(key, 0)
            if not response.is_success:
                self._classify(call, response)  # gone: fine; transient or other: raises
                continue
            if _still_granted(response):
                left[key] += 1
        return left


def _says_failure(response: httpx.Response) -> bool:
    """``{"success": false}`` on a 2xx: Meta did not do it (``true`` is the success body)."""
    try:
        body = response.json()
    except ValueError:
        return False
    return body is False or (isinstance(body, dict) and body.get("success") is False)


def _still_granted(response: httpx.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return False
    return any(
        isinstance(item, dict) and item.get("status", "granted") == "granted" for item in data
    )


def _count(calls: list[Call]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for call in calls:
        key = f"{call.host} {call.step}"
        counts[key] = counts.get(key, 0) + 1
    return counts
