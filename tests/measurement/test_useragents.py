"""OPAWG classification: file order, bot libraries, devices, referrers, JS regex translation."""

from __future__ import annotations

import json
import re
import warnings
from importlib import resources

import pytest

from backbeat.measurement.useragents import (
    UserAgentClassifier,
    classify,
    compile_js,
    get_classifier,
    js_to_python,
    load_entries,
)
from backbeat.measurement.useragents.patterns import KINDS

# Real user agents seen in podcast host logs (the OPAWG runtime files carry no examples).
REAL_WORLD = [
    ("Overcast/3.0 (+http://overcast.fm/; iOS podcast app)", "app", "Overcast", "Apple iPhone"),
    ("Podcasts/1720.1 CFNetwork/1408.0.4 Darwin/22.5.0", "app", "Apple Podcasts", "Apple iPhone"),
    ("Spotify/8.8.0 iOS/16.5 (iPhone14,5)", "app", "Spotify", "Apple iPhone"),
    ("PocketCasts/1.0 (Pocket Casts - iOS - v7.42)", "app", "Pocket Casts", "Apple iPhone"),
    (
        "AppleCoreMedia/1.0.0.20G75 (iPhone; U; CPU OS 16_6 like Mac OS X; en_us)",
        "library",
        "AppleCoreMedia",
        "Apple iPhone",
    ),
    (
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "bot",
        "Googlebot",
        None,
    ),
    ("curl/8.4.0", "bot", "curl", None),
    ("python-requests/2.31.0", "bot", "python-requests", None),
    ("Apache-HttpClient/4.5.13 (Java/17.0.1)", "bot", "Apache HttpClient", None),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36",
        "browser",
        "Chrome",
        "Windows Computer",
    ),
    ("atc/1.0 watchOS/9.0", "bot", "Apple Podcasts (Watch)", "Apple Watch"),
    ("SomethingNobodyWrote/0.1", "unknown", None, None),
]


@pytest.mark.parametrize(("agent", "kind", "name", "device"), REAL_WORLD)
def test_real_world_user_agents(agent: str, kind: str, name: str | None, device: str | None):
    info = classify(agent)
    assert (info.type, info.name, info.device) == (kind, name, device)


def test_every_shipped_pattern_compiles_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        counts = {kind: len(load_entries(kind)) for kind in KINDS}
    assert counts["apps"] > 500 and counts["bots"] > 250 and counts["devices"] > 10


def test_shipped_files_are_the_package_data_and_carry_the_licence():
    data = resources.files("backbeat.measurement.useragents").joinpath("data")
    assert "MIT License" in data.joinpath("LICENSE").read_text("utf-8")
    for kind in KINDS:
        entries = json.loads(data.joinpath(f"{kind}.runtime.json").read_text("utf-8"))["entries"]
        assert [e.name for e in load_entries(kind)] == [e["name"] for e in entries]


def test_bots_are_tried_before_apps():
    # "Spotify/1.0" is Spotify's feed crawler; the Spotify app pattern matches it too.
    agent = "Spotify/1.0"
    assert any(app.regex.search(agent) for app in load_entries("apps"))
    info = classify(agent)
    assert info.type == "bot" and info.source == "bots"


def test_apps_are_tried_before_libraries():
    # An app that embeds a library name in its UA is the app.
    agent = "Overcast/3.0 (+http://overcast.fm/; iOS podcast app) AppleCoreMedia/1.0"
    assert classify(agent).type == "app"


def test_library_in_bot_category_is_a_bot_and_others_stay_libraries():
    assert classify("axios/1.6.2").type == "bot"
    assert classify("axios/1.6.2").source == "libraries"
    assert classify("AndroidDownloadManager/13").type == "library"


def test_libraries_are_tried_before_browsers():
    info = classify("AppleCoreMedia/1.0.0.21A329 (Macintosh; U; Intel Mac OS X 14_0; en_us)")
    assert (info.type, info.device) == ("library", "Apple Computer")


def test_referrer_only_names_the_web_player_for_browsers():
    chrome = (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36"
    )
    web = classify(chrome, "https://podcasts.apple.com/us/podcast/id123")
    assert (web.type, web.referrer, web.referrer_category, web.app) == (
        "browser",
        "Apple Podcasts",
        "app",
        "Apple Podcasts",
    )
    app = classify("Overcast/3.0", "https://podcasts.apple.com/us/podcast/id123")
    assert app.referrer is None and app.app == "Overcast"


def test_missing_and_empty_agents_are_unknown():
    assert classify(None).type == "unknown"
    assert classify("").to_dict() == {
        "type": "unknown",
        "name": None,
        "device": None,
        "device_category": None,
        "referrer": None,
        "referrer_category": None,
    }


def test_classifier_is_built_once_and_memoised():
    assert get_classifier() is get_classifier()
    classifier = UserAgentClassifier()
    classifier.classify("Overcast/3.0")
    classifier.classify("Overcast/3.0")
    assert classifier.classify_agent.cache_info().hits == 1


@pytest.mark.parametrize(
    ("js", "text", "matches"),
    [
        ("^bPod$", "bPod", True),
        ("^bPod$", "bPod\n", False),  # JS "$" is the very end; Python's would accept "\n"
        (r"a\/b", "a/b", True),
        ("x[^]y", "x\ny", True),
        ("x[]y", "xy", False),
        (r"(?<v>\d)-\k<v>", "7-7", True),
        (r"(?<v>\d)-\k<v>", "7-8", False),
        ("[[a]", "[", True),
        ("[+--]", ",", True),  # a range ending in "-", which Python reads as set difference
        (r"^\d+$", "١٢", False),  # JS \d is ASCII only
    ],
)
def test_js_regex_translation(js: str, text: str, matches: bool):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        regex = compile_js(js)
    assert bool(regex.search(text)) is matches


def test_js_flags_are_honoured():
    assert compile_js("^podcast$", "i").search("PODCAST")
    assert compile_js("^b$", "m").search("a\nb\nc")
    _, flags = js_to_python("x", "s")
    assert flags & re.DOTALL
    with pytest.raises(ValueError):
        js_to_python("x", "q")
