"""Stats (tests/examples/stats), started from one more Procfile line as blogctl starts every
service: its own process, serving its declaration."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from honcho.environ import parse_procfile

from tests.helpers import ROOT, free_port, wait_until

pytestmark = pytest.mark.slow

LINE = "stats: exec python -m tests.examples.stats"


def test_stats_runs_from_its_procfile_line(tmp_path):
    command = parse_procfile((ROOT / "Procfile").read_text() + LINE + "\n").processes["stats"]
    port = free_port()
    env = {**os.environ, "BLOG_DATA_DIR": str(tmp_path), "BLOG_STATS_PORT": str(port),
           "BLOG_BROKER_URL": "memory://stats-example", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    process = subprocess.Popen(["/bin/sh", "-c", command], cwd=ROOT, env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        health = wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/health", timeout=2).json(),
                            timeout=30, message="Stats to answer /health")
        assert (health["service"], health["status"], health["hours"]) == ("stats", "ok", 0)
        assert requests.get(f"http://127.0.0.1:{port}/stats", timeout=2).json() == {}
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        _, errors = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGTERM, errors
