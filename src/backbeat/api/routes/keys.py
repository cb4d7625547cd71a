"""Per-advertiser API keys, minted and revoked by the admin."""

from __future__ import annotations

from fastapi import APIRouter, status
from sqlalchemy import select

from backbeat.api.deps import PrincipalDep, SessionDep
from backbeat.catalog.auth import create_api_key
from backbeat.catalog.models import ApiKey
from backbeat.catalog.schemas import ApiKeyCreated
from backbeat.errors import NotFound
from backbeat.types import utcnow

router = APIRouter(tags=["api keys"])


@router.post("/v1/advertisers/{advertiser_id}/keys", status_code=status.HTTP_201_CREATED)
def mint_key(advertiser_id: int, principal: PrincipalDep, session: SessionDep) -> ApiKeyCreated:
    principal.require_admin()
    api_key, key = create_api_key(session=session, advertiser_id=advertiser_id)
    session.commit()
    return ApiKeyCreated(id=api_key.id, advertiser_id=advertiser_id, prefix=api_key.prefix, key=key)


@router.post("/v1/api-keys/{key_id}/revoke", status_code=status.HTTP_204_NO_CONTENT)
def revoke_key(key_id: int, principal: PrincipalDep, session: SessionDep) -> None:
    principal.require_admin()
    api_key = session.execute(select(ApiKey).where(ApiKey.id == key_id)).scalar_one_or_none()
    if api_key is None:
        raise NotFound(f"API key {key_id} not found", reason="api-key-not-found")
    api_key.revoked_at = api_key.revoked_at or utcnow()
    session.commit()
