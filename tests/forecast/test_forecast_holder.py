"""The forecaster holder: a build that keeps failing backs off instead of spinning, and a
book change or a poke still rebuilds at once."""

from __future__ import annotations

import threading
import time

from backbeat.forecast.refresh import ForecastHolder


class Book:
    def __init__(self) -> None:
        self.version = 1
        self.builds = 0
        self.fail = True

    def build(self):  # type: ignore[no-untyped-def]
        self.builds += 1
        if self.fail:
            raise RuntimeError("no history yet")
        return _Built()


class _Built:
    class sample:  # noqa: N801  (the holder reads forecaster.sample.size and .now)
        size = 0

    now = 0.0


def _run(holder: ForecastHolder, seconds: float) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=holder.run, args=(stop,))
    thread.start()
    time.sleep(seconds)
    stop.set()
    holder.poke()  # wake the loop so it sees the stop
    thread.join(5)


def test_failing_builds_back_off_exponentially():
    book = Book()
    holder = ForecastHolder(build=book.build, version=lambda: book.version, poll_seconds=0.01,
                            max_age_seconds=60)  # fmt: skip
    _run(holder, 0.6)
    # Without backoff: one build per 10 ms poll, ~60. With it: retries after 20, 40, 80,
    # 160, 320 ms... so at most 6 builds fit in 0.6 s (plus one for the stop's poke).
    assert 2 <= book.builds <= 7, book.builds
    assert holder.failures == book.builds  # every one failed, none reset the count
    assert "no history yet" in (holder.last_error or "")


def test_a_book_change_retries_at_once_and_success_resets_the_backoff():
    book = Book()
    holder = ForecastHolder(build=book.build, version=lambda: book.version, poll_seconds=0.01,
                            max_age_seconds=60)  # fmt: skip
    holder.rebuild()
    holder.rebuild()
    assert holder.failures == 2 and not holder._due()  # backing off: not due yet
    book.version, book.fail = 2, False  # the book changed (and now builds)
    assert holder._due()
    assert holder.rebuild() is not None
    assert holder.failures == 0 and holder.last_error is None and holder.wait_ready(0)
