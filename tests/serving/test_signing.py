"""Signed tracking URLs: genuine ones verify, any change or an expiry is refused."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backbeat.errors import InvalidInput, InvalidSignature, TrackingUrlExpired
from backbeat.signing import (
    LISTENER_ALPHABET,
    LISTENER_MAX,
    SIGNED_FIELDS,
    TrackingClaims,
    UrlSigner,
)

KEY = b"k" * 32
# Each field's shape as a regular expression: the reference the fast checks must equal.
LISTENER_PATTERN = re.compile(f"[{LISTENER_ALPHABET}]{{1,{LISTENER_MAX}}}")
DECISION_PATTERN = re.compile(r"[0-9a-f]{1,32}")
NUMBER_PATTERN = re.compile(r"[0-9]{1,19}")
CURRENCY_PATTERN = re.compile(r"[A-Z]{3}")
PRICE_PATTERN = re.compile(r"[A-Za-z0-9_-]{11}")
NOW = 1_790_000_000

claims_strategy = st.builds(
    TrackingClaims,
    decision_id=st.text("0123456789abcdef", min_size=1, max_size=28),
    line_item_id=st.integers(0, 2**31 - 1),
    campaign_id=st.integers(0, 2**31 - 1),
    creative_id=st.integers(0, 2**31 - 1),
    slot_id=st.integers(1, 2**31 - 1),
    price_micros=st.integers(0, 2**63 - 1),
    currency=st.sampled_from(["USD", "EUR", "GBP"]),
    listener=st.from_regex(LISTENER_PATTERN, fullmatch=True),
    expires_at=st.integers(NOW, NOW + 10**7),
)
events = st.sampled_from(
    ["impression", "start", "firstQuartile", "midpoint", "thirdQuartile", "complete", "click"]
)


def params_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def sample_claims(**changes: object) -> TrackingClaims:
    fields = {
        "decision_id": "0190abcdef0123456789abcd",
        "line_item_id": 12,
        "campaign_id": 3,
        "creative_id": 44,
        "slot_id": 5,
        "price_micros": 2_500_000,
        "currency": "USD",
        "listener": "listener-1",
        "expires_at": NOW + 3600,
    }
    fields.update(changes)
    return TrackingClaims(**fields)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(claims=claims_strategy, event=events)
def test_a_genuine_url_verifies_to_its_claims(claims, event):
    signer = UrlSigner(KEY, "https://t.example.com/")
    url = signer.url(event, claims)
    assert url.startswith(f"https://t.example.com/t/{event}?")
    assert signer.verify(event, params_of(url), NOW) == claims


@settings(max_examples=100, deadline=None)
@given(
    claims=claims_strategy,
    event=events,
    field=st.sampled_from([*SIGNED_FIELDS, "sig"]),
    suffix=st.text(st.characters(max_codepoint=127), min_size=1, max_size=3),
)
def test_changing_any_signed_parameter_is_refused(claims, event, field, suffix):
    signer = UrlSigner(KEY, "https://t.example.com")
    params = params_of(signer.url(event, claims))
    params[field] = params[field] + suffix
    with pytest.raises(InvalidSignature) as raised:
        signer.verify(event, params, NOW)
    assert raised.value.reason == "invalid-signature"
    assert raised.value.status == 403


@pytest.mark.parametrize("missing", [*SIGNED_FIELDS, "sig"])
def test_a_missing_parameter_is_refused(missing):
    signer = UrlSigner(KEY, "http://t")
    params = params_of(signer.url("impression", sample_claims()))
    del params[missing]
    with pytest.raises(InvalidSignature):
        signer.verify("impression", params, NOW)


def test_a_signature_is_bound_to_its_event_and_key():
    signer = UrlSigner(KEY, "http://t")
    params = params_of(signer.url("impression", sample_claims()))
    with pytest.raises(InvalidSignature):
        signer.verify("click", params, NOW)
    with pytest.raises(InvalidSignature):
        UrlSigner(b"x" * 32, "http://t").verify("impression", params, NOW)
    # a price lowered by whoever fires the pixel is refused, even if otherwise well formed
    params["p"] = "1"
    with pytest.raises(InvalidSignature):
        signer.verify("impression", params, NOW)


def test_a_non_ascii_signature_is_refused_as_invalid():
    signer = UrlSigner(KEY, "http://t")
    params = params_of(signer.url("impression", sample_claims()))
    params["sig"] = "\u00e9" + params["sig"][1:]
    with pytest.raises(InvalidSignature):
        signer.verify("impression", params, NOW)


def test_expiry_is_inclusive_then_gone():
    signer = UrlSigner(KEY, "http://t")
    claims = sample_claims(expires_at=NOW)
    params = params_of(signer.url("complete", claims))
    assert signer.verify("complete", params, NOW) == claims
    with pytest.raises(TrackingUrlExpired) as raised:
        signer.verify("complete", params, NOW + 1)
    assert (raised.value.status, raised.value.reason) == (410, "expired")


def test_short_keys_are_refused():
    with pytest.raises(ValueError):
        UrlSigner(b"short", "http://t")


def test_a_separator_in_one_field_cannot_move_characters_into_another():
    """Issue 9 #1: with ``\x1f``-joined fields, ``l=a\x1fb`` re-signed as ``cur=USD\x1fa&l=b``."""
    signer = UrlSigner(KEY, "http://t")
    # Mint for the ambiguous listener (only possible in code: /vast refuses it) ...
    params = params_of(signer.url("impression", sample_claims(listener="a\x1fb")))
    assert params["l"] == "a\x1fb"
    # ... and shift the separator into the currency: the signature no longer matches.
    forged = {**params, "cur": "USD\x1fa", "l": "b"}
    with pytest.raises(InvalidSignature):
        signer.verify("impression", forged, NOW)
    # The genuine one carries a listener outside the safe alphabet: refused after the check.
    with pytest.raises(InvalidInput) as raised:
        signer.verify("impression", params, NOW)
    assert raised.value.reason == "malformed-tracking-url"


@pytest.mark.parametrize(
    "changes",
    [
        {"currency": "usd"},
        {"currency": "USDX"},
        {"line_item_id": 2**31},
        {"slot_id": -1},
        {"decision_id": "not-hex"},
        {"listener": "x" * 129},
        {"listener": "a b"},
    ],
)
def test_every_field_is_validated_even_under_a_genuine_signature(changes):
    signer = UrlSigner(KEY, "http://t")
    params = params_of(signer.url("impression", sample_claims(**changes)))
    with pytest.raises(InvalidInput) as raised:
        signer.verify("impression", params, NOW)
    assert raised.value.reason == "malformed-tracking-url"


@settings(max_examples=50, deadline=None)
@given(claims=claims_strategy)
def test_the_price_is_sealed_in_the_url(claims):
    signer = UrlSigner(KEY, "http://t")
    url = signer.url("impression", claims)
    sealed = params_of(url)["p"]
    assert (
        len(sealed) == 11 and signer.open_price(claims.decision_id, sealed) == claims.price_micros
    )
    # Another key opens it to something else: the price is not readable from the URL.
    other = UrlSigner(b"z" * 32, "http://t")
    assert other.open_price(claims.decision_id, sealed) != claims.price_micros


# Each field's shape check is a string-method test written for speed; the regular
# expressions above are the reference it must equal, on near-miss strings too.
_NEAR = st.text(
    alphabet=st.one_of(
        st.sampled_from("0123456789abcdefABCDEFxyzXYZ_-.~:@+/=% \t\n"),
        st.characters(),  # any code point: other scripts' digits and letters, surrogates
    ),
    max_size=40,
)


@settings(max_examples=600, deadline=None)
@given(
    value=st.one_of(_NEAR, st.text(max_size=140), st.from_regex(LISTENER_PATTERN, fullmatch=True))
)
def test_field_shape_checks_equal_their_regular_expressions(value):
    from backbeat import signing

    pairs = [
        (signing.is_safe_listener, LISTENER_PATTERN),
        (signing._is_decision_id, DECISION_PATTERN),
        (signing._is_number, NUMBER_PATTERN),
        (signing._is_sealed_price, PRICE_PATTERN),
        (signing._is_currency, CURRENCY_PATTERN),
    ]
    for check, pattern in pairs:
        assert check(value) == (pattern.fullmatch(value) is not None), (check.__name__, value)


@pytest.mark.parametrize(
    "value",
    ["١٢٣", "12\n", "ABC\n", "ÀBC", "abc", "0" * 20, "0" * 19, "a" * 129, "é", "Ａ", "ſ", "K"],
)
def test_field_shape_checks_on_hand_picked_near_misses(value):
    from backbeat import signing

    assert signing._is_number(value) == (NUMBER_PATTERN.fullmatch(value) is not None)
    assert signing._is_currency(value) == (CURRENCY_PATTERN.fullmatch(value) is not None)
    assert signing.is_safe_listener(value) == (LISTENER_PATTERN.fullmatch(value) is not None)
    assert signing._is_decision_id(value) == (DECISION_PATTERN.fullmatch(value) is not None)


def reference_tag(key: bytes, event: str, params: dict[str, str]) -> str:
    """The documented construction, from the hashlib primitives: keyed BLAKE2b (key derived
    from the signing key) over the netstrings of the signed fields then of the event."""
    import base64
    import hashlib

    root = hashlib.blake2b(key, digest_size=64, person=b"backbeat-track").digest()
    values = [params[name] for name in SIGNED_FIELDS] + [event]
    message = "".join(f"{len(value)}:{value}" for value in values).encode()
    tag = hashlib.blake2b(message, key=root[:32], digest_size=16).digest()
    return base64.urlsafe_b64encode(tag).decode().rstrip("=")


@settings(max_examples=150, deadline=None)
@given(claims=claims_strategy, event=events)
def test_the_signature_is_the_documented_keyed_hash(claims, event):
    """Minting and checking build the signed message by hand; both equal the reference."""
    signer = UrlSigner(KEY, "https://ads.example")
    params = params_of(signer.url(event, claims))
    assert params["sig"] == reference_tag(KEY, event, params)
    assert signer.verify(event, params, NOW) == claims
