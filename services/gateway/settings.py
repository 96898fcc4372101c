"""Configuration of the gateway, on top of the shared `KIM_*` variables."""

from __future__ import annotations

from pydantic import Field

from kim.settings import KimSettings


class GatewaySettings(KimSettings):
    max_batch_events: int = Field(default=1000, ge=1, le=10000,
                                  description="most events one request may carry (KIM_MAX_BATCH_EVENTS)")
    publish_timeout_s: float = Field(default=10.0, gt=0, description="how long Kafka may take to acknowledge")
    kafka_transactions: int = Field(default=1, ge=1, le=8,
                                    description="Kafka transactions in flight at once (KIM_KAFKA_TRANSACTIONS)")
    retry_after_s: int = Field(default=5, ge=1, description="Retry-After of a 503")
