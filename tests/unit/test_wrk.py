"""The bench reads wrk's report, and writes the Lua script that makes its POSTs."""
from __future__ import annotations

import pytest

import re

from blogctl.bench import wrk
from blogctl.bench.report import median_of
from blogctl.errors import BlogctlError

REPORT = """Running 5s test @ http://127.0.0.1:4000/posts
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    26.11ms   16.00ms 157.97ms   78.99%
    Req/Sec   645.60    120.39     0.89k    70.00%
  Latency Distribution
     50%   22.61ms
     75%   32.37ms
     90%   45.33ms
     99%  1.02s
  3211 requests in 5.00s, 715.36KB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:    641.88
Transfer/sec:    143.12KB
"""


def test_the_rate_percentiles_and_errors_are_read_from_wrks_report():
    run = wrk.parse(REPORT)
    assert run.rate == 641.88
    assert run.p50 == pytest.approx(0.02261)
    assert run.p99 == pytest.approx(1.02)
    assert run.errors == 7


def test_a_report_without_a_latency_distribution_is_an_error_not_a_crash():
    with pytest.raises(BlogctlError, match="latency distribution"):
        wrk.parse("unable to connect to 127.0.0.1:4000 Connection refused\n")


def test_the_script_posts_the_body_with_a_fresh_id_and_the_headers():
    lua = wrk.script('{"id": "{id}", "t": "a \\"quoted\\" title"}', {"Content-Type": "application/json"})
    assert '["Content-Type"] = "application/json"' in lua
    assert r'"{\"id\": \"{id}\", \"t\": \"a \\\"quoted\\\" title\"}"' in lua
    assert 'wrk.format("POST", nil, headers, body)' in lua


def test_a_median_of_runs_comes_with_their_range():
    assert median_of([3.0, 1.0, 2.0]) == (2.0, "1.0-3.0")
    assert median_of([4.0, 1.0]) == (2.5, "1.0-4.0")
    assert median_of([5.0]) == (5.0, "one run")


def test_every_script_has_its_own_id_prefix_so_runs_do_not_repeat_ids():
    """wrk's Lua does not seed its random numbers: a prefix drawn there repeated every run's ids."""
    prefixes = {re.search(r'local prefix = "([0-9a-f]{8})"', wrk.script("{id}", {})).group(1) for _ in range(5)}
    assert len(prefixes) == 5
