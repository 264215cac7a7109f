from __future__ import annotations

import os

import pytest

from tests.helpers import RunningBlog, broker_missing, drop_writer_schemas, fresh_postgres_database, postgres_missing


@pytest.fixture
def transport(request) -> str:
    """The transport a test runs on: "http" unless parametrised (see `on_both_transports`)."""
    name = getattr(request, "param", "http")
    if name == "rabbitmq" and (reason := broker_missing()):
        pytest.skip(reason)
    return name


@pytest.fixture
def formation(tmp_path, transport):
    """The services as real processes on free ports; every one is stopped after the test."""
    running = RunningBlog(tmp_path, transport=transport)
    try:
        yield running
    finally:
        running.stop()
        running.remove_broker_objects()


@pytest.fixture(scope="session")
def postgres_database():
    """A database of this test run's own on the PostgreSQL server (`blog_test_<random>`), dropped at the end."""
    if reason := postgres_missing():
        pytest.skip(reason)
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def postgres_url(postgres_database):
    """BLOG_DATABASE_URL for one test: the run's database, with no writer schema left from a test before."""
    drop_writer_schemas(postgres_database)
    return postgres_database


@pytest.fixture
def say(capsys):
    """Print a line to the terminal even while pytest captures output: what a fault test injected and found."""
    def line(text: str) -> None:
        with capsys.disabled():
            print(f"\n    {text}", end="")
    return line


# CI sets this: on the machine CI runs on, the broker, browser and tmpfs tests can all run, so a
# skip there means a test did not run, and "each runs in CI" would quietly stop being true.
FAIL_ON_SKIP = "BLOG_TEST_FAIL_ON_SKIP"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get(FAIL_ON_SKIP) == "1" and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped with {FAIL_ON_SKIP}=1 (every test must run here): {reason}"
