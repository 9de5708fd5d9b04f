"""The public half of the receipt signing key, for whoever verifies receipts."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from app.deps import Reader, State
from app.routers.requests import problems
from app.services.evidence import receipts

router = APIRouter(prefix="/v1/receipts", tags=["deletion requests"])


class PublicKeyOut(BaseModel):
    """The key that verifies receipts (it signs them with its private half)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "algorithm": "Ed25519",
                    "key_id": "0000000000000000",
                    "public_key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                }
            ]
        }
    )

    algorithm: str = Field(description="The signature algorithm: `Ed25519`.")
    key_id: str = Field(
        description="The key's id, as receipts name it (16 hex digits of its SHA-256)."
    )
    public_key: str = Field(description="The public key: base64 of its 32 raw bytes.")


@router.get(
    "/public-key",
    response_model=PublicKeyOut,
    summary="The key that verifies receipts",
    description="Ed25519 public key (base64 of its 32 raw bytes) and its id.",
    responses=problems(401, 403),
)
async def public_key(state: State, _principal: Reader) -> PublicKeyOut:
    public = state.requests.receipt_public_key()
    return PublicKeyOut(
        algorithm=receipts.ALGORITHM, key_id=receipts.key_id(public), public_key=public
    )
