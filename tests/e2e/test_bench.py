"""`blogctl bench --quick`: every scenario runs against a fresh formation and nothing is lost."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import BROKER_URL, nginx_missing, on_both_transports

pytestmark = pytest.mark.slow


@on_both_transports
def test_quick_bench_runs_every_scenario_and_loses_nothing(tmp_path, transport):
    output = tmp_path / "bench.json"
    broker = ["--broker", BROKER_URL] if transport == "rabbitmq" else []
    done = subprocess.run(
        [sys.executable, "-m", "blogctl", "bench", "--quick", "--json", "--output", str(output), *broker],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={k: v for k, v in os.environ.items() if k != "BLOG_DATABASE_URL"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    printed = json.loads(done.stdout)
    assert printed == json.loads(output.read_text())
    # The gateway rows need nginx and PostgreSQL: without a database they are skipped, saying why.
    assert [scenario for scenario, why in printed["skipped"] if why] == ["gateway"]
    assert printed["transport"] == transport
    assert printed["lost_nothing"] is True and all(held for _, held, _ in printed["checks"])
    scenarios = {figure["scenario"] for figure in printed["figures"]}
    assert scenarios == {"bare", "publish", "end to end", "hops", "tails", "durability", "inline", "tracing", "read",
                         "rebuild", "memory"}
    assert all(figure["value"] > 0 for figure in printed["figures"])
    # Write-to-view hop by hop: Posts' request first, then Query's apply, then the client shown the post.
    hops = [f["name"] for f in printed["figures"] if f["scenario"] == "hops" and f["name"].endswith(": starts at")]
    assert hops[0] == "posts: POST /posts: starts at" and hops[-1] == "client: is shown the post by Query: starts at"
    assert "query: process PostCreated: starts at" in hops
    # What a write costs each process, against the bare endpoint's CPU per request.
    costs = {f["name"]: f for f in printed["figures"] if f["name"].startswith("POST /posts: CPU per write")}
    assert "POST /posts: CPU per write, posts" in costs and all(f["ratio"] > 0 for f in costs.values())
    delivered = next(f for f in printed["figures"] if f["name"].startswith("delivered to"))
    assert delivered["ratio"] > 0 and printed["machine"]["cpus"] >= 1


def test_quick_gateway_rows_measure_one_and_two_posts_replicas_and_lose_nothing(tmp_path, postgres_url):
    if why := nginx_missing():
        pytest.skip(why)
    output = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "blogctl", "bench", "--quick", "--only", "gateway", "--json", "--output", str(output),
         "--database", postgres_url],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    printed = json.loads(done.stdout)
    assert printed["lost_nothing"] is True and printed["skipped"] == []
    assert any(what.startswith("gateway: every POST acknowledged") and held for what, held, _ in printed["checks"])
    rows = {f["name"]: f for f in printed["figures"] if f["scenario"] == "gateway"}
    for label in ("SQLite, 1 Posts", "PostgreSQL, 1 Posts replica", "PostgreSQL, 2 Posts replicas"):
        row = rows[f"POST /posts through the gateway, {label}, 8 clients"]
        assert row["value"] > 0 and row["ratio"] > 0 and row["ratio_of"] == "bare req/s"
    assert rows["2 Posts replicas / 1 on PostgreSQL (req/s)"]["value"] > 0
