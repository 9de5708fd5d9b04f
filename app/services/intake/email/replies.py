"""What the service mails about e-mail intake: the one-time link to an address on file,
and the one explanatory reply to a message that was not a request (or too large)."""

from __future__ import annotations

from datetime import datetime

from app import metrics
from app.models import (
    RequestKind,
)
from app.services.evidence.notices import DeliveryFailed, send_email
from app.settings import Settings

CONFIRM_SUBJECT = "Confirm your SoundOps data deletion request"

REPLY_SUBJECT = "About your message to SoundOps privacy"

_WHAT = {
    RequestKind.account: "your SoundOps account and all of its data",
    RequestKind.meta_data: "the data SoundOps received from Facebook or Instagram for your account",
}


def confirmation_text(link: str, kind: RequestKind, expires_at: datetime | None) -> str:
    expiry = f" and expires on {expires_at:%d %B %Y, %H:%M} UTC" if expires_at else ""
    return "\n".join(
        [
            "Hello,",
            "",
            f"SoundOps received an e-mail asking to delete {_WHAT[kind]}.",
            "This address is on file for it, so we ask you to confirm.",
            "",
            "Nothing has been deleted. To confirm, open this link and press the button",
            "on the page, which shows what will be deleted:",
            "",
            link,
            "",
            f"The link works once{expiry}.",
            "If you did not ask for this, ignore this message: nothing will be deleted.",
            "",
            "This is an automatic message.",
            "SoundOps",
        ]
    )


async def send_confirmation_link(
    settings: Settings,
    to: str,
    link: str,
    kind: RequestKind | str,
    *,
    expires_at: datetime | None = None,
) -> None:
    """Mail the one-time link to an address on file (``DELETION_SMTP_URL``, from
    ``DELETION_MAIL_FROM``). Names no subject; raises ``DeliveryFailed``."""
    if not settings.smtp_url:
        raise DeliveryFailed("DELETION_SMTP_URL is not set")
    if "@" not in to or any(c in to for c in "\r\n"):
        raise DeliveryFailed("not a deliverable address")
    await send_email(
        settings, to, CONFIRM_SUBJECT, confirmation_text(link, RequestKind(kind), expires_at)
    )
    metrics.CONFIRMATIONS_SENT.inc()


def reply_text(too_large: bool = False) -> str:
    why = (
        [
            "your message to this mailbox was too large to be read (over 1 MiB), so",
            "nothing was done with it. Please write again without attachments, with",
            "one of these subject lines:",
        ]
        if too_large
        else [
            "this mailbox handles requests to delete data held by SoundOps, and your",
            "message did not look like one. To ask for a deletion, write again with",
            "one of these subject lines:",
        ]
    )
    return "\n".join(
        [
            "Hello,",
            "",
            *why,
            "",
            '- "Account Deletion Request": name the account or site in the message,',
            "  and send it from the e-mail address of the account;",
            '- "Meta Data Deletion Request": name the Instagram username or the',
            "  Facebook Page whose data SoundOps should delete.",
            "",
            "Nothing will be deleted without a confirmation sent to the address on file.",
            "",
            "This is an automatic reply; you will get at most one a day.",
            "SoundOps",
        ]
    )
