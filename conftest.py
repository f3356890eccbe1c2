"""Fixtures shared by the core tests (tests/) and the plugins' tests (plugins/*/tests/)."""

pytest_plugins = ["tests.fixtures"]
