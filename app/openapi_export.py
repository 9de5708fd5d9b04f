"""Write the app's OpenAPI schema to ``openapi.yaml`` (``python -m app.openapi_export``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from app.main import create_app
from app.settings import Environment, Settings


def current_schema() -> dict[str, Any]:
    # The schema does not depend on the deployment: no secrets needed to write it.
    return create_app(Settings(environment=Environment.development)).openapi()


def render(schema: dict[str, Any]) -> str:
    return yaml.safe_dump(schema, sort_keys=False, allow_unicode=True, width=100)


def main() -> None:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("openapi.yaml")
    target.write_text(render(current_schema()), encoding="utf-8")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
