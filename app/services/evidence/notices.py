"""Notices: the confirmations once a request is finished (a signed webhook and an e-mail),
and the one way the service sends mail (:func:`send_email`, which e-mail intake's
confirmation links and replies use too).

The webhook body is JSON, signed like Stripe's: header
``X-SoundOps-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` with
``DELETION_NOTIFY_WEBHOOK_SECRET``. The e-mail goes over SMTP (aiosmtplib) to
``notify_email``, or to the account's owner address read before the account was
deleted. Neither names the subject: they carry the request id, the status page,
and per store what was deleted and retained.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from email.message import EmailMessage
from typing import Any
from urllib.parse import unquote, urlsplit

import aiosmtplib
import httpx

from app.settings import Settings

SIGNATURE_HEADER = "X-SoundOps-Signature"


class DeliveryFailed(Exception):
    """Not delivered this time; the message says why without personal data."""


async def deliver(
    senders: Mapping[str, Callable[[], Awaitable[None]]],
    statuses: MutableMapping[str, str | None],
    *,
    give_up: bool,
) -> dict[str, str]:
    """Try each channel once (completion's and the operators' notices alike): a channel
    that took it is ``sent``; one that failed stays ``pending`` to be tried again after a
    backoff, or is ``given_up`` when ``give_up``. Returns the errors, per channel (safe
    to log: they name no one)."""
    errors: dict[str, str] = {}
    for channel, send in senders.items():
        try:
            await send()
            statuses[channel] = "sent"
        except DeliveryFailed as exc:
            errors[channel] = str(exc)
            if give_up:
                statuses[channel] = "given_up"
    return errors


def signature(secret: bytes, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: bytes, body: bytes, header: str, tolerance: int = 300) -> bool:
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance:
        return False
    expected = signature(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


async def send_webhook(
    http: httpx.AsyncClient, settings: Settings, payload: dict[str, Any]
) -> None:
    assert settings.notify_webhook_url and settings.notify_webhook_secret
    body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    secret = settings.notify_webhook_secret.get_secret_value().encode()
    try:
        response = await http.post(
            settings.notify_webhook_url,
            content=body,
            headers={
                "Content-Type": "application/json",
                SIGNATURE_HEADER: signature(secret, body, int(time.time())),
            },
            timeout=httpx.Timeout(10.0, connect=5.0),
        )
    except httpx.HTTPError as exc:
        raise DeliveryFailed(f"webhook unreachable ({type(exc).__name__})") from exc
    if not response.is_success:
        raise DeliveryFailed(f"webhook answered HTTP {response.status_code}")


def _smtp_parts(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps"):
        raise ValueError("DELETION_SMTP_URL must be smtp:// or smtps://")
    return {
        "hostname": parts.hostname or "localhost",
        "port": parts.port or (465 if parts.scheme == "smtps" else 25),
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "use_tls": parts.scheme == "smtps",
        "start_tls": False if parts.scheme == "smtps" else None,
    }


async def send_email(
    settings: Settings,
    to: str,
    subject: str,
    text: str,
    *,
    headers: Mapping[str, str] | None = None,
) -> None:
    """One plain-text message; ``Auto-Submitted: auto-generated`` unless ``headers`` say
    otherwise (every message of the service is automatic: RFC 3834)."""
    assert settings.smtp_url
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = to
    message["Subject"] = subject
    extra = {"Auto-Submitted": "auto-generated", **(headers or {})}
    for name, value in extra.items():
        message[name] = value
    message.set_content(text)
    try:
        await aiosmtplib.send(message, timeout=15, **_smtp_parts(settings.smtp_url))
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise DeliveryFailed(f"SMTP delivery failed ({type(exc).__name__})") from exc


def completion_text(payload: dict[str, Any]) -> str:
    """The completion e-mail, from
    :func:`app.services.execution.completion.completion_payload`: it says "deleted and
    verified" only for the stores that ran, and names the skipped ones."""
    lines = [
        "Hello,",
        "",
        "your data deletion request to SoundOps is complete: " + payload["summary"] + ".",
        f"Completed: {payload['completed_at']}",
        f"Status page: {payload['status_url']}",
        "",
        "What happened, per store:",
    ]
    for store in payload["stores"]:
        if store["verified"]:
            deleted = sum(store["deleted"].values())
            lines.append(f"- {store['store']}: {store['outcome']}, {deleted} item(s) deleted")
        else:
            lines.append(f"- {store['store']}: {store['outcome'] or store['status']}")
        for name, kept in store["retained"].items():
            lines.append(f"  kept: {kept['count']} in {name} ({kept['reason']})")
    lines += ["", "This is an automatic message; there is no need to answer it.", "SoundOps"]
    return "\n".join(lines)
