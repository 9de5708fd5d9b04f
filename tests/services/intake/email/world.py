"""The fixed SoundOps world that the e-mail corpus (corpus/ beside this file) is written against.

Five tenants, with fixed ids, site names, owner addresses and Instagram connections
(ig_username / facebook_page_name):

- lunar-echoes, mara@lunar-echoes.example:
  lunar.echoes / "Lunar Échoes — Официальная"
- copper-owls, jonas.berg@copperowls.example:
  copper.owls / -, and shared.stage / "Shared Stage Collective"
- velvet-tides, ines@velvet-tides.example:
  velvet.tides / -, and shared.stage / "Shared Stage Collective"
- night-ferry, ola.nordmann@nightferry.example: no Instagram
- paper-lanterns, kim.schmidt@paper-lanterns.example:
  paperlanterns_official / "Papierlaternen Köln"

`shared.stage` (the same Instagram account, same ig_user_id and Page) is connected by two
tenants, so a `meta_data` request naming it matches several tenants. Addresses that are
on file for nothing: anything at freemail.example, mgmt-agency.example, evil.example.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import asyncpg

from testsupport.seed import FERNET

_NS = uuid.UUID("7b0f6c1e-5d1a-4c55-9a51-3c2f0e6d9b10")


def _id(name: str) -> uuid.UUID:
    return uuid.uuid5(_NS, name)


@dataclass(frozen=True)
class EmailAccount:
    """One instagram_accounts row."""

    id: uuid.UUID
    login_family: str  # 'facebook' | 'instagram'
    ig_user_id: str
    ig_username: str
    facebook_user_id: str | None = None
    facebook_page_id: str | None = None
    facebook_page_name: str | None = None


@dataclass(frozen=True)
class EmailTenant:
    key: str
    id: uuid.UUID
    site_name: str
    owner_email: str
    accounts: tuple[EmailAccount, ...] = field(default_factory=tuple)


def _fold(value: str) -> str:
    return " ".join(value.split()).casefold()


@dataclass(frozen=True)
class EmailWorld:
    tenants: dict[str, EmailTenant]

    def tenant(self, key: str) -> EmailTenant:
        return self.tenants[key]

    def by_site(self, name: str) -> EmailTenant | None:
        """The tenant whose site_name is `name` (case-insensitive, spaces ignored)."""
        wanted = _fold(name)
        return next((t for t in self.tenants.values() if _fold(t.site_name) == wanted), None)

    def owned_by(self, email: str) -> list[EmailTenant]:
        """Tenants whose owner_email is `email` (case-insensitive)."""
        return [t for t in self.tenants.values() if t.owner_email.lower() == email.lower()]

    def instagram_tenants(self, name: str) -> list[EmailTenant]:
        """Tenants with an account whose ig_username (without @) or facebook_page_name
        is `name` (case-insensitive, surrounding spaces ignored)."""
        wanted = _fold(name)
        username = wanted.removeprefix("@")
        return [
            t
            for t in self.tenants.values()
            if any(
                _fold(a.ig_username) == username
                or (a.facebook_page_name is not None and _fold(a.facebook_page_name) == wanted)
                for a in t.accounts
            )
        ]


_SHARED_STAGE = {
    "ig_user_id": "17841400000900001",
    "ig_username": "shared.stage",
    "facebook_page_id": "104000000900001",
    "facebook_page_name": "Shared Stage Collective",
}

EMAIL_WORLD = EmailWorld(
    {
        "lunar": EmailTenant(
            "lunar",
            _id("lunar"),
            "lunar-echoes",
            "mara@lunar-echoes.example",
            (
                EmailAccount(
                    _id("lunar/ig"),
                    "facebook",
                    "17841400000100001",
                    "lunar.echoes",
                    facebook_user_id="100000000100001",
                    facebook_page_id="104000000100001",
                    facebook_page_name="Lunar Échoes — Официальная",
                ),
            ),
        ),
        "copper": EmailTenant(
            "copper",
            _id("copper"),
            "copper-owls",
            "jonas.berg@copperowls.example",
            (
                EmailAccount(_id("copper/ig"), "instagram", "17841400000200001", "copper.owls"),
                EmailAccount(
                    _id("copper/shared"),
                    "facebook",
                    _SHARED_STAGE["ig_user_id"],
                    _SHARED_STAGE["ig_username"],
                    facebook_user_id="100000000200002",
                    facebook_page_id=_SHARED_STAGE["facebook_page_id"],
                    facebook_page_name=_SHARED_STAGE["facebook_page_name"],
                ),
            ),
        ),
        "velvet": EmailTenant(
            "velvet",
            _id("velvet"),
            "velvet-tides",
            "ines@velvet-tides.example",
            (
                EmailAccount(_id("velvet/ig"), "instagram", "17841400000300001", "velvet.tides"),
                EmailAccount(
                    _id("velvet/shared"),
                    "facebook",
                    _SHARED_STAGE["ig_user_id"],
                    _SHARED_STAGE["ig_username"],
                    facebook_user_id="100000000300002",
                    facebook_page_id=_SHARED_STAGE["facebook_page_id"],
                    facebook_page_name=_SHARED_STAGE["facebook_page_name"],
                ),
            ),
        ),
        "ferry": EmailTenant(
            "ferry", _id("ferry"), "night-ferry", "ola.nordmann@nightferry.example"
        ),
        "paper": EmailTenant(
            "paper",
            _id("paper"),
            "paper-lanterns",
            "kim.schmidt@paper-lanterns.example",
            (
                EmailAccount(
                    _id("paper/ig"),
                    "facebook",
                    "17841400000500001",
                    "paperlanterns_official",
                    facebook_user_id="100000000500001",
                    facebook_page_id="104000000500001",
                    facebook_page_name="Papierlaternen Köln",
                ),
            ),
        ),
    }
)


def token_of(account: EmailAccount, which: str = "user") -> str:
    """The plaintext access token seeded for an account (`which`: user | page)."""
    prefix = "EAAG" if account.login_family == "facebook" else "IGQV"
    return f"{prefix}-{which}-{account.ig_username}-{account.id.hex[:8]}"


async def seed_email_world(dsn: str) -> EmailWorld:
    """Insert EMAIL_WORLD's tenants and instagram_accounts into the SoundOps database at
    `dsn` (postgresql://, schema tests/data/soundops_schema.sql, no rows of these ids yet).

    Tokens are Fernet-encrypted with testsupport.seed.FERNET_KEY (see token_of for the plain
    values), so the Meta Graph step can revoke them like in the other tests.
    """
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            for tenant in EMAIL_WORLD.tenants.values():
                await conn.execute(
                    "INSERT INTO tenants (id, site_name, owner_email, plan)"
                    " VALUES ($1, $2, $3, 'pro')",
                    tenant.id,
                    tenant.site_name,
                    tenant.owner_email,
                )
                for account in tenant.accounts:
                    page_token = (
                        FERNET.encrypt(token_of(account, "page").encode())
                        if account.facebook_page_id
                        else None
                    )
                    await conn.execute(
                        "INSERT INTO instagram_accounts (id, tenant_id, login_family, ig_user_id,"
                        " ig_username, facebook_user_id, facebook_page_id, facebook_page_name,"
                        " access_token_encrypted, page_token_encrypted)"
                        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                        account.id,
                        tenant.id,
                        account.login_family,
                        account.ig_user_id,
                        account.ig_username,
                        account.facebook_user_id,
                        account.facebook_page_id,
                        account.facebook_page_name,
                        FERNET.encrypt(token_of(account).encode()),
                        page_token,
                    )
    finally:
        await conn.close()
    return EMAIL_WORLD
