"""Settings read from the environment (``BACKBEAT_*``); only edges read them and pass values inward."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
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
    allocation_plan_path: Path | None = None
    decision_log_sample: float = Field(
        default=1.0, ge=0.0, le=1.0, description="Share of ad requests logged"
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
