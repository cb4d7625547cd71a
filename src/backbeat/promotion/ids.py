"""String ids of synthetic entities and their integer codes (arrays hold the codes)."""

from __future__ import annotations

import numpy as np

PREFIX = {"listener": "l", "artist": "a", "release": "r", "track": "t"}
WIDTH = {"listener": 6, "artist": 4, "release": 5, "track": 6}


def format_id(kind: str, code: int) -> str:
    return f"{PREFIX[kind]}{code:0{WIDTH[kind]}d}"


def parse_id(kind: str, text: str) -> int | None:
    """The code of an id of this kind, or None when the text is not one."""
    prefix = PREFIX[kind]
    if not text.startswith(prefix) or not text[1:].isdigit() or len(text) > 12:
        return None
    return int(text[1:])


def format_ids(kind: str, codes: np.ndarray) -> list[str]:
    return [format_id(kind, int(code)) for code in codes]
