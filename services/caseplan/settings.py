"""Configuration of the caseplan service, on top of the shared `KIM_*` variables."""

from __future__ import annotations

from pydantic import Field

from kim.settings import KimSettings


class CaseplanSettings(KimSettings):
    intake_url: str = Field(default="http://127.0.0.1:8081",
                            description="base URL of the intake service the screens call (KIM_INTAKE_URL)")
    referral_url: str = Field(default="http://127.0.0.1:8083",
                              description="base URL of the referral service the screens call (KIM_REFERRAL_URL)")
    caseplan_group: str = Field(default="kim-caseplan",
                                description="consumer group of the caseplan instances (KIM_CASEPLAN_GROUP)")
    oidc_client_id: str | None = Field(default=None,
                                       description="production: the screens' OIDC client id (KIM_OIDC_CLIENT_ID)")
    oidc_client_secret: str | None = Field(default=None,
                                           description="production: its client secret (KIM_OIDC_CLIENT_SECRET)")
