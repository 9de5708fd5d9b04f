"""The REST API's bodies: what callers send and what they get back."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
)
from pydantic.json_schema import SkipJsonSchema

from app.models import RequestKind, RequestSource, RequestStatus, TaskStatus
from app.purgers.base import PurgerName
from app.retention_status import RetentionMode, RetentionStatus, RetentionStore
from app.subjects import (
    AccountSubject,
    HoldSubject,
    InstagramDisconnectSubject,
    MetaDataSubject,
    Review,
)

# Example values: obviously fake, never a person's data (RFC 2606 domains, nil-ish UUIDs).
EXAMPLE_REQUEST_ID = "00000000-0000-4000-8000-000000000001"
EXAMPLE_TENANT_ID = "00000000-0000-4000-8000-00000000000a"
EXAMPLE_ACCOUNT_ID = "00000000-0000-4000-8000-00000000000b"
EXAMPLE_CODE = "ExampleConfirmationCode000000001"
EXAMPLE_STATUS_URL = f"https://deletion.example.com/deletion-status/{EXAMPLE_CODE}"


class _CreateBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Literal["email", "admin_panel", "api", "meta_email"] = Field(
        default="api",
        description="The channel the request came through to the caller (recorded, shown "
        "to operators); `api` when absent.",
    )
    notify_email: EmailStr | None = Field(
        default=None,
        description="Where to send the confirmation once the deletion is done; null or "
        "absent: no e-mail.",
    )
    reason: str | None = Field(
        default=None,
        max_length=2000,
        description="Free text for operators (at most 2000 characters); not shown publicly.",
    )


class CreateAccountDeletion(_CreateBase):
    """Delete a whole SoundOps account and everything it owns, in every store."""

    kind: Literal[RequestKind.account] = Field(description="`account`.")
    subject: AccountSubject = Field(description="The account, by exactly one identity.")


class CreateMetaDataDeletion(_CreateBase):
    """Delete everything SoundOps received from Facebook or Instagram about one person or
    account, in every tenant it is found in."""

    kind: Literal[RequestKind.meta_data] = Field(description="`meta_data`.")
    subject: MetaDataSubject = Field(description="The person or account, by exactly one id.")


class CreateInstagramDisconnect(_CreateBase):
    """Disconnect one Instagram account from one tenant and delete what came through it."""

    kind: Literal[RequestKind.instagram_disconnect] = Field(description="`instagram_disconnect`.")
    subject: InstagramDisconnectSubject = Field(description="The connection: both ids.")


CreateDeletionRequest = Annotated[
    CreateAccountDeletion | CreateMetaDataDeletion | CreateInstagramDisconnect,
    Field(discriminator="kind"),
]

CREATE_EXAMPLES: dict[str, dict[str, Any]] = {
    "account": {
        "summary": "Delete a whole account, by tenant id",
        "value": {
            "kind": "account",
            "subject": {"tenant_id": EXAMPLE_TENANT_ID},
            "notify_email": "owner@example.com",
            "reason": "Customer asked through the admin panel",
            "source": "admin_panel",
        },
    },
    "meta_data": {
        "summary": "Delete all Meta-sourced data about an Instagram username",
        "value": {"kind": "meta_data", "subject": {"ig_username": "some.artist"}},
    },
    "instagram_disconnect": {
        "summary": "Disconnect one Instagram account of a tenant",
        "value": {
            "kind": "instagram_disconnect",
            "subject": {
                "tenant_id": EXAMPLE_TENANT_ID,
                "instagram_account_id": EXAMPLE_ACCOUNT_ID,
            },
        },
    },
}


_TIMES: dict[str, Any] = {
    "created_at": "2026-11-02T09:15:00Z",
    "due_at": "2026-12-02T09:15:00Z",
    "completed_at": "2026-11-02T09:17:30Z",
}
_INVOICES: dict[str, Any] = {
    "billing_invoices": {
        "count": 3,
        "reason": "tax law: invoices are kept for the statutory retention period",
    }
}


class RetainedOut(BaseModel):
    """Items a store keeps although the subject asked for deletion, and the legal reason."""

    count: int = Field(description="How many items (rows, documents, objects) are kept.")
    reason: str = Field(description="Why they are kept (from the data map), in words.")


class TaskOut(BaseModel):
    """One store's part of a request."""

    purger: PurgerName = Field(description="The store.")
    status: TaskStatus = Field(description="Where this store's part is.")
    attempts: int = Field(description="How many times it has been tried (0 before the first).")
    deleted: dict[str, int] = Field(
        description="Items deleted so far, by table, collection or bucket (committed batches)."
    )
    as_third_party: dict[str, int] = Field(
        default_factory=dict,
        description=(
            "Of `deleted`, what the subject wrote to other people's accounts (a "
            "`meta_data` request by `ig_username`), by collection."
        ),
    )
    retained: dict[str, RetainedOut] = Field(
        description="Items kept on purpose, by table, collection or bucket, with the reason."
    )
    error: str | None = Field(
        description="The last error (its kind and a short text, no personal data); null when none."
    )
    started_at: datetime | None = Field(
        description="When it first started (UTC, ISO 8601); null while pending."
    )
    finished_at: datetime | None = Field(
        description="When it reached `succeeded`, `skipped` or `failed` (UTC); null before."
    )
    next_attempt_at: datetime | None = Field(
        default=None,
        description=(
            "While `retrying`: when the next attempt is due (UTC, ISO 8601), after a "
            "transient error's backoff; null otherwise."
        ),
    )


class ReviewOut(Review):
    """What an operator needs to review a request from e-mail."""

    reason: str | None = Field(description="Why the request needs review (a code).")


_TASKS = [
    {
        "purger": "postgres",
        "status": "succeeded",
        "attempts": 1,
        "deleted": {"tenants": 1, "sites": 1, "instagram_accounts": 1},
        "as_third_party": {},
        "retained": _INVOICES,
        "error": None,
        "started_at": "2026-11-02T09:15:02Z",
        "finished_at": "2026-11-02T09:15:09Z",
        "next_attempt_at": None,
    },
    {
        "purger": "mongodb",
        "status": "succeeded",
        "attempts": 2,
        "deleted": {"instagram_messages": 120, "instagram_comments": 45},
        "as_third_party": {},
        "retained": {},
        "error": None,
        "started_at": "2026-11-02T09:15:02Z",
        "finished_at": "2026-11-02T09:17:30Z",
        "next_attempt_at": None,
    },
]
REQUEST_EXAMPLE: dict[str, Any] = {
    "id": EXAMPLE_REQUEST_ID,
    "kind": "account",
    "status": "completed",
    "source": "api",
    "requested_by": "soundops-backend",
    "confirmation_code": EXAMPLE_CODE,
    "status_url": EXAMPLE_STATUS_URL,
    "status_reason": None,
    "review_reason": None,
    "review": None,
    **_TIMES,
    "tasks": _TASKS,
}


class DeletionRequestOut(BaseModel):
    """A deletion request with its per-store tasks, as operators and callers follow it."""

    model_config = ConfigDict(json_schema_extra={"examples": [REQUEST_EXAMPLE]})

    id: uuid.UUID = Field(description="The request's id (UUID).")
    kind: RequestKind = Field(description="What it deletes.")
    status: RequestStatus = Field(description="Where it is.")
    source: RequestSource = Field(description="The channel it came through.")
    requested_by: str = Field(
        description="Who filed it: the token's `sub`, `email` (the privacy@ mailbox) or "
        "`meta:facebook` / `meta:instagram` (Meta's callbacks)."
    )
    confirmation_code: str = Field(
        description="The public code of its status page (32 letters and digits); Meta's "
        "callbacks hand it to the person."
    )
    status_url: str = Field(description="The public status page (no login, no personal data).")
    status_reason: str | None = Field(
        default=None,
        description="Why the request is in its status (cancelled, failed); null otherwise.",
    )
    review_reason: str | None = Field(
        default=None,
        description=(
            "Requests from e-mail: why it needed an operator's review (`sender_not_on_file`, "
            "`no_match`, `several_tenants`, `several_pages`, `dmarc_fail`; "
            "`third_party_only`: a username nobody on file has, who wrote comments or "
            "messages here; `third_party_unchecked`: nobody on file, and MongoDB could not "
            "be asked whether the username wrote anything); null otherwise."
        ),
    )
    review: ReviewOut | None = Field(
        default=None,
        description=(
            "Only for callers with `deletions:admin`, while the request is `needs_review`: "
            "what the message named (as written) and the candidates it matched; else null."
        ),
    )
    created_at: datetime = Field(description="When it was filed (UTC, ISO 8601).")
    due_at: datetime = Field(description="When it must be completed by (UTC).")
    completed_at: datetime | None = Field(
        description="When every store was verified (UTC); null until `completed`."
    )
    tasks: list[TaskOut] = Field(
        description="One per store the request runs in; empty until it is verified."
    )


class DeletionRequestPage(BaseModel):
    """One page of requests, newest first."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"items": [REQUEST_EXAMPLE], "next_cursor": "MjAyNi0xMS0wMlQwOToxNQ"}]
        }
    )

    items: list[DeletionRequestOut] = Field(description="The requests of this page.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


class CancelBody(BaseModel):
    """Optional body of a cancel."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"reason": "Filed twice by mistake"}]},
    )

    reason: str | None = Field(
        default=None,
        max_length=2000,
        description="Why (recorded as the status reason; at most 2000 characters).",
    )


def _no_default(schema: dict[str, Any]) -> None:
    """For a field that is absent rather than null: no `default: null` in the schema."""
    schema.pop("default", None)


class ValidationErrorItem(BaseModel):
    """One place where the request does not match the schema."""

    model_config = ConfigDict(extra="forbid")

    loc: list[str] = Field(
        description="Where: `body`, `query`, `path` or `header`, then field names and list "
        "indexes (as strings)."
    )
    msg: str = Field(
        description="What is wrong. Never quotes the value sent (it may be personal data)."
    )
    type: str = Field(
        description="A machine-readable error type: pydantic's (e.g. `missing`, "
        "`uuid_parsing`, `less_than_equal`), `string_unstorable` (a NUL or lone surrogate) "
        "or `json_invalid`."
    )


class Problem(BaseModel):
    """RFC 9457 problem details (`application/problem+json`), as every 4xx/5xx answer
    carries them. No stack trace and no subject identifier is ever quoted."""

    type: str = Field(
        description="A URI naming the kind of problem: "
        "`https://soundops.example/problems/<slug>` (e.g. `not-found`, `conflict`, "
        "`validation-error`), or the status code for errors of HTTP itself (`.../405`)."
    )
    title: str = Field(description="A short summary of the kind of problem.")
    status: int = Field(description="The HTTP status code, repeated.")
    detail: str = Field(description="What went wrong with this request, and what to do.")
    candidates: int | SkipJsonSchema[None] = Field(
        default=None,
        description="Only on a 409 from approve: how many candidates the subject matched.",
        json_schema_extra=_no_default,
    )


class ValidationProblem(Problem):
    """A 422: the request was refused, nothing changed. `errors` locates each fault; it
    is absent when the fault is not one field's (a cursor no longer valid, a `subject`
    query without `=`, a request that cannot be carried out as filed)."""

    errors: list[ValidationErrorItem] | SkipJsonSchema[None] = Field(
        default=None, description="Each fault, located.", json_schema_extra=_no_default
    )


class StatusPageStore(BaseModel):
    """One store, as the public status page shows it."""

    store: PurgerName = Field(description="The store.")
    status: TaskStatus = Field(description="Where this store's part is.")
    verified: bool = Field(
        description="The store's purger ran and verified that nothing of the subject is left."
    )
    outcome: str | None = Field(
        description=(
            "What happened there, once finished: `deleted and verified`, or why it was "
            "skipped (`not part of this deployment`, `not configured: ...`, `nothing to "
            "delete there for this kind of request`); null before."
        )
    )
    deleted: dict[str, int] = Field(description="Items deleted, by table, collection or bucket.")
    as_third_party: dict[str, int] = Field(
        default_factory=dict,
        description=(
            "Of `deleted`, what the subject wrote to other people's accounts (a "
            "`meta_data` request by `ig_username`), by collection."
        ),
    )
    retained: dict[str, RetainedOut] = Field(
        description="Items kept on purpose, with the legal reason."
    )


class BackupHorizonOut(BaseModel):
    """When backup copies of the deleted data are gone too."""

    retention_days: int | None = Field(
        description="How long backups of the SoundOps stores are kept; null: not stated here."
    )
    expire_by: datetime | None = Field(
        description=(
            "Once completed: the date by which backup copies of the deleted data expire "
            "(completed_at + retention_days); null before, or when retention_days is null."
        )
    )
    statement: str = Field(
        description="The same in words, or that backups are outside this service."
    )


class StatusPageOut(BaseModel):
    """The public status of a request: no identifiers, no personal data."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "kind": "meta_data",
                    "status": "completed",
                    "received_at": _TIMES["created_at"],
                    "due_at": _TIMES["due_at"],
                    "completed_at": _TIMES["completed_at"],
                    "summary": "the data has been deleted and the deletion verified",
                    "stores": [
                        {
                            "store": "mongodb",
                            "status": "succeeded",
                            "verified": True,
                            "outcome": "deleted and verified",
                            "deleted": {"instagram_messages": 120},
                            "as_third_party": {},
                            "retained": {},
                        }
                    ],
                    "backups": {
                        "retention_days": 35,
                        "expire_by": "2026-12-07T09:17:30Z",
                        "statement": "Backup copies of the deleted data expire by "
                        "07 December 2026, 09:17 UTC.",
                    },
                }
            ]
        }
    )

    kind: RequestKind = Field(description="What the request deletes.")
    status: RequestStatus = Field(description="Where it is.")
    received_at: datetime = Field(description="When it was filed (UTC, ISO 8601).")
    due_at: datetime = Field(description="When it must be completed by (UTC).")
    completed_at: datetime | None = Field(description="When it completed (UTC); else null.")
    summary: str | None = Field(
        description="For a completed request: what it may claim as a whole; else null."
    )
    stores: list[StatusPageStore] = Field(description="Per store: what happened.")
    backups: BackupHorizonOut = Field(description="When backup copies expire.")
    team_alerted: bool = Field(
        default=False,
        description="For a failed request: whether our operators were sent a notice of "
        "its failure (e-mail or webhook, delivered).",
    )


class Health(BaseModel):
    """Liveness or readiness, with the result of each check."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"status": "ok", "checks": {"tracking_db": "ok", "postgres": "ok"}},
                {
                    "status": "unavailable",
                    "checks": {"tracking_db": "unavailable (OperationalError)"},
                },
            ]
        }
    )

    status: Literal["ok", "unavailable"] = Field(
        description="`ok` when every check passed, else `unavailable`."
    )
    checks: dict[str, str] = Field(
        default_factory=dict,
        description="Each check by name: `ok`, or `unavailable (<error class>)`; empty for "
        "`/healthz`.",
    )


class RetentionModeOut(BaseModel):
    """Who enforces retention at one location of SoundOps' Instagram data."""

    store: RetentionStore = Field(description="The store (`mongodb` or `s3`).")
    location: str = Field(description="`database.collection` (MongoDB) or the bucket (S3).")
    mode: RetentionMode = Field(
        description=(
            "`ttl` / `lifecycle`: the store's own rule is in place and expires data; `sweep`: "
            "the worker deletes expired data itself (listed in DELETION_RETENTION_SWEEP, or "
            "the server refuses the rule, or the rule is missing or wrong); `none`: nothing "
            "enforces it right now (not configured, or the store does not answer)."
        )
    )
    reason: str = Field(description="Why this mode.")


class StoresHealth(BaseModel):
    """Whether every configured store answers, and who enforces retention where."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "ok",
                    "checks": {"postgres": "ok", "mongodb": "ok", "s3": "ok"},
                    "retention": [
                        {
                            "store": "mongodb",
                            "location": "soundops.instagram_messages",
                            "mode": "ttl",
                            "reason": "TTL index of 30 days in place",
                        },
                        {
                            "store": "s3",
                            "location": "soundops-ig-cache",
                            "mode": "lifecycle",
                            "reason": "lifecycle rule of 30 days in place",
                        },
                    ],
                }
            ]
        }
    )

    status: Literal["ok", "unavailable"] = Field(
        description="`ok` when every configured store answered, else `unavailable`."
    )
    checks: dict[str, str] = Field(
        default_factory=dict,
        description="Each configured store: `ok`, or `unavailable (<error class>)`.",
    )
    retention: list[RetentionModeOut] = Field(
        default_factory=list, description="Per location of Instagram data: its retention mode."
    )


class PreviewTask(BaseModel):
    """What one store would delete and keep."""

    purger: PurgerName = Field(description="The store.")
    would_delete: dict[str, int] = Field(
        description="Items it would delete now, by table, collection or bucket."
    )
    as_third_party: dict[str, int] = Field(
        default_factory=dict,
        description=(
            "Of `would_delete`, what the subject wrote to other people's accounts (a "
            "`meta_data` request by `ig_username`), by collection."
        ),
    )
    would_retain: dict[str, RetainedOut] = Field(
        description="Items it would keep, with the legal reason."
    )
    skipped: str | None = Field(
        default=None,
        description="Why this store would be skipped (not configured, not applicable); "
        "null when it would run.",
    )


class PreviewOut(BaseModel):
    """What a request would delete and keep, store by store; nothing was changed."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "tasks": [
                        {
                            "purger": "postgres",
                            "would_delete": {"tenants": 1, "sites": 1},
                            "would_retain": _INVOICES,
                            "skipped": None,
                        },
                        {
                            "purger": "meta_graph",
                            "would_delete": {},
                            "would_retain": {},
                            "skipped": "not configured: no Meta app secret",
                        },
                    ]
                }
            ]
        }
    )

    tasks: list[PreviewTask] = Field(description="One per store the request would run in.")


class MetaDeletionOut(BaseModel):
    """What Meta's Data Deletion Request Callback must answer."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"url": EXAMPLE_STATUS_URL, "confirmation_code": EXAMPLE_CODE}]
        }
    )

    url: str = Field(description="The public status page Meta shows the person.")
    confirmation_code: str = Field(description="The code of that page (32 letters and digits).")


class MetaDeauthorizeOut(BaseModel):
    """What became of a verified deauthorization."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"expanded": True, "disconnects": 2, "skipped_reconnected": 0},
                {"expanded": False, "disconnects": None, "skipped_reconnected": None},
            ]
        }
    )

    expanded: bool = Field(
        description="False: recorded, but the SoundOps database could not be read now; the "
        "worker files the disconnects when it can (the counts are then null)."
    )
    disconnects: int | None = Field(
        description="Disconnect requests filed (or found already filed); null when not expanded."
    )
    skipped_reconnected: int | None = Field(
        description="Accounts connected again after the deauthorization was issued: left "
        "alone; null when not expanded."
    )


class RetentionItemOut(BaseModel):
    """One automatic-retention rule of the SoundOps contract, as the store has it."""

    store: RetentionStore = Field(description="The store the rule lives in.")
    name: str = Field(description="`database.collection` (MongoDB) or the bucket (S3).")
    expected: str = Field(description="What the SoundOps contract requires.")
    status: RetentionStatus = Field(
        description=(
            "`unsupported`: the server answers that it cannot do it (the detail says "
            '"unsupported by this server" and quotes its answer); `not_configured`: the '
            "store's settings are absent; `unreachable`: connection error or timeout (the "
            "detail names the error class only); `error`: any other refusal (the code is named)."
        )
    )
    found: str | None = Field(
        description="What the store has (indexes; whole-bucket rules); null when unknown."
    )
    detail: str | None = Field(description="Why the status is what it is; null for `ok`.")
    action: str | None = Field(
        default=None, description="What `retention apply` did or tried (apply only); else null."
    )
    mode: RetentionMode | None = Field(
        default=None,
        description=(
            "Who enforces retention here: `ttl` / `lifecycle` (the store), `sweep` (the "
            "worker deletes expired data itself), `none` (nothing, right now)."
        ),
    )
    mode_reason: str | None = Field(default=None, description="Why this mode.")


class RetentionReportOut(BaseModel):
    """The automatic-retention rules, checked."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "ok": True,
                    "items": [
                        {
                            "store": "mongodb",
                            "name": "soundops.instagram_messages",
                            "expected": "TTL index on created_at, "
                            "expireAfterSeconds=2592000 (30 days)",
                            "status": "ok",
                            "found": "index created_at_1, expireAfterSeconds=2592000",
                            "detail": None,
                            "action": None,
                        }
                    ],
                }
            ]
        }
    )

    ok: bool = Field(
        description=(
            "No item is missing, wrong, unreachable or in error. `unsupported` and "
            "`not_configured` items do not count against it."
        )
    )
    items: list[RetentionItemOut] = Field(description="One per rule.")


class InboundEmailOut(BaseModel):
    """What became of one e-mail handed over by a mail gateway."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"outcome": "awaiting_confirmation", "request_id": EXAMPLE_REQUEST_ID}]
        }
    )

    outcome: Literal["awaiting_confirmation", "needs_review", "duplicate", "ignored"] = Field(
        description="What became of the message."
    )
    request_id: uuid.UUID | None = Field(
        description="The request it filed or found (null for an ignored message)."
    )


class ApproveBody(BaseModel):
    """Approve a request from e-mail that needs review: the operator's choice of one tenant."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"subject": {"site_name": "the-band"}}]},
    )

    subject: dict[str, Any] | None = Field(
        default=None,
        description=(
            "The operator's choice, required when the review is for `several_tenants`, "
            "`several_pages` or `no_match`: a subject validated as in a create of the "
            "request's kind that resolves to exactly one tenant (else 409 with the number "
            "of candidates). For `meta_data` it may add `tenant_id` to choose among the "
            "tenants the identity matches, or give `tenant_id` alone to keep the named "
            "identity. The request is then pinned to that tenant and the accounts matched "
            "in it: it never reaches more when it runs. A `third_party_only` or "
            "`third_party_unchecked` review approved without it is pinned to no tenant: "
            "it reaches only what the named username wrote. Null or absent: approve as named."
        ),
        examples=[{"site_name": "the-band"}, {"tenant_id": EXAMPLE_TENANT_ID}],
    )


class RejectBody(BaseModel):
    """Optional body of a reject."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"reason": "The sender is not the account owner"}]},
    )

    reason: str | None = Field(
        default=None, max_length=2000, description="Why (recorded as the status reason)."
    )


_EXAMPLE_PUBLIC_KEY = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
RECEIPT_EXAMPLE: dict[str, Any] = {
    "receipt": {
        "version": 1,
        "request_id": EXAMPLE_REQUEST_ID,
        "kind": "account",
        "status": "completed",
        "source": "api",
        **{name: _TIMES[name] for name in ("created_at", "due_at", "completed_at")},
        "data_map_version": "soundops-2026-12-01.1",
        "subject_minimised": True,
        "stores": [
            {
                "store": "postgres",
                "status": "succeeded",
                "verified": True,
                "deleted": {"tenants": 1, "sites": 1},
                "retained": _INVOICES,
                "skipped_reason": None,
            }
        ],
        "backups": {
            "retention_days": None,
            "expire_by": None,
            "statement": "Backups of SoundOps' stores are outside this service: it states no "
            "date by which backup copies expire.",
        },
        "issued_at": "2026-11-02T09:17:31+00:00",
    },
    "signature": {
        "algorithm": "Ed25519",
        "canonicalization": "RFC8785",
        "key_id": "0000000000000000",
        "public_key": _EXAMPLE_PUBLIC_KEY,
        "value": "A" * 86 + "==",
    },
}


def _lenient(schema: dict[str, Any]) -> None:
    """Receipts are returned as they were issued, also by earlier versions of the service,
    which may lack fields added since: none is required in the schema."""
    schema.pop("required", None)


class ReceiptStoreOut(BaseModel):
    """One store in a receipt: what was deleted, kept (and why), and whether it verified."""

    model_config = ConfigDict(json_schema_extra=_lenient)

    store: PurgerName = Field(description="The store.")
    status: TaskStatus = Field(description="Its task's final status.")
    verified: bool = Field(description="Its purger verified that nothing of the subject is left.")
    deleted: dict[str, int] = Field(description="Items deleted, by table, collection or bucket.")
    retained: dict[str, RetainedOut] = Field(description="Items kept, with the legal reason.")
    skipped_reason: str | None = Field(description="Why it was skipped; null when it ran.")
    as_third_party: dict[str, int] = Field(
        description="Of `deleted`, what the subject wrote to other people's accounts; "
        "present only when there is some."
    )


class ReceiptOut(BaseModel):
    """What the receipt states: no personal data, no identifier of the subject."""

    model_config = ConfigDict(json_schema_extra=_lenient)

    version: int = Field(description="The receipt format's version (1).")
    request_id: uuid.UUID = Field(description="The request's id.")
    kind: RequestKind = Field(description="What it deleted.")
    status: RequestStatus = Field(description="Its status when the receipt was issued.")
    source: RequestSource = Field(description="The channel it came through.")
    created_at: datetime = Field(description="When it was filed (UTC, ISO 8601).")
    due_at: datetime = Field(description="When it was due (UTC).")
    completed_at: datetime | None = Field(description="When it completed (UTC); else null.")
    data_map_version: str | None = Field(
        description="The version of the data map it ran with (what each store holds)."
    )
    subject_minimised: bool = Field(
        description="The subject's identifiers had been reduced to keyed hashes by then."
    )
    stores: list[ReceiptStoreOut] = Field(description="Per store.")
    backups: BackupHorizonOut = Field(description="When backup copies expire.")
    issued_at: datetime = Field(description="When the receipt was signed (UTC).")


class ReceiptSignatureOut(BaseModel):
    """The Ed25519 signature over the receipt's canonical bytes."""

    model_config = ConfigDict(json_schema_extra=_lenient)

    algorithm: str = Field(description="`Ed25519`.")
    canonicalization: str = Field(
        description="`RFC8785`: the signed bytes are the receipt in RFC 8785 (JCS) form. "
        "Absent on receipts issued before: those were signed over sorted `json.dumps`."
    )
    key_id: str = Field(description="The signing key's id (see `/v1/receipts/public-key`).")
    public_key: str = Field(
        description="The public key, base64: verify against the key you trust, not this one."
    )
    value: str = Field(description="The signature, base64.")


class SignedReceiptOut(BaseModel):
    """A signed receipt, exactly as it was issued when the request settled (and again when
    it was minimised). Verify with `soundops-deletion receipt verify FILE`."""

    model_config = ConfigDict(json_schema_extra={"examples": [RECEIPT_EXAMPLE]})

    receipt: ReceiptOut = Field(description="What is signed.")
    signature: ReceiptSignatureOut = Field(description="The signature.")


class CreateHold(BaseModel):
    """A legal hold on a subject: its deletion requests wait in `on_hold` until released."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "subject": {"tenant_id": EXAMPLE_TENANT_ID},
                    "reason": "Litigation hold, case 2026-001",
                }
            ]
        },
    )

    subject: HoldSubject = Field(
        description=(
            "One or more identities, as in a request's subject (`tenant_id`, `site_name`, "
            "`owner_email`, `facebook_user_id`, `ig_user_id`, `ig_username`, "
            "`facebook_page_name`, `instagram_account_id`), compared after the same "
            "normalisation. A request is held when an identity it named, or resolved to "
            "(its tenant, Instagram accounts, `ig_user_id`s), is one of these."
        ),
        examples=[{"tenant_id": "0b7e3c1e-4f7a-4d3e-9a51-2f0d6f1c9a10", "site_name": "the-band"}],
    )
    reason: str = Field(
        min_length=1,
        max_length=2000,
        description="Why (the legal basis, a case reference): operators only, never public.",
    )


_HOLD_EXAMPLE: dict[str, Any] = {
    "id": "00000000-0000-4000-8000-0000000000c1",
    "subject": {"tenant_id": EXAMPLE_TENANT_ID},
    "reason": "Litigation hold, case 2026-001",
    "created_at": "2026-11-02T09:15:00Z",
    "created_by": "dpo",
    "released_at": None,
    "released_by": None,
    "held_requests": 1,
}


class HoldOut(BaseModel):
    """A legal hold, active or (with `include_released`) released."""

    model_config = ConfigDict(json_schema_extra={"examples": [_HOLD_EXAMPLE]})

    id: uuid.UUID = Field(description="The hold's id.")
    subject: dict[str, str] = Field(
        description=(
            "While active: the identities held. Once released: their keyed hashes "
            "(`hmac-sha256:...`), as a minimised request keeps its subject."
        )
    )
    reason: str | None = Field(description="Why; removed when the hold is released.")
    created_at: datetime = Field(description="When it was placed (UTC, ISO 8601).")
    created_by: str = Field(description="Who placed it (the token's `sub`).")
    released_at: datetime | None = Field(
        default=None, description="When it was released (UTC); null while active."
    )
    released_by: str | None = Field(default=None, description="Who released it; null while active.")
    held_requests: int | None = Field(
        default=None,
        description=(
            "Only in the answer to a create: requests put on hold at once. A request "
            "running at that moment stops before its next task and is then on hold too."
        ),
    )


class HoldPage(BaseModel):
    """One page of holds, newest first."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [_HOLD_EXAMPLE], "next_cursor": None}]}
    )

    items: list[HoldOut] = Field(description="The holds on this page.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last."
    )
