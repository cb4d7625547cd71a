"""Signed tracking URLs: only the ad server can mint a URL that counts as delivery.

The HMAC covers the event, the decision, what was served, the charged price, the
listener and the expiry, so none of them can be changed by whoever fires the pixel.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import urlencode

from backbeat.errors import InvalidInput, InvalidSignature, TrackingUrlExpired

SIGNATURE_BYTES = 16
SIGNED_FIELDS = ("d", "li", "c", "cr", "s", "p", "cur", "l", "x")


@dataclass(frozen=True, slots=True)
class TrackingClaims:
    """What a tracking URL asserts about one served ad (or one no-fill, with zeros)."""

    decision_id: str
    line_item_id: int
    campaign_id: int
    creative_id: int
    slot_id: int
    price_micros: int
    currency: str
    listener: str
    expires_at: int

    def fields(self) -> dict[str, str]:
        return {
            "d": self.decision_id,
            "li": str(self.line_item_id),
            "c": str(self.campaign_id),
            "cr": str(self.creative_id),
            "s": str(self.slot_id),
            "p": str(self.price_micros),
            "cur": self.currency,
            "l": self.listener,
            "x": str(self.expires_at),
        }


class UrlSigner:
    """Mints and verifies tracking URLs with one secret key."""

    def __init__(self, key: bytes, base_url: str) -> None:
        if len(key) < 16:
            raise ValueError("signing key must be at least 16 bytes")
        self._mac = hmac.new(key, digestmod=hashlib.sha256)
        self._base = base_url.rstrip("/")

    def _signature(self, event: str, signed_fields: str) -> str:
        mac = self._mac.copy()
        mac.update(f"{event}\x1f{signed_fields}".encode())
        return base64.urlsafe_b64encode(mac.digest()[:SIGNATURE_BYTES]).rstrip(b"=").decode()

    @staticmethod
    def _joined(fields: dict[str, str]) -> str:
        return "\x1f".join(fields[name] for name in SIGNED_FIELDS)

    def urls(self, events: tuple[str, ...], claims: TrackingClaims) -> dict[str, str]:
        """One URL per event; the shared query is encoded once (this is on the decision path)."""
        fields = claims.fields()
        joined, query = self._joined(fields), urlencode(fields)
        return {
            event: f"{self._base}/t/{event}?{query}&sig={self._signature(event, joined)}"
            for event in events
        }

    def url(self, event: str, claims: TrackingClaims) -> str:
        return self.urls((event,), claims)[event]

    def verify(self, event: str, params: dict[str, str], now: float) -> TrackingClaims:
        """Return the claims of a genuine, unexpired URL; raise otherwise."""
        try:
            fields = {name: params[name] for name in SIGNED_FIELDS}
            signature = params["sig"]
        except KeyError as missing:
            raise InvalidSignature(
                f"tracking URL lacks {missing.args[0]!r}", reason="invalid-signature"
            ) from None
        expected = self._signature(event, self._joined(fields)).encode()
        # Bytes, not str: compare_digest refuses non-ASCII strings, and forgers send any.
        if not hmac.compare_digest(expected, signature.encode("utf-8", "surrogatepass")):
            raise InvalidSignature("tracking URL signature does not match")
        try:
            claims = TrackingClaims(
                decision_id=fields["d"],
                line_item_id=int(fields["li"]),
                campaign_id=int(fields["c"]),
                creative_id=int(fields["cr"]),
                slot_id=int(fields["s"]),
                price_micros=int(fields["p"]),
                currency=fields["cur"],
                listener=fields["l"],
                expires_at=int(fields["x"]),
            )
        except ValueError:  # pragma: no cover - only reachable with the signing key
            raise InvalidInput(
                "tracking URL has malformed fields", reason="malformed-tracking-url"
            ) from None
        if now > claims.expires_at:
            raise TrackingUrlExpired(f"tracking URL expired at {claims.expires_at}")
        return claims
