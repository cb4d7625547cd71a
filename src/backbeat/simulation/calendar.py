"""Expected listening per hour: daily and weekly curves in local time, trend and holidays.

Returns, for every (time zone, device class) and UTC hour of a simulated span, the
relative volume of ad breaks; the traffic generator scales it to the requested total and
adds noise. Local time comes from the IANA zone (daylight saving included), so a US
morning commute peaks at 12:00-14:00 UTC and a German one at 05:00-07:00 UTC.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays as holiday_calendars
import numpy as np

from backbeat.simulation.audience import DEVICE_CLASSES, TIMEZONES, ZONES
from backbeat.simulation.profiles import (
    DEFAULT_HOLIDAY_FACTOR,
    DEVICE_RHYTHMS,
    HOLIDAY_FACTORS,
    WEEKDAY_CURVE,
    WEEKDAY_VOLUME,
    WEEKEND_CURVE,
)

HOUR = 3600


@dataclass(frozen=True)
class LocalClock:
    """Local hour, weekday (0 = Monday) and date of each UTC hour, per time zone."""

    hour: np.ndarray  # (zones, hours)
    weekday: np.ndarray  # (zones, hours)
    day: np.ndarray  # (zones, hours) local date as days since 1970-01-01


def local_clock(start: float, hours: int) -> LocalClock:
    shape = (len(TIMEZONES), hours)
    hour = np.zeros(shape, dtype=np.int8)
    weekday = np.zeros(shape, dtype=np.int8)
    day = np.zeros(shape, dtype=np.int32)
    epoch = date(1970, 1, 1)
    for z, name in enumerate(TIMEZONES):
        zone = ZoneInfo(name)
        for h in range(hours):
            local = datetime.fromtimestamp(start + h * HOUR, zone)
            hour[z, h] = local.hour
            weekday[z, h] = local.weekday()
            day[z, h] = (local.date() - epoch).days
    return LocalClock(hour, weekday, day)


@lru_cache(maxsize=64)
def holidays_of(country: str, years: tuple[int, ...]) -> dict[date, str]:
    """The public holidays of a market (``holidays`` package), by local date."""
    return dict(holiday_calendars.country_holidays(country, years=list(years)).items())


def holiday_factor(name: str) -> float:
    for key, factor in HOLIDAY_FACTORS.items():
        if key in name:
            return factor
    return DEFAULT_HOLIDAY_FACTOR


def device_curves() -> np.ndarray:
    """(device classes, 2 day types, 24) shares of a day per local hour; day type 1 is weekend."""
    curves = np.zeros((len(DEVICE_CLASSES), 2, 24))
    for d, name in enumerate(DEVICE_CLASSES):
        rhythm = np.asarray(DEVICE_RHYTHMS[name].hours)
        for kind, base in enumerate((WEEKDAY_CURVE, WEEKEND_CURVE)):
            shape = np.asarray(base) * rhythm
            curves[d, kind] = shape / shape.sum()
    return curves


def expected_volume(
    start: float,
    hours: int,
    *,
    weekly_growth: float = 0.01,
    holidays: bool = True,
) -> tuple[np.ndarray, LocalClock, list[tuple[str, str, str]]]:
    """Relative ad breaks per (zone, device class, UTC hour) for one unit of activity.

    A device's weekly volume sums to 7 days of ones before trend and holidays: weekday
    factors and its weekend lean are normalised over the week. Returns the volume, the
    local clock, and the holidays met as (local date, country, name).
    """
    clock = local_clock(start, hours)
    curves = device_curves()
    weekday_volume = np.asarray(WEEKDAY_VOLUME) / np.mean(WEEKDAY_VOLUME)
    weekend_lean = np.array([DEVICE_RHYTHMS[name].weekend for name in DEVICE_CLASSES])
    is_weekend_day = np.arange(7) >= 5
    # (devices, 7): each weekday's volume per device, mean 1 over the week.
    day_volume = weekday_volume[None, :] * np.where(
        is_weekend_day[None, :], weekend_lean[:, None], 1.0
    )
    day_volume /= day_volume.mean(axis=1, keepdims=True)
    days_elapsed = np.arange(hours) / 24.0
    trend = np.exp(math.log1p(weekly_growth) * days_elapsed / 7.0)
    first = datetime.fromtimestamp(start, UTC).year
    last = datetime.fromtimestamp(start + hours * HOUR, UTC).year
    years = tuple(range(first - 1, last + 2))
    epoch = date(1970, 1, 1)
    volume = np.zeros((len(ZONES), len(DEVICE_CLASSES), hours))
    met: set[tuple[str, str, str]] = set()
    for z, (tz, _, country) in enumerate(ZONES):
        t = TIMEZONES.index(tz)
        local_hour = clock.hour[t].astype(int)
        weekday = clock.weekday[t].astype(int)
        day_type = (weekday >= 5).astype(int)
        factor = np.ones(hours)
        is_holiday = np.zeros(hours, dtype=bool)
        if holidays:
            calendar = holidays_of(country, years)
            for h in np.flatnonzero(np.isin(clock.day[t], [(d - epoch).days for d in calendar])):
                local_date = epoch + timedelta(days=int(clock.day[t, h]))
                name = calendar[local_date]
                if holiday_factor(name) == 1.0:
                    continue
                factor[h] = holiday_factor(name)
                is_holiday[h] = True
                day_type[h] = 1  # a public holiday is shaped like a Sunday
                met.add((local_date.isoformat(), country, name))
        for d in range(len(DEVICE_CLASSES)):
            # Holidays take Sunday's device lean as well as its shape.
            lean = np.where(is_holiday, day_volume[d, 6], day_volume[d, weekday])
            volume[z, d] = curves[d, day_type, local_hour] * lean * trend * factor
    return volume, clock, sorted(met)
