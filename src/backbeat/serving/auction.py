"""Clearing prices for the non-guaranteed auction, in integer CPM micros."""

from __future__ import annotations

from backbeat.catalog.vocabulary import AuctionType


def clearing_price(
    *, auction: str, winning_bid: int, runner_up_bid: int | None, reserve: int
) -> int:
    """First price pays the bid; second price pays the runner-up's bid, or the reserve, at least.

    The bid already cleared the reserve, so the result never exceeds the bid.
    """
    if auction == AuctionType.FIRST_PRICE:
        return winning_bid
    floor = max(reserve, runner_up_bid or 0)
    return min(winning_bid, floor)
