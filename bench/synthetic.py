"""A synthetic advertiser book of N line items with realistic targeting, for benchmarks."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import insert
from sqlalchemy.orm import Session

from backbeat.catalog.models import AdSlot, Advertiser, Campaign, Creative, LineItem
from backbeat.catalog.service import bump_catalog_version
from backbeat.catalog.vocabulary import Tier

COUNTRIES = ["US", "GB", "DE", "FR", "BR", "SE", "CA", "AU", "MX", "ES", "IT", "NL", "JP", "IN"]
DEVICES = ["mobile", "tablet", "desktop", "smart_speaker", "connected_tv", "car"]
PLATFORMS = ["ios", "android", "web", "alexa", "roku", "carplay"]
GENRES = [
    "news",
    "business",
    "comedy",
    "true_crime",
    "sports",
    "technology",
    "pop",
    "rock",
    "hip_hop",
    "latin",
]
SEGMENTS = [f"seg-{n}" for n in range(200)]
SLOTS = [
    ("music_free", "interstitial"),
    ("podcast", "pre_roll"),
    ("podcast", "mid_roll"),
    ("podcast", "post_roll"),
]
TIERS = [
    (Tier.SPONSORSHIP, 0.02),
    (Tier.GUARANTEED, 0.18),
    (Tier.NON_GUARANTEED, 0.75),
    (Tier.HOUSE, 0.05),
]


def random_targeting(rng: random.Random) -> dict[str, list[object]]:
    """Most line items target a few countries and some devices; fewer target genres or segments."""
    targeting: dict[str, list[object]] = {}
    if rng.random() < 0.85:
        targeting["countries"] = sorted(rng.sample(COUNTRIES, rng.randint(1, 4)))
    if rng.random() < 0.5:
        targeting["devices"] = sorted(rng.sample(DEVICES, rng.randint(1, 3)))
    if rng.random() < 0.2:
        targeting["platforms"] = sorted(rng.sample(PLATFORMS, rng.randint(1, 2)))
    if rng.random() < 0.4:
        targeting["genres"] = sorted(rng.sample(GENRES, rng.randint(1, 3)))
    if rng.random() < 0.3:
        targeting["surfaces"] = [rng.choice(["music_free", "podcast"])]
    if rng.random() < 0.25:
        targeting["segments"] = sorted(rng.sample(SEGMENTS, rng.randint(1, 5)))
    return targeting


def random_request_attributes(rng: random.Random) -> dict[str, object]:
    return {
        "country": rng.choice(COUNTRIES),
        "device": rng.choice(DEVICES),
        "platform": rng.choice(PLATFORMS),
        "genre": rng.choice(GENRES),
        "segments": tuple(rng.sample(SEGMENTS, rng.randint(0, 6))),
    }


def book_synthetic(session: Session, line_items: int, *, seed: int = 1) -> list[int]:
    """Insert a book with ``line_items`` live line items (one creative each); returns slot ids."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    slot_rows = [
        {"name": f"{surface}/{position}", "surface": surface, "position": position,
         "reserve_cpm": Decimal("2.00"), "currency": "USD"}
        for surface, position in SLOTS
    ]  # fmt: skip
    session.execute(insert(AdSlot), slot_rows)
    advertisers = max(1, line_items // 20)
    session.execute(insert(Advertiser), [{"name": f"Advertiser {n}"} for n in range(advertisers)])
    session.execute(
        insert(Campaign),
        [
            {
                "advertiser_id": n + 1,
                "name": f"Campaign {n}",
                "start_at": now - timedelta(days=1),
                "end_at": now + timedelta(days=30),
                "total_budget": Decimal(10_000_000),
                "currency": "USD",
            }
            for n in range(advertisers)
        ],
    )
    tiers, weights = zip(*TIERS, strict=True)
    items = []
    for n in range(line_items):
        tier = rng.choices(tiers, weights=weights)[0]
        items.append(
            {
                "campaign_id": n % advertisers + 1,
                "advertiser_id": n % advertisers + 1,
                "name": f"Line item {n}",
                "tier": tier,
                "cpm": Decimal(0) if tier == Tier.HOUSE else Decimal(rng.randint(150, 4000)) / 100,
                "budget": Decimal(1_000_000),
                "pacing": "asap",
                "frequency_caps": []
                if rng.random() < 0.4
                else [{"count": rng.choice([3, 5, 10]), "period": "day", "length": 1}],
                "targeting": random_targeting(rng),
            }
        )
    session.execute(insert(LineItem), items)
    session.execute(
        insert(Creative),
        [
            {
                "line_item_id": n + 1,
                "advertiser_id": n % advertisers + 1,
                "name": f"Spot {n}",
                "media_url": f"https://cdn.example.com/ads/{n}.mp3",
                "mime_type": "audio/mpeg",
                "duration_ms": rng.choice([15_000, 30_000]),
                "bitrate_kbps": 128,
                "click_url": "https://advertiser.example.com/",
                "categories": [],
            }
            for n in range(line_items)
        ],
    )
    bump_catalog_version(session)
    return list(range(1, len(SLOTS) + 1))


def synthetic_database(workdir: Path, line_items: int) -> tuple[str, list[int]]:
    """A migrated SQLite database in ``workdir`` holding a synthetic book; its URL and slot ids."""
    from backbeat.db import make_engine, make_session_factory, migrate, session_scope

    url = f"sqlite:///{workdir / 'bench.db'}"
    migrate(url)
    with session_scope(make_session_factory(make_engine(url))) as session:
        return url, book_synthetic(session, line_items)
