"""`blogctl bench --quick`: every scenario runs against a fresh formation and nothing is lost."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import BROKER_URL, on_both_transports

pytestmark = pytest.mark.slow


@on_both_transports
def test_quick_bench_runs_every_scenario_and_loses_nothing(tmp_path, transport):
    output = tmp_path / "bench.json"
    broker = ["--broker", BROKER_URL] if transport == "rabbitmq" else []
    done = subprocess.run(
        [sys.executable, "-m", "blogctl", "bench", "--quick", "--json", "--output", str(output), *broker],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    printed = json.loads(done.stdout)
    assert printed == json.loads(output.read_text())
    assert printed["transport"] == transport
    assert printed["lost_nothing"] is True and all(held for _, held, _ in printed["checks"])
    scenarios = {figure["scenario"] for figure in printed["figures"]}
    assert scenarios == {"bare", "publish", "end to end", "tails", "durability", "inline", "tracing", "read", "rebuild",
                         "memory"}
    assert all(figure["value"] > 0 for figure in printed["figures"])
    delivered = next(f for f in printed["figures"] if f["name"].startswith("delivered to"))
    assert delivered["ratio"] > 0 and printed["machine"]["cpus"] >= 1
