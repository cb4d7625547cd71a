"""Load the shipped OPAWG pattern files and compile their JavaScript-style regexes for ``re``.

OPAWG writes patterns as JavaScript regular expressions (the schema asks authors to avoid
lookaheads and language-specific classes, not to avoid JavaScript). The two dialects agree
on almost everything these files use; :func:`js_to_python` rewrites the few constructs
where Python would read the same text differently.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources

KINDS = ("bots", "apps", "libraries", "browsers", "devices", "referrers")

_JS_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "u": 0, "g": 0, "y": 0, "d": 0}
# Characters whose doubling inside a class Python reserves for set operations (FutureWarning).
_SET_OPERATORS = "-&|~"


@dataclass(frozen=True, slots=True)
class PatternEntry:
    """One named entry of a pattern file, with its compiled regex."""

    name: str
    regex: re.Pattern[str]
    category: str | None = None


def js_to_python(pattern: str, flags: str = "") -> tuple[str, int]:
    """Translate a JavaScript regex source and flags into a Python ``re`` source and flags.

    Differences handled: ``$`` only matches at the very end in JavaScript without ``m``
    (Python also matches before a final newline); ``[^]`` and ``[]`` (any / no character);
    named groups ``(?<n>...)`` and back-references ``\\k<n>``; a literal ``[`` or a doubled
    ``--``/``&&``/``||``/``~~`` inside a class, which Python reserves for set operations;
    ``\\d``/``\\w``/``\\b`` being ASCII-only (``re.ASCII``).
    """
    py_flags = re.ASCII
    for flag in flags:
        if flag not in _JS_FLAGS:
            raise ValueError(f"unknown JavaScript regex flag {flag!r}")
        py_flags |= _JS_FLAGS[flag]
    multiline = "m" in flags
    out: list[str] = []
    in_class = False
    i = 0
    n = len(pattern)
    while i < n:
        char = pattern[i]
        if char == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            if nxt == "k" and pattern.startswith("<", i + 2):
                end = pattern.index(">", i + 3)
                out.append(f"(?P={pattern[i + 3 : end]})")
                i = end + 1
                continue
            if nxt == "/":
                out.append("/")
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if char == "]":
                in_class = False
                out.append(char)
            elif char == "[":
                out.append("\\[")
            elif char in _SET_OPERATORS and out and out[-1] == char:
                out.append("\\" + char)
            else:
                out.append(char)
            i += 1
            continue
        if char == "[":
            if pattern.startswith("[^]", i):
                out.append(r"[\s\S]")
                i += 3
                continue
            if pattern.startswith("[]", i):
                out.append("(?!)")
                i += 2
                continue
            in_class = True
            out.append(char)
            i += 1
            # A leading "]" is a literal in Python but ends the (empty) class in JavaScript;
            # both cases were handled above, so here "^" is the only special first character.
            if i < n and pattern[i] == "^":
                out.append("^")
                i += 1
            continue
        if (
            char == "("
            and pattern.startswith("(?<", i)
            and not pattern.startswith(("(?<=", "(?<!"), i)
        ):
            out.append("(?P<")
            i += 3
            continue
        if char == "$" and not multiline:
            out.append(r"\Z")
        else:
            out.append(char)
        i += 1
    return "".join(out), py_flags


def compile_js(pattern: str, flags: str = "") -> re.Pattern[str]:
    """Compile a JavaScript regex for use with ``re.search``."""
    source, py_flags = js_to_python(pattern, flags)
    return re.compile(source, py_flags)


def _split_literal(pattern: str) -> tuple[str, str]:
    """Accept ``/source/flags`` literals too, should a file ever carry flags that way."""
    match = re.fullmatch(r"/(.*)/([a-z]*)", pattern, re.DOTALL)
    if match:
        return match.group(1), match.group(2)
    return pattern, ""


def load_entries(kind: str) -> tuple[PatternEntry, ...]:
    """Read and compile one shipped pattern file (``bots``, ``apps``, ...), in file order."""
    if kind not in KINDS:
        raise ValueError(f"unknown pattern file {kind!r}")
    text = resources.files(__package__).joinpath("data", f"{kind}.runtime.json").read_text("utf-8")
    entries = []
    for entry in json.loads(text)["entries"]:
        source, flags = _split_literal(entry["pattern"])
        entries.append(
            PatternEntry(entry["name"], compile_js(source, flags), entry.get("category"))
        )
    return tuple(entries)
