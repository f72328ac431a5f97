"""Process settings from ``MIXER_*`` environment variables.

Every knob of the worker, the embedded room server and the talker lives here,
so that one table (docs/reference/settings.md) documents them all.  Where the extension
context (``mixer_ext.context``) speaks to the same thing, the context wins.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mixer_ext.errors import ConfigError, describe_validation_error
from mixer_ext.iceservers import SCHEMES_STUN, SCHEMES_TURN, check_urls
from mixer_ext.kube import DNS_LABEL, DNS_SUBDOMAIN, check_pod_spec

#: 24 h: the longest a participant (and so the mixer) may stay in a room.
MAX_PARTICIPANT_DURATION_LIMIT = 86_400
#: 4 h: the default maximum participant duration.
DEFAULT_MAX_PARTICIPANT_DURATION = 14_400


class RoomBackend(StrEnum):
    EMBEDDED = "embedded"
    JANUS = "janus"


class JitterBufferSize(StrEnum):
    """Jitter buffer sizes, as named by the conference reference, and ``adaptive``.

    ``adaptive`` (issue 27.3) sizes itself to the jitter measured on each input, between
    0 and 40 ms (``medium``: never more delay than that fixed default), starting at 40 ms;
    see ``mixer_ext.core.jitter``.
    """

    OFF = "off"
    SMALL = "small"
    MEDIUM = "medium"
    LARGE = "large"
    ADAPTIVE = "adaptive"

    @property
    def milliseconds(self) -> int:
        """The fixed depth; for ``adaptive`` its upper bound."""
        return {"off": 0, "small": 20, "medium": 40, "large": 60, "adaptive": 40}[self.value]


class HlsPlaylistType(StrEnum):
    #: sliding window; old segments are deleted
    LIVE = "live"
    #: every segment is kept and listed (#EXT-X-PLAYLIST-TYPE:EVENT)
    EVENT = "event"


class LogFormat(StrEnum):
    JSON = "json"
    TEXT = "text"


class EventLoop(StrEnum):
    """The asyncio event loop the long-running commands run on (``mixer_ext.eventloop``)."""

    ASYNCIO = "asyncio"
    #: libuv's loop, from the optional ``uvloop`` extra (measured: no faster here)
    UVLOOP = "uvloop"


class Settings(BaseSettings):
    """All ``MIXER_*`` settings.  Field ``foo_bar`` is ``MIXER_FOO_BAR``."""

    model_config = SettingsConfigDict(
        env_prefix="MIXER_", extra="ignore", case_sensitive=False, validate_default=True
    )

    # --- logging -----------------------------------------------------------
    log_level: str = Field("INFO", pattern=r"(?i)^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    log_format: LogFormat = LogFormat.TEXT
    #: the event loop of ``run``, ``room-server`` and ``api``
    event_loop: EventLoop = EventLoop.ASYNCIO

    # --- room connection (worker, talker) ----------------------------------
    room_backend: RoomBackend = RoomBackend.EMBEDDED
    room_url: str = "ws://127.0.0.1:7880"
    #: shared secret the embedded room server signs tokens with
    room_secret: SecretStr | None = None
    #: a ready-made access token for the bot (else minted from room_secret)
    room_token: SecretStr | None = None
    #: a file holding that token (the chart's init container writes one); read once at
    #: start, never logged; instead of room_token
    room_token_file: Path | None = None
    janus_url: str = "ws://127.0.0.1:8188"
    janus_api_secret: SecretStr | None = None
    janus_token: SecretStr | None = None

    # --- mixer --------------------------------------------------------------
    jitter_buffer: JitterBufferSize = JitterBufferSize.MEDIUM
    max_participant_duration: int = Field(
        DEFAULT_MAX_PARTICIPANT_DURATION, ge=1, le=MAX_PARTICIPANT_DURATION_LIMIT
    )

    # --- outputs -----------------------------------------------------------
    hls_dir: Path = Path("./hls")
    hls_segment_duration: float = Field(2.0, ge=0.5, le=30.0)
    hls_playlist_type: HlsPlaylistType = HlsPlaylistType.LIVE
    #: segments listed in a live playlist (the sliding window)
    hls_list_size: int = Field(6, ge=2, le=1000)
    #: LL-HLS: parts of MIXER_HLS_PART_TARGET seconds, blocking reload, preload hints
    hls_low_latency: bool = True
    #: LL-HLS part length (seconds, whole AAC frames: 0.2 -> 9 frames = 0.192 s);
    #: segments are a whole number of parts, the nearest to MIXER_HLS_SEGMENT_DURATION
    hls_part_target: float = Field(0.2, ge=0.05, le=2.0)
    #: LL-HLS PART-HOLD-BACK (seconds): how far behind the live edge players start and
    #: stay (the project's player follows it); unset: 3 x MIXER_HLS_PART_TARGET.  The
    #: spec asks at least 2 x the part target (RFC 8216bis 4.4.3.8)
    hls_part_hold_back: float | None = Field(None, ge=0.1, le=30.0)
    rtmp_reconnect_max_delay: float = Field(30.0, ge=0.5, le=600.0)

    # --- worker endpoints ---------------------------------------------------
    http_host: str = "127.0.0.1"
    http_port: int | None = Field(None, ge=0, le=65535)
    #: the player page the HTTP endpoint serves at / (None: player_demo/ of this checkout)
    player_dir: Path | None = None
    #: after the stream ends, keep serving HLS this long so players fetch the final
    #: playlist (#EXT-X-ENDLIST) and the last segments; /readyz is 503 meanwhile
    http_linger: float = Field(10.0, ge=0.0, le=300.0)
    #: seconds from SIGTERM to exit, shared out among the shutdown stages (worker/budget.py);
    #: the pod's terminationGracePeriodSeconds must exceed it
    shutdown_budget: float = Field(20.0, ge=2.0, le=600.0)
    #: Access-Control-Allow-Origin on /hls/ responses (e.g. "*" or "https://player.example");
    #: unset: no CORS header (the player page on the same origin needs none)
    http_cors_origin: str | None = None
    #: clients of the metadata WebSocket (/ws/metadata) at once; one more gets 503
    http_max_metadata_clients: int = Field(100, ge=1, le=100_000)
    metrics_port: int | None = Field(None, ge=0, le=65535)
    status_callback_url: str | None = None

    # --- embedded room server ------------------------------------------------
    room_max_participants: int = Field(50, ge=1, le=10_000)
    room_max_participant_duration: int = Field(
        DEFAULT_MAX_PARTICIPANT_DURATION, ge=1, le=MAX_PARTICIPANT_DURATION_LIMIT
    )
    room_empty_timeout: float = Field(300.0, ge=0.0)
    #: open mode hands out tokens to anyone who asks: demos on a trusted network only
    room_open: bool = False
    room_max_message_bytes: int = Field(65_536, ge=1024, le=16 * 1024 * 1024)
    #: identities only a mixer-role token may take (comma-separated)
    room_mixer_identities: str = "audio-mixer-v1,audio-mixer-v2"
    #: the operator credential (``Authorization: Bearer``) that ends rooms and reads any
    #: room over REST; unset: no one can end a room over REST (the signing secret never can)
    room_admin_token: SecretStr | None = Field(None, min_length=16)
    #: seconds a socket may stay open before its ``join`` arrives
    room_join_timeout: float = Field(5.0, gt=0.0, le=60.0)
    #: refused messages a socket may send before ``join``; the last one closes it
    room_max_errors_before_join: int = Field(3, ge=1, le=100)
    #: signaling sockets open but not joined yet, all addresses together
    room_max_pending_connections: int = Field(128, ge=1, le=100_000)
    #: signaling sockets (joined or not) from one client address
    room_max_connections_per_address: int = Field(128, ge=1, le=100_000)
    #: messages a joined connection may send per second, steadily ...
    room_message_rate: float = Field(20.0, gt=0.0, le=10_000.0)
    #: ... and at once; a connection that sends more is closed (``rate-limited``)
    room_message_burst: int = Field(60, ge=1, le=100_000)
    #: data-track messages a twilio-video.js participant may send per second, steadily ...
    room_data_message_rate: float = Field(30.0, gt=0.0, le=10_000.0)
    #: ... and at once (all its data tracks together); messages over it are dropped
    room_data_message_burst: int = Field(60, ge=1, le=100_000)

    # --- recordings and compositions (room server) ---------------------------
    #: where per-track recordings and compositions are stored (``recordings/``,
    #: ``compositions/`` under it)
    recordings_dir: Path = Path("./recordings")
    #: a new recording or composition is refused (failed) below this much free space, MiB
    recordings_min_free_mb: int = Field(512, ge=0)
    #: media files older than this many days are deleted (metadata kept); 0: kept forever
    recordings_retention_days: float = Field(0.0, ge=0.0)
    #: record every published audio track of rooms that do not say (Twilio's console default)
    record_participants_on_connect: bool = False
    #: compositions mixed at once, each in its own worker process (or Kubernetes Job)
    composition_workers: int = Field(1, ge=1, le=64)
    #: where compositions run: ``local`` (worker processes of the room server) or
    #: ``kubernetes`` (one Job each running ``mixer-ext compose``, roomserver/compose/kube.py)
    composition_runner: Literal["local", "kubernetes"] = "local"
    #: kubernetes runner: the Jobs' namespace and image (required), and the existing PVC
    #: that holds ``MIXER_RECORDINGS_DIR`` (required; mounted at the same path in the Job,
    #: so it must be ReadWriteMany unless the Jobs land on the room server's node)
    composition_kube_namespace: str = Field("default", pattern=DNS_LABEL)
    composition_kube_image: str | None = None
    composition_kube_image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    composition_kube_claim: str | None = Field(None, pattern=DNS_SUBDOMAIN)
    #: the Jobs' container resources, JSON (``{"requests": {...}, "limits": {...}}``)
    composition_kube_resources: dict[
        Literal["requests", "limits"], dict[str, str | int | float]
    ] = {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
    #: a finished composition Job (and its pod) is deleted this long after it ends
    composition_kube_ttl_seconds: int = Field(3600, ge=0, le=7 * 86400)
    #: extra fields of the Jobs' pod spec, JSON: placement and pulling only
    #: (``nodeSelector``, ``tolerations``, ``affinity``, ``priorityClassName``,
    #: ``imagePullSecrets``)
    composition_kube_pod_spec: dict[str, Any] = {}

    # --- ICE servers (STUN/TURN) for WebRTC clients ---------------------------
    #: STUN URLs handed to clients, comma-separated (``stun:host:3478``)
    ice_stun_urls: str = ""
    #: TURN URLs handed to clients, comma-separated (``turn:host:3478?transport=udp``)
    ice_turn_urls: str = ""
    #: a fixed TURN username (with ``ice_turn_credential``; unused with ``ice_turn_secret``)
    ice_turn_username: str | None = None
    ice_turn_credential: SecretStr | None = None
    #: TURN shared secret (coturn ``use-auth-secret``): time-limited credentials per client
    ice_turn_secret: SecretStr | None = Field(None, min_length=8)
    #: seconds a credential made from ``ice_turn_secret`` is valid
    ice_turn_ttl: int = Field(86400, ge=60, le=7 * 86400)

    @field_validator("composition_kube_resources", "composition_kube_pod_spec", mode="before")
    @classmethod
    def _json_object(cls, value: object) -> object:
        """JSON text (as the environment gives it, also when passed by keyword)."""
        return json.loads(value) if isinstance(value, str) else value

    @field_validator("composition_kube_pod_spec")
    @classmethod
    def _composition_pod_spec(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_pod_spec(value)

    @model_validator(mode="after")
    def _composition_runner(self) -> Settings:
        if self.composition_runner == "kubernetes":
            for name in ("composition_kube_image", "composition_kube_claim"):
                if not getattr(self, name):
                    raise ValueError(
                        f"MIXER_COMPOSITION_RUNNER=kubernetes needs MIXER_{name.upper()}"
                    )
            if not self.recordings_dir.is_absolute():
                raise ValueError(
                    "MIXER_COMPOSITION_RUNNER=kubernetes needs an absolute MIXER_RECORDINGS_DIR"
                    " (the Jobs mount the same claim at the same path)"
                )
        return self

    @field_validator("ice_stun_urls")
    @classmethod
    def _stun_urls(cls, value: str) -> str:
        return check_urls(value, SCHEMES_STUN, "comma-separated")

    @field_validator("ice_turn_urls")
    @classmethod
    def _turn_urls(cls, value: str) -> str:
        return check_urls(value, SCHEMES_TURN, "comma-separated")

    @model_validator(mode="after")
    def _part_hold_back(self) -> Settings:
        hold = self.hls_part_hold_back
        if hold is not None and hold < 2 * self.hls_part_target - 1e-9:
            raise ValueError(
                f"MIXER_HLS_PART_HOLD_BACK ({hold:g} s) must be at least twice"
                f" MIXER_HLS_PART_TARGET ({self.hls_part_target:g} s): RFC 8216bis 4.4.3.8"
            )
        return self

    @model_validator(mode="after")
    def _turn_credentials(self) -> Settings:
        fixed = self.ice_turn_username is not None or self.ice_turn_credential is not None
        if fixed and (self.ice_turn_username is None or self.ice_turn_credential is None):
            raise ValueError("MIXER_ICE_TURN_USERNAME and MIXER_ICE_TURN_CREDENTIAL go together")
        if self.ice_turn_urls and not fixed and self.ice_turn_secret is None:
            raise ValueError(
                "MIXER_ICE_TURN_URLS needs MIXER_ICE_TURN_SECRET, or MIXER_ICE_TURN_USERNAME"
                " and MIXER_ICE_TURN_CREDENTIAL"
            )
        return self

    @property
    def mixer_identities(self) -> frozenset[str]:
        return frozenset(i.strip() for i in self.room_mixer_identities.split(",") if i.strip())


def default_player_dir() -> Path:
    """``player_demo/`` at the top of this checkout (set MIXER_PLAYER_DIR elsewhere)."""
    return Path(__file__).resolve().parent.parent / "player_demo"


def load_settings() -> Settings:
    """Read the settings from the environment, or raise a one-line ConfigError."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, prefix="MIXER_", upper=True)) from None
