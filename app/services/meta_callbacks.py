"""Meta's callbacks: data deletion requests and deauthorizations, verified by signed_request.

No store is touched to answer a data deletion callback: it files a ``meta_data``
request (or finds the one already filed for the same signed_request) and
returns its status URL and confirmation code. A deauthorization looks up the
person's connected accounts (one indexed query) and files a disconnect for each
one connected before the deauthorization was issued.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import ValidationError

from app.errors import ServiceUnavailable
from app.models import DeletionRequest, RequestKind, RequestSource
from app.schemas import (
    CreateInstagramDisconnect,
    CreateMetaDataDeletion,
    InstagramDisconnectSubject,
    MetaDataSubject,
)
from app.services import signed_request
from app.services.requests import RequestService
from app.services.target import TargetDirectory, TargetUnavailable
from app.settings import Settings

Family = Literal["facebook", "instagram"]

# Which identity Meta's app-scoped user_id is, per login family (SoundOps README).
IDENTITY: dict[Family, str] = {"facebook": "facebook_user_id", "instagram": "ig_user_id"}
SECRET_SETTING: dict[Family, str] = {
    "facebook": "DELETION_META_APP_SECRET",
    "instagram": "DELETION_INSTAGRAM_APP_SECRET",
}


@dataclass(frozen=True)
class Deauthorized:
    requests: list[DeletionRequest]
    skipped_reconnected: int


class MetaCallbacks:
    def __init__(
        self, settings: Settings, requests: RequestService, directory: TargetDirectory | None
    ) -> None:
        self._settings = settings
        self._requests = requests
        self._directory = directory

    def _verify(self, family: Family, value: str | None) -> signed_request.SignedRequest:
        secret = (
            self._settings.meta_app_secret
            if family == "facebook"
            else self._settings.instagram_app_secret
        )
        if secret is None:
            raise ServiceUnavailable(
                f"This callback is not configured ({SECRET_SETTING[family]} is not set)."
            )
        return signed_request.verify(value, secret.get_secret_value().encode())

    @staticmethod
    def _key(value: str, suffix: str = "") -> str:
        return "signed_request:" + hashlib.sha256(value.encode()).hexdigest() + suffix

    async def data_deletion(self, family: Family, value: str | None) -> DeletionRequest:
        verified = self._verify(family, value)
        assert value is not None
        try:
            subject = MetaDataSubject.model_validate({IDENTITY[family]: verified.user_id})
        except ValidationError as exc:
            raise signed_request.InvalidSignedRequest(
                "signed_request user_id is not an app-scoped id"
            ) from exc
        body = CreateMetaDataDeletion(kind=RequestKind.meta_data, subject=subject)
        intake = await self._requests.create(
            body,
            requested_by=f"meta:{family}",
            idempotency_key=self._key(value),
            source=RequestSource.meta_callback,
        )
        return intake.request

    async def deauthorize(self, family: Family, value: str | None) -> Deauthorized:
        verified = self._verify(family, value)
        assert value is not None
        if self._directory is None:
            raise ServiceUnavailable(
                "The SoundOps database is not configured: nothing to disconnect."
            )
        try:
            accounts = await self._directory.connected_accounts(IDENTITY[family], verified.user_id)
        except TargetUnavailable as exc:
            raise ServiceUnavailable(
                "The SoundOps database is unreachable; retry later.", headers={"Retry-After": "30"}
            ) from exc
        issued = (
            datetime.fromtimestamp(verified.issued_at, UTC)
            if verified.issued_at is not None
            else None
        )
        filed: list[DeletionRequest] = []
        reconnected = 0
        for account in accounts:
            if (
                issued is not None
                and account.connected_at is not None
                and account.connected_at > issued
            ):
                reconnected += 1  # connected again after removing the app: leave it be
                continue
            body = CreateInstagramDisconnect(
                kind=RequestKind.instagram_disconnect,
                subject=InstagramDisconnectSubject(
                    tenant_id=account.tenant_id, instagram_account_id=account.account_id
                ),
                reason="Meta deauthorize callback: the person removed the app",
            )
            intake = await self._requests.create(
                body,
                requested_by=f"meta:{family}",
                idempotency_key=self._key(value, f":{account.account_id}"),
                source=RequestSource.meta_callback,
            )
            filed.append(intake.request)
        return Deauthorized(filed, reconnected)
