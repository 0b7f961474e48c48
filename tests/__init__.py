"""The test suite. Its helper modules report failed asserts like tests do."""

import pytest

pytest.register_assert_rewrite(
    "tests.browser",
    "tests.examples",
    "tests.support",
    "tests.integration.connectors.brokers",
)
