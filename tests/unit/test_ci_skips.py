"""CI's rule that a skipped test is a failed one (`BLOG_TEST_FAIL_ON_SKIP=1`, set by `.ci/run`)."""
from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

SKIPPING_TESTS = """
import pytest

@pytest.fixture
def browser():
    pytest.skip("no browser here")

def test_needs_a_broker():
    pytest.skip("no broker here")

def test_needs_a_browser(browser):
    pass

def test_runs():
    pass
"""


@pytest.fixture
def suite(pytester):
    pytester.makeconftest("from tests.conftest import pytest_runtest_makereport  # noqa: F401")
    pytester.makepyfile(SKIPPING_TESTS)
    return pytester


def test_with_fail_on_skip_every_skip_fails_and_says_why(suite, monkeypatch):
    monkeypatch.setenv("BLOG_TEST_FAIL_ON_SKIP", "1")
    result = suite.runpytest_inprocess("-ra")
    result.assert_outcomes(passed=1, failed=1, errors=1)  # a skip in a fixture fails the setup
    for reason in ("no broker here", "no browser here"):
        result.stdout.fnmatch_lines([f"skipped with BLOG_TEST_FAIL_ON_SKIP=1 (every test must run here)*{reason}"])
    assert result.ret != 0


def test_without_it_a_skip_is_a_skip(suite, monkeypatch):
    monkeypatch.delenv("BLOG_TEST_FAIL_ON_SKIP", raising=False)
    result = suite.runpytest_inprocess()
    result.assert_outcomes(passed=1, skipped=2)
    assert result.ret == 0
