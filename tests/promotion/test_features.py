"""Point-in-time features: a training row sees only what was known at its exposure time."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backbeat.promotion import features
from backbeat.promotion.dataset import data_dir, features_dir, read_columns, read_exposures
from backbeat.promotion.pipeline import FeatureJob, run_features

DAY = 86_400
T0 = 1_780_000_000  # a day boundary is irrelevant: popularity is tested on its own
A, B = 3, 4  # artists; genre of artist = artist % 2


def _history(plays: list[tuple[int, int]], exposures=(), clicks=(), conversions=()):
    ts = np.array([t for t, _ in plays], dtype=np.int64)
    artist = np.array([a for _, a in plays], dtype=np.int64)
    return features.ListenerHistory.build(
        ts,
        artist,
        artist % 2,
        exposure_ts=np.array([t for t, _ in exposures], dtype=np.int64),
        exposure_artist=np.array([a for _, a in exposures], dtype=np.int64),
        click_ts=np.array(clicks, dtype=np.int64),
        conversion_ts=np.array(conversions, dtype=np.int64),
    )


def test_a_hand_worked_row_ignores_everything_at_or_after_the_exposure():
    t = T0 + 40 * DAY
    plays = [
        (t - 30 * DAY, A),  # before the 28-day window: counts "ever", not "28d"
        (t - 2 * DAY, A),
        (t - 1 * DAY, B),
        (t, A),  # at the exposure instant: not yet known
        (t + 3600, A),  # the conversion stream after the exposure: the leak
        (t + 7200, A),
    ]
    exposures = [(t - 5 * DAY, A), (t, A), (t + DAY, B)]
    history = _history(plays, exposures, clicks=[t - 5 * DAY + 60, t + 60], conversions=[t + 3600])
    popularity = features.Popularity.from_counts(T0, np.zeros((8, 60), dtype=np.int64))
    row = features.compute(
        history, np.array([t]), np.array([A]), np.array([A % 2]), np.array([1]), popularity
    )[0]
    got = dict(zip(features.FEATURES, row, strict=True))
    assert got["artist_plays_28d"] == 1
    assert got["artist_plays_ever"] == 2
    assert got["days_since_artist_play"] == pytest.approx(2.0)
    assert got["listener_plays_28d"] == 2  # the A at t-2d and the B at t-1d
    assert got["days_since_last_play"] == pytest.approx(1.0)
    assert got["genre_share_28d"] == pytest.approx(0.5)  # genre of A: one of the two plays
    assert got["past_exposures"] == 1 and got["past_exposures_artist"] == 1
    assert got["past_clicks"] == 1  # the click at t+60 is in the future
    assert got["past_conversions"] == 0  # the conversion at t+3600 is in the future
    assert got["surface"] == 1


def test_popularity_counts_the_28_full_days_before_the_exposure_day():
    daily = np.zeros((2, 40), dtype=np.int64)
    daily[1, :] = np.arange(40)  # day d has d plays
    popularity = features.Popularity.from_counts(T0, daily)
    at = T0 + 30 * DAY + 5  # day 30: days 2..29 count, day 30 itself does not
    assert popularity.at(np.array([1, 0, 9]), np.array([at] * 3)).tolist() == [
        sum(range(2, 30)),
        0,
        0,
    ]


def _brute_force(listens, exposures, row_index, genre_of):
    """One exposure's features by plain loops over the raw events (the reference)."""
    listener, t, artist = (
        int(exposures["listener"][row_index]),
        int(exposures["ts"][row_index]),
        int(exposures["artist"][row_index]),
    )
    mine = listens["listener"] == listener
    ts, art = listens["ts"][mine], listens["artist"][mine]
    before = ts < t
    recent = before & (ts >= t - 28 * DAY)
    of_artist = art == artist
    plays_28d = int((recent & of_artist).sum())
    genre = genre_of[artist]
    in_genre = int((recent & (genre_of[art] == genre)).sum())
    ex = exposures["listener"] == listener
    return {
        "artist_plays_28d": plays_28d,
        "artist_plays_ever": int((before & of_artist).sum()),
        "listener_plays_28d": int(recent.sum()),
        "genre_share_28d": in_genre / recent.sum() if recent.sum() else 0.0,
        "past_exposures": int((ex & (exposures["ts"] < t)).sum()),
        "past_clicks": int((ex & (exposures["click_ts"] >= 0) & (exposures["click_ts"] < t)).sum()),
        "past_conversions": int(
            (ex & (exposures["conversion_ts"] >= 0) & (exposures["conversion_ts"] < t)).sum()
        ),
    }


def test_pipeline_rows_match_a_brute_force_point_in_time_reference(small_world):
    """The generator streams the release after each conversion: a pipeline reading past the
    exposure time would count those plays, and this comparison would fail."""
    published = read_columns(features_dir(small_world) / "features.parquet")
    root = data_dir(small_world)
    exposures = read_exposures([str(root / "exposures.parquet")])
    listens = read_columns(root / "listens")
    artists = read_columns(root / "artists.parquet")
    genre_of = np.zeros(int(artists["artist"].max()) + 1, dtype=np.int64)
    genre_of[artists["artist"]] = artists["genre"]
    row_of = {exposure_id: i for i, exposure_id in enumerate(published["exposure_id"])}
    rng = np.random.default_rng(3)
    converted = np.flatnonzero(exposures["converted"])
    picks = np.r_[
        rng.choice(converted, 15, replace=False),
        rng.choice(len(exposures["ts"]), 25, replace=False),
    ]
    for index in picks:
        expected = _brute_force(listens, exposures, index, genre_of)
        row = row_of[str(exposures["exposure_id"][index])]
        for name, value in expected.items():
            assert published[name][row] == pytest.approx(value), (name, index)
    # And the leak this guards against is real: converted listeners streamed the artist later.
    later = [
        ((listens["listener"] == exposures["listener"][i]) & (listens["artist"] == exposures["artist"][i])
         & (listens["ts"] > exposures["ts"][i])).sum()
        for i in converted[:20]
    ]  # fmt: skip
    assert min(later) >= 1


def test_the_run_fails_on_a_volume_drop_against_the_previous_run(small_world, tmp_path):
    import json
    import shutil

    from backbeat.errors import InvalidInput

    output = tmp_path / "features"
    output.mkdir()
    previous = pq.read_metadata(features_dir(small_world) / "features.parquet").num_rows
    (output / "last_run.json").write_text(json.dumps({"rows": previous * 3, "labels": 1}))
    data = tmp_path / "data"
    shutil.copytree(data_dir(small_world), data)
    with pytest.raises(InvalidInput) as raised:
        run_features(FeatureJob(data, output))
    assert raised.value.reason == "data-quality"
    assert "[volume]" in raised.value.detail and "previous run" in raised.value.detail
    assert not (output / "features.parquet").exists()  # nothing published


@settings(max_examples=60, deadline=None)
@given(
    plays=st.lists(st.tuples(st.integers(0, 60 * DAY), st.integers(0, 5)), max_size=60),
    exposures=st.lists(st.tuples(st.integers(0, 60 * DAY), st.integers(0, 5)), max_size=8),
    queries=st.lists(
        st.tuples(st.integers(0, 70 * DAY), st.integers(0, 6)), min_size=1, max_size=8
    ),
)
def test_features_equal_plain_loops_over_the_past(plays, exposures, queries):
    """Whatever the history, every count is over events strictly before the query time."""
    start = T0
    history = _history(
        [(start + t, a) for t, a in plays],
        [(start + t, a) for t, a in exposures],
        clicks=[start + t + 30 for t, _ in exposures[::2]],
        conversions=[start + t + 90 for t, _ in exposures[::3]],
    )
    popularity = features.Popularity.from_counts(start, np.zeros((7, 70), dtype=np.int64))
    ts = np.array([start + t for t, _ in queries])
    artists = np.array([a for _, a in queries])
    rows = features.compute(history, ts, artists, artists % 2, np.zeros(len(queries)), popularity)
    for row, (t, artist) in zip(rows, queries, strict=True):
        at = start + t
        past = [(pt + start, a) for pt, a in plays if pt + start < at]
        recent = [(pt, a) for pt, a in past if pt >= at - 28 * DAY]
        got = dict(zip(features.FEATURES, row, strict=True))
        assert got["artist_plays_28d"] == sum(a == artist for _, a in recent)
        assert got["artist_plays_ever"] == sum(a == artist for _, a in past)
        assert got["listener_plays_28d"] == len(recent)
        in_genre = sum(a % 2 == artist % 2 for _, a in recent)
        assert got["genre_share_28d"] == pytest.approx(in_genre / len(recent) if recent else 0.0)
        last = max((pt for pt, a in past if a == artist), default=None)
        assert got["days_since_artist_play"] == pytest.approx(
            365.0 if last is None else min((at - last) / DAY, 365.0)
        )
        assert got["past_exposures"] == sum(start + et < at for et, _ in exposures)
        assert got["past_exposures_artist"] == sum(
            start + et < at and a == artist for et, a in exposures
        )
        assert got["past_clicks"] == sum(start + et + 30 < at for et, _ in exposures[::2])
        assert got["past_conversions"] == sum(start + et + 90 < at for et, _ in exposures[::3])
