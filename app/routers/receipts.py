"""The public half of the receipt signing key, for whoever verifies receipts."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from app.deps import Reader, State
from app.routers.requests import problems
from app.services.evidence import receipts

router = APIRouter(prefix="/v1/receipts", tags=["deletion requests"])


class PublicKeyOut(BaseModel):
    algorithm: str
    key_id: str
    public_key: str


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
