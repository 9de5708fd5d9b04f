"""The subjects of deletion requests, and what an operator's review of one shows.

Domain types, not HTTP bodies: intake, resolution and the purgers use them, and the API's
bodies (``app.schemas``) are built from them. Each subject holds its identities in the one
canonical form they are compared, hashed and stored in.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from app.errors import Unprocessable, validation_errors
from app.models import RequestKind
from app.names import normalise, normalise_username

NumericId = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,32}$")]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]


def _normalised(function: Callable[[str], str]) -> BeforeValidator:
    return BeforeValidator(lambda value: function(value) if isinstance(value, str) else value)


# Compared (and stored) in the one normalised form: NFKC, case-folded, spaces folded.
PageName = Annotated[str, _normalised(normalise), StringConstraints(min_length=1, max_length=255)]
Username = Annotated[
    str, _normalised(normalise_username), StringConstraints(pattern=r"^[a-z0-9._]{1,30}$")
]


class RequestSubject(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def identities(self) -> dict[str, str]:
        """The identities given, as strings, in canonical form (used for dedupe and hashing)."""
        return {k: str(v) for k, v in self.model_dump(exclude_none=True).items()}


class _ExactlyOne(RequestSubject):
    @model_validator(mode="after")
    def _exactly_one(self) -> _ExactlyOne:
        given = [name for name, value in self.model_dump().items() if value is not None]
        if len(given) != 1:
            names = ", ".join(type(self).model_fields)
            raise ValueError(f"give exactly one of: {names}")
        return self


class AccountSubject(_ExactlyOne):
    """A whole SoundOps account, named by exactly one of its identities."""

    tenant_id: uuid.UUID | None = Field(default=None, description="The tenant's id (UUID).")
    site_name: Name | None = Field(
        default=None, description="The site's name, as on the account (1-255 characters)."
    )
    owner_email: EmailStr | None = Field(
        default=None, description="The account owner's e-mail address (compared lower-cased)."
    )

    @field_validator("owner_email", mode="after")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return value.lower() if value else value


class MetaDataSubject(_ExactlyOne):
    """A person or account whose Meta-sourced data is deleted. Names are kept in the one
    normalised form they are compared in (``app.names``)."""

    facebook_user_id: NumericId | None = Field(
        default=None, description="A Facebook user id (app-scoped, digits only)."
    )
    ig_user_id: NumericId | None = Field(
        default=None, description="An Instagram user id (digits only)."
    )
    ig_username: Username | None = Field(
        default=None,
        description="An Instagram username, without `@` (compared lower-cased; letters, "
        "digits, `.` and `_`, at most 30).",
    )
    facebook_page_name: PageName | None = Field(
        default=None,
        description="A Facebook page's name (compared in one normalised form: NFKC, "
        "case-folded, spaces folded).",
    )


class InstagramDisconnectSubject(RequestSubject):
    """One Instagram connection of one tenant: both ids are required."""

    tenant_id: uuid.UUID = Field(description="The tenant that holds the connection (UUID).")
    instagram_account_id: uuid.UUID = Field(
        description="SoundOps' id of the connected Instagram account (UUID), not Meta's."
    )


class HoldSubject(AccountSubject, MetaDataSubject):
    """Whom a legal hold holds: one or more identities of any kind of request, each in the
    same canonical form a request stores (so a hold and a request hash alike). A request
    is held when one identity it named or resolved to is one of these."""

    instagram_account_id: uuid.UUID | None = Field(
        default=None, description="One connected Instagram account (its id in SoundOps)."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> HoldSubject:  # replaces the one-identity rule: at least one
        if not self.identities():
            names = ", ".join(type(self).model_fields)
            raise ValueError(f"give at least one of: {names}")
        return self


class ReviewCandidate(BaseModel):
    """One tenant (and, for Meta data, one connected account) that what a message named
    matches."""

    tenant_id: uuid.UUID = Field(description="The candidate tenant.")
    site_name: str = Field(description="Its site's name.")
    instagram_account_id: uuid.UUID | None = Field(
        default=None,
        description="For Meta data: the connected Instagram account that matched; else null.",
    )
    facebook_page_name: str | None = Field(
        default=None, description="For Meta data: the connected Facebook page; else null."
    )


class Review(BaseModel):
    """What an operator's review of a request from e-mail shows: what the message named
    (identity: value as written) and the candidates it matched. Personal data: kept until
    the request is minimised."""

    named: dict[str, str] = Field(
        default_factory=dict,
        description="What the message named, by identity (e.g. `site_name`), as written.",
    )
    candidates: list[ReviewCandidate] = Field(
        default_factory=list, description="The tenants (and accounts) it matched; may be empty."
    )


SUBJECTS: dict[RequestKind, type[RequestSubject]] = {
    RequestKind.account: AccountSubject,
    RequestKind.meta_data: MetaDataSubject,
    RequestKind.instagram_disconnect: InstagramDisconnectSubject,
}


def validated_subject(kind: RequestKind, subject: Mapping[str, Any]) -> dict[str, str]:
    """The identities of a subject exactly as a create of this kind accepts and stores
    them; ``Unprocessable`` (the errors located as in a create's body) otherwise."""
    try:
        model = SUBJECTS[kind].model_validate(dict(subject))
    except ValidationError as exc:
        errors = [
            {**error, "loc": (kind.value, "subject", *error.get("loc", ()))}
            for error in exc.errors()
        ]
        raise Unprocessable(
            f"The subject is not a valid {kind.value} subject; see errors.",
            extra={"errors": validation_errors(errors)},
        ) from exc
    return model.identities()
