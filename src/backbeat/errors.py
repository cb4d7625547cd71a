"""The one error tree of Backbeat, mapped once to HTTP problems and CLI exit codes.

BackbeatError (500)
├── InvalidInput (422)          bad values; ``reason`` is machine-readable
│   └── InvalidTargeting
├── Unauthenticated (401)
├── PermissionDenied (403)
│   ├── InvalidSignature        a forged tracking URL
│   └── TrackingUrlExpired      (410) an expired tracking URL
├── NotFound (404)
├── Conflict (409)              e.g. a stale concurrent write, an archived object
├── PreconditionFailed (412)    If-Match does not match the current version
└── DatabaseNotMigrated (503)   the schema is behind the code
"""

from __future__ import annotations

from typing import Any, ClassVar


class BackbeatError(Exception):
    """Base of every error Backbeat raises on purpose."""

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"
    reason: ClassVar[str] = "internal-error"
    exit_code: ClassVar[int] = 1

    def __init__(self, detail: str, *, reason: str | None = None, **context: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if reason is not None:
            self.reason = reason  # type: ignore[misc]
        self.context = context


class InvalidInput(BackbeatError):
    status = 422
    title = "Invalid input"
    reason = "invalid-input"
    exit_code = 2


class InvalidTargeting(InvalidInput):
    title = "Invalid targeting"
    reason = "invalid-targeting"


class Unauthenticated(BackbeatError):
    status = 401
    title = "Missing or unknown API key"
    reason = "unauthenticated"
    exit_code = 3


class PermissionDenied(BackbeatError):
    status = 403
    title = "Permission denied"
    reason = "forbidden"
    exit_code = 3


class InvalidSignature(PermissionDenied):
    title = "Tracking URL signature is invalid"
    reason = "invalid-signature"


class TrackingUrlExpired(PermissionDenied):
    status = 410
    title = "Tracking URL has expired"
    reason = "expired"


class NotFound(BackbeatError):
    status = 404
    title = "Not found"
    reason = "not-found"
    exit_code = 4


class Conflict(BackbeatError):
    status = 409
    title = "Conflict"
    reason = "conflict"
    exit_code = 5


class PreconditionFailed(BackbeatError):
    status = 412
    title = "Precondition failed"
    reason = "version-mismatch"
    exit_code = 5


class DatabaseNotMigrated(BackbeatError):
    status = 503
    title = "Database is not migrated"
    reason = "database-not-migrated"
    exit_code = 6
