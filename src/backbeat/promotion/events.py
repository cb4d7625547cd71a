"""Promotion exposures, clicks and conversions as event-log records (the shared Event shape).

``decision_id`` is the exposure id (a click carries its exposure's id; a conversion its own
id), ``campaign_id`` the promotion campaign, ``price_micros`` the campaign price at the time
(CPM or CPC, see ``attrs.price_model``), ``attrs`` the item, artist, surface and, for
conversions, the conversion type and ``"promotion": true``.
"""

from __future__ import annotations

from typing import Any

from backbeat.events import Event, EventType

PROMOTION_TYPES = frozenset(
    {
        EventType.PROMOTION_EXPOSURE.value,
        EventType.PROMOTION_CLICK.value,
        EventType.CONVERSION.value,
    }
)


def is_promotion(event: Event) -> bool:
    if event.type == EventType.CONVERSION:
        return bool(event.attrs and event.attrs.get("promotion"))
    return event.type in PROMOTION_TYPES


def promotion_event(
    *,
    kind: str,
    event_id: str,
    ts: float,
    listener_id: str,
    campaign_id: int | None,
    item_id: str,
    artist_id: str = "",
    surface: str = "",
    price_micros: int = 0,
    currency: str = "",
    price_model: str = "",
    conversion_type: str | None = None,
) -> Event:
    attrs: dict[str, Any] = {"item_id": item_id, "artist_id": artist_id, "surface": surface}
    if price_model:
        attrs["price_model"] = price_model
    if kind == EventType.CONVERSION:
        attrs["promotion"] = True
        attrs["conversion_type"] = conversion_type or ""
    return Event(
        type=kind,
        ts=ts,
        decision_id=event_id,
        campaign_id=campaign_id,
        listener=listener_id,
        price_micros=price_micros,
        currency=currency,
        attrs=attrs,
    )
