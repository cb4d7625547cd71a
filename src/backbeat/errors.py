"""The one error tree of Backbeat, mapped once to HTTP problems and CLI exit codes.

BackbeatError (500)
├── BadRequest (400)            a request that cannot be read at all (e.g. a malformed listener id)
├── InvalidInput (422)          bad values; ``reason`` is machine-readable
│   └── InvalidTargeting
├── Unauthenticated (401)
├── PermissionDenied (403)
│   ├── InvalidSignature        a forged tracking URL
│   └── TrackingUrlExpired      (410) an expired tracking URL
├── NotFound (404)
├── Conflict (409)              e.g. a stale concurrent write, an archived object
├── PreconditionFailed (412)    If-Match does not match the current version
├── RequestTimeout (408)        the body did not arrive in time
├── PayloadTooLarge (413)       the body is over the limit (checked before reading it)
├── TooManyRequests (429)       a rate limit; ``retry_after`` says when to come back
├── DatabaseUnavailable (503)   the database refused, timed out or is exhausted
└── DatabaseNotMigrated (503)   the schema is behind the code

Only the context keys an error class lists in ``public_context`` reach a problem body:
the rest (paths, segment names, revisions) is for logs, never for callers.
"""

from __future__ import annotations

from typing import Any, ClassVar


class BackbeatError(Exception):
    """Base of every error Backbeat raises on purpose."""

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"
    reason: ClassVar[str] = "internal-error"
    exit_code: ClassVar[int] = 1
    public_context: ClassVar[frozenset[str]] = frozenset(
        {"field", "current_version", "limit", "size", "key", "retry_after"}
    )

    def __init__(self, detail: str, *, reason: str | None = None, **context: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if reason is not None:
            self.reason = reason  # type: ignore[misc]
        self.context = context


class BadRequest(BackbeatError):
    status = 400
    title = "Bad request"
    reason = "bad-request"
    exit_code = 2


class InvalidInput(BackbeatError):
    status = 422
    title = "Invalid input"
    reason = "invalid-input"
    exit_code = 2


class InvalidTargeting(InvalidInput):
    title = "Invalid targeting"
    reason = "invalid-targeting"
    # ``path`` is where in the targeting expression the fault is, e.g. ``any.0.countries``.
    public_context = InvalidInput.public_context | {"path"}


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


class RequestTimeout(BackbeatError):
    status = 408
    title = "Request timeout"
    reason = "request-timeout"
    exit_code = 7


class PayloadTooLarge(BackbeatError):
    status = 413
    title = "Request body too large"
    reason = "payload-too-large"
    exit_code = 2


class TooManyRequests(BackbeatError):
    status = 429
    title = "Too many requests"
    reason = "rate-limited"
    exit_code = 7


class DatabaseUnavailable(BackbeatError):
    status = 503
    title = "Database unavailable"
    reason = "database-unavailable"
    exit_code = 6


class DatabaseNotMigrated(BackbeatError):
    status = 503
    title = "Database is not migrated"
    reason = "database-not-migrated"
    exit_code = 6
