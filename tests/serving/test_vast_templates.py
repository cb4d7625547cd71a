"""VAST from per-creative string templates: any catalog text round-trips through an XML parser,
and documents stay valid against the IAB VAST 4.2 XSD."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from backbeat.serving.vast import AdTemplate, VastAd, render_document
from backbeat.signing import TRACKING_EVENTS, TrackingClaims, UrlSigner
from vast_schema import assert_valid_vast

NS = {"v": "http://www.iab.com/VAST"}
NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
SIGNER = UrlSigner(b"k" * 32, "https://t.example.com")


def urls(decision_id: str) -> dict[str, str]:
    claims = TrackingClaims(decision_id, 7, 3, 9, 1, 2_500_000, "USD", "l-1", 1_900_000_000)
    found = SIGNER.urls(TRACKING_EVENTS, claims)
    found["error"] += "&code=[ERRORCODE]"
    return found


def ad(**changes: object) -> VastAd:
    fields: dict[str, object] = {
        "ad_id": "li-7",
        "title": "Spot",
        "advertiser": "Acme",
        "creative_id": "cr-9",
        "media_url": "https://cdn.example.com/a.mp3",
        "mime_type": "audio/mpeg",
        "duration_ms": 30_000,
        "bitrate_kbps": 128,
        "click_through": "https://acme.example.com/",
        "categories": ("IAB2",),
    }
    fields.update(changes)
    return VastAd(**fields)  # type: ignore[arg-type]


def text(root: etree._Element, path: str) -> str:
    return root.findtext(path, namespaces=NS) or ""


@settings(max_examples=300, deadline=None)
@given(
    title=st.text(),
    advertiser=st.text(),
    media=st.text(),
    click=st.none() | st.text(),
    category=st.text(),
    mime=st.text(max_size=40),
)
def test_any_catalog_text_round_trips_through_an_xml_parser(
    title, advertiser, media, click, category, mime
):
    template = AdTemplate(
        ad(
            title=title,
            advertiser=advertiser,
            media_url=media,
            click_through=click,
            categories=(category,),
            mime_type=mime,
        )
    )
    document = render_document([template.render("0190abcdef", urls("0190abcdef"), 2)])
    root = etree.fromstring(document)  # parses: nothing can break the document
    inline = "v:Ad/v:InLine"
    assert text(root, f"{inline}/v:AdTitle") == NOT_XML.sub("", title)
    assert text(root, f"{inline}/v:Advertiser") == NOT_XML.sub("", advertiser)
    assert text(root, f"{inline}/v:Category") == NOT_XML.sub("", category)
    media_file = root.find(".//v:MediaFile", NS)
    assert (media_file.text or "") == NOT_XML.sub("", media).replace("\r", "")
    assert media_file.get("type") == NOT_XML.sub("", mime)
    through = root.findtext(".//v:ClickThrough", namespaces=NS)
    assert through == (None if click is None else NOT_XML.sub("", click).replace("\r", ""))
    assert root.find("v:Ad", NS).get("sequence") == "2"


@settings(max_examples=100, deadline=None)
@given(
    title=st.text(),
    advertiser=st.text(),
    path=st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='"<>\\^`{|}%#[]'),
        max_size=40,
    ),
    bitrate=st.none() | st.integers(1, 512),
    duration_ms=st.integers(1, 10**7),
    pod=st.integers(1, 4),
)
def test_templated_documents_are_valid_vast_42(title, advertiser, path, bitrate, duration_ms, pod):
    template = AdTemplate(
        ad(
            title=title,
            advertiser=advertiser,
            media_url=f"https://cdn.example.com/{path}",
            bitrate_kbps=bitrate,
            duration_ms=duration_ms,
        )
    )
    decisions = [f"{n:028x}" for n in range(1, pod + 1)]
    ads = [template.render(d, urls(d), n if pod > 1 else None) for n, d in enumerate(decisions, 1)]
    root = assert_valid_vast(render_document(ads))  # after the player's [ERRORCODE] substitution
    served = [element.text for element in root.iterfind("v:Ad/v:InLine/v:AdServingId", NS)]
    assert served == decisions
    impression = text(root, "v:Ad/v:InLine/v:Impression")
    assert SIGNER.verify(
        "impression", dict(p.split("=", 1) for p in impression.split("?", 1)[1].split("&")), 0
    )


def test_line_ends_and_markup_survive_exactly():
    tricky = "a\r\nb\rc]]>d</AdTitle><x>&amp;\x00\uffff"
    root = etree.fromstring(
        render_document(
            [AdTemplate(ad(title=tricky, media_url=tricky)).render("ab", urls("ab"), None)]
        )
    )
    assert text(root, "v:Ad/v:InLine/v:AdTitle") == "a\r\nb\rc]]>d</AdTitle><x>&amp;"
    assert root.findtext(".//v:MediaFile", namespaces=NS) == "a\nbc]]>d</AdTitle><x>&amp;"


def test_a_no_fill_is_valid_and_carries_the_macro():
    document = render_document([], no_fill_error_url=urls("00ff")["error"])
    assert b"[ERRORCODE]" in document
    assert_valid_vast(document)
