"""Settings read from the environment (``BACKBEAT_*``); only edges read them and pass values inward."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_VAR_DIR = Path("var")


class Settings(BaseSettings):
    """Process-wide configuration; every field has an embedded single-machine default."""

    model_config = SettingsConfigDict(env_prefix="BACKBEAT_", env_file=".env", extra="ignore")

    var_dir: Path = DEFAULT_VAR_DIR
    database_url: str = ""
    event_log_dir: Path | None = None
    admin_key: str | None = None
    signing_key: str = Field(
        default="", description="HMAC key for tracking URLs; derived under var/ when empty"
    )
    public_base_url: str = "http://127.0.0.1:8000"
    tracking_ttl_seconds: int = 7 * 24 * 3600
    catalog_poll_seconds: float = 1.0
    redis_url: str | None = None
    kafka_bootstrap: str | None = Field(
        default=None, description="Kafka bootstrap servers; set to also publish events there"
    )
    kafka_topic: str = "backbeat-events"
    allocation_plan_path: Path | None = None
    decision_log_sample: float = Field(
        default=0.1, ge=0.0, le=1.0, description="Share of ad requests logged"
    )
    decision_seed: int | None = Field(
        default=None, description="Seed for tie-breaking and pacing coins"
    )
    forecast_refresh_seconds: float = Field(
        default=600.0, gt=0, description="Rebuild the forecaster (new history) at least this often"
    )
    forecast_history_days: float | None = Field(
        default=None, gt=0, description="Decision-log days the forecaster reads (None: all)"
    )
    log_level: str = "INFO"
    log_json: bool = True
    # Limits and timeouts (README "Security and limits").
    max_body_bytes: int = Field(default=1_048_576, ge=1, description="Largest request body")
    body_timeout_seconds: float = Field(default=10.0, gt=0, description="To receive a body")
    request_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Management answers 503 past this (e.g. frozen database)"
    )
    # Longer than any client's pool idle time (httpx 5 s, load balancers 60 s): a client
    # must never reuse a connection the server is closing at that very moment.
    keep_alive_seconds: int = Field(default=75, ge=1, description="Idle keep-alive connections")
    rate_limit_per_key: float = Field(
        default=200.0, ge=0, description="Management requests/s per API key and worker (0: off)"
    )
    rate_limit_burst_per_key: int = Field(default=1000, ge=1)
    rate_limit_tracking_per_ip: float = Field(
        default=5000.0, ge=0, description="Tracking hits/s per client address and worker (0: off)"
    )
    rate_limit_burst_tracking_per_ip: int = Field(default=10_000, ge=1)
    db_connect_timeout_seconds: int = Field(default=2, ge=1)
    db_statement_timeout_ms: int = Field(default=15_000, ge=0, description="PostgreSQL; 0: none")
    db_pool_timeout_seconds: float = Field(default=2.0, gt=0)

    @model_validator(mode="after")
    def _admin_key_from_var(self) -> Settings:
        # `backbeat demo` writes the admin key to var/admin.key; serving that book afterwards
        # must accept it without the user copying it into the environment.
        if not self.admin_key:
            path = self.var_dir / "admin.key"
            if path.is_file():
                self.admin_key = path.read_text().strip() or None
        return self

    @field_validator("database_url")
    @classmethod
    def _normalise_driver(cls, value: str) -> str:
        # Users paste libpq-style URLs; SQLAlchemy needs the psycopg 3 driver named.
        for prefix in ("postgres://", "postgresql://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix) :]
        return value

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.var_dir / 'backbeat.db').resolve()}"

    @property
    def resolved_event_log_dir(self) -> Path:
        return self.event_log_dir or self.var_dir / "events"

    @property
    def resolved_allocation_plan_path(self) -> Path:
        return self.allocation_plan_path or self.var_dir / "allocation-plan.json"

    @property
    def is_embedded_database(self) -> bool:
        return not self.database_url


@lru_cache
def get_settings() -> Settings:
    return Settings()
