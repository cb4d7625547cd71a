"""Signed tracking URLs: only the ad server can mint a URL that counts as delivery.

A keyed BLAKE2b tag covers the event, the decision, what was served, the charged price,
the listener and the expiry, so none of them can be changed by whoever fires the pixel.
The signed message is length-prefixed (``<len>:<value>`` per field, the event last), so
no value can borrow characters from its neighbour: the ``\\x1f``-joined encoding it
replaces let a listener id containing the separator shift ``cur=USD\\x1fa&l=b``.

Every value is drawn from a URL-safe alphabet (digits, lower-case hex, base64url,
``[A-Z]{3}``, and listener ids restricted to ``LISTENER_ALPHABET``), so URLs are built
with plain string formatting, and ``verify`` checks each field's shape after the
signature, so a record that reaches the event log is always well formed.

The price is not readable from the URL: it travels encrypted, XORed with a pad derived
from the decision id under a key of its own (decision ids are unique, so a pad is never
reused), the way exchanges encrypt their price macros. The signature covers the
ciphertext.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import operator
import re
import string
from typing import NamedTuple

from backbeat.errors import InvalidInput, InvalidSignature, TrackingUrlExpired

SIGNATURE_BYTES = 16
SIGNED_FIELDS = ("d", "li", "c", "cr", "s", "p", "cur", "l", "x")
MAX_ID = 2**31 - 1
MAX_PRICE_MICROS = 2**63 - 1
LISTENER_MAX = 128
# RFC 3986 unreserved characters plus ``:`` and ``@`` (legal unescaped in a query):
# a listener id needs no percent-encoding in a URL and cannot carry a separator.
LISTENER_ALPHABET = "A-Za-z0-9._~:@-"


# Field shapes as character sets: ``str.strip`` leaves nothing exactly when every character
# is in the set, which costs a fraction of a regex match per field (these run for every
# pixel). Property tests hold them equal to the regular expressions of each shape.
_LISTENER_CHARS = string.ascii_letters + string.digits + "._~:@-"
_HEX_CHARS = "0123456789abcdef"
_B64URL_CHARS = string.ascii_letters + string.digits + "_-"


def is_safe_listener(value: str) -> bool:
    """True when ``value`` may be a listener id: 1–128 characters of ``LISTENER_ALPHABET``."""
    return 0 < len(value) <= LISTENER_MAX and not value.strip(_LISTENER_CHARS)


def _is_decision_id(value: str) -> bool:
    """``[0-9a-f]{1,32}``."""
    return 0 < len(value) <= 32 and not value.strip(_HEX_CHARS)


def _is_number(value: str) -> bool:
    """``[0-9]{1,19}``: ``isdigit`` alone would take other scripts' digits."""
    return 0 < len(value) <= 19 and value.isascii() and value.isdigit()


def _is_sealed_price(value: str) -> bool:
    """``[A-Za-z0-9_-]{11}``."""
    return len(value) == 11 and not value.strip(_B64URL_CHARS)


def _is_currency(value: str) -> bool:
    """``[A-Z]{3}``."""
    return len(value) == 3 and value.isascii() and value.isalpha() and value.isupper()


class TrackingClaims(NamedTuple):
    """What a tracking URL asserts about one served ad (or one no-fill, with zeros).

    A named tuple: one is built per verified pixel, and a frozen dataclass costs several
    times more to build.
    """

    decision_id: str
    line_item_id: int
    campaign_id: int
    creative_id: int
    slot_id: int
    price_micros: int
    currency: str
    listener: str
    expires_at: int


def _netstrings(values: tuple[str, ...]) -> bytes:
    return "".join([f"{len(value)}:{value}" for value in values]).encode("utf-8", "surrogatepass")


def _claims_message(
    d: str, li: str, c: str, cr: str, s: str, p: str, cur: str, listener: str, x: str
) -> bytes:
    """``_netstrings`` of the nine values in ``SIGNED_FIELDS`` order, in one format (minting
    and every pixel's check build it: the generic join costs twice as much)."""
    return (
        f"{len(d)}:{d}{len(li)}:{li}{len(c)}:{c}{len(cr)}:{cr}{len(s)}:{s}{len(p)}:{p}"
        f"{len(cur)}:{cur}{len(listener)}:{listener}{len(x)}:{x}"
    ).encode("utf-8", "surrogatepass")


# The events the ad server mints URLs for: their signed suffix and URL start are prepared.
TRACKING_EVENTS = (
    "impression",
    "start",
    "firstQuartile",
    "midpoint",
    "thirdQuartile",
    "complete",
    "click",
    "error",
)
_SUFFIXES = {event: _netstrings((event,)) for event in TRACKING_EVENTS}
_B64URL = bytes.maketrans(b"+/", b"-_")
_FROM_B64URL = str.maketrans("-_", "+/")
_signed_values = operator.itemgetter(*SIGNED_FIELDS)


def _b64(digest: bytes) -> str:
    """Unpadded base64url; ``base64.urlsafe_b64encode`` costs more in Python frames."""
    return binascii.b2a_base64(digest, newline=False).translate(_B64URL).rstrip(b"=").decode()


# A base URL is spliced into VAST CDATA and query strings as is: printable ASCII only.
_BASE_URL = re.compile(r"https?://[\x21-\x7e]+")


class UrlSigner:
    """Mints and verifies tracking URLs with one secret key."""

    def __init__(self, key: bytes, base_url: str) -> None:
        if len(key) < 16:
            raise ValueError("signing key must be at least 16 bytes")
        root = hashlib.blake2b(key, digest_size=64, person=b"backbeat-track").digest()
        self._mac = hashlib.blake2b(key=root[:32], digest_size=SIGNATURE_BYTES)
        self._price_key = root[32:]
        self._price_mac = hashlib.blake2b(key=self._price_key, digest_size=8)
        self._base = base_url.rstrip("/")
        self._starts = {event: self._start(event) for event in TRACKING_EVENTS}
        if not _BASE_URL.fullmatch(self._base) or "]]>" in self._base:
            raise ValueError(f"public base URL {base_url!r} must be http(s) and printable ASCII")

    # -- price ------------------------------------------------------------------------

    def _pad(self, decision_id: str) -> int:
        # Equal to ``blake2b(decision_id, key=price_key, digest_size=8)``: the keyed state is
        # prepared once and copied, which skips the key block's compression per decision.
        mac = self._price_mac.copy()
        mac.update(decision_id.encode())
        return int.from_bytes(mac.digest(), "big")

    def seal_price(self, decision_id: str, price_micros: int) -> str:
        """The price as 11 base64url characters, unreadable without the key."""
        sealed = (price_micros ^ self._pad(decision_id)).to_bytes(8, "big")
        return _b64(sealed)

    def open_price(self, decision_id: str, sealed: str) -> int:
        """The price ``seal_price`` sealed (``sealed``: 11 base64url characters)."""
        raw = binascii.a2b_base64(sealed.translate(_FROM_B64URL) + "=")
        return int.from_bytes(raw, "big") ^ self._pad(decision_id)

    # -- signatures -------------------------------------------------------------------

    def urls(self, events: tuple[str, ...], claims: TrackingClaims) -> dict[str, str]:
        """One URL per event; the claims are hashed once and each event finishes a copy."""
        return self.urls_of(
            events,
            claims.decision_id,
            claims.line_item_id,
            claims.campaign_id,
            claims.creative_id,
            claims.slot_id,
            claims.price_micros,
            claims.currency,
            claims.listener,
            claims.expires_at,
        )

    def urls_of(
        self,
        events: tuple[str, ...],
        decision_id: str,
        line_item_id: int,
        campaign_id: int,
        creative_id: int,
        slot_id: int,
        price_micros: int,
        currency: str,
        listener: str,
        expires_at: int,
    ) -> dict[str, str]:
        """``urls`` from plain values (no ``TrackingClaims`` built on the decision path).

        No generic URL encoding: every value is URL-safe. The claims are hashed once, each
        event finishes a copy, and the tags are base64-encoded in one call: each 16-byte
        tag is padded to 18 bytes, so it encodes to its own 24 characters, of which the
        first 22 are its unpadded encoding.
        """
        d, li, c, cr, s = (
            decision_id,
            str(line_item_id),
            str(campaign_id),
            str(creative_id),
            str(slot_id),
        )
        p, x = self.seal_price(decision_id, price_micros), str(expires_at)
        query = f"?d={d}&li={li}&c={c}&cr={cr}&s={s}&p={p}&cur={currency}&l={listener}&x={x}&sig="
        prefix = self._mac.copy()
        prefix.update(_claims_message(d, li, c, cr, s, p, currency, listener, x))
        tags = []
        for event in events:
            mac = prefix.copy()
            mac.update(_SUFFIXES.get(event) or _netstrings((event,)))
            tags.append(mac.digest())
        encoded = (
            binascii.b2a_base64(b"\0\0".join(tags) + b"\0\0", newline=False)
            .translate(_B64URL)
            .decode()
        )
        starts = self._starts
        urls = {}
        at = 0
        for event in events:
            urls[event] = (starts.get(event) or self._start(event)) + query + encoded[at : at + 22]
            at += 24
        return urls

    def _start(self, event: str) -> str:
        return f"{self._base}/t/{event}"

    def url(self, event: str, claims: TrackingClaims) -> str:
        return self.urls((event,), claims)[event]

    def verify(self, event: str, params: dict[str, str], now: float) -> TrackingClaims:
        """Return the claims of a genuine, well-formed, unexpired URL; raise otherwise."""
        try:
            values: tuple[str, ...] = _signed_values(params)
            signature = params["sig"]
        except KeyError as missing:
            raise InvalidSignature(
                f"tracking URL lacks {missing.args[0]!r}", reason="invalid-signature"
            ) from None
        # One keyed state, fed the claims and the event together: the same bytes as
        # minting, which hashes the claims once and finishes a copy per event.
        mac = self._mac.copy()
        mac.update(_claims_message(*values) + (_SUFFIXES.get(event) or _netstrings((event,))))
        expected = _b64(mac.digest()).encode()
        # Bytes, not str: compare_digest refuses non-ASCII strings, and forgers send any.
        if not hmac.compare_digest(expected, signature.encode("utf-8", "surrogatepass")):
            raise InvalidSignature("tracking URL signature does not match")
        claims = self._claims(values)
        if now > claims.expires_at:
            raise TrackingUrlExpired(f"tracking URL expired at {claims.expires_at}")
        return claims

    def _claims(self, values: tuple[str, ...]) -> TrackingClaims:
        """Every field checked for shape and range, even though the signature matched.

        ``values`` are in ``SIGNED_FIELDS`` order (a tuple, not a dict: this runs per pixel).
        """
        decision, line_item, campaign, creative, slot, sealed, currency, listener, expires = values
        well_formed = (
            _is_decision_id(decision)
            and _is_number(line_item)
            and _is_number(campaign)
            and _is_number(creative)
            and _is_number(slot)
            and _is_sealed_price(sealed)
            and _is_currency(currency)
            and is_safe_listener(listener)
            and _is_number(expires)
        )
        if well_formed:
            ids = int(line_item), int(campaign), int(creative), int(slot)
            # Checked to be 11 base64url characters: ``a2b_base64`` decodes them exactly.
            price = self.open_price(decision, sealed)
            if max(ids) <= MAX_ID and price <= MAX_PRICE_MICROS:
                return TrackingClaims(
                    decision, *ids, price, currency, listener, int(expires)
                )  # fmt: skip
        raise InvalidInput("tracking URL has malformed fields", reason="malformed-tracking-url")
