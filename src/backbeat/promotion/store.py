"""Where the batch job puts precomputed p(conversion): Redis when configured, else the database.

Servers load the whole store into memory in the background (a change marker is polled),
so a request never waits on either.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from backbeat.promotion.models import PromotionScore
from backbeat.types import utcnow

Scores = dict[tuple[str, str], float]
REDIS_KEY = "backbeat:promotion:scores"
REDIS_VERSION_KEY = "backbeat:promotion:scores:version"
CHUNK = 5_000


class ScoreStore(Protocol):
    def write(self, model_version: str, rows: Iterable[tuple[str, str, float]]) -> int: ...
    def marker(self) -> str: ...
    def load(self) -> tuple[str, Scores]: ...


class DatabaseScoreStore:
    """The ``promotion_scores`` table, replaced whole by each batch run."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def write(self, model_version: str, rows: Iterable[tuple[str, str, float]]) -> int:
        now = utcnow()
        written = 0
        with self.sessions() as session, session.begin():
            session.execute(delete(PromotionScore))
            batch: list[dict[str, object]] = []
            for listener, item, p in rows:
                batch.append(
                    {"listener_id": listener, "item_id": item, "p_conversion": float(p),
                     "model_version": model_version, "scored_at": now}
                )  # fmt: skip
                if len(batch) >= CHUNK:
                    session.execute(insert(PromotionScore), batch)
                    written += len(batch)
                    batch = []
            if batch:
                session.execute(insert(PromotionScore), batch)
                written += len(batch)
        return written

    def marker(self) -> str:
        with self.sessions() as session:
            count, last = session.execute(
                select(func.count(), func.max(PromotionScore.scored_at))
            ).one()
        return f"{count}:{last}"

    def load(self) -> tuple[str, Scores]:
        scores: Scores = {}
        version = ""
        with self.sessions() as session:
            for listener, item, p, model_version in session.execute(
                select(
                    PromotionScore.listener_id,
                    PromotionScore.item_id,
                    PromotionScore.p_conversion,
                    PromotionScore.model_version,
                )
            ).tuples():
                scores[(listener, item)] = float(p)
                version = model_version
        return version, scores


class RedisScoreStore:
    """One Redis hash (``listener\\titem`` → p) swapped in atomically by RENAME."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=5)

    def write(self, model_version: str, rows: Iterable[tuple[str, str, float]]) -> int:
        staging = f"{REDIS_KEY}:staging"
        self.client.delete(staging)
        written = 0
        pipe = self.client.pipeline(transaction=False)
        for listener, item, p in rows:
            pipe.hset(staging, f"{listener}\t{item}", repr(float(p)))
            written += 1
            if written % CHUNK == 0:
                pipe.execute()
        pipe.execute()
        marker = f"{model_version}|{utcnow().isoformat()}|{written}"
        with self.client.pipeline(transaction=True) as tx:
            if written:
                tx.rename(staging, REDIS_KEY)
            else:
                tx.delete(REDIS_KEY)
            tx.set(REDIS_VERSION_KEY, marker)
            tx.execute()
        return written

    def marker(self) -> str:
        value = self.client.get(REDIS_VERSION_KEY)
        return value.decode() if value else ""

    def load(self) -> tuple[str, Scores]:
        marker = self.marker()
        scores: Scores = {}
        for field, value in self.client.hscan_iter(REDIS_KEY, count=CHUNK):
            listener, _, item = field.decode().partition("\t")
            scores[(listener, item)] = float(value)
        return marker.split("|", 1)[0], scores


def make_store(sessions: sessionmaker[Session], redis_url: str | None) -> ScoreStore:
    return RedisScoreStore(redis_url) if redis_url else DatabaseScoreStore(sessions)
