"""`blogctl bench --only`: which scenarios run, in the order a full run takes them, with what they need."""
import pytest

from blogctl.bench.scenarios import SCENARIOS, chosen
from blogctl.errors import BlogctlError


def test_nothing_named_runs_every_scenario_in_order():
    assert chosen() == list(SCENARIOS)


def test_named_scenarios_run_in_the_full_runs_order_with_what_they_need():
    assert chosen(["rebuild", "publish"]) == ["publish", "rebuild"]
    assert chosen(["durability"]) == ["publish", "end-to-end", "durability"]
    assert chosen(["inline"]) == ["end-to-end", "inline"]


def test_an_unknown_scenario_is_refused_naming_the_known_ones():
    with pytest.raises(BlogctlError) as info:
        chosen(["publish", "everything"])
    assert "everything" in str(info.value) and "rebuild" in str(info.value)


def test_the_gateway_rows_run_last_and_alone_when_named():
    assert chosen()[-1] == "gateway"
    assert chosen(["gateway"]) == ["gateway"]


def test_the_gateway_rows_say_why_they_cannot_run(monkeypatch):
    from blogctl import gateway
    from blogctl.bench import front

    monkeypatch.setattr(gateway, "nginx_missing", lambda: None)
    assert "--database postgresql://" in front.why_not(None) and "BLOG_DATABASE_URL" in front.why_not("")
    assert front.why_not("postgresql://postgres@127.0.0.1/blog") is None
    monkeypatch.setattr(gateway, "nginx_missing", lambda: "nginx is not installed: ...")
    assert front.why_not("postgresql://postgres@127.0.0.1/blog") == "nginx is not installed: ..."


def test_a_skipped_scenario_is_reported_with_its_reason_and_no_figure():
    from types import SimpleNamespace

    from blogctl.bench import front
    from blogctl.bench.report import Report

    report = Report(quick=True, transport="http", machine={})
    front.measure(SimpleNamespace(report=report), database_url=None, formation=None)
    assert report.figures == [] and report.lost_nothing
    assert [scenario for scenario, _ in report.skipped] == ["gateway"]


def test_cpu_is_read_for_a_whole_process_group_and_only_it():
    import subprocess
    import sys
    import time

    from blogctl.bench.harness import cpu_seconds

    # A group of two processes, each burning about 0.3 s of CPU: the group's figure counts both.
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\nimport sys; sys.stdin.read()"
    leader = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE, process_group=0)
    member = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE, process_group=leader.pid)
    try:
        for _ in range(200):  # until both burnt their share (then they wait on stdin)
            if cpu_seconds(leader.pid) >= 0.6:
                break
            time.sleep(0.05)
        assert 0.6 <= cpu_seconds(leader.pid) < 1.5
    finally:
        for process in (member, leader):
            process.stdin.close()
            process.wait(10)
    assert cpu_seconds(leader.pid) == 0.0  # gone: nothing is counted
