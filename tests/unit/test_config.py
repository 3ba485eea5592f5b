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
        }
    )
    assert config.jwt_secret != DEV_JWT_SECRET
    assert "j" * 40 not in repr(config), "secrets must not appear in logs of the config"


def test_the_variables_handed_to_services_rebuild_the_same_config():
    from octavia_runtime.config import to_environ

    config = load({"OCTAVIA_AUTH_PORT": "7001", "OCTAVIA_CORS_ORIGINS": "https://a.example,https://b.example"})
    assert load(to_environ(config)) == config
