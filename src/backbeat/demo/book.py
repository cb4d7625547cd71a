"""The demo's advertiser book, booked through the management API like a real trafficker would."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx

SLOTS: list[dict[str, Any]] = [
    {
        "name": "Free tier music break",
        "surface": "music_free",
        "position": "interstitial",
        "reserve_cpm": "4.00",
    },
    {
        "name": "Podcast pre-roll",
        "surface": "podcast",
        "position": "pre_roll",
        "reserve_cpm": "8.00",
    },
    {
        "name": "Podcast mid-roll",
        "surface": "podcast",
        "position": "mid_roll",
        "reserve_cpm": "10.00",
    },
    {
        "name": "Podcast post-roll",
        "surface": "podcast",
        "position": "post_roll",
        "reserve_cpm": "5.00",
    },
]

# advertiser -> campaigns -> line items (tier, CPM, budget, goal, pacing, cap, targeting) -> creatives
BOOK: list[dict[str, Any]] = [
    {
        "advertiser": {
            "name": "Northwind Coffee",
            "domain": "northwind.example",
            "category": "IAB8",
        },
        "campaigns": [
            {
                "name": "Morning Ritual (sponsorship)",
                "budget": "2500",
                "line_items": [
                    {
                        "name": "News pre-roll sponsorship US",
                        "tier": "sponsorship",
                        "cpm": "25.00",
                        "budget": "400",
                        "pacing": "asap",
                        "frequency_cap": {"count": 2, "period": "day"},
                        "targeting": {
                            "countries": ["US"],
                            "genres": ["news"],
                            "positions": ["pre_roll"],
                        },
                        "creatives": [("Morning Ritual :30", 30_000, ["IAB8-1"])],
                    },
                ],
            },
            {
                "name": "Autumn Blend launch",
                "budget": "6000",
                "line_items": [
                    {
                        "name": "Guaranteed podcasts US+GB mobile",
                        "tier": "guaranteed",
                        "cpm": "18.00",
                        "goal_impressions": 60_000,
                        "pacing": "even",
                        "frequency_cap": {"count": 3, "period": "day"},
                        "targeting": {
                            "countries": ["US", "GB"],
                            "devices": ["mobile"],
                            "surfaces": ["podcast"],
                        },
                        "creatives": [
                            ("Autumn Blend :30", 30_000, ["IAB8-1"]),
                            ("Autumn Blend :15", 15_000, ["IAB8-1"]),
                        ],
                    },
                    {
                        "name": "Music free tier smart speakers",
                        "tier": "non_guaranteed",
                        "cpm": "9.50",
                        "budget": "900",
                        "pacing": "even",
                        "frequency_cap": {"count": 4, "period": "day"},
                        "targeting": {
                            "devices": ["smart_speaker", "mobile"],
                            "surfaces": ["music_free"],
                        },
                        "creatives": [("Autumn Blend music :20", 20_000, ["IAB8-1"])],
                    },
                ],
            },
        ],
    },
    {
        "advertiser": {"name": "Velo Bikes", "domain": "velo.example", "category": "IAB2"},
        "campaigns": [
            {
                "name": "Commute Season",
                "budget": "3000",
                "line_items": [
                    {
                        "name": "Sports and news podcasts mid-roll",
                        "tier": "guaranteed",
                        "cpm": "22.00",
                        "goal_impressions": 40_000,
                        "pacing": "even",
                        "frequency_cap": {"count": 2, "period": "day"},
                        "targeting": {"genres": ["sports", "news"], "positions": ["mid_roll"]},
                        "creatives": [("Commute Season :30", 30_000, ["IAB2-1"])],
                    },
                    {
                        "name": "Open auction music EU",
                        "tier": "non_guaranteed",
                        "cpm": "7.25",
                        "budget": "45",
                        "pacing": "asap",
                        "frequency_cap": {"count": 6, "period": "day"},
                        "targeting": {"countries": ["DE", "SE", "GB"], "surfaces": ["music_free"]},
                        "creatives": [("Velo music :15", 15_000, ["IAB2-1"])],
                    },
                ],
            },
        ],
    },
    {
        "advertiser": {"name": "Lumen Bank", "domain": "lumen.example", "category": "IAB13"},
        "campaigns": [
            {
                "name": "Save Smarter",
                "budget": "5000",
                "line_items": [
                    {
                        "name": "Business podcasts all markets",
                        "tier": "non_guaranteed",
                        "cpm": "14.00",
                        "budget": "1200",
                        "pacing": "even",
                        "frequency_cap": {"count": 3, "period": "day"},
                        "targeting": {
                            "genres": ["business", "news", "technology"],
                            "surfaces": ["podcast"],
                        },
                        "creatives": [("Save Smarter :30", 30_000, ["IAB13-1"])],
                    },
                    {
                        "name": "Below-reserve test bid",
                        "tier": "non_guaranteed",
                        "cpm": "3.00",
                        "budget": "100",
                        "pacing": "asap",
                        "targeting": {"surfaces": ["podcast"]},
                        "creatives": [("Save Smarter :15", 15_000, ["IAB13-1"])],
                    },
                ],
            },
        ],
    },
    {
        "advertiser": {"name": "Backbeat House", "domain": "backbeat.example"},
        "campaigns": [
            {
                "name": "Premium upsell (house)",
                "budget": "0",
                "line_items": [
                    {
                        "name": "Go Premium house ad",
                        "tier": "house",
                        "cpm": "0",
                        "pacing": "asap",
                        "targeting": {},
                        "creatives": [("Go Premium :15", 15_000, [])],
                    },
                ],
            },
        ],
    },
]


def _post(client: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body)
    if response.status_code != 201:
        raise RuntimeError(f"booking {path} failed: {response.status_code} {response.text}")
    return response.json()  # type: ignore[no-any-return]


def book(client: httpx.Client, *, flight_start: datetime, flight_days: int = 30) -> dict[str, Any]:
    """Create slots, advertisers, campaigns, line items and creatives; return what was made."""
    slots = [_post(client, "/v1/slots", {**slot, "currency": "USD"}) for slot in SLOTS]
    line_items: list[dict[str, Any]] = []
    campaigns: list[dict[str, Any]] = []
    end = flight_start + timedelta(days=flight_days)
    for entry in BOOK:
        advertiser = _post(client, "/v1/advertisers", entry["advertiser"])
        for spec in entry["campaigns"]:
            campaign = _post(
                client,
                "/v1/campaigns",
                {
                    "advertiser_id": advertiser["id"],
                    "name": spec["name"],
                    "start_at": flight_start.isoformat(),
                    "end_at": end.isoformat(),
                    "total_budget": spec["budget"] if spec["budget"] != "0" else "1000000",
                    "currency": "USD",
                },
            )
            campaigns.append(campaign)
            for item_spec in spec["line_items"]:
                fields = {key: value for key, value in item_spec.items() if key != "creatives"}
                item = _post(client, "/v1/line-items", {"campaign_id": campaign["id"], **fields})
                item["advertiser_name"] = advertiser["name"]
                line_items.append(item)
                for title, duration_ms, categories in item_spec["creatives"]:
                    slug = title.lower().replace(" ", "-").replace(":", "")
                    _post(
                        client,
                        "/v1/creatives",
                        {
                            "line_item_id": item["id"],
                            "name": title,
                            "media_url": f"https://cdn.backbeat.example/ads/{slug}.mp3",
                            "mime_type": "audio/mpeg",
                            "duration_ms": duration_ms,
                            "bitrate_kbps": 128,
                            "click_url": f"https://{entry['advertiser']['domain']}/?utm_source=backbeat",
                            "categories": categories,
                        },
                    )
    return {"slots": slots, "campaigns": campaigns, "line_items": line_items}
