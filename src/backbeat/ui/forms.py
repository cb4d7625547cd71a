"""Booking forms: HTML form fields to the API's request schemas, and errors back to fields.

A form is turned into the same JSON-like dict a client would send, validated by the same
``catalog.schemas`` models and written by the same ``catalog.service`` functions, so the
dashboard accepts and refuses exactly what the API does. Errors keep the API's ``reason``
and message and are attached to the form field they concern.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from backbeat.api.problems import validation_problem
from backbeat.errors import BackbeatError

MAX_FORM_BYTES = 64 * 1024
MAX_CAPS = 3

# Errors that concern the whole object, placed next to the field a person would change.
REASON_FIELDS = {
    "end-before-start": "end_at",
    "missing-media": "media_url",
    "conflicting-caps": "frequency_caps",
    "duplicate": "name",
    "missing-campaign-id": "campaign_id",
    "missing-advertiser-id": "advertiser_id",
    "advertiser-not-found": "advertiser_id",
    "campaign-not-found": "campaign_id",
    "parent-archived": "name",
    "version-mismatch": "form",
    "concurrent-update": "form",
    "invalid-json": "targeting",
    "tier-not-allowed": "tier",
    "publisher-tier": "tier",
    "cpm-below-reserve": "cpm",
}
CAMPAIGN_FIELDS = ("name", "start_at", "end_at", "total_budget", "currency")
LINE_ITEM_FIELDS = ("name", "tier", "cpm", "budget", "daily_budget", "goal_impressions", "pacing")
CREATIVE_FIELDS = ("name", "media_url", "mime_type", "duration_ms", "bitrate_kbps", "click_url")


@dataclass
class FormErrors:
    """Field name -> (reason, message); ``form`` holds errors without a field."""

    fields: dict[str, tuple[str, str]] = field(default_factory=dict)

    def add(self, name: str, reason: str, message: str) -> None:
        self.fields.setdefault(name, (reason, message))

    def __bool__(self) -> bool:
        return bool(self.fields)

    @property
    def summary(self) -> tuple[str, str] | None:
        return next(iter(self.fields.values()), None)


def _blank_to_none(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


def _instant(value: str | None) -> str | None:
    """``datetime-local`` values carry no seconds or offset; the form says they are UTC."""
    value = _blank_to_none(value)
    if value is None:
        return None
    if len(value) == 16 and value[10] == "T":  # YYYY-MM-DDTHH:MM
        return value + ":00Z"
    if len(value) == 19 and value[10] == "T":  # YYYY-MM-DDTHH:MM:SS
        return value + "Z"
    return value


def caps_from_form(form: dict[str, str]) -> list[dict[str, Any]]:
    caps = []
    for i in range(MAX_CAPS):
        count = _blank_to_none(form.get(f"cap_count_{i}"))
        period = _blank_to_none(form.get(f"cap_period_{i}"))
        length = _blank_to_none(form.get(f"cap_length_{i}"))
        if count is None and length is None:
            continue
        caps.append({"count": count, "period": period or "day", "length": length or "1"})
    return caps


def parse_targeting(text: str | None, errors: FormErrors) -> dict[str, Any] | None:
    text = _blank_to_none(text)
    if text is None:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        errors.add("targeting", "invalid-json", f"targeting is not valid JSON: {error}")
        return None
    return value  # type: ignore[no-any-return]


def campaign_body(form: dict[str, str], *, create: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": form.get("name", ""),
        "start_at": _instant(form.get("start_at")),
        "end_at": _instant(form.get("end_at")),
        "total_budget": _blank_to_none(form.get("total_budget")),
        "frequency_caps": caps_from_form(form),
    }
    if create:
        body["currency"] = _blank_to_none(form.get("currency")) or "USD"
        advertiser = _blank_to_none(form.get("advertiser_id"))
        if advertiser is not None:
            body["advertiser_id"] = advertiser
    return _drop_unset(body, keep=("name",) if create else ())


def line_item_body(
    form: dict[str, str], errors: FormErrors, *, campaign_id: int | None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": form.get("name", ""),
        "tier": _blank_to_none(form.get("tier")),
        "cpm": _blank_to_none(form.get("cpm")),
        "budget": _blank_to_none(form.get("budget")),
        "daily_budget": _blank_to_none(form.get("daily_budget")),
        "goal_impressions": _blank_to_none(form.get("goal_impressions")),
        "pacing": _blank_to_none(form.get("pacing")),
        "frequency_caps": caps_from_form(form),
    }
    targeting = parse_targeting(form.get("targeting"), errors)
    if targeting is not None:
        body["targeting"] = targeting
    if campaign_id is not None:
        body["campaign_id"] = campaign_id
        return _drop_unset(body, keep=("name",))
    # An edit sends every field: an emptied budget, goal or daily budget is cleared.
    for name in ("tier", "cpm", "pacing"):
        if body[name] is None:
            del body[name]
    return body


def forecast_fields(params: dict[str, str], errors: FormErrors) -> dict[str, Any]:
    """The forecast-relevant fields of the line item form (the flight comes from the campaign)."""
    fields: dict[str, Any] = {
        "tier": _blank_to_none(params.get("tier")),
        "cpm": _blank_to_none(params.get("cpm")),
        "goal_impressions": _blank_to_none(params.get("goal_impressions")),
        "frequency_caps": caps_from_form(params),
    }
    targeting = parse_targeting(params.get("targeting"), errors)
    if targeting is not None:
        fields["targeting"] = targeting
    return {k: v for k, v in fields.items() if v is not None}


def creative_body(form: dict[str, str], *, line_item_id: int) -> dict[str, Any]:
    categories = [c.strip() for c in form.get("categories", "").split(",") if c.strip()]
    body: dict[str, Any] = {
        "line_item_id": line_item_id,
        "name": form.get("name", ""),
        "media_url": form.get("media_url", "").strip(),
        "mime_type": _blank_to_none(form.get("mime_type")),
        "duration_ms": _blank_to_none(form.get("duration_ms")),
        "bitrate_kbps": _blank_to_none(form.get("bitrate_kbps")),
        "click_url": _blank_to_none(form.get("click_url")),
        "categories": categories,
    }
    return _drop_unset(body, keep=("name", "media_url"))


def creative_changes(form: dict[str, str]) -> dict[str, Any]:
    """An edit sends every field: an emptied click URL or bitrate is cleared."""
    body = creative_body(form, line_item_id=0)
    del body["line_item_id"]
    for name in ("click_url", "bitrate_kbps"):
        body.setdefault(name, None)
    if not body.get("mime_type"):
        body.pop("mime_type", None)
    return body


def _drop_unset(body: dict[str, Any], *, keep: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None or k in keep}


def validate(schema: type[BaseModel], body: dict[str, Any], errors: FormErrors) -> BaseModel | None:
    """Validate like the API does; on failure, record each field's first error."""
    try:
        return schema.model_validate(body)
    except ValidationError as error:
        record_validation(error, errors)
        return None


def record_validation(error: ValidationError, errors: FormErrors) -> None:
    problem = validation_problem(list(error.errors()), "", skip_loc=0)
    for item in problem["errors"]:
        reason = str(item["type"]).replace("_", "-")
        loc = [part for part in item["loc"] if part]
        name = loc[0] if loc else REASON_FIELDS.get(reason, "form")
        if name in ("frequency_cap", "frequency_caps"):
            name = "frequency_caps"
        errors.add(name, reason, str(item["msg"]).removeprefix("Value error, "))


def record_error(error: BackbeatError, errors: FormErrors) -> None:
    """A service-level refusal (same reason as the API's problem) placed by field or reason."""
    name = error.context.get("field") if isinstance(error.context.get("field"), str) else None
    errors.add(name or REASON_FIELDS.get(error.reason, "form"), error.reason, error.detail)


def first_error_reason(errors: FormErrors) -> str | None:
    summary = errors.summary
    return summary[0] if summary else None
