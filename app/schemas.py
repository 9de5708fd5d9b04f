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

from app.models import RequestKind, RequestSource, RequestStatus, TaskStatus
from app.purgers.base import PurgerName
from app.retention_status import RetentionStatus, RetentionStore
from app.subjects import AccountSubject, InstagramDisconnectSubject, MetaDataSubject, Review


class _CreateBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Literal["email", "admin_panel", "api", "meta_email"] = "api"
    notify_email: EmailStr | None = Field(
        default=None, description="Where to send the confirmation once the deletion is done."
    )
    reason: str | None = Field(
        default=None, max_length=2000, description="Free text for operators."
    )


class CreateAccountDeletion(_CreateBase):
    kind: Literal[RequestKind.account]
    subject: AccountSubject


class CreateMetaDataDeletion(_CreateBase):
    kind: Literal[RequestKind.meta_data]
    subject: MetaDataSubject


class CreateInstagramDisconnect(_CreateBase):
    kind: Literal[RequestKind.instagram_disconnect]
    subject: InstagramDisconnectSubject


CreateDeletionRequest = Annotated[
    CreateAccountDeletion | CreateMetaDataDeletion | CreateInstagramDisconnect,
    Field(discriminator="kind"),
]

CREATE_EXAMPLES: dict[str, dict[str, Any]] = {
    "account": {
        "summary": "Delete a whole account, by tenant id",
        "value": {
            "kind": "account",
            "subject": {"tenant_id": "0b7e3c1e-4f7a-4d3e-9a51-2f0d6f1c9a10"},
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
                "tenant_id": "0b7e3c1e-4f7a-4d3e-9a51-2f0d6f1c9a10",
                "instagram_account_id": "5d1f9a2b-8c3e-4b7a-9f10-1a2b3c4d5e6f",
            },
        },
    },
}


class RetainedOut(BaseModel):
    count: int
    reason: str


class TaskOut(BaseModel):
    purger: PurgerName
    status: TaskStatus
    attempts: int
    deleted: dict[str, int]
    as_third_party: dict[str, int] = Field(
        default_factory=dict,
        description=(
            "Of `deleted`, what the subject wrote to other people's accounts (a "
            "`meta_data` request by `ig_username`), by collection."
        ),
    )
    retained: dict[str, RetainedOut]
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None


class ReviewOut(Review):
    reason: str | None = Field(description="Why the request needs review (a code).")


class DeletionRequestOut(BaseModel):
    id: uuid.UUID
    kind: RequestKind
    status: RequestStatus
    source: RequestSource
    requested_by: str
    confirmation_code: str
    status_url: str
    status_reason: str | None = Field(
        default=None, description="Why the request is in its status (cancelled, failed)."
    )
    review_reason: str | None = Field(
        default=None,
        description=(
            "Requests from e-mail: why it needed an operator's review (`sender_not_on_file`, "
            "`no_match`, `several_tenants`, `several_pages`, `dmarc_fail`; "
            "`third_party_only`: a username nobody on file has, who wrote comments or "
            "messages here; `third_party_unchecked`: nobody on file, and MongoDB could not "
            "be asked whether the username wrote anything)."
        ),
    )
    review: ReviewOut | None = Field(
        default=None,
        description=(
            "Only for callers with `deletions:admin`, while the request is `needs_review`: "
            "what the message named (as written) and the candidates it matched."
        ),
    )
    created_at: datetime
    due_at: datetime
    completed_at: datetime | None
    tasks: list[TaskOut]


class DeletionRequestPage(BaseModel):
    items: list[DeletionRequestOut]
    next_cursor: str | None


class CancelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=2000)


class Problem(BaseModel):
    """RFC 9457 problem details, as every 4xx/5xx answer carries them."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = None


class StatusPageStore(BaseModel):
    store: PurgerName
    status: TaskStatus
    verified: bool = Field(
        description="The store's purger ran and verified that nothing of the subject is left."
    )
    outcome: str | None = Field(
        description=(
            "What happened there, once finished: `deleted and verified`, or why it was "
            "skipped (`not part of this deployment`, `not configured: ...`, `nothing to "
            "delete there for this kind of request`)."
        )
    )
    deleted: dict[str, int]
    as_third_party: dict[str, int] = Field(
        default_factory=dict,
        description=(
            "Of `deleted`, what the subject wrote to other people's accounts (a "
            "`meta_data` request by `ig_username`), by collection."
        ),
    )
    retained: dict[str, RetainedOut]


class BackupHorizonOut(BaseModel):
    retention_days: int | None = Field(
        description="How long backups of the SoundOps stores are kept; null: not stated here."
    )
    expire_by: datetime | None = Field(
        description=(
            "Once completed: the date by which backup copies of the deleted data expire "
            "(completed_at + retention_days)."
        )
    )
    statement: str = Field(
        description="The same in words, or that backups are outside this service."
    )


class StatusPageOut(BaseModel):
    """The public status of a request: no identifiers, no personal data."""

    kind: RequestKind
    status: RequestStatus
    received_at: datetime
    due_at: datetime
    completed_at: datetime | None
    summary: str | None = Field(
        description="For a completed request: what it may claim as a whole."
    )
    stores: list[StatusPageStore]
    backups: BackupHorizonOut


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)


class PreviewTask(BaseModel):
    purger: PurgerName
    would_delete: dict[str, int]
    as_third_party: dict[str, int] = Field(
        default_factory=dict,
        description=(
            "Of `would_delete`, what the subject wrote to other people's accounts (a "
            "`meta_data` request by `ig_username`), by collection."
        ),
    )
    would_retain: dict[str, RetainedOut]
    skipped: str | None = Field(
        default=None,
        description="Why this store would be skipped (not configured, not applicable).",
    )


class PreviewOut(BaseModel):
    tasks: list[PreviewTask]


class MetaDeletionOut(BaseModel):
    """What Meta's Data Deletion Request Callback must answer."""

    url: str
    confirmation_code: str


class MetaDeauthorizeOut(BaseModel):
    expanded: bool = Field(
        description="False: recorded, but the SoundOps database could not be read now; the "
        "worker files the disconnects when it can (the counts are then null)."
    )
    disconnects: int | None = Field(
        description="Disconnect requests filed (or found already filed)."
    )
    skipped_reconnected: int | None = Field(
        description="Accounts connected again after the deauthorization was issued: left alone."
    )


class RetentionItemOut(BaseModel):
    """One automatic-retention rule of the SoundOps contract, as the store has it."""

    store: RetentionStore
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
    found: str | None = Field(description="What the store has (indexes; whole-bucket rules).")
    detail: str | None = Field(description="Why the status is what it is.")
    action: str | None = Field(
        default=None, description="What `retention apply` did or tried (apply only)."
    )


class RetentionReportOut(BaseModel):
    ok: bool = Field(
        description=(
            "No item is missing, wrong, unreachable or in error. `unsupported` and "
            "`not_configured` items do not count against it."
        )
    )
    items: list[RetentionItemOut]


class InboundEmailOut(BaseModel):
    outcome: Literal["awaiting_confirmation", "needs_review", "duplicate", "ignored"] = Field(
        description="What became of the message."
    )
    request_id: uuid.UUID | None = Field(
        description="The request it filed or found (none for an ignored message)."
    )


class ApproveBody(BaseModel):
    """Approve a request from e-mail that needs review: the operator's choice of one tenant."""

    model_config = ConfigDict(extra="forbid")

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
            "it reaches only what the named username wrote."
        ),
        examples=[{"site_name": "the-band"}, {"tenant_id": "0b7e3c1e-4f7a-4d3e-9a51-2f0d6f1c9a10"}],
    )


class RejectBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(
        default=None, max_length=2000, description="Why (recorded as the status reason)."
    )
