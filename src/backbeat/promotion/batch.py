"""The batch job: score every known listener × every live promoted item ahead of time.

Listeners are split across worker processes (forked, sharing the loaded histories); each
builds one feature matrix per chunk of listeners and calls the model once per chunk.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from backbeat.promotion import features
from backbeat.promotion.ids import format_id
from backbeat.promotion.model import ConversionModel
from backbeat.promotion.profiles import Profiles

CHUNK_LISTENERS = 256
Row = tuple[str, str, float]


@dataclass(frozen=True)
class Item:
    item_id: str
    artist: int


@dataclass(frozen=True)
class BatchRun:
    rows: list[Row]
    listeners: int
    items: int
    seconds: float

    @property
    def rate(self) -> float:
        return len(self.rows) / self.seconds if self.seconds else 0.0


_STATE: dict[str, object] = {}


def score_listeners(
    profiles: Profiles,
    items: Sequence[Item],
    model: ConversionModel,
    now: int,
    listeners: Sequence[int],
) -> list[Row]:
    """p(conversion) on the home feed at ``now`` for each listener × item."""
    if not items:
        return []
    artists = np.array([item.artist for item in items], dtype=np.int64)
    genres = np.array([profiles.genre(int(a)) for a in artists], dtype=np.int64)
    ts = np.full(len(items), now, dtype=np.int64)
    surface = np.zeros(len(items))
    rows: list[Row] = []
    for start in range(0, len(listeners), CHUNK_LISTENERS):
        chunk = listeners[start : start + CHUNK_LISTENERS]
        matrix = np.vstack(
            [
                features.compute(
                    profiles.histories[code], ts, artists, genres, surface, profiles.popularity
                )
                for code in chunk
            ]
        )
        p = model.predict(matrix)
        index = 0
        for code in chunk:
            listener_id = format_id("listener", code)
            for item in items:
                rows.append((listener_id, item.item_id, float(p[index])))
                index += 1
    return rows


def _worker(bounds: tuple[int, int]) -> list[Row]:
    listeners: list[int] = _STATE["listeners"]  # type: ignore[assignment]
    return score_listeners(
        _STATE["profiles"],  # type: ignore[arg-type]
        _STATE["items"],  # type: ignore[arg-type]
        _STATE["model"],  # type: ignore[arg-type]
        _STATE["now"],  # type: ignore[arg-type]
        listeners[bounds[0] : bounds[1]],
    )


def score_all(
    profiles: Profiles, items: Sequence[Item], model: ConversionModel, now: int, *, workers: int = 2
) -> BatchRun:
    """Every listener with a history × ``items``, on ``workers`` forked processes."""
    listeners = list(profiles.listeners)
    started = time.perf_counter()
    if workers <= 1 or len(listeners) < 2 * CHUNK_LISTENERS:
        rows = score_listeners(profiles, items, model, now, listeners)
    else:
        _STATE.update(
            profiles=profiles, items=list(items), model=model, now=now, listeners=listeners
        )
        step = -(-len(listeners) // (workers * 4))
        bounds = [(lo, min(lo + step, len(listeners))) for lo in range(0, len(listeners), step)]
        context = multiprocessing.get_context("fork")
        try:
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                rows = [row for part in pool.map(_worker, bounds) for row in part]
        finally:
            _STATE.clear()
    return BatchRun(
        rows=rows, listeners=len(listeners), items=len(items), seconds=time.perf_counter() - started
    )
