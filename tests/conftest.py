"""Fixtures shared by the unit and the integration tests.

The media samples (`media_samples`, `lying_samples`) are made once per session
by tests/integration/media_fixtures.py; registering it as a plugin here gives
every test those fixtures by name, without importing them into each module.
"""

pytest_plugins = ["tests.integration.media_fixtures"]
