"""End-to-end tests; the shared fixture modules get pytest's assertion rewriting."""

import pytest

pytest.register_assert_rewrite("tests.support.verify_host", "tests.e2e.deployment_fixtures")
