"""Dashboard sessions: a signed cookie that names who signed in, never the API key itself.

The cookie carries the principal (admin, or an advertiser and the id of the key used),
a random session id, an expiry and, for the admin, which advertiser is being viewed. It is
signed with HMAC-SHA256 under a key derived from the server's signing key, so every worker
and replica accepts it; a revoked advertiser key or a changed admin key ends the sessions
made with it on the next page. The CSRF token is an HMAC of the session id: it is bound to
the session and needs no server-side store.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, replace

import orjson

COOKIE = "bb_session"
LOGIN_COOKIE = "bb_login"  # double-submit token of the sign-in form (no session exists yet)
LIFETIME_SECONDS = 12 * 3600


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class UiSession:
    """Who is signed in: the admin, or one advertiser; ``viewing`` narrows the admin."""

    sid: str
    admin: bool
    advertiser_id: int | None
    key_id: int | None
    admin_tag: str | None  # MAC of the admin key at sign-in: a rotated key ends the session
    expires_at: int
    viewing: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.admin


class SessionCodec:
    """Signs and checks session cookies and CSRF tokens with one derived key."""

    def __init__(self, secret: bytes) -> None:
        self._key = hmac.new(secret, b"backbeat-ui-session-v1", hashlib.sha256).digest()

    def _mac(self, label: bytes, data: bytes) -> bytes:
        return hmac.new(self._key, label + b"\x1f" + data, hashlib.sha256).digest()

    def admin_tag(self, admin_key: str) -> str:
        return _b64(self._mac(b"admin", admin_key.encode())[:12])

    def new(
        self,
        *,
        admin: bool,
        advertiser_id: int | None,
        key_id: int | None,
        admin_key: str | None,
        now: float,
    ) -> UiSession:
        if not admin and (advertiser_id is None or key_id is None):
            raise ValueError("an advertiser session needs its advertiser and key")
        return UiSession(
            sid=secrets.token_urlsafe(18),
            admin=admin,
            advertiser_id=None if admin else advertiser_id,
            key_id=None if admin else key_id,
            admin_tag=self.admin_tag(admin_key) if admin and admin_key else None,
            expires_at=int(now) + LIFETIME_SECONDS,
        )

    def encode(self, session: UiSession) -> str:
        body = orjson.dumps(
            {
                "s": session.sid,
                "r": "admin" if session.admin else "advertiser",
                "a": session.advertiser_id,
                "k": session.key_id,
                "t": session.admin_tag,
                "x": session.expires_at,
                "v": session.viewing,
            }
        )
        return f"{_b64(body)}.{_b64(self._mac(b'session', body))}"

    def decode(self, token: str | None, now: float) -> UiSession | None:
        """The session of a genuine, unexpired cookie; None for anything else."""
        if not token or len(token) > 1024 or token.count(".") != 1:
            return None
        body_text, signature = token.split(".")
        try:
            body = _unb64(body_text)
            expected = _b64(self._mac(b"session", body))
            if not hmac.compare_digest(expected.encode(), signature.encode("ascii")):
                return None
            fields = orjson.loads(body)
            role = fields["r"]
            if role not in ("admin", "advertiser"):
                return None
            session = UiSession(
                sid=str(fields["s"]),
                admin=role == "admin",
                advertiser_id=_int_or_none(fields["a"]),
                key_id=_int_or_none(fields["k"]),
                admin_tag=fields["t"] if isinstance(fields["t"], str) else None,
                expires_at=int(fields["x"]),
                viewing=_int_or_none(fields["v"]),
            )
        except (ValueError, KeyError, TypeError, UnicodeEncodeError, orjson.JSONDecodeError):
            return None
        if not session.admin and (session.advertiser_id is None or session.key_id is None):
            return None
        return session if now < session.expires_at else None

    def csrf_token(self, session: UiSession) -> str:
        return _b64(self._mac(b"csrf", session.sid.encode())[:18])

    def csrf_ok(self, session: UiSession, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(
            self.csrf_token(session).encode(), str(token).encode("utf-8", "surrogatepass")
        )

    @staticmethod
    def viewing(session: UiSession, advertiser_id: int | None) -> UiSession:
        return replace(session, viewing=advertiser_id)


def _int_or_none(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("not an int")
    return value
