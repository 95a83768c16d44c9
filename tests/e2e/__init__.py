"""End-to-end tests; the shared known-state host module gets pytest's assertion rewriting."""

import pytest

pytest.register_assert_rewrite("tests.e2e.verify_host")
