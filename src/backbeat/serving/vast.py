"""VAST 4.2 documents for audio ads, rendered from string templates in the XSD's element order.

Everything about an ad that does not change per decision (title, advertiser, categories,
creative, duration, media file, click-through) is escaped and joined once per creative,
when the snapshot loads (``AdTemplate``); a decision only splices in its id and its
signed tracking URLs. Tests validate the output against the IAB VAST 4.2 XSD and prove
the escaping with property tests (arbitrary names and URLs round-trip through an XML
parser).

Text is XML-escaped; URLs go in CDATA sections (a ``]]>`` inside is split across two
sections). Characters XML 1.0 cannot carry at all (most C0 controls, lone surrogates,
U+FFFE/U+FFFF) are dropped, so no catalog text can make a document unparseable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from backbeat import __version__

VAST_NS = "http://www.iab.com/VAST"
VAST_VERSION = "4.2"
QUARTILE_EVENTS = ("start", "firstQuartile", "midpoint", "thirdQuartile", "complete")
IAB_CATEGORY_AUTHORITY = "https://iabtechlab.com"
# VAST 4.2 §2.3.6: players replace this macro in Error URIs with the error code.
ERRORCODE_MACRO = "[ERRORCODE]"

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# A raw CR would come back from any parser as LF (line-end normalisation): keep it as a reference.
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_ATTR_ESCAPES = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        '"': "&quot;",
        "\t": "&#9;",
        "\n": "&#10;",
        "\r": "&#13;",
    }
)
_HEADER = (
    f"<?xml version='1.0' encoding='UTF-8'?>\n<VAST xmlns=\"{VAST_NS}\" version=\"{VAST_VERSION}\">"
)
_FOOTER = "</VAST>"


def xml_text(value: str) -> str:
    """Element content: XML-escaped, characters XML cannot carry dropped."""
    return _NOT_XML.sub("", value).translate(_TEXT_ESCAPES)


def xml_attr(value: str) -> str:
    """A double-quoted attribute value (whitespace kept as character references)."""
    return _NOT_XML.sub("", value).translate(_ATTR_ESCAPES)


def cdata(value: str) -> str:
    """A CDATA section holding ``value`` (non-XML characters and CRs dropped: a CDATA section
    cannot keep a CR from line-end normalisation, and no URL has one)."""
    clean = _NOT_XML.sub("", value).replace("\r", "")
    return "<![CDATA[" + clean.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def format_duration(milliseconds: int) -> str:
    """VAST Duration: ``HH:MM:SS.mmm``."""
    seconds, millis = divmod(milliseconds, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}"


@dataclass(frozen=True, slots=True)
class VastAd:
    """Everything one ``<Ad>`` needs, as plain values (the template is built from it)."""

    ad_id: str
    title: str
    advertiser: str
    creative_id: str
    media_url: str
    mime_type: str
    duration_ms: int
    bitrate_kbps: int | None
    click_through: str | None
    categories: tuple[str, ...] = ()


class AdTemplate:
    """One creative's ``<Ad>``, with its static parts escaped and joined ahead of time."""

    __slots__ = ("_ad_open", "_middle", "_linear_tail", "_click_open", "_tail", "has_click")

    def __init__(self, ad: VastAd) -> None:
        ad_id, creative_id = xml_attr(ad.ad_id), xml_attr(ad.creative_id)
        self._ad_open = f'<Ad id="{ad_id}" adType="audio"'
        categories = "".join(
            f'<Category authority="{IAB_CATEGORY_AUTHORITY}">{xml_text(category)}</Category>'
            for category in ad.categories
        )
        self._middle = (
            f"<AdTitle>{xml_text(ad.title)}</AdTitle>"
            f"<Advertiser>{xml_text(ad.advertiser)}</Advertiser>{categories}"
            f'<Creatives><Creative id="{creative_id}" adId="{ad_id}"><Linear><TrackingEvents>'
        )
        bitrate = f' bitrate="{ad.bitrate_kbps}"' if ad.bitrate_kbps else ""
        self._linear_tail = (
            f"</TrackingEvents><Duration>{format_duration(ad.duration_ms)}</Duration>"
            f'<MediaFiles><MediaFile delivery="progressive" type="{xml_attr(ad.mime_type)}"'
            f' width="0" height="0"{bitrate}>{cdata(ad.media_url)}</MediaFile></MediaFiles>'
        )
        self.has_click = ad.click_through is not None
        # The XSD wants ClickTracking before ClickThrough.
        self._click_open = f'<VideoClicks><ClickTracking id="{creative_id}">'
        click_through = (
            f'</ClickTracking><ClickThrough id="{creative_id}">{cdata(ad.click_through)}'
            "</ClickThrough></VideoClicks>"
            if ad.click_through is not None
            else ""
        )
        self._tail = (
            f'{click_through}</Linear><UniversalAdId idRegistry="Backbeat">{creative_id}'
            "</UniversalAdId></Creative></Creatives></InLine></Ad>"
        )

    def render(self, serving_id: str, urls: Mapping[str, str], sequence: int | None) -> str:
        """Splice in a decision: its id (hex) and its signed tracking URLs by event.

        Signed URLs are printable ASCII without ``]]>`` (``signing.py`` builds them from
        URL-safe values on a checked base URL), so they go into CDATA unescaped.
        """
        sequence_attr = f' sequence="{sequence}"' if sequence is not None else ""
        click = f"{self._click_open}<![CDATA[{urls['click']}]]>" if self.has_click else ""
        return (
            f"{self._ad_open}{sequence_attr}><InLine>{_AD_SYSTEM}"
            f"<Error><![CDATA[{urls['error']}]]></Error>"
            f'<Impression id="{serving_id}"><![CDATA[{urls["impression"]}]]></Impression>'
            f"<AdServingId>{serving_id}</AdServingId>{self._middle}"
            f'<Tracking event="start"><![CDATA[{urls["start"]}]]></Tracking>'
            f'<Tracking event="firstQuartile"><![CDATA[{urls["firstQuartile"]}]]></Tracking>'
            f'<Tracking event="midpoint"><![CDATA[{urls["midpoint"]}]]></Tracking>'
            f'<Tracking event="thirdQuartile"><![CDATA[{urls["thirdQuartile"]}]]></Tracking>'
            f'<Tracking event="complete"><![CDATA[{urls["complete"]}]]></Tracking>'
            f"{self._linear_tail}{click}{self._tail}"
        )


_AD_SYSTEM = f'<AdSystem version="{xml_attr(__version__)}">Backbeat</AdSystem>'


def render_document(ads: Sequence[str], *, no_fill_error_url: str | None = None) -> bytes:
    """One document: rendered ``<Ad>`` elements (a pod when they carry a sequence), or a no-fill."""
    if ads:
        return (_HEADER + "".join(ads) + _FOOTER).encode()
    if no_fill_error_url:
        return (_HEADER + "<Error>" + cdata(no_fill_error_url) + "</Error>" + _FOOTER).encode()
    return (_HEADER[:-1] + "/>").encode()
