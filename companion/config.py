"""Companion settings: one pydantic-settings object, read from CALMCUE_* environment variables,
built once at start and passed down.

`env` decides how open the service is: "demo" (what `calmcue run` uses) serves the dashboard and
the event list without login; "development" and "production" need a login or an API token, and
production refuses to start with the default secret key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRET = "calmcue-insecure-default-secret-change-me"
DEFAULT_DB_URL = "sqlite:///var/calmcue.db"


class SettingsError(ValueError):
    """Settings that cannot work; the message says what to change."""


@dataclass(frozen=True)
class MqttTarget:
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> MqttTarget:
        """`mqtt://[user[:password]@]host[:port]` (default port 1883)."""
        parts = urlsplit(url)
        if parts.scheme != "mqtt" or not parts.hostname:
            raise SettingsError(
                f"MQTT URL {url!r} is not of the form mqtt://[user[:password]@]host[:port]; "
                "for example mqtt://127.0.0.1:1883, or 'embedded' to start a private broker"
            )
        return cls(
            host=parts.hostname,
            port=parts.port or 1883,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CALMCUE_", extra="ignore", frozen=True)

    env: Literal["demo", "development", "production"] = "development"

    # storage
    db_url: str = DEFAULT_DB_URL
    retention_days: int = Field(default=90, ge=1)
    purge_interval_s: float = Field(default=3600.0, gt=0)  # how often the retention purge runs

    # MQTT ingest; None = no ingest (API only); "embedded" is resolved by companion.server
    mqtt_url: str | None = "mqtt://127.0.0.1:1883"
    mqtt_client_id: str = "calmcue-companion"
    # Several replicas (each with its own mqtt_client_id) share the ingest through the MQTT
    # shared subscription $share/<group>/...; they need one PostgreSQL database.
    mqtt_shared_group: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,32}$")
    ingest_batch_rows: int = Field(default=500, ge=1)
    ingest_batch_ms: int = Field(default=50, ge=1)
    dead_letter_max_bytes: int = Field(default=2048, ge=64)
    # A device seen for the first time on a valid message joins the registry. Turn off in a
    # fleet where IT registers devices first: messages from unknown devices then become dead letters.
    auto_register_devices: bool = True

    # web
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    secret_key: str = DEFAULT_SECRET
    session_max_age_s: int = Field(default=12 * 3600, ge=60)
    # first start with an empty user table creates this admin (password must be set to use it)
    admin_user: str = "admin"
    admin_password: str | None = None

    # alerts: unacknowledged alerts re-notify every `alert_renotify_s` and escalate to the site's
    # second contact after `alert_escalate_s`
    alert_renotify_s: float = Field(default=60.0, gt=0)
    alert_escalate_s: float = Field(default=180.0, gt=0)
    alert_check_s: float = Field(default=1.0, gt=0)
    webhook_url: str | None = None

    # fleet: the key that signs over-the-air updates (created on first use)
    fleet_key_path: str = "var/fleet/ota_signing_key.pem"
    # fleet: a device that has not reported for this long raises a silent-device alarm
    silent_device_s: float = Field(default=300.0, gt=0)

    # privacy: group views with fewer events than this are suppressed
    min_group_size: int = Field(default=5, ge=1)

    # HTTPS for the API and the headsets' updates (provision them with --ota-ca, the CA that
    # signed this certificate): PEM certificate chain and its key; both or neither
    tls_certfile: str | None = None
    tls_keyfile: str | None = None

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> Settings:
        if self.env == "production" and (
            self.secret_key == DEFAULT_SECRET or len(self.secret_key) < 32
        ):
            raise SettingsError(
                "production refuses the default or a short secret key: set CALMCUE_SECRET_KEY to a "
                "random value of at least 32 characters, e.g. "
                "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
            )
        if self.mqtt_shared_group and not self.db_url.startswith("postgresql"):
            raise SettingsError(
                "replicas sharing the ingest (mqtt_shared_group) need one PostgreSQL database: "
                "set CALMCUE_DB_URL=postgresql+psycopg://..., or unset CALMCUE_MQTT_SHARED_GROUP"
            )
        if self.mqtt_url not in (None, "embedded"):
            MqttTarget.parse(self.mqtt_url)
        return self

    @property
    def open_access(self) -> bool:
        """Demo mode: dashboard and event list readable without login."""
        return self.env == "demo"

    def mqtt_target(self) -> MqttTarget | None:
        if self.mqtt_url in (None, "embedded"):
            return None
        return MqttTarget.parse(self.mqtt_url)
