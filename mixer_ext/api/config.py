"""The control plane's settings (``MIXER_*``), read beside the worker's own ``Settings``.

The credentials are shared with the room server: ``MIXER_ACCOUNT_SID`` (``AC`` + 32 hex),
``MIXER_AUTH_TOKEN`` and ``MIXER_API_KEYS`` (comma-separated ``SK…:secret`` pairs).
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mixer_ext.errors import ConfigError, describe_validation_error
from mixer_ext.kube import DNS_LABEL, DNS_SUBDOMAIN, QUANTITY, check_pod_spec


class LauncherKind(StrEnum):
    LOCAL = "local"
    KUBERNETES = "kubernetes"


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MIXER_", extra="ignore", case_sensitive=False, validate_default=True
    )

    account_sid: str = Field("AC" + "0" * 32, pattern=r"^AC[0-9a-fA-F]{32}$")
    auth_token: SecretStr | None = None
    #: ``SK…:secret`` pairs, comma-separated
    api_keys: SecretStr | None = None
    #: the base of every URL the API hands out (None: http://HOST:PORT it listens on)
    api_public_url: str | None = None
    api_data_dir: Path = Path("./mixer-api-data")
    #: the SQLite file (None: api.db in the data directory)
    api_database: Path | None = None
    api_max_processors: int = Field(10, ge=1, le=10_000)
    api_launcher: LauncherKind = LauncherKind.LOCAL
    #: the URL workers reach the API at, for their status reports (None: the listen address)
    api_internal_url: str | None = None
    #: kubernetes launcher: the namespace of the Jobs, their image, and the existing
    #: Secret the room credentials come from (keys ``room-secret`` for the init container
    #: that mints the worker's token, or ``room-token``; ``janus-api-secret``,
    #: ``janus-token``, each optional, as for the chart's Job)
    api_kube_namespace: str = Field("default", pattern=DNS_LABEL)
    api_kube_image: str | None = None
    api_kube_image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    api_kube_room_secret: str = Field("mixer-ext-room", pattern=DNS_SUBDOMAIN)
    #: how a Job's worker gets its room token (embedded backend): ``mint`` = an init
    #: container mints a mixer-role token for the processor's room from ``room-secret``
    #: (the worker never sees the secret); ``secret`` = the ``room-token`` key as is
    api_kube_room_token_source: Literal["mint", "secret"] = "mint"
    #: the Jobs' container resources, JSON (``{"requests": {...}, "limits": {...}}``);
    #: the Helm chart passes its ``resources`` value
    api_kube_resources: dict[Literal["requests", "limits"], dict[str, str | int | float]] = {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"memory": "512Mi"},
    }
    #: seconds a Job's pod gets after SIGTERM to finalize its outputs
    api_kube_grace_seconds: int = Field(30, ge=5, le=600)
    #: a finished Job (and its pod, its Secret) is deleted this long after it ends
    api_kube_ttl_seconds: int = Field(3600, ge=0, le=7 * 86400)
    #: the size limit of the Jobs' ``/data`` emptyDir (HLS, relative ``file:`` recordings)
    api_kube_data_size_limit: str = Field("2Gi", pattern=QUANTITY)
    #: extra fields of the Jobs' pod spec, JSON: placement and pulling only
    #: (``nodeSelector``, ``tolerations``, ``affinity``, ``priorityClassName``,
    #: ``imagePullSecrets``); the security fields are the launcher's own
    api_kube_pod_spec: dict[str, Any] = {}

    @field_validator("api_kube_pod_spec")
    @classmethod
    def _pod_spec(cls, v: dict[str, Any]) -> dict[str, Any]:
        return check_pod_spec(v)

    @field_validator("api_public_url", "api_internal_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^/\s]+(/\S*)?$", v):
            raise ValueError("must be an http(s) URL such as https://media.example.com")
        return v.rstrip("/") if v else v

    def keys(self) -> dict[str, str]:
        """API key SID -> secret; raises ConfigError on a malformed pair (secret never shown)."""
        out: dict[str, str] = {}
        if self.api_keys is None:
            return out
        for i, pair in enumerate(p for p in self.api_keys.get_secret_value().split(",") if p):
            sid, sep, secret = pair.strip().partition(":")
            if not sep or not re.match(r"^SK[0-9a-fA-F]{32}$", sid) or not secret:
                raise ConfigError(f"MIXER_API_KEYS: pair {i} is not SK + 32 hex ':' secret")
            out[sid] = secret
        return out

    @property
    def database(self) -> Path:
        return self.api_database or self.api_data_dir / "api.db"


def load_api_settings() -> ApiSettings:
    try:
        settings = ApiSettings()
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, prefix="MIXER_", upper=True)) from None
    if settings.auth_token is None or not settings.auth_token.get_secret_value().strip():
        raise ConfigError("MIXER_AUTH_TOKEN is required: the API refuses to run unauthenticated")
    settings.keys()
    if settings.api_launcher is LauncherKind.KUBERNETES:
        if not settings.api_kube_image:
            raise ConfigError("MIXER_API_LAUNCHER=kubernetes needs MIXER_API_KUBE_IMAGE")
        if not settings.api_internal_url:
            raise ConfigError(
                "MIXER_API_LAUNCHER=kubernetes needs MIXER_API_INTERNAL_URL (how pods reach "
                "the API, e.g. http://mixer-ext-api.NAMESPACE.svc:8080)"
            )
    return settings
