"""What a download count run is asked to do: the catalog, the windows and the exclusions."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from backbeat.errors import InvalidInput
from backbeat.measurement.downloads.catalog import Catalog
from backbeat.measurement.downloads.rules import IpRanges
from backbeat.measurement.downloads.stitching import AdSlot


class Window(StrEnum):
    """How a listener's requests are grouped before the byte threshold is applied."""

    CALENDAR = "calendar"
    ROLLING = "rolling"


@dataclass(frozen=True)
class DownloadRules:
    """Every domain value a count needs; plain data so it pickles to any Beam worker."""

    catalog: Catalog
    window: Window = Window.CALENDAR
    by_app: bool = False
    data_centres: IpRanges = field(default_factory=IpRanges)
    ad_slots: tuple[AdSlot, ...] = ()

    def __post_init__(self) -> None:
        known = {episode.episode_id for episode in self.catalog.episodes}
        unknown = sorted({slot.episode_id for slot in self.ad_slots} - known)
        if unknown:
            raise InvalidInput(f"stitch map names episodes not in the catalog: {unknown[:5]}")

    def slots_by_episode(self) -> dict[int, list[AdSlot]]:
        """Ad slots keyed by catalog position."""
        index = {episode.episode_id: i for i, episode in enumerate(self.catalog.episodes)}
        slots: dict[int, list[AdSlot]] = {}
        for slot in self.ad_slots:
            slots.setdefault(index[slot.episode_id], []).append(slot)
        return slots
