"""Fixtures for the local stack: Azurite, the local Key Vault and Autopilot servers, the durable engine."""

pytest_plugins = [
    "tests.fixtures.azurite",
    "tests.fixtures.autopilot",
    "tests.fixtures.keyvault",
    "tests.fixtures.durable",
]
