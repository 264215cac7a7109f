from __future__ import annotations

import pytest

from tests.helpers import Formation, broker_missing


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
    running = Formation(tmp_path, transport=transport)
    try:
        yield running
    finally:
        running.stop()
        running.remove_broker_objects()


@pytest.fixture
def say(capsys):
    """Print a line to the terminal even while pytest captures output: what a fault test injected and found."""
    def line(text: str) -> None:
        with capsys.disabled():
            print(f"\n    {text}", end="")
    return line
