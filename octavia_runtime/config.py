"""Configuration from environment variables, validated once at start-up.

Every port, address and secret of the mesh is defined here and nowhere else:
the services, the local stack script, the tests and the benchmarks all read
them through `load()`. Each setting has a default that runs on one machine;
a bad value stops the process with a message naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

SERVICES: tuple[str, ...] = ("auth", "jobs", "billing", "transcribe", "translate", "tts", "media")

# Default ports: gRPC on 5005x, Prometheus metrics on 946x, infrastructure on 5xxxx
# away from the well-known ports a developer's own servers may hold.
DEFAULT_GRPC_PORTS = {name: 50051 + i for i, name in enumerate(SERVICES)}
DEFAULT_METRICS_PORTS = {name: 9461 + i for i, name in enumerate(SERVICES)}
DEFAULT_INFRA_PORTS = {"envoy": 8080, "envoy_admin": 9901, "postgres": 55432, "valkey": 56379, "nats": 54222}
# The media service's plain-HTTP blob server (presigned PUT/GET of the local storage backend, behind Envoy).
DEFAULT_BLOB_PORT = 50058

# Development secrets: fine on a laptop, refused when OCTAVIA_ENVIRONMENT=production.
DEV_JWT_SECRET = "octavia-dev-jwt-secret-change-me-0123456789"
DEV_SERVICE_SECRET = "octavia-dev-service-secret-change-me-0123456789"
DEV_BLOB_SIGNING_KEY = "octavia-dev-blob-signing-key-change-me-0123456789"

ROOT = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Endpoint:
    """Where one service listens and where the others reach it."""

    name: str
    host: str
    port: int
    metrics_port: int

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Config:
    environment: str
    log_level: str
    var_dir: Path
    endpoints: Mapping[str, Endpoint]
    envoy_port: int
    envoy_admin_port: int
    postgres_port: int
    valkey_port: int
    nats_port: int
    database_url: str
    redis_url: str
    nats_url: str
    cors_origins: tuple[str, ...]
    jwt_secret: str = field(repr=False)
    service_secret: str = field(repr=False)
    access_token_ttl_s: int
    refresh_token_ttl_s: int
    grace_period_s: float
    # Blob storage (media): backend, where local blobs live, the public base of signed URLs.
    storage: str
    storage_dir: Path
    blob_port: int
    public_url: str
    blob_signing_key: str = field(repr=False)
    s3_endpoint_url: str  # empty: AWS itself; credentials come from the usual AWS_* variables
    s3_bucket: str
    s3_region: str
    max_upload_bytes: int
    max_media_duration_s: int
    # Models: where assembled model folders are kept, the default Whisper model, extra Marian models.
    models_dir: Path
    whisper_model: str
    marian_dir: str  # empty: none; else a folder of Marian model folders named <source>-<target>

    def endpoint(self, service: str) -> Endpoint:
        return self.endpoints[service]


class _Env:
    """Reads typed values from an environment mapping, naming the variable on error."""

    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ

    def str(self, name: str, default: str) -> str:
        value = self.environ.get(name, "").strip()
        return value or default

    def int(self, name: str, default: int, lo: int, hi: int) -> int:
        raw = self.environ.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a whole number") from None
        if not lo <= value <= hi:
            raise ConfigError(f"{name}={value} is out of range ({lo} to {hi})")
        return value

    def port(self, name: str, default: int) -> int:
        return self.int(name, default, 1, 65535)

    def url(self, name: str, default: str, schemes: tuple[str, ...]) -> str:
        value = self.str(name, default)
        parsed = urlparse(value)
        if parsed.scheme not in schemes or not parsed.hostname:
            raise ConfigError(f"{name}={value!r} is not a {' or '.join(schemes)} URL with a host")
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.str(name, default).lower()
        if value not in choices:
            raise ConfigError(f"{name}={value!r} must be one of {', '.join(choices)}")
        return value


def load(environ: Mapping[str, str] | None = None) -> Config:
    """Build the configuration from `environ` (default: the process environment)."""
    env = _Env(os.environ if environ is None else environ)
    environment = env.choice("OCTAVIA_ENVIRONMENT", "development", ("development", "test", "production"))

    endpoints = {}
    for name in SERVICES:
        upper = name.upper()
        endpoints[name] = Endpoint(
            name=name,
            host=env.str(f"OCTAVIA_{upper}_HOST", "127.0.0.1"),
            port=env.port(f"OCTAVIA_{upper}_PORT", DEFAULT_GRPC_PORTS[name]),
            metrics_port=env.port(f"OCTAVIA_{upper}_METRICS_PORT", DEFAULT_METRICS_PORTS[name]),
        )

    infra = {key: env.port(f"OCTAVIA_{key.upper()}_PORT", port) for key, port in DEFAULT_INFRA_PORTS.items()}

    jwt_secret = env.str("OCTAVIA_JWT_SECRET", DEV_JWT_SECRET)
    service_secret = env.str("OCTAVIA_SERVICE_SECRET", DEV_SERVICE_SECRET)
    blob_signing_key = env.str("OCTAVIA_BLOB_SIGNING_KEY", DEV_BLOB_SIGNING_KEY)
    for var, value, dev in (
        ("OCTAVIA_JWT_SECRET", jwt_secret, DEV_JWT_SECRET),
        ("OCTAVIA_SERVICE_SECRET", service_secret, DEV_SERVICE_SECRET),
        ("OCTAVIA_BLOB_SIGNING_KEY", blob_signing_key, DEV_BLOB_SIGNING_KEY),
    ):
        if len(value) < 32:
            raise ConfigError(f"{var} must be at least 32 characters long")
        if environment == "production" and value == dev:
            raise ConfigError(f"{var} is the development default; set a secret of your own in production")

    var_dir = Path(env.str("OCTAVIA_VAR_DIR", str(ROOT / "var"))).resolve()
    origins = tuple(o.strip() for o in env.str("OCTAVIA_CORS_ORIGINS", "http://localhost:3000").split(",") if o.strip())

    return Config(
        environment=environment,
        log_level=env.choice("OCTAVIA_LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
        var_dir=var_dir,
        endpoints=endpoints,
        envoy_port=infra["envoy"],
        envoy_admin_port=infra["envoy_admin"],
        postgres_port=infra["postgres"],
        valkey_port=infra["valkey"],
        nats_port=infra["nats"],
        database_url=env.url(
            "OCTAVIA_DATABASE_URL", f"postgresql://octavia@127.0.0.1:{infra['postgres']}/octavia", ("postgresql", "postgres")
        ),
        redis_url=env.url("OCTAVIA_REDIS_URL", f"redis://127.0.0.1:{infra['valkey']}/0", ("redis", "rediss")),
        nats_url=env.url("OCTAVIA_NATS_URL", f"nats://127.0.0.1:{infra['nats']}", ("nats", "tls")),
        cors_origins=origins,
        jwt_secret=jwt_secret,
        service_secret=service_secret,
        access_token_ttl_s=env.int("OCTAVIA_ACCESS_TOKEN_TTL_S", 900, 30, 86400),
        refresh_token_ttl_s=env.int("OCTAVIA_REFRESH_TOKEN_TTL_S", 30 * 86400, 300, 365 * 86400),
        grace_period_s=env.int("OCTAVIA_SHUTDOWN_GRACE_S", 10, 0, 300),
        storage=env.choice("OCTAVIA_STORAGE", "local", ("local", "s3")),
        storage_dir=Path(env.str("OCTAVIA_STORAGE_DIR", str(var_dir / "blobs"))).resolve(),
        blob_port=env.port("OCTAVIA_BLOB_PORT", DEFAULT_BLOB_PORT),
        public_url=env.url("OCTAVIA_PUBLIC_URL", f"http://127.0.0.1:{infra['envoy']}", ("http", "https")).rstrip("/"),
        blob_signing_key=blob_signing_key,
        s3_endpoint_url=env.str("OCTAVIA_S3_ENDPOINT_URL", ""),
        s3_bucket=env.str("OCTAVIA_S3_BUCKET", "octavia"),
        s3_region=env.str("OCTAVIA_S3_REGION", "us-east-1"),
        max_upload_bytes=env.int("OCTAVIA_MAX_UPLOAD_BYTES", 2 * 1024**3, 1024, 64 * 1024**3),
        max_media_duration_s=env.int("OCTAVIA_MAX_MEDIA_DURATION_S", 4 * 3600, 1, 48 * 3600),
        models_dir=Path(env.str("OCTAVIA_MODELS_DIR", str(var_dir / "models"))).resolve(),
        whisper_model=env.str("OCTAVIA_WHISPER_MODEL", "base"),
        marian_dir=env.str("OCTAVIA_MARIAN_DIR", ""),
    )


def to_environ(config: Config) -> dict[str, str]:
    """The OCTAVIA_* variables from which `load()` rebuilds `config` (what the stack hands its services)."""
    environ = {
        "OCTAVIA_ENVIRONMENT": config.environment,
        "OCTAVIA_LOG_LEVEL": config.log_level,
        "OCTAVIA_VAR_DIR": str(config.var_dir),
        "OCTAVIA_ENVOY_PORT": str(config.envoy_port),
        "OCTAVIA_ENVOY_ADMIN_PORT": str(config.envoy_admin_port),
        "OCTAVIA_POSTGRES_PORT": str(config.postgres_port),
        "OCTAVIA_VALKEY_PORT": str(config.valkey_port),
        "OCTAVIA_NATS_PORT": str(config.nats_port),
        "OCTAVIA_DATABASE_URL": config.database_url,
        "OCTAVIA_REDIS_URL": config.redis_url,
        "OCTAVIA_NATS_URL": config.nats_url,
        "OCTAVIA_CORS_ORIGINS": ",".join(config.cors_origins),
        "OCTAVIA_JWT_SECRET": config.jwt_secret,
        "OCTAVIA_SERVICE_SECRET": config.service_secret,
        "OCTAVIA_ACCESS_TOKEN_TTL_S": str(config.access_token_ttl_s),
        "OCTAVIA_REFRESH_TOKEN_TTL_S": str(config.refresh_token_ttl_s),
        "OCTAVIA_SHUTDOWN_GRACE_S": str(int(config.grace_period_s)),
        "OCTAVIA_STORAGE": config.storage,
        "OCTAVIA_STORAGE_DIR": str(config.storage_dir),
        "OCTAVIA_BLOB_PORT": str(config.blob_port),
        "OCTAVIA_PUBLIC_URL": config.public_url,
        "OCTAVIA_BLOB_SIGNING_KEY": config.blob_signing_key,
        "OCTAVIA_S3_ENDPOINT_URL": config.s3_endpoint_url,
        "OCTAVIA_S3_BUCKET": config.s3_bucket,
        "OCTAVIA_S3_REGION": config.s3_region,
        "OCTAVIA_MAX_UPLOAD_BYTES": str(config.max_upload_bytes),
        "OCTAVIA_MAX_MEDIA_DURATION_S": str(config.max_media_duration_s),
        "OCTAVIA_MODELS_DIR": str(config.models_dir),
        "OCTAVIA_WHISPER_MODEL": config.whisper_model,
        "OCTAVIA_MARIAN_DIR": config.marian_dir,
    }
    for name, endpoint in config.endpoints.items():
        environ[f"OCTAVIA_{name.upper()}_HOST"] = endpoint.host
        environ[f"OCTAVIA_{name.upper()}_PORT"] = str(endpoint.port)
        environ[f"OCTAVIA_{name.upper()}_METRICS_PORT"] = str(endpoint.metrics_port)
    return environ
