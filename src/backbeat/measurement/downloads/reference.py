"""A plain, one-request-at-a-time implementation of the download rules.

It is the executable specification: obviously correct rather than fast. The Beam
pipeline must agree with it on any log (see the hypothesis property test).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from backbeat.measurement.accesslogs import COMBINED, MalformedLine, Request, parse_line
from backbeat.measurement.downloads.report import DownloadReport, day_to_iso
from backbeat.measurement.downloads.rules import (
    DAY_US,
    Exclusion,
    RangeKind,
    bot_exclusion,
    calendar_day,
    delivered_interval,
    exclusion_reason,
    listener_ip,
    parse_range,
    range_exclusion,
    request_exclusion,
)
from backbeat.measurement.downloads.spec import DownloadRules, Window
from backbeat.measurement.downloads.stitching import covers, merge_intervals
from backbeat.measurement.useragents import classify


@dataclass(frozen=True, slots=True, order=True)
class Hit:
    """A request that counts towards its listener's bytes for an episode.

    Field order is the processing order within a listener's window: time first, then the
    bytes and app so that simultaneous requests are ordered the same way everywhere.
    """

    ts_us: int
    start: int
    end: int
    app: str
    listener_ip: str
    user_agent: str
    episode: int


def assess_request(request: Request, rules: DownloadRules) -> Hit | Exclusion:
    """Apply every per-request rule; a request either counts towards bytes or is excluded."""
    episode = rules.catalog.index_of(request.target)
    spec = parse_range(request.range)
    info = classify(request.user_agent, request.referer)
    ip = listener_ip(request.ip)
    reason = exclusion_reason(
        request_exclusion(request.method, request.status),
        episode >= 0,
        range_exclusion(spec, request.status),
        bot_exclusion(request.user_agent, info),
        ip is not None,
        request.ip in rules.data_centres,
    )
    if reason is not None:
        return reason
    assert ip is not None
    file_bytes = rules.catalog.episodes[episode].file_bytes
    start, end = delivered_interval(
        request.status, request.nbytes, spec.kind is RangeKind.SUFFIX, spec.value, file_bytes
    )
    return Hit(
        ts_us=request.ts_us,
        start=int(start),
        end=int(end),
        app=info.app if rules.by_app else "",
        listener_ip=ip,
        user_agent=request.user_agent,
        episode=episode,
    )


def split_windows(hits: list[Hit], window: Window) -> list[list[Hit]]:
    """Split one listener's time-ordered hits for one episode into counting windows."""
    windows: list[list[Hit]] = []
    if window is Window.CALENDAR:
        by_day: dict[int, list[Hit]] = defaultdict(list)
        for hit in hits:
            by_day[int(calendar_day(hit.ts_us))].append(hit)
        return list(by_day.values())
    window_end = None
    for hit in hits:
        if window_end is None or hit.ts_us >= window_end:
            windows.append([])
            window_end = hit.ts_us + DAY_US
        windows[-1].append(hit)
    return windows


def download_in_window(hits: list[Hit], required: int) -> Hit | None:
    """The hit at which the union of delivered bytes first reaches the threshold."""
    delivered: list[tuple[int, int]] = []
    for hit in hits:
        delivered = merge_intervals([*delivered, (hit.start, hit.end)])
        if sum(end - start for start, end in delivered) >= required:
            return hit
    return None


def count_downloads(
    lines: Iterable[str], rules: DownloadRules, fmt: str = COMBINED
) -> DownloadReport:
    """Count downloads (and delivered ads) in log lines by the IAB rules."""
    report = DownloadReport()
    listeners: dict[tuple[str, str, int], list[Hit]] = defaultdict(list)
    for line in lines:
        report.lines += 1
        try:
            request = parse_line(line, fmt)
        except MalformedLine as exc:
            report.rejected[exc.reason] += 1
            continue
        outcome = assess_request(request, rules)
        if isinstance(outcome, Exclusion):
            report.excluded[outcome] += 1
            continue
        report.accepted += 1
        report.days[day_to_iso(calendar_day(outcome.ts_us))] += 1
        listeners[outcome.listener_ip, outcome.user_agent, outcome.episode].append(outcome)

    slots = rules.slots_by_episode()
    for (_, _, index), hits in listeners.items():
        episode = rules.catalog.episodes[index]
        for window_hits in split_windows(sorted(hits), rules.window):
            hit = download_in_window(window_hits, episode.required_bytes)
            if hit is None:
                continue
            day = day_to_iso(calendar_day(hit.ts_us))
            report.downloads[day, episode.episode_id, hit.app if rules.by_app else None] += 1
            merged = merge_intervals((h.start, h.end) for h in window_hits)
            for slot in slots.get(index, ()):
                if covers(merged, slot.byte_start, slot.byte_end):
                    report.ads[day, episode.episode_id, slot.ad_id] += 1
    return report
