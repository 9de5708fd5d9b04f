"""Third-party data (what a person wrote to other accounts) is counted apart, as
``as_third_party``, on the preview, the task, the receipt and the status page; without any,
each keeps its form."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from app.models import DeletionRequest, DeletionTask
from app.purgers.base import PurgeResult, PurgerName
from app.routers.presenters import preview_out, request_out, status_page
from app.routers.status_page import render_html
from app.services.evidence import receipts
from app.services.preview import PreviewItem

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
MONGO = {
    "instagram_messages": 3,
    "instagram_comments": 5,
    "instagram_comments.as_third_party": 4,
}


def completed(mongo_deleted: dict[str, int]) -> DeletionRequest:
    request = DeletionRequest(
        id=uuid.uuid4(),
        kind="meta_data",
        status="completed",
        source="api",
        requested_by="backend",
        confirmation_code="c",
        created_at=NOW - timedelta(hours=1),
        due_at=NOW + timedelta(days=30),
        completed_at=NOW,
        datamap_version="v",
        minimised_at=None,
    )
    request.tasks = [
        DeletionTask(
            id=uuid.uuid4(),
            purger=name,
            status="succeeded",
            attempts=1,
            deleted=deleted,
            retained={},
        )
        for name, deleted in (("postgres", {"instagram_accounts": 1}), ("mongodb", mongo_deleted))
    ]
    return request


def test_the_receipt_counts_third_party_data_apart_and_keeps_its_form_without() -> None:
    stores = receipts.build(completed(MONGO), completed(MONGO).tasks, None)["stores"]
    assert stores[1]["deleted"] == MONGO
    assert stores[1]["as_third_party"] == {"instagram_comments": 4}
    assert "as_third_party" not in stores[0]

    plain = receipts.build(completed({"instagram_messages": 3}), [], None)
    assert "as_third_party" not in str(plain)


def test_the_task_and_the_status_page_count_third_party_data_apart() -> None:
    request = completed(MONGO)
    (_, mongo_task) = request_out(request, status_url="https://x.test/s").tasks
    assert mongo_task.as_third_party == {"instagram_comments": 4}

    page = status_page(request, receipts.backup_horizon(request.completed_at, None))
    assert [s.as_third_party for s in page.stores] == [{}, {"instagram_comments": 4}]
    html = render_html(page)
    assert "of which 4 item(s) you wrote to other accounts" in html
    assert html.count("you wrote to other accounts") == 1


def test_the_preview_counts_third_party_data_apart() -> None:
    preview = preview_out(
        [
            PreviewItem(PurgerName.postgres, PurgeResult(deleted={"instagram_accounts": 1})),
            PreviewItem(PurgerName.mongodb, PurgeResult(deleted=MONGO)),
        ]
    )
    postgres, mongo = preview.tasks
    assert mongo.would_delete == MONGO
    assert mongo.as_third_party == {"instagram_comments": 4}
    assert postgres.as_third_party == {}
