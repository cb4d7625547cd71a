"""The IAB podcast download rules, one function per rule.

These functions are the single statement of each rule. The plain reference
implementation calls them once per request; the Arrow batch path calls them once per
*distinct value* in a batch (paths, ranges, user agents, IPs, combinations of reasons)
and applies the results by index, and :func:`delivered_interval` is written with numpy
operations so the same code serves scalars and whole columns.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import numpy as np

from backbeat.measurement.useragents import BOT, UNKNOWN, UserAgentInfo

if TYPE_CHECKING:
    from collections.abc import Iterable

DAY_US = 86_400 * 1_000_000
_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
# Dotted quads that ipaddress accepts unchanged (no leading zeros): listener_ip(ip) == ip.
CANONICAL_IPV4 = rf"^{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}$"
_BOT_WORDS = re.compile("bot|crawler|spider", re.IGNORECASE)
_RANGE_RE = re.compile(
    r"\s*bytes\s*=\s*([0-9]*)\s*-\s*([0-9]*)\s*(?:,.*)?", re.IGNORECASE | re.DOTALL
)


class Exclusion(StrEnum):
    """Why a well-formed request does not count towards a download."""

    HEAD = "head-request"
    NOT_MODIFIED = "not-modified"
    NOT_GET = "method-not-get"
    BAD_STATUS = "status-not-200-or-206"
    NOT_EPISODE = "not-an-episode"
    PROBE_RANGE = "probe-range-0-1"
    BAD_RANGE = "bad-range"
    MISSING_USER_AGENT = "missing-user-agent"
    APPLE_WATCH = "apple-watch-background"
    OPAWG_BOT = "opawg-bot"
    BOT_LIBRARY = "bot-library"
    BOT_KEYWORD = "unknown-agent-named-bot"
    INVALID_IP = "invalid-ip"
    DATA_CENTRE = "data-centre-ip"


BOT_EXCLUSIONS = frozenset(
    {
        Exclusion.MISSING_USER_AGENT,
        Exclusion.APPLE_WATCH,
        Exclusion.OPAWG_BOT,
        Exclusion.BOT_LIBRARY,
        Exclusion.BOT_KEYWORD,
        Exclusion.DATA_CENTRE,
    }
)


class RangeKind(IntEnum):
    """The shape of a ``Range`` request header."""

    NONE = 0
    PROBE = 1
    START = 2
    SUFFIX = 3
    INVALID = 4


@dataclass(frozen=True, slots=True)
class RangeSpec:
    """A parsed ``Range`` header: ``value`` is the first byte, or the suffix length."""

    kind: RangeKind
    value: int = 0


def request_exclusion(method: str, status: int) -> Exclusion | None:
    """Only a GET answered 200 or 206 can deliver an episode."""
    if method == "HEAD":
        return Exclusion.HEAD
    if method != "GET":
        return Exclusion.NOT_GET
    if status == 304:
        return Exclusion.NOT_MODIFIED
    if status not in (200, 206):
        return Exclusion.BAD_STATUS
    return None


def normalise_path(target: str) -> str:
    """The catalog key of a request target: no scheme/host, query or fragment; percent-decoded."""
    if "://" in target[:10]:
        target = urlsplit(target).path or "/"
    target = target.split("?", 1)[0].split("#", 1)[0]
    return unquote(target) if "%" in target else target


@lru_cache(maxsize=65_536)
def parse_range(header: str | None) -> RangeSpec:
    """Parse the first range of a ``Range`` header; ``bytes=0-1`` is a player's probe."""
    if header is None or not header.strip():
        return RangeSpec(RangeKind.NONE)
    match = _RANGE_RE.fullmatch(header)
    if match is None:
        return RangeSpec(RangeKind.INVALID)
    first, last = match.groups()
    if first == "0" and last == "1" and "," not in header:
        return RangeSpec(RangeKind.PROBE)
    if first:
        if last and int(last) < int(first):
            return RangeSpec(RangeKind.INVALID)
        return RangeSpec(RangeKind.START, int(first))
    if last:
        return RangeSpec(RangeKind.SUFFIX, int(last))
    return RangeSpec(RangeKind.INVALID)


def range_exclusion(spec: RangeSpec, status: int) -> Exclusion | None:
    """Probes never count; a 206 must say which bytes it sent."""
    if spec.kind is RangeKind.PROBE:
        return Exclusion.PROBE_RANGE
    if status == 206 and spec.kind not in (RangeKind.START, RangeKind.SUFFIX):
        return Exclusion.BAD_RANGE
    return None


def is_apple_watch(user_agent: str) -> bool:
    """Apple Watch background fetches are not listens (IAB v2.1)."""
    return (user_agent.startswith("atc/") and "watchOS" in user_agent) or (
        "(null)/(null) watchOS" in user_agent
    )


def bot_exclusion(user_agent: str, info: UserAgentInfo) -> Exclusion | None:
    """Bots: OPAWG bots and bot libraries, no user agent, Apple Watch, unknown ``*bot*``."""
    if not user_agent.strip():
        return Exclusion.MISSING_USER_AGENT
    if is_apple_watch(user_agent):
        return Exclusion.APPLE_WATCH
    if info.type == BOT:
        return Exclusion.BOT_LIBRARY if info.source == "libraries" else Exclusion.OPAWG_BOT
    if info.type == UNKNOWN and _BOT_WORDS.search(user_agent):
        return Exclusion.BOT_KEYWORD
    return None


def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(ip.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@lru_cache(maxsize=262_144)
def listener_ip(ip: str) -> str | None:
    """The IP part of a listener: IPv4 as is, IPv6 by its /64 prefix; ``None`` if invalid."""
    address = _address(ip)
    if address is None:
        return None
    if address.version == 6:
        network = ipaddress.IPv6Network((int(address) >> 64 << 64, 64))
        return str(network)
    return str(address)


class IpRanges:
    """A set of CIDR ranges (data centres) with fast membership; picklable."""

    def __init__(self, cidrs: Iterable[str] = ()) -> None:
        spans: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        self.cidrs: tuple[str, ...] = tuple(c.strip() for c in cidrs if c.strip())
        for cidr in self.cidrs:
            network = ipaddress.ip_network(cidr, strict=False)
            spans[network.version].append(
                (int(network.network_address), int(network.broadcast_address))
            )
        self._starts: dict[int, list[int]] = {}
        self._ends: dict[int, list[int]] = {}
        for version, items in spans.items():
            merged: list[list[int]] = []
            for start, end in sorted(items):
                if merged and start <= merged[-1][1] + 1:
                    merged[-1][1] = max(merged[-1][1], end)
                else:
                    merged.append([start, end])
            self._starts[version] = [s for s, _ in merged]
            self._ends[version] = [e for _, e in merged]

    def __contains__(self, ip: object) -> bool:
        if not self.cidrs:
            return False
        address = _address(ip) if isinstance(ip, str) else None
        if address is None:
            return False
        value = int(address)
        starts = self._starts[address.version]
        position = bisect.bisect_right(starts, value) - 1
        return position >= 0 and value <= self._ends[address.version][position]

    def contains_ipv4(self, addresses: np.ndarray) -> np.ndarray:
        """Membership of IPv4 addresses given as integers: the same ranges, a column at a time."""
        starts = np.asarray(self._starts[4], np.int64)
        ends = np.asarray(self._ends[4], np.int64)
        position = np.searchsorted(starts, addresses, side="right") - 1
        inside = position >= 0
        inside[inside] = addresses[inside] <= ends[position[inside]]
        return inside

    def __bool__(self) -> bool:
        return bool(self.cidrs)


def exclusion_reason(
    request: Exclusion | None,
    is_episode: bool,
    range_reason: Exclusion | None,
    bot: Exclusion | None,
    ip_valid: bool,
    in_data_centre: bool,
) -> Exclusion | None:
    """The first rule a request fails, in a fixed order so every reason is counted once."""
    if request is not None:
        return request
    if not is_episode:
        return Exclusion.NOT_EPISODE
    if range_reason is not None:
        return range_reason
    if bot is not None:
        return bot
    if not ip_valid:
        return Exclusion.INVALID_IP
    if in_data_centre:
        return Exclusion.DATA_CENTRE
    return None


def delivered_interval(
    status: Any, nbytes: Any, is_suffix: Any, range_start: Any, file_bytes: Any
) -> tuple[Any, Any]:
    """Bytes ``[start, end)`` of the file a request delivered (scalars or numpy arrays).

    A 200 delivers ``[0, bytes)``; a 206 delivers ``bytes`` bytes from the range's start,
    or the last ``bytes`` bytes of the file for a suffix range. Clamped to the file.
    """
    full = np.asarray(status) == 200
    suffix = np.asarray(is_suffix) & ~full
    start = np.where(
        full,
        0,
        np.where(suffix, np.maximum(file_bytes - nbytes, 0), np.minimum(range_start, file_bytes)),
    )
    end = np.where(suffix, file_bytes, np.minimum(start + nbytes, file_bytes))
    return start, end


def calendar_day(ts_us: Any) -> Any:
    """UTC day number of a timestamp (scalar or array)."""
    return np.floor_divide(ts_us, DAY_US)
