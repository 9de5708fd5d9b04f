"""The requests Meta's callbacks file keep the fingerprint they were stored with before
intake took domain commands: that of the create body the callback stands for, so that a
callback delivered again across versions still finds its request by Idempotency-Key."""

from __future__ import annotations

import uuid

from app.models import RequestKind, RequestSource
from app.schemas import CreateInstagramDisconnect, CreateMetaDataDeletion
from app.services.intake.command import fingerprint
from app.services.intake.meta.callbacks import DEAUTHORIZE_REASON, callback_request
from app.subjects import InstagramDisconnectSubject, MetaDataSubject


def test_a_data_deletion_callback_has_the_fingerprint_of_its_create_body() -> None:
    subject = MetaDataSubject(ig_user_id="17841400000000001")
    command = callback_request(
        "instagram", RequestKind.meta_data, subject, idempotency_key="signed_request:abc"
    )
    body = CreateMetaDataDeletion(kind=RequestKind.meta_data, subject=subject)
    assert command.fingerprint == fingerprint(body.model_dump(mode="json"))
    assert command.identities == {"ig_user_id": "17841400000000001"}
    assert (command.source, command.requested_by) == (RequestSource.meta_callback, "meta:instagram")


def test_a_deauthorize_disconnect_has_the_fingerprint_of_its_create_body() -> None:
    subject = InstagramDisconnectSubject(tenant_id=uuid.uuid4(), instagram_account_id=uuid.uuid4())
    command = callback_request(
        "facebook",
        RequestKind.instagram_disconnect,
        subject,
        idempotency_key="meta-deauthorize:x:y",
        reason=DEAUTHORIZE_REASON,
    )
    body = CreateInstagramDisconnect(
        kind=RequestKind.instagram_disconnect, subject=subject, reason=DEAUTHORIZE_REASON
    )
    assert command.fingerprint == fingerprint(body.model_dump(mode="json"))
    assert command.reason == DEAUTHORIZE_REASON
