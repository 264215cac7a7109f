"""`blogctl logs` searching the services' log files: --grep, --since, --trace, several services, --json."""
from __future__ import annotations

import json
from datetime import datetime, timedelta

from blogctl.follow import LogFilter, written_at

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def stamp(ago: timedelta) -> str:
    return f"{datetime.now() - ago:%Y-%m-%d %H:%M:%S},123"


def write_logs(blog) -> None:
    old, new = stamp(timedelta(hours=2)), stamp(timedelta(seconds=30))
    for line in (f"{old} posts INFO old write of post p-1", f"{new} posts WARNING retrying p-2",
                 json.dumps({"time": new, "service": "posts", "message": "created p-3", "trace_id": TRACE}),
                 f"{new} posts INFO published p-3 trace_id={TRACE}"):  # the text format's way
        blog.formation._log("posts", line)
    for line in (json.dumps({"time": new, "service": "query", "message": "applied p-3", "trace_id": TRACE}),
                 json.dumps({"time": new, "service": "query", "message": "applied p-4", "trace_id": "0" * 32}),
                 "Traceback (most recent call last):"):  # no time of its own: its predecessor's
        blog.formation._log("query", line)


def test_grep_finds_matching_lines_in_every_log(cli, blog):
    write_logs(blog)
    found = cli.json("logs", "--grep", "p-[34]")
    assert json.loads(found["posts"][0])["message"] == "created p-3"
    assert [line.split(" ", 4)[-1] for line in found["posts"][1:]] == [f"published p-3 trace_id={TRACE}"]
    assert [json.loads(line)["message"] for line in found["query"]] == ["applied p-3", "applied p-4"]
    last = cli.json("logs", "posts", "--grep", "p-[12]", "--lines", "1")["posts"]  # the last match only
    assert [line.split(" ", 4)[-1] for line in last] == ["retrying p-2"]


def test_trace_finds_one_traces_lines_across_services(cli, blog):
    write_logs(blog)
    found = cli.json("logs", "--trace", TRACE)
    assert found["posts"][1].endswith(f"published p-3 trace_id={TRACE}")
    assert {name: [json.loads(line)["message"] for line in lines[:1]] for name, lines in found.items() if lines} == {
        "posts": ["created p-3"], "query": ["applied p-3"]}
    out = cli.ok("logs", "posts", "query", "--trace", TRACE).stdout
    assert "created p-3" in out and "applied p-3" in out and "p-4" not in out


def test_since_keeps_recent_lines_and_lines_without_a_time_follow_their_predecessor(cli, blog):
    write_logs(blog)
    found = cli.json("logs", "posts", "query", "--since", "5m")
    assert [line.split(" ", 4)[-1] for line in found["posts"][:1]] == ["retrying p-2"]
    assert "old write" not in json.dumps(found)
    assert found["query"][-1] == "Traceback (most recent call last):"
    assert cli.json("logs", "posts", "--since", "3h")["posts"][0].endswith("old write of post p-1")


def test_bad_filters_are_one_line(cli, blog):
    write_logs(blog)
    assert "'5 minutes' is not an age such as 90s, 5m, 2h or 1d" in cli("logs", "--since", "5 minutes").stderr
    assert "'(' is not a regular expression" in cli("logs", "--grep", "(").stderr


def test_a_filter_knows_when_a_line_was_written():
    assert written_at("2026-12-03 06:15:44,123 posts INFO x") == datetime(2026, 12, 3, 6, 15, 44)
    assert written_at("--- blogctl 2026-12-03 06:15:44: starting posts ---") == datetime(2026, 12, 3, 6, 15, 44)
    assert written_at('{"time": "2026-12-03 06:15:44,123"}') == datetime(2026, 12, 3, 6, 15, 44)
    assert written_at("Serving on http://127.0.0.1:4000") is None
    assert not LogFilter().active and LogFilter(trace=TRACE).active
