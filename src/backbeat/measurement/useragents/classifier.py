"""Classify a User-Agent (and Referer) the way OPAWG specifies.

Bots, then apps, then libraries, then browsers: the first entry whose pattern matches
gives the type and name; a library in category ``bot`` is a bot. The device is looked up
separately; the Referer only names the web player when the user agent is a browser.
The patterns are compiled once per process and results memoised per string, because
classification runs once per log line.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from typing import Any

from backbeat.measurement.useragents.patterns import PatternEntry, load_entries

BOT = "bot"
APP = "app"
LIBRARY = "library"
BROWSER = "browser"
UNKNOWN = "unknown"

_ORDER = ((BOT, "bots"), (APP, "apps"), (LIBRARY, "libraries"), (BROWSER, "browsers"))


@dataclass(frozen=True, slots=True)
class UserAgentInfo:
    """What OPAWG's files say about one request's User-Agent and Referer."""

    type: str
    name: str | None = None
    device: str | None = None
    device_category: str | None = None
    referrer: str | None = None
    referrer_category: str | None = None
    # Which file matched (``libraries`` for a bot-category library); not part of the JSON.
    source: str | None = field(default=None, compare=False)

    @property
    def is_bot(self) -> bool:
        return self.type == BOT

    @property
    def app(self) -> str:
        """The name to report a listen under: the web player for browsers, else the entry."""
        return self.referrer or self.name or UNKNOWN

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        del record["source"]
        return record


def _first_match(entries: tuple[PatternEntry, ...], text: str) -> PatternEntry | None:
    for entry in entries:
        if entry.regex.search(text):
            return entry
    return None


class UserAgentClassifier:
    """The compiled OPAWG pattern files; build once via :func:`get_classifier`."""

    def __init__(self) -> None:
        self._agents = tuple(load_entries(file) for _, file in _ORDER)
        self._devices = load_entries("devices")
        self._referrers = load_entries("referrers")
        self.classify_agent = lru_cache(maxsize=65_536)(self._classify_agent)
        self.match_referrer = lru_cache(maxsize=16_384)(self._match_referrer)

    def _classify_agent(self, user_agent: str) -> UserAgentInfo:
        device = _first_match(self._devices, user_agent)
        device_name = device.name if device else None
        device_category = device.category if device else None
        for (kind, file), entries in zip(_ORDER, self._agents, strict=True):
            entry = _first_match(entries, user_agent)
            if entry is not None:
                agent_type = BOT if kind == LIBRARY and entry.category == BOT else kind
                return UserAgentInfo(
                    agent_type, entry.name, device_name, device_category, source=file
                )
        return UserAgentInfo(UNKNOWN, None, device_name, device_category)

    def _match_referrer(self, referer: str) -> PatternEntry | None:
        return _first_match(self._referrers, referer)

    def classify(self, user_agent: str | None, referer: str | None = None) -> UserAgentInfo:
        """Classify one request; ``None`` or empty headers match nothing."""
        info = self.classify_agent(user_agent or "")
        if info.type != BROWSER or not referer:
            return info
        entry = self.match_referrer(referer)
        if entry is None:
            return info
        return replace(info, referrer=entry.name, referrer_category=entry.category)


@lru_cache(maxsize=1)
def get_classifier() -> UserAgentClassifier:
    """The process-wide classifier: compiling ~1,000 patterns is done once per worker."""
    return UserAgentClassifier()


def classify(user_agent: str | None, referer: str | None = None) -> UserAgentInfo:
    """Classify with the process-wide classifier."""
    return get_classifier().classify(user_agent, referer)
