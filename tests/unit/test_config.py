"""Configuration: working defaults, and a clear message naming any bad variable."""

import pytest

from octavia_runtime.config import DEV_JWT_SECRET, SERVICES, ConfigError, load


def test_defaults_run_on_one_machine():
    config = load({})
    assert set(config.endpoints) == set(SERVICES)
    ports = [e.port for e in config.endpoints.values()] + [e.metrics_port for e in config.endpoints.values()]
    ports += [config.envoy_port, config.envoy_admin_port, config.postgres_port, config.valkey_port, config.nats_port]
    assert len(ports) == len(set(ports)), "two defaults share a port"
    assert config.database_url.endswith(f":{config.postgres_port}/octavia")
    assert config.redis_url == f"redis://127.0.0.1:{config.valkey_port}/0"


def test_a_port_override_moves_the_urls_that_depend_on_it():
    config = load({"OCTAVIA_POSTGRES_PORT": "6000", "OCTAVIA_AUTH_PORT": "7001"})
    assert ":6000/" in config.database_url
    assert config.endpoint("auth").target == "127.0.0.1:7001"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OCTAVIA_JOBS_PORT": "http"}, "OCTAVIA_JOBS_PORT"),
        ({"OCTAVIA_ENVOY_PORT": "70000"}, "OCTAVIA_ENVOY_PORT"),
        ({"OCTAVIA_REDIS_URL": "localhost:6379"}, "OCTAVIA_REDIS_URL"),
        ({"OCTAVIA_DATABASE_URL": "mysql://db/octavia"}, "OCTAVIA_DATABASE_URL"),
        ({"OCTAVIA_LOG_LEVEL": "loud"}, "OCTAVIA_LOG_LEVEL"),
        ({"OCTAVIA_JWT_SECRET": "short"}, "OCTAVIA_JWT_SECRET"),
        ({"OCTAVIA_ENVIRONMENT": "production"}, "OCTAVIA_JWT_SECRET"),
    ],
)
def test_a_bad_value_is_refused_naming_its_variable(env, named):
    with pytest.raises(ConfigError, match=named):
        load(env)


def test_production_runs_with_secrets_of_its_own():
    config = load(
        {
            "OCTAVIA_ENVIRONMENT": "production",
            "OCTAVIA_JWT_SECRET": "j" * 40,
            "OCTAVIA_SERVICE_SECRET": "s" * 40,
            "OCTAVIA_BLOB_SIGNING_KEY": "b" * 40,
            "OCTAVIA_POLAR_TOKEN": "p" * 40,
            "OCTAVIA_POLAR_WEBHOOK_SECRET": "whsec_" + "w" * 40,
        }
    )
    assert config.jwt_secret != DEV_JWT_SECRET
    assert "j" * 40 not in repr(config), "secrets must not appear in logs of the config"


def test_the_variables_handed_to_services_rebuild_the_same_config():
    from octavia_runtime.config import to_environ

    config = load({"OCTAVIA_AUTH_PORT": "7001", "OCTAVIA_CORS_ORIGINS": "https://a.example,https://b.example"})
    assert load(to_environ(config)) == config


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OCTAVIA_RATE_LIMITS": "login_account=ten/60"}, "OCTAVIA_RATE_LIMITS"),
        ({"OCTAVIA_RATE_LIMITS": "coffee=1/60"}, "OCTAVIA_RATE_LIMITS"),
        ({"OCTAVIA_PRICES": "transcription=10"}, "OCTAVIA_PRICES"),
        ({"OCTAVIA_PRICES": "transcription=1,subtitles=1,audio_translation=x,video_dubbing=1"}, "OCTAVIA_PRICES"),
        ({"OCTAVIA_CREDIT_PACKS": "starter=Starter|1000|USD"}, "OCTAVIA_CREDIT_PACKS"),
        ({"OCTAVIA_REQUIRE_VERIFIED_EMAIL": "maybe"}, "OCTAVIA_REQUIRE_VERIFIED_EMAIL"),
    ],
)
def test_bad_limits_prices_and_packs_are_refused_naming_their_variable(env, named):
    with pytest.raises(ConfigError, match=named):
        load(env)


def test_limits_prices_and_packs_parse_and_round_trip():
    from octavia_runtime.config import Price, RateLimit, to_environ

    config = load(
        {
            "OCTAVIA_RATE_LIMITS": "signup_address=1000/60",
            "OCTAVIA_PRICES": "transcription=2,subtitles=3+1,audio_translation=5+7,video_dubbing=11+13",
            "OCTAVIA_CREDIT_PACKS": "big=Big pack|500|1999|EUR|prod_big;small=Small|100|499|EUR|prod_small",
        }
    )
    assert config.rate_limits["signup_address"] == RateLimit(1000, 60)
    assert config.rate_limits["login_account"] == RateLimit(10, 900), "limits not named keep their defaults"
    assert config.prices["subtitles"] == Price(3, 1)
    assert [p.id for p in config.credit_packs] == ["small", "big"], "packs are listed cheapest first"
    assert config.credit_packs[1].display_name == "Big pack"
    assert load(to_environ(config)) == config


def test_limits_per_client_address_are_generous_only_in_development():
    from octavia_runtime.config import RateLimit

    production = {
        "OCTAVIA_ENVIRONMENT": "production",
        **{
            var: "x" * 40
            for var in ("OCTAVIA_JWT_SECRET", "OCTAVIA_SERVICE_SECRET", "OCTAVIA_BLOB_SIGNING_KEY", "OCTAVIA_POLAR_TOKEN")
        },
        "OCTAVIA_POLAR_WEBHOOK_SECRET": "whsec_" + "w" * 40,
    }
    assert load(production).rate_limits["signup_address"] == RateLimit(20, 3600)
    assert load({}).rate_limits["signup_address"].requests >= 10_000, "every local client is 127.0.0.1"
    assert load({}).rate_limits["login_account"] == load(production).rate_limits["login_account"]
