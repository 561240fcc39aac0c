"""Security fixtures. Registers the session-wide secrets audit (tests/security/secrets_audit.py): from the
start of collection it records every API key and webhook secret issued in this process, and after the
last test it fails the run if any of them appears in full in the database, the application logs or the
logs of the processes the tests started."""

from __future__ import annotations

import pytest

from tests.security.secrets_audit import SecretsAudit

PLUGIN_NAME = "taskengine-secrets-audit"


def pytest_configure(config: pytest.Config) -> None:
    # A plugin object, not hooks of this conftest: conftest hooks only see tests under this folder, the
    # audit must see the last test of the whole run.
    if config.pluginmanager.get_plugin(PLUGIN_NAME) is None:
        audit = SecretsAudit()
        audit.install()
        config.pluginmanager.register(audit, PLUGIN_NAME)
        config.add_cleanup(audit.uninstall)


@pytest.fixture
def secrets_audit(request: pytest.FixtureRequest) -> SecretsAudit:
    audit = request.config.pluginmanager.get_plugin(PLUGIN_NAME)
    assert isinstance(audit, SecretsAudit)
    return audit
