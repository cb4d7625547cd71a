"""``backbeat report``: damage fails loudly with its own exit code until accepted."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from backbeat.cli.main import cli
from backbeat.config import get_settings
from backbeat.eventlog import HEADER_BYTES, EventLogReader, EventLogWriter
from backbeat.events import Event


def test_damage_fails_the_report_with_exit_code_8_until_accepted(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("BACKBEAT_VAR_DIR", str(tmp_path))
    get_settings.cache_clear()
    payloads = [
        Event(type="impression", ts=1_790_002_800.0 + i, decision_id=f"d{i}", line_item_id=1,
              campaign_id=1, price_micros=1_000_000, currency="USD").to_bytes()
        for i in range(10)
    ]  # fmt: skip
    with EventLogWriter(tmp_path / "events") as writer:
        for future in [writer.append(p) for p in payloads]:
            future.result(timeout=10)
    (segment,) = EventLogReader(tmp_path / "events").segments()
    path = tmp_path / "events" / segment
    data = bytearray(path.read_bytes())
    data[3 * (HEADER_BYTES + len(payloads[0])) + HEADER_BYTES + 2] ^= 0x40  # inside record 3
    path.write_bytes(bytes(data))
    runner = CliRunner()
    try:
        refused = runner.invoke(cli, ["report"])
        assert refused.exit_code == 8, refused.output
        assert "event-log-damaged" in refused.output and segment in refused.output
        accepted = runner.invoke(cli, ["report", "--accept-damage"])
        assert accepted.exit_code == 0, accepted.output
        assert "read 9 events (9 new)" in accepted.output
        assert f"{HEADER_BYTES + len(payloads[3])} damaged bytes accepted" in accepted.output
        again = runner.invoke(cli, ["report", "--full"])  # accepted damage: recount passes
        assert again.exit_code == 0 and "read 9 events (9 new)" in again.output
    finally:
        get_settings.cache_clear()


def test_the_report_recounts_promotion_from_the_same_log(tmp_path: Path, monkeypatch) -> None:
    from backbeat.events import EventType
    from backbeat.promotion.events import promotion_event

    monkeypatch.setenv("BACKBEAT_VAR_DIR", str(tmp_path))
    get_settings.cache_clear()
    conversions = [
        promotion_event(kind=EventType.CONVERSION, event_id=f"c{i}", ts=1_790_000_000.0 + i,
                        listener_id="l1", campaign_id=None, item_id="r00001",
                        conversion_type="new").to_bytes()
        for i in (1, 2, 2)  # one duplicate
    ]  # fmt: skip
    delivery = Event(type="impression", ts=1_790_002_800.0, decision_id="d1", line_item_id=1,
                     campaign_id=1, price_micros=1_000_000, currency="USD").to_bytes()  # fmt: skip
    with EventLogWriter(tmp_path / "events") as writer:
        writer.append_many([*conversions, delivery]).result(timeout=10)
    try:
        result = CliRunner().invoke(cli, ["report"])
        assert result.exit_code == 0, result.output
        assert "read 1 events (4 new), wrote 1 hourly rows" in result.output
        # No exposure to attribute them to: read, de-duplicated, left unattributed.
        assert "promotion: read 3 events, 0 campaigns, 0 daily rows (1 duplicates ignored, " \
            "2 conversions unattributed)" in result.output  # fmt: skip
    finally:
        get_settings.cache_clear()
