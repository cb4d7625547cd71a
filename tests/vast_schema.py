"""The IAB VAST 4.2 XSD (vendored under tests/data/iab-vast with its licence)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from lxml import etree

XSD_PATH = Path(__file__).parent / "data" / "iab-vast" / "vast_4.2.xsd"


@cache
def vast_schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(XSD_PATH)))


# What a player substitutes before firing a URL (VAST 4.2 §2.3.6); the XSD's anyURI
# refuses the raw brackets, so documents are validated as a player would use them.
MACROS = {b"[ERRORCODE]": b"405"}


def substitute_macros(document: bytes) -> bytes:
    for macro, value in MACROS.items():
        document = document.replace(macro, value)
    return document


def assert_valid_vast(document: bytes) -> etree._Element:
    root = etree.fromstring(substitute_macros(document))
    schema = vast_schema()
    assert schema.validate(root), str(schema.error_log)
    return root
