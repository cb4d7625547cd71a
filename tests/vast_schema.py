"""The IAB VAST 4.2 XSD (vendored under tests/data/iab-vast with its licence)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from lxml import etree

XSD_PATH = Path(__file__).parent / "data" / "iab-vast" / "vast_4.2.xsd"


@cache
def vast_schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(XSD_PATH)))


def assert_valid_vast(document: bytes) -> etree._Element:
    root = etree.fromstring(document)
    schema = vast_schema()
    assert schema.validate(root), str(schema.error_log)
    return root
