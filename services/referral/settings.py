"""Configuration of the referral service, on top of the shared `KIM_*` variables."""

from __future__ import annotations

from pydantic import Field

from kim.settings import KimSettings


class ReferralSettings(KimSettings):
    referral_group: str = Field(default="kim-referral",
                                description="consumer group of the referral instances (KIM_REFERRAL_GROUP)")
    referral_tick_s: float = Field(default=0.5, gt=0, le=5,
                                   description="how often passed deadlines are looked for (KIM_REFERRAL_TICK_S)")
