"""Connection settings: where Kafka, S3/SQS and Snowflake are.

Specs say *what* to load; settings say *where the services are*. Values come
from, highest precedence first:

1. environment variables ``LOADER_<SECTION>__<FIELD>`` (e.g.
   ``LOADER_KAFKA__BOOTSTRAP_SERVERS``, ``LOADER_SNOWFLAKE__PASSWORD``);
2. a YAML file named by ``LOADER_CONFIG`` (same structure as the model);
3. the endpoints of a running local dev stack (``loader dev up``), so a
   person who started the stack needs no configuration at all.

Secrets are :class:`pydantic.SecretStr`: they print as ``**********``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from loader.config.problems import validation_problems
from loader.config.snowflake_auth import LOGIN_SETTINGS, read_private_key
from loader.config.yamlfile import read_yaml
from loader.errors import ConfigError, capped, clip

__all__ = [
    "AwsSettings",
    "GatewayApiKey",
    "GatewaySettings",
    "KafkaSettings",
    "SchemaRegistrySettings",
    "Settings",
    "SnowflakeSettings",
    "dev_state_path",
    "load_settings",
]

STATE_DIR_ENV = "LOADER_STATE_DIR"
CONFIG_FILE_ENV = "LOADER_CONFIG"


_KEY_ID = r"(?:[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}|mrk-[0-9a-fA-F]{32})"
_ALIAS = r"alias/[a-zA-Z0-9/_-]{1,250}"
_KMS_KEY = re.compile(
    rf"{_KEY_ID}|{_ALIAS}|arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{{12}}:(?:key/{_KEY_ID}|{_ALIAS})"
)
"""The forms S3 accepts for a KMS key (AWS KMS's KeyId: key id, multi-Region key id, alias, ARNs)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Section):
    """How to reach the Kafka clusters that specs name."""

    bootstrap_servers: str | None = None
    """Bootstrap servers of the cluster named ``default`` (``host:port,...``)."""
    clusters: dict[str, str] = Field(default_factory=dict)
    """Bootstrap servers of other named clusters, by the name specs use."""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    """PEM file of the CA(s) that signed the brokers' certificates (SSL, SASL_SSL); None
    trusts the system's CAs."""
    ssl_certfile: Path | None = None
    """PEM file of this client's certificate, for brokers that require mutual TLS."""
    ssl_keyfile: Path | None = None
    """PEM file of the client certificate's private key (None: it is in ``ssl_certfile``)."""
    ssl_key_password: SecretStr | None = None
    """Passphrase of an encrypted client private key."""
    ssl_check_hostname: bool = True
    """Whether a broker's certificate must name the host it was reached at. The certificate
    is verified against the CAs either way."""
    session_timeout_ms: int = Field(default=10_000, ge=1_000)
    """How long the group waits for a silent (crashed) worker before moving its partitions."""
    heartbeat_interval_ms: int = Field(default=1_000, ge=100)
    """How often members heartbeat; a rebalance reaches a member at its next heartbeat."""

    @model_validator(mode="after")
    def _tls_settings_fit(self) -> Self:
        # TLS files next to a plaintext protocol would silently go unused: traffic in the clear.
        tls = [name for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile") if getattr(self, name)]
        if self.ssl_key_password is not None:
            tls.append("ssl_key_password")
        if tls and self.security_protocol not in ("SSL", "SASL_SSL"):
            raise ValueError(
                f"{', '.join(tls)} set, but security_protocol is {self.security_protocol}: "
                "set LOADER_KAFKA__SECURITY_PROTOCOL=SSL (or SASL_SSL)"
            )
        if (self.ssl_keyfile or self.ssl_key_password) and not self.ssl_certfile:
            raise ValueError(
                "a client key without its certificate: "
                "set LOADER_KAFKA__SSL_CERTFILE to the client's certificate (PEM)"
            )
        return self

    def bootstrap_for(self, cluster: str) -> str:
        """The bootstrap servers of ``cluster``, or a ConfigError saying how to set them."""
        servers = self.clusters.get(cluster) or (self.bootstrap_servers if cluster == "default" else None)
        if not servers:
            env = (
                "LOADER_KAFKA__BOOTSTRAP_SERVERS"
                if cluster == "default"
                else f'LOADER_KAFKA__CLUSTERS=\'{{"{cluster}": "host:9092"}}\''
            )
            raise ConfigError(
                f"no Kafka bootstrap servers for cluster {cluster!r}: set {env}, "
                "or start the local stack with `loader dev up`"
            )
        return servers


class AwsSettings(_Section):
    """How to reach S3 and SQS. Credentials default to boto3's standard chain."""

    endpoint_url: str | None = None
    """Custom endpoint (moto, LocalStack); None means real AWS."""
    region: str = "us-east-1"
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    notifications_queue_url: str | None = None
    """SQS queue that receives the buckets' ObjectCreated notifications (copy mode)."""
    sse: Literal["AES256", "aws:kms"] | None = None
    """Server-side encryption requested on every object the loader writes: ``AES256`` (S3
    managed keys) or ``aws:kms`` (a KMS key); None leaves it to the bucket's default."""
    sse_kms_key_id: str | None = None
    """The KMS key for ``sse: aws:kms``: key ARN (what the IAM examples grant), key id, alias
    name or alias ARN; None means the account's AWS managed key ``aws/s3``."""

    @model_validator(mode="after")
    def _kms_key_fits(self) -> Self:
        if self.sse_kms_key_id is None:
            return self
        if self.sse != "aws:kms":
            raise ValueError(
                "sse_kms_key_id is used only with SSE-KMS: set LOADER_AWS__SSE=aws:kms "
                "(or unset LOADER_AWS__SSE_KMS_KEY_ID)"
            )
        if not _KMS_KEY.fullmatch(self.sse_kms_key_id):
            # Not quoted: a value pasted by mistake may be a secret.
            raise ValueError(
                "sse_kms_key_id is not a KMS key: set LOADER_AWS__SSE_KMS_KEY_ID to a key ARN "
                "(arn:aws:kms:REGION:ACCOUNT:key/KEY_ID), a key id, alias/NAME or an alias ARN"
            )
        return self


class SnowflakeSettings(_Section):
    """How to reach Snowflake (or fakesnow's server locally), and how to log in.

    Exactly one login: a key pair (``private_key_file`` or ``private_key``, plus
    ``private_key_passphrase`` when the key is encrypted), an OAuth ``token`` or a
    ``password``. Two are refused when the settings load; none, when the loader connects
    (commands that never reach Snowflake do not need one). An empty value counts as unset,
    as a Helm chart's ``value: ""`` or a Secret's empty key would be.
    """

    account: str | None = None
    user: str | None = None
    password: SecretStr | None = None
    """Password login. Snowflake is phasing passwords out for service users: prefer a key pair."""
    private_key_file: Path | None = None
    """Key-pair login: a PEM private key file (PKCS#8), e.g. a mounted Kubernetes Secret. Read
    at each connect, so a rotated key is used from the next reconnect on."""
    private_key: SecretStr | None = None
    """Key-pair login: the PEM text of the private key itself, e.g. from a Secret as an
    environment variable (newlines may be escaped as ``\\n``)."""
    private_key_passphrase: SecretStr | None = None
    """The passphrase of an encrypted private key (``BEGIN ENCRYPTED PRIVATE KEY``)."""
    token: SecretStr | None = None
    """OAuth login (``authenticator=oauth``): an access token. It expires (often within the
    hour) and the loader reconnects with the same one: for a long-running loader use a key pair."""
    role: str | None = None
    warehouse: str | None = None
    host: str | None = None
    """Only for non-standard endpoints such as fakesnow's server."""
    port: int | None = None
    protocol: Literal["https", "http"] = "https"
    load_mode: Literal["copy", "auto-ingest"] = "copy"
    """copy: the SQS-triggered loader runs COPY; auto-ingest: Snowpipe with AUTO_INGEST."""
    storage_integration: str | None = None
    """Storage integration for external stages on real Snowflake."""
    local_stage_dir: Path | None = None
    """When set, files are downloaded here and staged with file:// URLs (fakesnow
    cannot read s3://); unset on real Snowflake, which reads the external stage."""
    login_timeout_s: int = 30
    network_timeout_s: int = 120
    statement_timeout_s: int = Field(default=300, ge=1)
    """The longest any one statement (a COPY included) may run, in seconds: set on the session
    (``STATEMENT_TIMEOUT_IN_SECONDS``, enforced by Snowflake) and on each statement by the
    connector, which gives up on a warehouse that does not answer. Each HTTP read waits at
    most this long, and never more than 60 s (the connector's own default)."""

    @field_validator(
        "password", "private_key_file", "private_key", "private_key_passphrase", "token", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _one_login(self) -> Self:
        chosen = [name for name in _LOGINS if getattr(self, name) is not None]
        if len(chosen) > 1:
            raise ValueError(
                f"{len(chosen)} Snowflake logins are set ({', '.join(chosen)}): {LOGIN_SETTINGS}"
            )
        if self.private_key_passphrase is not None and self.login_method != "key pair":
            raise ValueError(
                "private_key_passphrase is set without a private key: set LOADER_SNOWFLAKE__PRIVATE_KEY_FILE "
                "or LOADER_SNOWFLAKE__PRIVATE_KEY (or unset LOADER_SNOWFLAKE__PRIVATE_KEY_PASSPHRASE)"
            )
        return self

    @property
    def login_method(self) -> Literal["key pair", "oauth", "password"] | None:
        """How the loader logs in to Snowflake; None when no login is set."""
        if self.private_key_file is not None or self.private_key is not None:
            return "key pair"
        if self.token is not None:
            return "oauth"
        return "password" if self.password is not None else None

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``snowflake.connector.connect`` (a key pair is read and decrypted here)."""
        if not self.account or not self.user:
            raise ConfigError(
                "no Snowflake account configured: set LOADER_SNOWFLAKE__ACCOUNT and "
                "LOADER_SNOWFLAKE__USER (and a login), or start the local stack with `loader dev up`"
            )
        kwargs: dict[str, Any] = {
            "account": self.account,
            "user": self.user,
            "protocol": self.protocol,
            "login_timeout": self.login_timeout_s,
            "network_timeout": self.network_timeout_s,
            "socket_timeout": min(self.statement_timeout_s, 60),
            "session_parameters": {
                "CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False,
                "STATEMENT_TIMEOUT_IN_SECONDS": self.statement_timeout_s,
            },
        }
        for name in ("role", "warehouse", "host", "port"):
            value = getattr(self, name)
            if value is not None:
                kwargs[name] = value
        return kwargs | self._login_kwargs()

    def _login_kwargs(self) -> dict[str, Any]:
        if self.password is not None:
            return {"password": self.password.get_secret_value()}
        if self.token is not None:
            return {"authenticator": "oauth", "token": self.token.get_secret_value()}
        if self.login_method == "key pair":
            key = read_private_key(
                path=self.private_key_file, pem=self.private_key, passphrase=self.private_key_passphrase
            )
            return {"authenticator": "SNOWFLAKE_JWT", "private_key": key}
        raise ConfigError(f"no Snowflake login configured: {LOGIN_SETTINGS}")


_LOGINS = ("password", "private_key_file", "private_key", "token")
"""The settings that each choose a login; at most one may be set."""


class SchemaRegistrySettings(_Section):
    """How to reach the Confluent-compatible schema registry that writer schemas are read from.

    Records in Confluent's wire format (``avro-registry``, ``protobuf-registry`` specs)
    carry only a schema id; the loader fetches that schema once and keeps it (ids are
    immutable). An empty value counts as unset, as a Helm chart's ``value: ""`` would.
    """

    url: str | None = None
    """Base URL of the Confluent API: ``https://registry:8081`` (Confluent), or Apicurio's
    ``…/apis/ccompat/v7``. Credentials go in ``username``/``password``, never in the URL."""
    username: str | None = None
    """Basic-auth user (Confluent Cloud: the API key)."""
    password: SecretStr | None = None
    """Basic-auth password (Confluent Cloud: the API secret)."""
    ca_file: Path | None = None
    """PEM file of the CA(s) that signed the registry's certificate (https only); None trusts
    the system's CAs."""
    timeout_s: float = Field(default=10.0, gt=0)
    """The longest one request may take to connect, and then to answer, in seconds. A
    registry that does not answer in time counts as down: the batch is retried, not dropped."""

    @field_validator("url", "username", "password", "ca_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _fits(self) -> Self:
        if self.url is not None:
            if not self.url.startswith(("http://", "https://")):
                raise ValueError("url must start with http:// or https:// (LOADER_SCHEMA_REGISTRY__URL)")
            # Not quoted: it holds a password.
            if "@" in self.url.split("://", 1)[1].split("/", 1)[0]:
                raise ValueError(
                    "url holds credentials: set LOADER_SCHEMA_REGISTRY__USERNAME and "
                    "LOADER_SCHEMA_REGISTRY__PASSWORD instead"
                )
        if self.password is not None and not self.username:
            raise ValueError("a password without a username: set LOADER_SCHEMA_REGISTRY__USERNAME")
        if self.ca_file is not None and not (self.url or "").startswith("https://"):
            raise ValueError(
                "ca_file set, but url is not https://: the CA file would go unused "
                "(LOADER_SCHEMA_REGISTRY__URL=https://…)"
            )
        return self


class GatewayApiKey(_Section):
    """One API key of the event gateway: stored as the SHA-256 of the key, never the key.

    Keys are long random strings (``loader gateway new-key`` makes one), so a plain SHA-256
    cannot be reversed; the gateway compares digests in constant time."""

    name: str = Field(pattern=r"^[A-Za-z0-9._\-]{1,63}$")
    """Who holds the key (a team or an app): shown in logs and used as the events' default
    ``source``; never the key itself."""
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """Hex SHA-256 of the key (``printf %s "$KEY" | sha256sum``)."""
    events: list[str] = Field(min_length=1)
    """Event types the key may post (spec names), or ``["*"]`` for every event."""


class GatewaySettings(_Section):
    """The event gateway (``loader gateway``): an HTTP front door that produces to Kafka."""

    host: str = "127.0.0.1"
    """Address the HTTP API listens on (``0.0.0.0`` in a container)."""
    port: int = Field(default=8088, ge=1, le=65535)
    """Port of the HTTP API (``POST /v1/events/{event}``, ``POST /topics/{topic}``)."""
    metrics_port: int | None = Field(default=6067, ge=1, le=65535)
    """Port of ``/metrics``, ``/healthz`` and ``/readyz``, kept off the public API; None: no
    endpoints."""
    processes: int = Field(default=1, ge=1, le=64)
    """Gateway processes sharing the API port (one core each; see ``loader gateway --processes``).
    Each has its own producers and its own ``max_in_flight_records``."""
    mode: Literal["sync", "async"] = "sync"
    """sync: answer once the broker acknowledged every record; async: answer (202) once the
    records are buffered, then retry until ``delivery_timeout_s`` and spill what is still not
    delivered to the event's dead-letter area in S3."""
    delivery_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    """A record's deadline: sync answers 503 (retryable) when the broker has not acknowledged
    it by then; async spills it to S3."""
    max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    """Largest request body, before and after gzip decoding (413 beyond)."""
    max_batch_records: int = Field(default=1000, ge=1)
    """Most events in one request (413 beyond)."""
    max_in_flight_records: int = Field(default=100_000, ge=1)
    """Records produced but not yet acknowledged; beyond it requests get 503 (backpressure)."""
    api_keys: list[GatewayApiKey] = Field(default_factory=list)
    """The keys allowed to post, as hashes (JSON in ``LOADER_GATEWAY__API_KEYS``)."""
    api_keys_file: Path | None = None
    """A YAML or JSON file holding a list of keys (as in ``api_keys``), e.g. mounted from a
    Secret; added to ``api_keys``."""
    allow_anonymous: bool = False
    """Accept requests without a key (local development only). Without keys and without
    this, the gateway refuses to start."""
    cors_origins: list[str] = Field(default_factory=list)
    """Origins web pages may post from (``https://app.example.com``); empty: no CORS."""
    canary_topic: str = Field(default="loader-gateway-canary", pattern=r"^[A-Za-z0-9._\-]{1,249}$")
    """Topic a test record is produced to, on every cluster, before ``/readyz`` turns 200."""
    linger_ms: int = Field(default=10, ge=0, le=1000)
    """How long a batch waits for more records before it is sent: fewer, larger produce
    requests. A sync answer waits for it too: 10 ms kept the benchmark's p99 at half the
    peak 35-40 ms, where 20 ms gave 49-72 ms (async mode, where nobody waits, can linger more)."""
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "zstd"
    """Compression of the produced batches. zstd: aiokafka compresses lz4 at level 9 (LZ4HC),
    which took a 100-event request 330 µs to zstd's 60 µs, for a batch 40% larger."""

    @field_validator("api_keys_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value


class Settings(BaseSettings):
    """Everything the loader needs to know about its environment."""

    model_config = SettingsConfigDict(
        env_prefix="LOADER_", env_nested_delimiter="__", extra="ignore", frozen=True
    )

    specs_dir: Path = Path("pipelines")
    """Folder of event specs (one YAML file per event type)."""
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    aws: AwsSettings = Field(default_factory=AwsSettings)
    snowflake: SnowflakeSettings = Field(default_factory=SnowflakeSettings)
    schema_registry: SchemaRegistrySettings = Field(default_factory=SchemaRegistrySettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the files passed in as init values.
        return env_settings, init_settings


def dev_state_path() -> Path:
    """Where ``loader dev up`` records the endpoints of the services it started."""
    return Path(os.environ.get(STATE_DIR_ENV, ".loader")) / "dev-stack.json"


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_mapping(path: Path, what: str) -> dict[str, Any]:
    try:
        # read_yaml never quotes the file's lines: they may hold a password.
        data = json.loads(path.read_text()) if path.suffix == ".json" else read_yaml(path)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {clip(str(path), 200)}: {exc.strerror or exc}") from None
    except ValueError as exc:  # JSONDecodeError and YamlFileError: positions, never content
        raise ConfigError(f"cannot read {what} {clip(str(path), 200)}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must hold a mapping at the top level")
    return data


def _sets_login(snowflake: Any) -> bool:
    return isinstance(snowflake, dict) and any(snowflake.get(name) not in (None, "") for name in _LOGINS)


def _one_login_source(layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The layers, with the Snowflake login taken whole from the highest source that sets one.

    A login is one choice, not four settings: a key in the environment replaces the
    password a running dev stack recorded, rather than making two logins."""
    env_names = {f"LOADER_SNOWFLAKE__{name.upper()}" for name in _LOGINS}
    env_login = any(name.upper() in env_names and value for name, value in os.environ.items())
    login_fields = (*_LOGINS, "private_key_passphrase")
    kept: list[dict[str, Any]] = []
    higher_sets_login = env_login
    for layer in reversed(layers):
        snowflake = layer.get("snowflake")
        if higher_sets_login and isinstance(snowflake, dict):
            kept.append({**layer, "snowflake": {k: v for k, v in snowflake.items() if k not in login_fields}})
        else:
            kept.append(layer)
        higher_sets_login = higher_sets_login or _sets_login(snowflake)
    return kept[::-1]


def load_settings(*, use_dev_stack: bool = True, **overrides: Any) -> Settings:
    """Load settings from env, the LOADER_CONFIG file and the dev stack, in that order."""
    layers: list[dict[str, Any]] = []  # lowest precedence first
    state = dev_state_path()
    if use_dev_stack and state.exists():
        layers.append(_read_mapping(state, "dev stack state").get("settings", {}))
    if config_file := os.environ.get(CONFIG_FILE_ENV):
        layers.append(_read_mapping(Path(config_file), "config file"))
    layers.append(overrides)
    values: dict[str, Any] = {}
    for layer in _one_login_source(layers):
        values = _deep_merge(values, layer)
    try:
        return Settings(**values)
    except SettingsError as exc:  # an environment value that is not valid JSON where JSON is expected
        raise ConfigError(
            f"invalid settings: {exc} (a LOADER_<SECTION>__<FIELD> value of a list or mapping must be JSON)"
        ) from None
    except ValidationError as exc:
        # No input shown: a settings value may be a secret.
        problems = "; ".join(capped(validation_problems(exc, show_input=False)))
        raise ConfigError(f"invalid settings: {problems}") from None
