"""Settings shared by every process of the system, read from `KIM_*` variables.

Validated when a process starts (never at import time) so that a typo in a
district's configuration stops the process with a message naming the variable.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATA_DIR = Path.home() / ".local" / "share" / "kim"


class KimSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KIM_", extra="ignore", env_ignore_empty=True)

    kafka_bootstrap: str | None = Field(
        default=None,
        description="host:port list of an existing Kafka cluster; unset: `kim up` starts its own broker on localhost:9092",
    )
    data_dir: Path = Field(default=DEFAULT_DATA_DIR, description="where SQLite stores, broker data and logs live")
    database_url: str | None = Field(
        default=None, description="postgresql://… selects PostgreSQL; unset: SQLite files under KIM_DATA_DIR"
    )
    partitions: int = Field(default=6, ge=1, le=1000, description="partition count of every kim.* topic")
    replication_factor: int = Field(default=1, ge=1, le=5)
    kafka_heap: str = Field(default="512m", pattern=r"^[0-9]+[kmgKMG]$", description="JVM heap of the built-in broker")
    kafka_jars_dir: Path | None = Field(default=None, description="cache of the broker's jars; default under ~/.cache/kim")

    auth_hs256_secret: str | None = Field(default=None, description="development/test token secret (HS256)")
    oidc_issuer: str | None = Field(default=None, description="production token issuer (OIDC)")
    oidc_audience: str | None = Field(default=None, description="expected `aud` of production tokens")
    oidc_jwks_url: str | None = Field(default=None, description="JWKS of the issuer; default: from its discovery document")

    rules_file: Path | None = Field(default=None, description="district TOML file with the rules R1-R3")

    @field_validator("data_dir", "kafka_jars_dir", "rules_file", mode="after")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @property
    def bootstrap(self) -> str:
        return self.kafka_bootstrap or "localhost:9092"

    def store_url(self, service: str) -> str:
        """Database URL of one service's store: PostgreSQL if configured, else a SQLite file."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'stores' / (service + '.sqlite3')}"
