"""API keys and who is calling: the admin, one advertiser who sees only its own objects, or a
server-side ad inserter (SSAI) whose device headers are believed.

Roles:

- ``admin`` (``BACKBEAT_ADMIN_KEY``): everything, including the publisher's inventory (slots)
  and its tiers (``house``, ``sponsorship``).
- ``advertiser``: its own advertiser, campaigns, line items and creatives; books only the
  tiers in ``catalog.policy.ADVERTISER_TIERS`` at a CPM no lower than the lowest active slot
  reserve in the campaign's currency.
- ``ssai``: no management access; on ``/vast``, ``/t/…`` and ``POST /v1/decisions`` its
  ``X-Device-IP`` / ``X-Device-User-Agent`` headers (and the JSON ``ip``/``user_agent``)
  name the listener's device. From any other caller those are ignored. It (or the admin)
  may report tracking hits in batches, each naming its device (``POST /v1/tracking/batch``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from backbeat.catalog.models import Advertiser, ApiKey
from backbeat.catalog.vocabulary import Status
from backbeat.errors import NotFound, PermissionDenied, Unauthenticated

KEY_PREFIX = "bb_"
ROLE_ADMIN = "admin"
ROLE_ADVERTISER = "advertiser"
ROLE_SSAI = "ssai"
KEY_ROLES = (ROLE_ADVERTISER, ROLE_SSAI)


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller; ``advertiser_id`` is None for the admin and for ad inserters."""

    advertiser_id: int | None
    role: str = ROLE_ADVERTISER

    @property
    def is_admin(self) -> bool:
        return self.role == ROLE_ADMIN

    def require_admin(self) -> None:
        if not self.is_admin:
            raise PermissionDenied("this operation needs the admin key", reason="admin-only")

    def require_management(self) -> None:
        """Ad inserter keys may only serve and track; the catalog is not theirs."""
        if self.role == ROLE_SSAI:
            raise PermissionDenied(
                "an ad inserter key cannot use the management API", reason="ssai-key"
            )


ADMIN = Principal(advertiser_id=None, role=ROLE_ADMIN)


def hash_key(key: str) -> str:
    # Keys are 256-bit random strings, so an unsalted SHA-256 is not guessable.
    return hashlib.sha256(key.encode()).hexdigest()


def is_admin_key(key: str | None, admin_key: str | None) -> bool:
    """Whether ``key`` is the configured admin key, compared in constant time (no database)."""
    return bool(key and admin_key and hmac.compare_digest(hash_key(key), hash_key(admin_key)))


def authenticate(*, session: Session, key: str | None, admin_key: str | None) -> Principal:
    """Resolve a bearer key; the admin key is compared in constant time."""
    if not key:
        raise Unauthenticated("send `Authorization: Bearer <key>`", reason="missing-api-key")
    if is_admin_key(key, admin_key):
        return ADMIN
    row = session.execute(
        select(ApiKey.advertiser_id, ApiKey.role).where(
            ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None)
        )
    ).first()
    if row is None:
        raise Unauthenticated("unknown or revoked API key", reason="invalid-api-key")
    return Principal(advertiser_id=row.advertiser_id, role=row.role)


def create_api_key(
    *, session: Session, advertiser_id: int | None, role: str = ROLE_ADVERTISER
) -> tuple[ApiKey, str]:
    """Mint a key; the plain key is returned once and never stored."""
    if role == ROLE_ADVERTISER:
        advertiser = None
        if advertiser_id is not None and 0 < advertiser_id < 2**31:
            advertiser = session.get(Advertiser, advertiser_id)
        if advertiser is None:
            raise NotFound(
                f"advertiser {advertiser_id} not found",
                advertiser_id=advertiser_id,
            )
        if advertiser.status == Status.ARCHIVED:
            raise PermissionDenied("advertiser is archived", reason="archived")
    elif role == ROLE_SSAI:
        advertiser_id = None
    else:
        raise PermissionDenied(f"no keys of role {role!r}", reason="unknown-role")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey(
        advertiser_id=advertiser_id, role=role, prefix=key[:10], key_hash=hash_key(key)
    )
    session.add(api_key)
    session.flush()
    return api_key, key


def bearer_of(authorization: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header, if that is what it is."""
    scheme, _, key = (authorization or "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" and key.strip() else None


class TrustedInserters:
    """Digests of the live ad inserter keys, held in memory so hot paths ask no database.

    ``refresh`` reloads them (the app does it every catalog poll interval and right after
    a key is minted or revoked in this process).
    """

    def __init__(self) -> None:
        self._digests: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def refresh(self, session: Session) -> None:
        digests = session.execute(
            select(ApiKey.key_hash).where(ApiKey.role == ROLE_SSAI, ApiKey.revoked_at.is_(None))
        ).scalars()
        with self._lock:
            self._digests = frozenset(digests)

    def trusts(self, headers: Mapping[str, str]) -> bool:
        """Whether the request carries a live ad inserter key."""
        if not self._digests:
            return False
        key = bearer_of(headers.get("authorization"))
        return key is not None and hash_key(key) in self._digests
