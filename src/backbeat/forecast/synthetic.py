"""A synthetic decision log as columns, for tests and benchmarks: realistic shapes, any size.

Listeners with a country, device, platform and 0-3 segments, heavy and light (Pareto
activity); requests on a daily curve with quieter weekends; four slots; about 60% filled,
clicks by device. Not the traffic simulator (``backbeat.simulation``): no HTTP, no ad server.
"""

from __future__ import annotations

import numpy as np

from backbeat.forecast.history import SINGLE_KEYS, OpportunityTable, Vocabulary

COUNTRIES = (
    ("US", 0.42),
    ("GB", 0.16),
    ("DE", 0.13),
    ("BR", 0.12),
    ("SE", 0.06),
    ("FR", 0.07),
    ("NZ", 0.04),
)
DEVICES = (
    ("mobile", 0.62),
    ("desktop", 0.14),
    ("smart_speaker", 0.12),
    ("car", 0.08),
    ("connected_tv", 0.04),
)
PLATFORMS = {
    "mobile": ("ios", "android"),
    "desktop": ("windows", "macos", "web"),
    "smart_speaker": ("alexa", "sonos"),
    "car": ("carplay", "android_auto"),
    "connected_tv": ("roku", "tizen"),
}
SLOTS = (
    (1, "music_free", "mid_roll", 0.45),
    (2, "podcast", "pre_roll", 0.25),
    (3, "podcast", "mid_roll", 0.2),
    (4, "podcast", "post_roll", 0.1),
)
GENRES = (
    "pop",
    "rock",
    "hip_hop",
    "news",
    "comedy",
    "true_crime",
    "sports",
    "technology",
    "business",
    "jazz",
    "classical",
    "education",
)
SEGMENTS = (
    "auto-intender",
    "coffee-lover",
    "fitness",
    "parents",
    "students",
    "travellers",
    "gamers",
    "pet-owners",
)
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAILY = np.array(
    [
        0.3,
        0.2,
        0.15,
        0.12,
        0.15,
        0.3,
        0.7,
        1.2,
        1.5,
        1.2,
        1.0,
        1.0,
        1.1,
        1.0,
        0.95,
        1.0,
        1.2,
        1.5,
        1.4,
        1.2,
        1.0,
        0.9,
        0.7,
        0.5,
    ]
)


def _vocab(values) -> Vocabulary:
    vocab = Vocabulary()
    for value in values:
        vocab.code(value)
    return vocab


def synthetic_table(
    rows: int,
    *,
    days: float,
    end: float,
    listeners: int | None = None,
    seed: int = 0,
    rate: float = 0.1,
    ctr: float = 0.01,
) -> OpportunityTable:
    """``rows`` logged requests over the ``days`` before ``end`` (epoch seconds)."""
    rng = np.random.default_rng(seed)
    listeners = listeners or max(rows // 20, 10)
    # Listener traits: country, device, segments; heavy and light listeners (Zipf-ish).
    activity = rng.pareto(1.5, listeners) + 0.2
    who = rng.choice(listeners, size=rows, p=activity / activity.sum()).astype(np.int32)
    country = rng.choice(len(COUNTRIES), size=listeners, p=[p for _, p in COUNTRIES])
    device = rng.choice(len(DEVICES), size=listeners, p=[p for _, p in DEVICES])
    start = end - days * 86400
    # Daily curve by rejection sampling on hour of day.
    hour_weight = DAILY / DAILY.max()
    ts = np.empty(0)
    while ts.size < rows:
        candidate = rng.uniform(start, end, size=rows * 2)
        hour = (candidate // 3600 % 24).astype(int)
        weekend = (candidate // 86400 + 3) % 7 >= 5
        accept = rng.random(candidate.size) < hour_weight[hour] * np.where(weekend, 0.8, 1.0)
        ts = np.concatenate([ts, candidate[accept]])
    ts = np.sort(ts[:rows])
    slot = rng.choice(len(SLOTS), size=rows, p=[s[3] for s in SLOTS])
    single = {}
    vocab = {key: Vocabulary() for key in SINGLE_KEYS}
    vocab["countries"] = _vocab(c for c, _ in COUNTRIES)
    single["countries"] = country[who].astype(np.int32)
    vocab["devices"] = _vocab(d for d, _ in DEVICES)
    single["devices"] = device[who].astype(np.int32)
    platform_values = sorted({p for ps in PLATFORMS.values() for p in ps})
    vocab["platforms"] = _vocab(platform_values)
    pick = rng.integers(0, 2, size=listeners)
    listener_platform = np.array(
        [
            platform_values.index(PLATFORMS[DEVICES[d][0]][pick[i] % len(PLATFORMS[DEVICES[d][0]])])
            for i, d in enumerate(device)
        ]
    )
    single["platforms"] = listener_platform[who].astype(np.int32)
    vocab["slots"] = _vocab(s[0] for s in SLOTS)
    single["slots"] = slot.astype(np.int32)
    vocab["surfaces"] = _vocab(["music_free", "podcast"])
    single["surfaces"] = np.array([0 if SLOTS[i][1] == "music_free" else 1 for i in range(4)])[
        slot
    ].astype(np.int32)
    vocab["positions"] = _vocab(["mid_roll", "pre_roll", "post_roll"])
    single["positions"] = np.array([vocab["positions"].codes[s[2]] for s in SLOTS])[slot].astype(
        np.int32
    )
    vocab["genres"] = _vocab(GENRES)
    single["genres"] = rng.integers(0, len(GENRES), size=rows).astype(np.int32)
    vocab["dayparts"] = _vocab(range(24))
    single["dayparts"] = (ts // 3600 % 24).astype(np.int32)
    vocab["weekdays"] = _vocab(WEEKDAYS)
    single["weekdays"] = ((ts // 86400 + 3) % 7).astype(np.int32)
    for key in SINGLE_KEYS:
        single.setdefault(key, np.full(rows, -1, dtype=np.int32))
    # Segments: each listener belongs to 0-3 of them (CSR per listener, gathered per row).
    sizes = rng.integers(0, 4, size=listeners)
    member_ptr = np.zeros(listeners + 1, dtype=np.int64)
    np.cumsum(sizes, out=member_ptr[1:])
    keys = rng.random((listeners, len(SEGMENTS))).argsort(axis=1)
    members = np.concatenate([keys[i, : sizes[i]] for i in range(listeners)]).astype(np.int32)
    lengths = sizes[who]
    ptr = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(lengths, out=ptr[1:])
    starts = np.repeat(member_ptr[who], lengths)
    offsets = np.arange(int(ptr[-1])) - np.repeat(ptr[:-1], lengths)
    flat = members[starts + offsets] if rows else np.zeros(0, np.int32)
    # Outcomes: about 60% of requests fill; clicks at ``ctr`` x a device factor.
    shown = rng.random(rows) < 0.6
    device_factor = np.array([1.0, 0.8, 0.1, 0.2, 0.3])[single["devices"]]
    click = shown & (rng.random(rows) < ctr * device_factor)
    conversion = click & (rng.random(rows) < 0.1)
    return OpportunityTable(
        ts=ts,
        rate=np.full(rows, rate),
        listener=who,
        listeners=[f"l{i}" for i in range(listeners)],
        single=single,
        vocab=vocab,
        segment_ptr=ptr,
        segment_codes=flat.astype(np.int32),
        segment_vocab=_vocab(SEGMENTS),
        decision_ids=[],
        outcomes={"impression": shown, "click": click, "conversion": conversion},
    )


def booked_item(
    item_id: int,
    *,
    targeting: dict | None = None,
    tier: str = "guaranteed",
    goal: int | None = 10_000,
    start: float,
    end: float,
    advertiser_id: int = 1,
    cpm_micros: int = 5_000_000,
):
    """A servable line item as the snapshot holds it."""
    from backbeat.catalog.vocabulary import TIER_RANK
    from backbeat.serving.snapshot import ServableLineItem

    return ServableLineItem(
        id=item_id,
        campaign_id=item_id,
        advertiser_id=advertiser_id,
        advertiser_name=f"Advertiser {advertiser_id}",
        name=f"Line item {item_id}",
        tier=tier,
        tier_rank=TIER_RANK[tier],
        cpm_micros=cpm_micros,
        currency="USD",
        budget_micros=None,
        daily_budget_micros=None,
        campaign_budget_micros=10**15,
        goal_impressions=goal,
        pacing="even",
        caps=(),
        start_ts=start,
        end_ts=end,
        targeting=targeting or {},
        creatives=(),
    )
