"""VAST 4.2 documents for audio ads, built with lxml in the element order the IAB XSD wants."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lxml import etree

from backbeat import __version__

VAST_NS = "http://www.iab.com/VAST"
VAST_VERSION = "4.2"
QUARTILE_EVENTS = ("start", "firstQuartile", "midpoint", "thirdQuartile", "complete")
IAB_CATEGORY_AUTHORITY = "https://iabtechlab.com"
_NSMAP = {None: VAST_NS}


def _q(tag: str) -> str:
    return f"{{{VAST_NS}}}{tag}"


def _child(
    parent: etree._Element, tag: str, text: str | None = None, **attrs: str
) -> etree._Element:
    element = etree.SubElement(parent, _q(tag), attrs)
    if text is not None:
        element.text = text
    return element


def _uri(parent: etree._Element, tag: str, url: str, **attrs: str) -> etree._Element:
    element = etree.SubElement(parent, _q(tag), attrs)
    element.text = etree.CDATA(url)
    return element


def format_duration(milliseconds: int) -> str:
    """VAST Duration: ``HH:MM:SS.mmm``."""
    seconds, millis = divmod(milliseconds, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}"


@dataclass(frozen=True, slots=True)
class VastAd:
    """Everything one ``<Ad>`` needs; URLs are already signed."""

    ad_id: str
    serving_id: str
    title: str
    advertiser: str
    creative_id: str
    media_url: str
    mime_type: str
    duration_ms: int
    bitrate_kbps: int | None
    click_through: str | None
    impression_url: str
    error_url: str
    tracking_urls: dict[str, str]
    click_tracking_url: str | None
    categories: tuple[str, ...] = ()
    sequence: int | None = None


def _ad(root: etree._Element, ad: VastAd) -> None:
    attrs = {"id": ad.ad_id, "adType": "audio"}
    if ad.sequence is not None:
        attrs["sequence"] = str(ad.sequence)
    inline = _child(_child(root, "Ad", **attrs), "InLine")
    _child(inline, "AdSystem", "Backbeat", version=__version__)
    _uri(inline, "Error", ad.error_url)
    _uri(inline, "Impression", ad.impression_url, id=ad.serving_id)
    _child(inline, "AdServingId", ad.serving_id)
    _child(inline, "AdTitle", ad.title)
    _child(inline, "Advertiser", ad.advertiser)
    for category in ad.categories:
        _child(inline, "Category", category, authority=IAB_CATEGORY_AUTHORITY)
    creative = _child(_child(inline, "Creatives"), "Creative", id=ad.creative_id, adId=ad.ad_id)
    linear = _child(creative, "Linear")
    events = _child(linear, "TrackingEvents")
    for event in QUARTILE_EVENTS:
        _uri(events, "Tracking", ad.tracking_urls[event], event=event)
    _child(linear, "Duration", format_duration(ad.duration_ms))
    media = {"delivery": "progressive", "type": ad.mime_type, "width": "0", "height": "0"}
    if ad.bitrate_kbps:
        media["bitrate"] = str(ad.bitrate_kbps)
    _uri(_child(linear, "MediaFiles"), "MediaFile", ad.media_url, **media)
    if ad.click_through or ad.click_tracking_url:
        clicks = _child(linear, "VideoClicks")  # the XSD wants ClickTracking before ClickThrough
        if ad.click_tracking_url:
            _uri(clicks, "ClickTracking", ad.click_tracking_url, id=ad.creative_id)
        if ad.click_through:
            _uri(clicks, "ClickThrough", ad.click_through, id=ad.creative_id)
    _child(creative, "UniversalAdId", ad.creative_id, idRegistry="Backbeat")


def render_vast(ads: Sequence[VastAd], *, no_fill_error_url: str | None = None) -> bytes:
    """One document: the ads (a pod when several carry a sequence), or an empty no-fill."""
    root = etree.Element(_q("VAST"), {"version": VAST_VERSION}, nsmap=_NSMAP)
    for ad in ads:
        _ad(root, ad)
    if not ads and no_fill_error_url:
        _uri(root, "Error", no_fill_error_url)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")
