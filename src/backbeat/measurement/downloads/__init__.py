"""Podcast downloads and dynamically inserted ad delivery, counted by the IAB rules."""

from __future__ import annotations

from backbeat.measurement.downloads.catalog import Catalog, Episode, load_catalog, parse_catalog
from backbeat.measurement.downloads.reference import count_downloads
from backbeat.measurement.downloads.report import DownloadReport
from backbeat.measurement.downloads.rules import Exclusion, IpRanges
from backbeat.measurement.downloads.spec import DownloadRules, Window
from backbeat.measurement.downloads.stitching import AdSlot, load_stitch_map, parse_stitch_map

__all__ = [
    "AdSlot",
    "Catalog",
    "DownloadReport",
    "DownloadRules",
    "Episode",
    "Exclusion",
    "IpRanges",
    "Window",
    "count_downloads",
    "load_catalog",
    "load_stitch_map",
    "parse_catalog",
    "parse_stitch_map",
]
