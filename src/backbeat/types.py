"""Column types that keep money exact and time zone-aware on every database."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import BigInteger, DateTime
from sqlalchemy.types import TypeDecorator

MICROS = Decimal(1_000_000)
MONEY_QUANTUM = Decimal("0.000001")


def to_micros(amount: Decimal) -> int:
    """Exact conversion of a money amount to integer millionths (half-even below a micro)."""
    return int((amount * MICROS).to_integral_value(rounding=ROUND_HALF_EVEN))


def from_micros(micros: int) -> Decimal:
    return (Decimal(micros) / MICROS).quantize(MONEY_QUANTUM)


class Money(TypeDecorator[Decimal]):
    """Decimal amounts stored as integers of 10^-scale of the currency unit: no floats anywhere.

    Prices and budgets use micros (scale 6); spend uses nanos (scale 9), since an impression
    costs CPM / 1000 and a CPM has up to 6 decimals.
    """

    impl = BigInteger
    cache_ok = True

    def __init__(self, scale: int = 6) -> None:
        super().__init__()
        self.scale = scale
        self._unit = Decimal(10) ** scale

    def process_bind_param(self, value: Decimal | None, _dialect: Any) -> int | None:
        if value is None:
            return None
        return int((Decimal(value) * self._unit).to_integral_value(rounding=ROUND_HALF_EVEN))

    def process_result_value(self, value: int | None, _dialect: Any) -> Decimal | None:
        if value is None:
            return None
        return (Decimal(int(value)) / self._unit).quantize(Decimal(1).scaleb(-self.scale))


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, _dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_money(amount: Decimal) -> str:
    """Plain decimal text with at least two places: ``1000.00``, ``1.50``, ``0.0025``."""
    normalized = amount.normalize()
    exponent = normalized.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        normalized = normalized.quantize(Decimal("0.01"))
    return format(normalized, "f")
