"""The docs UI works without internet access: every asset it loads is served here."""

from __future__ import annotations

import re

import httpx
import pytest

_ASSET = re.compile(r"""(?:src|href)=["']?([^"' >]+)""")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_nothing_from_another_host(
    client: httpx.AsyncClient, page: str
) -> None:
    response = await client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assets = _ASSET.findall(response.text)
    scripts = [a for a in assets if a.endswith(".js")]
    assert scripts, f"{page} loads no script: the UI would be blank"
    for asset in assets:
        # Same host only: a path, never a scheme or a protocol-relative //host.
        assert asset.startswith("/") and not asset.startswith("//"), asset
        loaded = await client.get(asset)
        assert loaded.status_code == 200, asset
        assert len(loaded.content) > 1000, asset
    assert "cdn." not in response.text and "fonts.googleapis" not in response.text
    assert "'/openapi.json'" in response.text or '"/openapi.json"' in response.text


async def test_the_docs_assets_are_not_in_the_api_schema(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert not [p for p in paths if p.startswith(("/docs", "/redoc"))]
