"""Configuration of the intake service, on top of the shared `KIM_*` variables."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from kim.settings import KimSettings
from services.intake.crypto import KeyProblem, parse_master_key


class IntakeSettings(KimSettings):
    intake_group: str = Field(default="kim-intake",
                              description="consumer group of the intake instances (KIM_INTAKE_GROUP)")
    intake_master_key: SecretStr | None = Field(
        default=None,
        description="32 random bytes in base64 that wrap every person's key (KIM_INTAKE_MASTER_KEY); unset: "
                    "a key file under KIM_DATA_DIR/keys, created on first start. Instances sharing a database "
                    "must share it")

    @field_validator("intake_master_key")
    @classmethod
    def _is_a_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                parse_master_key(value.get_secret_value(), "the master key")
            except KeyProblem as exc:
                raise ValueError(str(exc)) from None
        return value
