"""Requests by e-mail: ``parse`` (one raw message), ``inbound`` (what becomes of it),
``filing`` (once per Message-ID, unverified), ``links`` (the one-time link and its
confirmation), ``review`` (an operator's approve or reject), ``replies`` (the mail the
service sends), ``mailbox`` (the IMAP poller) and ``service`` (for the routers and CLI).

What the worker does for e-mail intake is named here, for the execution package."""

from app.services.intake.email.links import expire_confirmations, mail_unsent_links
from app.services.intake.email.review import expire_reviews

__all__ = ["expire_confirmations", "expire_reviews", "mail_unsent_links"]
