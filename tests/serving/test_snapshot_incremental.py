"""A snapshot rebuilt from the last one (only changed line items read again) equals one read
from scratch, whatever the catalog went through: the reference is the full read."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, event
from sqlalchemy.orm import Session

from backbeat.catalog.models import AdSlot, Advertiser, Campaign, CatalogState, Creative, LineItem
from backbeat.db import Base
from backbeat.serving.snapshot import load_snapshot

NOW = datetime(2026, 9, 1, tzinfo=UTC)

OPERATION_NAMES = (
    "cpm",
    "targeting",
    "item-status",
    "campaign-status",
    "advertiser-status",
    "advertiser-name",
    "campaign-end",
    "campaign-caps",
    "creative-url",
    "creative-status",
    "add-creative",
    "delete-creative",
    "add-item",
    "delete-item",
    "slot-reserve",
    "nothing",
)
OPERATIONS = st.sampled_from(OPERATION_NAMES)


def _engine(path_or_url):
    url = str(path_or_url) if "://" in str(path_or_url) else f"sqlite:///{path_or_url}"
    engine = create_engine(url)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _fk_on(connection, _record):  # deletes must not leave orphans behind
            connection.execute("PRAGMA foreign_keys=ON")

    Base.metadata.create_all(engine)
    return engine


def _item(session: Session, campaign: Campaign, n: int) -> LineItem:
    item = LineItem(
        campaign_id=campaign.id,
        advertiser_id=campaign.advertiser_id,
        name=f"li {n}",
        tier="non_guaranteed",
        cpm=Decimal("5.00") + n,
        pacing="asap",
        targeting={"countries": ["US"]} if n % 2 else {},
    )
    session.add(item)
    session.flush()
    _creative(session, item, n)
    return item


def _creative(session: Session, item: LineItem, n: int) -> Creative:
    creative = Creative(
        line_item_id=item.id,
        advertiser_id=item.advertiser_id,
        name=f"cr {n}",
        media_url=f"https://cdn.example.com/{n}.mp3",
        mime_type="audio/mpeg",
        duration_ms=30_000,
        categories=["IAB1"],
    )
    session.add(creative)
    session.flush()
    return creative


def _book(session: Session) -> None:
    session.add(CatalogState(id=1, version=0))
    for a in range(2):
        advertiser = Advertiser(name=f"adv {a}", category="IAB2")
        session.add(advertiser)
        session.flush()
        campaign = Campaign(
            advertiser_id=advertiser.id,
            name=f"c {a}",
            start_at=NOW - timedelta(days=1),
            end_at=NOW + timedelta(days=30),
            total_budget=Decimal("1000"),
            currency="USD",
        )
        session.add(campaign)
        session.flush()
        for n in range(3):
            _item(session, campaign, 10 * a + n)
    session.add(AdSlot(name="pre", surface="podcast", position="pre", reserve_cpm=Decimal("1"),
                       currency="USD"))  # fmt: skip
    session.commit()


def _apply(session: Session, operation: str, pick: int, counter: int) -> None:
    items = session.query(LineItem).order_by(LineItem.id).all()
    item = items[pick % len(items)] if items else None
    if item is None and operation not in ("slot-reserve", "nothing"):
        return
    campaign = session.get(Campaign, item.campaign_id) if item else None
    advertiser = session.get(Advertiser, campaign.advertiser_id) if campaign else None
    creatives = (
        session.query(Creative).filter_by(line_item_id=item.id).order_by(Creative.id).all()
        if item
        else []
    )
    match operation:
        case "cpm":
            item.cpm = item.cpm + 1
        case "targeting":
            item.targeting = {"devices": ["mobile"]} if item.targeting else {"countries": ["GB"]}
        case "item-status":
            item.status = "paused" if item.status == "active" else "active"
        case "campaign-status":
            campaign.status = "paused" if campaign.status == "active" else "active"
        case "advertiser-status":
            advertiser.status = "paused" if advertiser.status == "active" else "active"
        case "advertiser-name":
            advertiser.name = f"{advertiser.name}+"
        case "campaign-end":
            ended = campaign.end_at < NOW
            campaign.end_at = NOW + timedelta(days=30) if ended else NOW - timedelta(hours=1)
        case "campaign-caps":
            campaign.frequency_caps = (
                [] if campaign.frequency_caps else [{"count": 3, "period": "day"}]
            )
        case "creative-url":
            if creatives:
                creatives[0].media_url = f"https://cdn.example.com/edit-{counter}.mp3"
        case "creative-status":
            if creatives:
                creatives[-1].status = "paused" if creatives[-1].status == "active" else "active"
        case "add-creative":
            _creative(session, item, 100 + counter)
        case "delete-creative":
            if creatives:
                session.delete(creatives[-1])
        case "add-item":
            _item(session, campaign, 200 + counter)
        case "delete-item":  # SQLite may give the next new row this id again
            for creative in creatives:
                session.delete(creative)
            session.flush()
            session.delete(item)
        case "slot-reserve":
            slot = session.query(AdSlot).first()
            slot.reserve_cpm = slot.reserve_cpm + 1
    session.commit()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(st.tuples(OPERATIONS, st.integers(0, 50)), min_size=1, max_size=25))
def test_an_incremental_snapshot_equals_a_full_read(tmp_path_factory, steps):
    engine = _engine(tmp_path_factory.mktemp("db") / "catalog.sqlite")
    with Session(engine, expire_on_commit=False) as session:
        _book(session)
        previous = load_snapshot(session, now=NOW)
        for counter, (operation, pick) in enumerate(steps):
            _apply(session, operation, pick, counter)
            incremental = load_snapshot(session, now=NOW, previous=previous)
            full = load_snapshot(session, now=NOW)
            assert incremental.line_items == full.line_items, (operation, counter)
            assert incremental.slots == full.slots
            assert incremental.fingerprints == full.fingerprints
            previous = incremental
    engine.dispose()


def test_unchanged_line_items_are_carried_over_not_read_again(tmp_path):
    engine = _engine(tmp_path / "catalog.sqlite")
    with Session(engine, expire_on_commit=False) as session:
        _book(session)
        first = load_snapshot(session, now=NOW)
        _apply(session, "cpm", 0, 0)
        second = load_snapshot(session, now=NOW, previous=first)
    carried = {id(item) for item in first.line_items}
    changed = [item for item in second.line_items if id(item) not in carried]
    assert len(changed) == 1 and len(second.line_items) == len(first.line_items) == 6
    engine.dispose()


def test_an_incremental_snapshot_equals_a_full_read_on_each_database(database_url):
    """The same check on SQLite and PostgreSQL (row versions and update times as each
    database returns them), along one long seeded sequence of every kind of edit."""
    engine = _engine(database_url)
    rng = random.Random(7)
    kinds = (
        OPERATIONS.wrapped_strategy.elements if hasattr(OPERATIONS, "wrapped_strategy") else None
    )
    names = list(kinds or OPERATIONS.elements)
    with Session(engine, expire_on_commit=False) as session:
        _book(session)
        previous = load_snapshot(session, now=NOW)
        for counter in range(80):
            operation = names[counter % len(names)] if counter < len(names) else rng.choice(names)
            _apply(session, operation, rng.randrange(50), counter)
            incremental = load_snapshot(session, now=NOW, previous=previous)
            full = load_snapshot(session, now=NOW)
            assert incremental.line_items == full.line_items, (operation, counter)
            assert incremental.fingerprints == full.fingerprints
            previous = incremental
    engine.dispose()
