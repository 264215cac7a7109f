from __future__ import annotations

import pytest

from tests.helpers import Formation


@pytest.fixture
def formation(tmp_path):
    """All four services as real processes on free ports; every one is stopped after the test."""
    running = Formation(tmp_path)
    try:
        yield running
    finally:
        running.stop()
