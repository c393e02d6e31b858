"""Settings shared by every process. Each process subclasses ``BaseSettings`` with its own
fields, builds it once in ``main()`` and passes it down. Environment variables carry the
``STORMALERT_`` prefix; a ``.env`` file in the working directory is read too."""

from __future__ import annotations

import sys
from typing import Any, TypeVar

from pydantic import ValidationError, field_validator
from pydantic_settings import BaseSettings as _PydanticBaseSettings
from pydantic_settings import SettingsConfigDict

from proto import bus
from proto.rules import describe_validation_error

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class BaseSettings(_PydanticBaseSettings):
    # One .env serves every process, each reading only its own fields: keys meant for
    # another process are ignored rather than rejected.
    model_config = SettingsConfigDict(
        env_prefix="STORMALERT_", env_file=".env", extra="ignore", frozen=True,
    )

    redis_url: str = DEFAULT_REDIS_URL
    log_level: str = "INFO"
    stats_interval_s: float = 10.0

    @field_validator("redis_url", check_fields=False)
    @classmethod
    def _cluster_url_names_db_0(cls, url: str | None) -> str | None:
        if url is not None:
            bus.cluster_url(url)  # ValueError when a redis+cluster:// URL names another db
        return url


S = TypeVar("S", bound=BaseSettings)


def load(cls: type[S], **overrides: Any) -> S:
    """Build settings or exit with one line naming the bad setting."""
    try:
        return cls(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        print(f"stormalert: bad configuration: {describe_validation_error(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
