"""Configuration from environment variables, validated once at start-up.

Every port, address and secret of the mesh is defined here and nowhere else:
the services, the local stack script, the tests and the benchmarks all read
them through `load()`. Each setting has a default that runs on one machine;
a bad value stops the process with a message naming the variable.
"""

from __future__ import annotations

import builtins
import os
import re
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
# The local fake payments provider's token and Standard Webhooks secret ("whsec_" + base64).
DEV_POLAR_TOKEN = "polar_oat_octavia_dev_token_change_me_0123456789"
DEV_POLAR_WEBHOOK_SECRET = "whsec_b2N0YXZpYS1kZXYtd2ViaG9vay1zZWNyZXQtY2hhbmdlLW1l"

# Local stand-ins for the outside world, run by `make up` (scripts/stack.py): an SMTP sink
# that keeps every email under var/mail, and a fake payments provider speaking Polar's API.
DEFAULT_SMTP_PORT = 50025
DEFAULT_POLAR_PORT = 50071

# Rate limits: name -> (requests, per seconds). OCTAVIA_RATE_LIMITS overrides any of them,
# as "login_account=5/300,signup_address=100/3600".
DEFAULT_RATE_LIMITS = {
    "login_account": (10, 900),  # failed log-ins per account
    "login_address": (60, 900),  # log-in attempts per client address
    "signup_address": (20, 3600),  # sign-ups per client address
    "create_job_user": (120, 60),  # jobs created per user
}
# On a development machine every client is 127.0.0.1 (the CLI, the tests, a browser): limits
# per client address would stop the machine's own work, so there they are generous.
DEVELOPMENT_RATE_LIMITS = {"login_address": (100_000, 60), "signup_address": (100_000, 60)}

# Credits per minute of media per job kind: "<kind>=<per minute>[+<per minute per target language>]".
DEFAULT_PRICES = "transcription=10,subtitles=10+5,audio_translation=20+30,video_dubbing=30+40"
# Credit packs on sale: "<id>=<display name>|<credits>|<price in minor units>|<currency>|<provider product id>;...".
DEFAULT_CREDIT_PACKS = (
    "starter=Starter|1000|1000|USD|prod_octavia_starter;"
    "creator=Creator|6000|5000|USD|prod_octavia_creator;"
    "studio=Studio|30000|20000|USD|prod_octavia_studio"
)
JOB_KINDS = ("transcription", "subtitles", "audio_translation", "video_dubbing")

ROOT = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class RateLimit:
    """At most `requests` per `period_s` seconds (smoothly: one every period_s / requests)."""

    requests: int
    period_s: int


@dataclass(frozen=True)
class Price:
    """Credits per minute of media for one job kind."""

    per_minute: int
    per_minute_per_language: int = 0


@dataclass(frozen=True)
class CreditPack:
    id: str
    display_name: str
    credits: int
    price_minor_units: int
    currency: str
    product_id: str  # the payment provider's product


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
    coqui_model_dir: str  # empty: none; else a Coqui TTS model folder (config.json and the checkpoint)
    # Threads one synthesis may use (onnxruntime's intra-op threads; 0: one per core). Several
    # single-threaded tts workers speak more per second than one using every core.
    tts_threads: int
    # Mail (auth): verification emails through SMTP; links in them point at the web app.
    smtp_host: str
    smtp_port: int
    smtp_username: str
    smtp_password: str = field(repr=False)
    smtp_security: str  # none, starttls or tls
    mail_from: str
    app_url: str
    require_verified_email: bool  # may unverified users create jobs?
    rate_limits: Mapping[str, RateLimit]
    # Money (billing): prices by job kind name, the billing unit, credits a new account starts with.
    prices: Mapping[str, Price]
    billing_unit_s: int
    welcome_credits: int
    credit_packs: tuple[CreditPack, ...]
    # The payments provider (Polar's API): base URL, access token, Standard Webhooks secret.
    polar_api_url: str
    polar_token: str = field(repr=False)
    polar_webhook_secret: str = field(repr=False)

    def endpoint(self, service: str) -> Endpoint:
        return self.endpoints[service]


class _Env:
    """Reads typed values from an environment mapping, naming the variable on error.

    Its methods are named after the types they read, so inside the class `str`, `int`
    and `bool` name the methods: annotations spell the types as builtins.str and so on.
    """

    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ

    def str(self, name: builtins.str, default: builtins.str) -> builtins.str:
        value = self.environ.get(name, "").strip()
        return value or default

    def int(self, name: builtins.str, default: builtins.int, lo: builtins.int, hi: builtins.int) -> builtins.int:
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

    def port(self, name: builtins.str, default: builtins.int) -> builtins.int:
        return self.int(name, default, 1, 65535)

    def url(self, name: builtins.str, default: builtins.str, schemes: tuple[builtins.str, ...]) -> builtins.str:
        value = self.str(name, default)
        parsed = urlparse(value)
        if parsed.scheme not in schemes or not parsed.hostname:
            raise ConfigError(f"{name}={value!r} is not a {' or '.join(schemes)} URL with a host")
        return value

    def bool(self, name: builtins.str, default: builtins.bool) -> builtins.bool:
        raw = self.environ.get(name, "").strip().lower()
        if not raw:
            return default
        if raw not in ("1", "true", "yes", "0", "false", "no"):
            raise ConfigError(f"{name}={raw!r} must be true or false")
        return raw in ("1", "true", "yes")

    def choice(self, name: builtins.str, default: builtins.str, choices: tuple[builtins.str, ...]) -> builtins.str:
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
    polar_token = env.str("OCTAVIA_POLAR_TOKEN", DEV_POLAR_TOKEN)
    polar_webhook_secret = env.str("OCTAVIA_POLAR_WEBHOOK_SECRET", DEV_POLAR_WEBHOOK_SECRET)
    for var, value, dev in (
        ("OCTAVIA_JWT_SECRET", jwt_secret, DEV_JWT_SECRET),
        ("OCTAVIA_SERVICE_SECRET", service_secret, DEV_SERVICE_SECRET),
        ("OCTAVIA_BLOB_SIGNING_KEY", blob_signing_key, DEV_BLOB_SIGNING_KEY),
        ("OCTAVIA_POLAR_TOKEN", polar_token, DEV_POLAR_TOKEN),
        ("OCTAVIA_POLAR_WEBHOOK_SECRET", polar_webhook_secret, DEV_POLAR_WEBHOOK_SECRET),
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
        coqui_model_dir=env.str("OCTAVIA_COQUI_MODEL_DIR", ""),
        tts_threads=env.int("OCTAVIA_TTS_THREADS", 0, 0, 256),
        smtp_host=env.str("OCTAVIA_SMTP_HOST", "127.0.0.1"),
        smtp_port=env.port("OCTAVIA_SMTP_PORT", DEFAULT_SMTP_PORT),
        smtp_username=env.str("OCTAVIA_SMTP_USERNAME", ""),
        smtp_password=env.str("OCTAVIA_SMTP_PASSWORD", ""),
        smtp_security=env.choice("OCTAVIA_SMTP_SECURITY", "none", ("none", "starttls", "tls")),
        mail_from=env.str("OCTAVIA_MAIL_FROM", "Octavia <no-reply@octavia.localhost>"),
        app_url=env.url(
            "OCTAVIA_APP_URL", next((o for o in origins if "*" not in o), "http://localhost:3000"), ("http", "https")
        ).rstrip("/"),
        require_verified_email=env.bool("OCTAVIA_REQUIRE_VERIFIED_EMAIL", False),
        rate_limits=_rate_limits(env.str("OCTAVIA_RATE_LIMITS", ""), environment),
        prices=_prices(env.str("OCTAVIA_PRICES", DEFAULT_PRICES)),
        billing_unit_s=env.int("OCTAVIA_BILLING_UNIT_S", 1, 1, 3600),
        welcome_credits=env.int("OCTAVIA_WELCOME_CREDITS", 100, 0, 10**9),
        credit_packs=_credit_packs(env.str("OCTAVIA_CREDIT_PACKS", DEFAULT_CREDIT_PACKS)),
        polar_api_url=env.url("OCTAVIA_POLAR_API_URL", f"http://127.0.0.1:{DEFAULT_POLAR_PORT}", ("http", "https")).rstrip("/"),
        polar_token=polar_token,
        polar_webhook_secret=polar_webhook_secret,
    )


def _rate_limits(raw: str, environment: str) -> dict[str, RateLimit]:
    defaults = {**DEFAULT_RATE_LIMITS, **(DEVELOPMENT_RATE_LIMITS if environment == "development" else {})}
    limits = {name: RateLimit(*value) for name, value in defaults.items()}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, _, spec = item.partition("=")
        requests, _, period = spec.partition("/")
        name = name.strip()
        if name not in limits or not requests.strip().isdigit() or not period.strip().isdigit():
            raise ConfigError(
                f"OCTAVIA_RATE_LIMITS: {item!r} is not <name>=<requests>/<seconds> with a name among {', '.join(limits)}"
            )
        if int(requests) < 1 or int(period) < 1:
            raise ConfigError(f"OCTAVIA_RATE_LIMITS: {item!r} needs at least 1 request per at least 1 second")
        limits[name] = RateLimit(int(requests), int(period))
    return limits


def _prices(raw: str) -> dict[str, Price]:
    prices = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        kind, _, spec = item.partition("=")
        base, _, per_language = spec.partition("+")
        kind = kind.strip().lower()
        if kind not in JOB_KINDS or not base.strip().isdigit() or not (per_language.strip() or "0").isdigit():
            raise ConfigError(
                f"OCTAVIA_PRICES: {item!r} is not <kind>=<credits per minute>[+<per target language>]"
                f" with a kind among {', '.join(JOB_KINDS)}"
            )
        prices[kind] = Price(int(base), int(per_language.strip() or 0))
    missing = [kind for kind in JOB_KINDS if kind not in prices]
    if missing:
        raise ConfigError(f"OCTAVIA_PRICES has no price for {', '.join(missing)}")
    return prices


def _credit_packs(raw: str) -> tuple[CreditPack, ...]:
    packs = []
    for item in filter(None, (part.strip() for part in raw.split(";"))):
        pack_id, _, spec = item.partition("=")
        fields = [f.strip() for f in spec.split("|")]
        if (
            not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", pack_id.strip())
            or len(fields) != 5
            or not fields[1].isdigit()
            or not fields[2].isdigit()
            or not re.fullmatch(r"[A-Z]{3}", fields[3])
            or not fields[0]
            or not fields[4]
        ):
            raise ConfigError(
                f"OCTAVIA_CREDIT_PACKS: {item!r} is not"
                " <id>=<display name>|<credits>|<price in minor units>|<currency>|<product id>"
            )
        packs.append(CreditPack(pack_id.strip(), fields[0], int(fields[1]), int(fields[2]), fields[3], fields[4]))
    if len({p.id for p in packs}) != len(packs):
        raise ConfigError("OCTAVIA_CREDIT_PACKS names a pack twice")
    return tuple(sorted(packs, key=lambda p: p.price_minor_units))


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
        "OCTAVIA_COQUI_MODEL_DIR": config.coqui_model_dir,
        "OCTAVIA_TTS_THREADS": str(config.tts_threads),
        "OCTAVIA_SMTP_HOST": config.smtp_host,
        "OCTAVIA_SMTP_PORT": str(config.smtp_port),
        "OCTAVIA_SMTP_USERNAME": config.smtp_username,
        "OCTAVIA_SMTP_PASSWORD": config.smtp_password,
        "OCTAVIA_SMTP_SECURITY": config.smtp_security,
        "OCTAVIA_MAIL_FROM": config.mail_from,
        "OCTAVIA_APP_URL": config.app_url,
        "OCTAVIA_REQUIRE_VERIFIED_EMAIL": "true" if config.require_verified_email else "false",
        "OCTAVIA_RATE_LIMITS": ",".join(f"{n}={r.requests}/{r.period_s}" for n, r in config.rate_limits.items()),
        "OCTAVIA_PRICES": ",".join(
            f"{kind}={p.per_minute}" + (f"+{p.per_minute_per_language}" if p.per_minute_per_language else "")
            for kind, p in config.prices.items()
        ),
        "OCTAVIA_BILLING_UNIT_S": str(config.billing_unit_s),
        "OCTAVIA_WELCOME_CREDITS": str(config.welcome_credits),
        "OCTAVIA_CREDIT_PACKS": ";".join(
            f"{p.id}={p.display_name}|{p.credits}|{p.price_minor_units}|{p.currency}|{p.product_id}" for p in config.credit_packs
        ),
        "OCTAVIA_POLAR_API_URL": config.polar_api_url,
        "OCTAVIA_POLAR_TOKEN": config.polar_token,
        "OCTAVIA_POLAR_WEBHOOK_SECRET": config.polar_webhook_secret,
    }
    for name, endpoint in config.endpoints.items():
        environ[f"OCTAVIA_{name.upper()}_HOST"] = endpoint.host
        environ[f"OCTAVIA_{name.upper()}_PORT"] = str(endpoint.port)
        environ[f"OCTAVIA_{name.upper()}_METRICS_PORT"] = str(endpoint.metrics_port)
    return environ
