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


def test_book_changes_rebuild_at_most_a_fifth_of_the_time():
    book = Book()
    book.fail = False
    slow_build = book.build

    def build():  # type: ignore[no-untyped-def]
        time.sleep(0.1)  # a build that takes 100 ms
        return slow_build()

    holder = ForecastHolder(build=build, version=lambda: book.version, poll_seconds=0.01,
                            max_age_seconds=60)  # fmt: skip
    assert holder.rebuild() is not None
    built = time.monotonic()
    book.version = 2
    assert not holder._due()  # 100 ms of building buys 400 ms without a book-change rebuild
    while not holder._due():
        time.sleep(0.01)
    waited = time.monotonic() - built
    assert 0.38 <= waited <= 0.6, waited
    holder.poke()
    assert holder._due()  # a poke still rebuilds at once


def test_under_constant_book_changes_builds_take_a_bounded_share():
    book = Book()
    book.fail = False
    slow_build = book.build

    def build():  # type: ignore[no-untyped-def]
        time.sleep(0.05)
        return slow_build()

    holder = ForecastHolder(build=build, version=lambda: book.version, poll_seconds=0.005,
                            max_age_seconds=60)  # fmt: skip
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            book.version += 1
            time.sleep(0.01)

    changer = threading.Thread(target=churn)
    changer.start()
    _run(holder, 1.5)
    stop.set()
    changer.join()
    # 50 ms builds, 200 ms apart at the least: about 6 in 1.5 s, not 30.
    assert 3 <= book.builds <= 9, book.builds


def test_a_book_change_rebooks_and_new_history_builds_in_full():
    book = Book()
    book.fail = False
    rebooks: list[object] = []

    def rebook(current):  # type: ignore[no-untyped-def]
        rebooks.append(current)
        return _Built()

    holder = ForecastHolder(build=book.build, rebook=rebook, version=lambda: book.version,
                            poll_seconds=0.01, max_age_seconds=0.3,
                            max_busy_share=1.0)  # fmt: skip
    first = holder.rebuild()
    assert book.builds == 1 and rebooks == []  # nothing to rebook yet: a full build
    book.version = 2
    assert holder._due()
    holder.rebuild()
    assert book.builds == 1 and rebooks == [first]  # the book changed: rebooked
    time.sleep(0.35)
    assert holder._due()  # the history is old now
    holder.rebuild()
    assert book.builds == 2 and len(rebooks) == 1  # read again in full


def test_a_failing_rebook_falls_back_to_a_full_build():
    book = Book()
    book.fail = False

    def rebook(current):  # type: ignore[no-untyped-def]
        raise RuntimeError("cannot rebook")

    holder = ForecastHolder(build=book.build, rebook=rebook, version=lambda: book.version,
                            poll_seconds=0.01, max_age_seconds=60)  # fmt: skip
    holder.rebuild()
    book.version = 2
    assert holder.rebuild() is not None
    assert book.builds == 2 and holder.failures == 0
