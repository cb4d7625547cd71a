"""API keys and who is calling: the admin, or one advertiser who sees only its own objects."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from backbeat.catalog.models import Advertiser, ApiKey
from backbeat.catalog.vocabulary import Status
from backbeat.errors import NotFound, PermissionDenied, Unauthenticated

KEY_PREFIX = "bb_"


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller; ``advertiser_id`` is None for the admin."""

    advertiser_id: int | None

    @property
    def is_admin(self) -> bool:
        return self.advertiser_id is None

    def require_admin(self) -> None:
        if not self.is_admin:
            raise PermissionDenied("this operation needs the admin key", reason="admin-only")


ADMIN = Principal(advertiser_id=None)


def hash_key(key: str) -> str:
    # Keys are 256-bit random strings, so an unsalted SHA-256 is not guessable.
    return hashlib.sha256(key.encode()).hexdigest()


def authenticate(*, session: Session, key: str | None, admin_key: str | None) -> Principal:
    """Resolve a bearer key; the admin key is compared in constant time."""
    if not key:
        raise Unauthenticated("send `Authorization: Bearer <key>`", reason="missing-api-key")
    if admin_key and hmac.compare_digest(hash_key(key), hash_key(admin_key)):
        return ADMIN
    row = session.execute(
        select(ApiKey.advertiser_id).where(
            ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None)
        )
    ).first()
    if row is None:
        raise Unauthenticated("unknown or revoked API key", reason="invalid-api-key")
    return Principal(advertiser_id=row.advertiser_id)


def create_api_key(*, session: Session, advertiser_id: int) -> tuple[ApiKey, str]:
    """Mint a key for an advertiser; the plain key is returned once and never stored."""
    advertiser = session.get(Advertiser, advertiser_id)
    if advertiser is None:
        raise NotFound(f"advertiser {advertiser_id} not found", advertiser_id=advertiser_id)
    if advertiser.status == Status.ARCHIVED:
        raise PermissionDenied("advertiser is archived", reason="archived")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey(advertiser_id=advertiser_id, prefix=key[:10], key_hash=hash_key(key))
    session.add(api_key)
    session.flush()
    return api_key, key
