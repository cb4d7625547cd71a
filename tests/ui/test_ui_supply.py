"""No-fill reasons per slot from a real event log, scaled by each record's sampling rate."""

from __future__ import annotations

from backbeat.eventlog import EventLogWriter
from backbeat.events import Event, EventType
from backbeat.ui.supply import NoFillTally


def opportunity(slot_id: int, reason: str | None, sample: float) -> bytes:
    return Event(
        type=EventType.OPPORTUNITY, ts=1.0, slot_id=slot_id, reason=reason,
        attrs={"sample": sample},
    ).to_bytes()  # fmt: skip


def test_counts_are_scaled_by_the_sample_and_read_incrementally(tmp_path):
    writer = EventLogWriter(tmp_path, max_delay_s=0.0)
    try:
        records = [opportunity(1, None, 0.5)] * 3 + [opportunity(1, "no-eligible-line-item", 0.5)]
        records += [opportunity(2, "capped", 1.0)] * 2
        records += [Event(type=EventType.IMPRESSION, ts=1.0, slot_id=1).to_bytes()]  # not supply
        writer.append_many(records).result()
        tally = NoFillTally(tmp_path)
        tally.BATCH = 2  # merge in small batches, as on a long log
        totals, complete = tally.by_slot(wait=10)
        assert complete
        # 4 logged at 1 in 2 -> 8 requests, 6 filled; 2 logged at 1 in 1
        assert (totals[1].requests, totals[1].filled) == (8.0, 6.0)
        assert totals[1].no_fill == {"no-eligible-line-item": 2.0}
        assert totals[1].fill_rate == 0.75
        assert (totals[2].requests, totals[2].filled, totals[2].no_fill) == (
            2.0,
            0.0,
            {"capped": 2.0},
        )
        writer.append(opportunity(2, "capped", 0.25)).result()
        totals, _ = tally.by_slot(wait=10)
        assert totals[2].no_fill == {"capped": 6.0}  # read once more, not twice
        assert tally.logged == 7
    finally:
        writer.close()
