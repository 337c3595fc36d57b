"""Companion settings: one pydantic-settings object, read from CALMCUE_* environment variables,
built once at start and passed down.

`env` decides how open the service is: "demo" (what `calmcue run` uses) serves the dashboard and
the event list without login, read-only outside the demo (no users, tokens, fleet keys or
signing); "development" and "production" need a login or an API token.

Secrets: there is no built-in session secret. Unless CALMCUE_SECRET_KEY is set, the companion
generates one on first start and keeps it in `<data_dir>/session_secret` (0600); production
refuses to start without an explicit key of at least 32 characters. Every file the companion
keeps (that secret, the update-signing key) lives under `data_dir`, an absolute path.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The secret every install once shared. It is refused in every mode: a cookie signed with it is
# never accepted (tests/test_companion_security.py forges one).
OLD_DEFAULT_SECRET = "calmcue-insecure-default-secret-change-me"
SECRET_FILE = "session_secret"
DEFAULT_DB_URL = "sqlite:///var/calmcue.db"


class SettingsError(ValueError):
    """Settings that cannot work; the message says what to change."""


@dataclass(frozen=True)
class MqttTarget:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None  # None with tls: the system's trusted CAs
    cert_file: str | None = None  # client certificate (optional)
    key_file: str | None = None

    @classmethod
    def parse(
        cls,
        url: str,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
    ) -> MqttTarget:
        """`mqtt://[user[:password]@]host[:port]` (default port 1883) or `mqtts://...` (TLS,
        default port 8883; the broker's certificate is checked against `ca_file` and its host
        name)."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise SettingsError(
                f"MQTT URL {url!r} is not of the form mqtt://[user[:password]@]host[:port] or "
                "mqtts://...; for example mqtt://127.0.0.1:1883, mqtts://broker.example:8883, "
                "or 'embedded' to start a private broker"
            )
        tls = parts.scheme == "mqtts"
        if not tls and (ca_file or cert_file or key_file):
            raise SettingsError(
                "CA or client certificate files are set but the MQTT URL is mqtt://; use mqtts://"
            )
        if (cert_file is None) != (key_file is None):
            raise SettingsError(
                "a client certificate needs both CALMCUE_MQTT_CERT_FILE and CALMCUE_MQTT_KEY_FILE"
            )
        for f in (ca_file, cert_file, key_file):
            if f is not None and not Path(f).is_file():
                raise SettingsError(f"MQTT TLS file {f} does not exist")
        return cls(
            host=parts.hostname,
            port=parts.port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
        )

    @property
    def url(self) -> str:
        """For logs: no credentials."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def configure(self, client: Any) -> None:
        """Credentials and TLS on a paho client: the broker's certificate must chain to the CA
        and name the host (CERT_REQUIRED, hostname checked); TLS 1.2 at least."""
        if self.username:
            client.username_pw_set(self.username, self.password)
        if self.tls:
            import ssl

            client.tls_set(
                ca_certs=self.ca_file,
                certfile=self.cert_file,
                keyfile=self.key_file,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
            client.tls_insecure_set(False)  # hostname checking stays on


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CALMCUE_", extra="ignore", frozen=True)

    env: Literal["demo", "development", "production"] = "development"

    # storage
    db_url: str = DEFAULT_DB_URL
    retention_days: int = Field(default=90, ge=1)
    purge_interval_s: float = Field(default=3600.0, gt=0)  # how often the retention purge runs

    # MQTT ingest; None = no ingest (API only); "embedded" is resolved by companion.server
    mqtt_url: str | None = "mqtt://127.0.0.1:1883"
    # mqtts:// only: the CA that signed the broker's certificate, and an optional client
    # certificate and key (docs/companion.md)
    mqtt_ca_file: str | None = None
    mqtt_cert_file: str | None = None
    mqtt_key_file: str | None = None
    mqtt_client_id: str = "calmcue-companion"
    # Several replicas (each with its own mqtt_client_id) share the ingest through the MQTT
    # shared subscription $share/<group>/...; they need one PostgreSQL database.
    mqtt_shared_group: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,32}$")
    # The clustered broker (docs/cluster.md): the nodes' AMQP URLs, comma-separated
    # (amqp://companion:PASSWORD@node1:5672/%2F,amqp://...@node2...). Set, the ingest consumes
    # the cluster's durable quorum queue, shared by every replica, acknowledging each message
    # after its commit; mqtt_url then lists every node's MQTT URL (alerts, retained configs).
    amqp_urls: str | None = None
    ingest_batch_rows: int = Field(default=500, ge=1)
    ingest_batch_ms: int = Field(default=50, ge=1)
    dead_letter_max_bytes: int = Field(default=2048, ge=64)
    # A device seen for the first time on a valid message joins the registry. Turn off in a
    # fleet where IT registers devices first: messages from unknown devices then become dead letters.
    auto_register_devices: bool = True

    # web
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # where the companion keeps its own files (generated session secret, update-signing key);
    # made absolute when the settings are built, never looked up relative to a later cwd
    data_dir: Path = Path("var")
    # None: generated on first start into <data_dir>/session_secret (refused in production)
    secret_key: str | None = None
    session_max_age_s: int = Field(default=12 * 3600, ge=60)
    # login lockout: this many failures for one username or one client address within
    # login_window_s lock further tries (429 with Retry-After) until the window has passed
    login_max_failures: int = Field(default=5, ge=1)
    login_window_s: float = Field(default=900.0, gt=0)
    # first start with an empty user table creates this admin (password must be set to use it)
    admin_user: str = "admin"
    admin_password: str | None = None

    # alerts: unacknowledged alerts re-notify every `alert_renotify_s` and escalate to the site's
    # second contact after `alert_escalate_s`
    alert_renotify_s: float = Field(default=60.0, gt=0)
    alert_escalate_s: float = Field(default=180.0, gt=0)
    alert_check_s: float = Field(default=1.0, gt=0)
    webhook_url: str | None = None
    # Web Push (companion/push.py): the contact push services may write to about this sender
    # (a mailto: or https: URL); the VAPID key itself is made under data_dir
    push_subject: str = Field(default="mailto:it@calmcue.invalid", pattern=r"^(mailto:|https://)")
    # a manager may take back their own acknowledge or resolve for this long (POST .../undo)
    alert_undo_s: float = Field(default=10.0, ge=0)

    # fleet: the key that signs over-the-air updates (created on first use, never in demo
    # mode); a relative path is taken under data_dir
    fleet_key_path: Path = Path("fleet/ota_signing_key.pem")
    # fleet: a device that has not reported for this long raises a silent-device alarm
    silent_device_s: float = Field(default=300.0, gt=0)

    # privacy: group views with fewer events than this are suppressed
    min_group_size: int = Field(default=5, ge=1)

    # HTTPS for the API and the headsets' updates (provision them with --ota-ca, the CA that
    # signed this certificate): PEM certificate chain and its key; both or neither
    tls_certfile: str | None = None
    tls_keyfile: str | None = None

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, v: Path) -> Path:
        return v.expanduser().absolute()

    @field_validator("fleet_key_path")
    @classmethod
    def _key_under_data_dir(cls, v: Path, info: ValidationInfo) -> Path:
        v = v.expanduser()
        return v if v.is_absolute() else Path(info.data.get("data_dir", Path("var").absolute())) / v

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> Settings:
        if self.secret_key is not None and (
            self.secret_key == OLD_DEFAULT_SECRET or len(self.secret_key) < 32
        ):
            raise SettingsError(
                "CALMCUE_SECRET_KEY is the old built-in default or shorter than 32 characters: "
                "set a random value, e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))'"
                ", or unset it to have one generated in the data directory"
            )
        if self.env == "production" and self.secret_key is None:
            raise SettingsError(
                "production needs CALMCUE_SECRET_KEY: a random value of at least 32 characters, "
                "e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))' (the same on "
                "every replica)"
            )
        if self.mqtt_shared_group and not self.db_url.startswith("postgresql"):
            raise SettingsError(
                "replicas sharing the ingest (mqtt_shared_group) need one PostgreSQL database: "
                "set CALMCUE_DB_URL=postgresql+psycopg://..., or unset CALMCUE_MQTT_SHARED_GROUP"
            )
        if self.mqtt_url not in (None, "embedded"):
            targets = self.mqtt_targets()
            if len(targets) > 1 and not self.amqp_urls:
                raise SettingsError(
                    "several MQTT URLs are for the clustered broker: set CALMCUE_AMQP_URLS to its "
                    "nodes' AMQP URLs too (docs/cluster.md), or give one MQTT URL"
                )
        if self.amqp_urls:
            self.amqp_url_list()
        return self

    @property
    def replicated(self) -> bool:
        """Replicas may share the ingest, so each announces what it stored to the others
        (PostgreSQL NOTIFY; companion/replicas.py)."""
        return self.mqtt_shared_group is not None or (
            self.amqp_urls is not None and self.db_url.startswith("postgresql")
        )

    def amqp_url_list(self) -> list[str]:
        urls = [u.strip() for u in (self.amqp_urls or "").split(",") if u.strip()]
        for u in urls:
            parts = urlsplit(u)
            if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
                raise SettingsError(
                    f"AMQP URL {parts.scheme}://{parts.hostname}... is not of the form "
                    "amqp://user:password@host:5672/%2F (or amqps:// for TLS); give one per node, "
                    "comma-separated"
                )
        return urls

    @property
    def open_access(self) -> bool:
        """Demo mode: dashboard and event list readable without login."""
        return self.env == "demo"

    def mqtt_target(self) -> MqttTarget | None:
        """The broker (the first node's when mqtt_url lists a cluster's nodes)."""
        targets = self.mqtt_targets()
        return targets[0] if targets else None

    def mqtt_targets(self) -> list[MqttTarget]:
        if self.mqtt_url in (None, "embedded"):
            return []
        return [
            MqttTarget.parse(u.strip(), self.mqtt_ca_file, self.mqtt_cert_file, self.mqtt_key_file)
            for u in self.mqtt_url.split(",")
            if u.strip()
        ]

    def session_secret(self) -> str:
        """The configured key, or the one generated on first start in <data_dir>/session_secret
        (secrets.token_bytes, created 0600; a group- or world-readable file is refused)."""
        if self.secret_key is not None:
            return self.secret_key
        path = self.data_dir / SECRET_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            # written whole to a private temporary file, then linked into place: a second
            # process starting at the same moment reads either nothing or the whole secret
            tmp = path.with_name(f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_bytes(48).hex() + "\n")
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process made it first; use theirs
            finally:
                tmp.unlink()
        if path.stat().st_mode & 0o077:
            raise SettingsError(
                f"{path} is readable by other users; chmod 600 it (or delete it: a new "
                "secret is generated and everyone logs in again)"
            )
        secret = path.read_text().strip()
        if len(secret) < 32:
            raise SettingsError(f"{path} holds no usable secret; delete it to generate one")
        return secret
