"""Write a count's days into the report tables, replacing each day it covers, and record the run."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime

from sqlalchemy import delete
from sqlalchemy.orm import Session

from backbeat.measurement.downloads.catalog import Catalog
from backbeat.measurement.downloads.report import DownloadReport
from backbeat.measurement.models import AdDeliveryDaily, DownloadDaily, DownloadRun


def replace_days(
    *, session: Session, report: DownloadReport, catalog: Catalog, days: Iterable[str] = ()
) -> int:
    """Delete then insert every day in the report (and ``days``) in the caller's transaction."""
    covered = {date.fromisoformat(d) for d in (*report.days, *days)}
    covered |= {date.fromisoformat(d) for d, _, _ in report.downloads}
    covered |= {date.fromisoformat(d) for d, _, _ in report.ads}
    session.add(
        DownloadRun(
            finished_at=datetime.now(UTC),
            first_day=min(covered, default=None),
            last_day=max(covered, default=None),
            lines=report.lines,
            counted=report.accepted,
            excluded=dict(sorted(report.excluded.items())),
            rejected=dict(sorted(report.rejected.items())),
        )
    )
    if not covered:
        session.flush()
        return 0
    session.execute(delete(DownloadDaily).where(DownloadDaily.date.in_(covered)))
    session.execute(delete(AdDeliveryDaily).where(AdDeliveryDaily.date.in_(covered)))
    show = {e.episode_id: e.show_id for e in catalog.episodes}
    session.add_all(
        DownloadDaily(
            date=date.fromisoformat(d),
            episode_id=episode_id,
            app=app or "",
            show_id=show[episode_id],
            downloads=n,
        )
        for (d, episode_id, app), n in report.downloads.items()
    )
    session.add_all(
        AdDeliveryDaily(date=date.fromisoformat(d), episode_id=episode_id, ad_id=ad_id, delivered=n)
        for (d, episode_id, ad_id), n in report.ads.items()
    )
    session.flush()
    return len(report.downloads) + len(report.ads)
