"""API keys, minted and revoked by the admin: per-advertiser keys and ad inserter keys."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, status
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from backbeat.api.deps import PrincipalDep, ServicesDep, SessionDep
from backbeat.catalog.auth import ROLE_ADVERTISER, ROLE_SSAI, create_api_key
from backbeat.catalog.models import ApiKey
from backbeat.catalog.schemas import ApiKeyCreated
from backbeat.errors import NotFound
from backbeat.types import utcnow

router = APIRouter(tags=["api keys"])

# Ids are int4 columns: anything larger is simply not an id (422, never an overflow 500).
PathId = Annotated[int, Path(ge=1, le=2**31 - 1)]


class InserterKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["ssai"]


@router.post("/v1/advertisers/{advertiser_id}/keys", status_code=status.HTTP_201_CREATED)
def mint_key(advertiser_id: PathId, principal: PrincipalDep, session: SessionDep) -> ApiKeyCreated:
    """Mint an advertiser key (admin): it sees and books only that advertiser's objects."""
    principal.require_admin()
    api_key, key = create_api_key(
        session=session, advertiser_id=advertiser_id, role=ROLE_ADVERTISER
    )
    session.commit()
    return ApiKeyCreated(
        id=api_key.id,
        advertiser_id=advertiser_id,
        role=ROLE_ADVERTISER,
        prefix=api_key.prefix,
        key=key,
    )


@router.post("/v1/api-keys", status_code=status.HTTP_201_CREATED)
def mint_inserter_key(
    body: InserterKeyRequest,  # noqa: ARG001 - the role is the only thing asked for
    principal: PrincipalDep,
    session: SessionDep,
    services: ServicesDep,
) -> ApiKeyCreated:
    """Mint a server-side ad inserter key (admin): its device headers are believed."""
    principal.require_admin()
    api_key, key = create_api_key(session=session, advertiser_id=None, role=ROLE_SSAI)
    session.commit()
    services.inserters.refresh(session)
    return ApiKeyCreated(
        id=api_key.id, advertiser_id=None, role=ROLE_SSAI, prefix=api_key.prefix, key=key
    )


@router.post("/v1/api-keys/{key_id}/revoke", status_code=status.HTTP_204_NO_CONTENT)
def revoke_key(
    key_id: PathId, principal: PrincipalDep, session: SessionDep, services: ServicesDep
) -> None:
    principal.require_admin()
    api_key = session.execute(select(ApiKey).where(ApiKey.id == key_id)).scalar_one_or_none()
    if api_key is None:
        raise NotFound(f"API key {key_id} not found", reason="api-key-not-found")
    api_key.revoked_at = api_key.revoked_at or utcnow()
    session.commit()
    services.inserters.refresh(session)
