"""Data-quality checks that fail a run rather than publish numbers nobody should bill on."""

from __future__ import annotations

from backbeat.errors import InvalidInput
from backbeat.measurement.downloads.report import DownloadReport

DEFAULT_MAX_BOT_SHARE = 0.8


def quality_problems(report: DownloadReport, max_bot_share: float) -> list[str]:
    """Every way the report fails the checks, in words; empty when it passes."""
    problems = []
    accounted = report.accepted + sum(report.excluded.values()) + sum(report.rejected.values())
    if accounted != report.lines:
        problems.append(
            f"{report.lines} lines read but {accounted} accounted for "
            f"(counted {report.accepted}, excluded {sum(report.excluded.values())}, "
            f"rejected {sum(report.rejected.values())})"
        )
    counters = (report.downloads, report.ads, report.excluded, report.rejected)
    negative = [key for counter in counters for key, n in counter.items() if n < 0]
    if negative or report.lines < 0 or report.accepted < 0:
        problems.append(f"negative counts for {negative[:5] or 'totals'}")
    requests = report.accepted + sum(report.excluded.values())
    share = report.bot_requests / requests if requests else 0.0
    if share > max_bot_share:
        problems.append(
            f"bot share {share:.1%} of {requests} requests exceeds the bound {max_bot_share:.1%}"
        )
    return problems


def check_quality(report: DownloadReport, max_bot_share: float = DEFAULT_MAX_BOT_SHARE) -> None:
    """Raise :class:`InvalidInput` (reason ``data-quality``) naming every failed check."""
    problems = quality_problems(report, max_bot_share)
    if problems:
        raise InvalidInput(
            "data-quality checks failed: " + "; ".join(problems),
            reason="data-quality",
            problems=problems,
        )
