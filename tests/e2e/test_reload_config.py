"""`blogctl reload` through real processes: a changed `.env` setting or Procfile line restarts only the processes it
reaches (their pids change, the others' do not), new Procfile lines start, removed ones stop, and no acknowledged
write is lost; for `up --detach` on both transports, with replicas, and for `up` in the foreground."""
from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
import requests

from tests.e2e.test_cli import blogctl, foreground_up, output_of  # noqa: F401 - the fixture: a blogctl on free ports that cleans up
from tests.e2e.test_orchestrator import on_rabbitmq  # noqa: F401 - the fixture: a broker namespace of the test's own
from tests.helpers import BROKER_URL, ROOT, free_port, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def project(blogctl, tmp_path) -> Path:
    """A project directory of the test's own, where blogctl runs: the Procfile and a `.env`, to edit."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(ROOT / "Procfile", root / "Procfile")
    (root / ".env").write_text("PYTHONUNBUFFERED=1\nBLOG_MODERATION_REJECT=orange\n")
    blogctl.cwd = root
    return root


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def changed(before: dict[str, int], after: dict[str, int]) -> set[str]:
    return {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}


@pytest.mark.parametrize("transport", ["http", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def test_reload_restarts_only_what_a_changed_setting_or_procfile_line_reaches(blogctl, project, transport, request):
    options = ["--procfile", str(project / "Procfile")]
    blogctl.env["BLOG_QUERY_2_PORT"] = str(query_2 := free_port())
    up = [*options, "up", "--detach", "--replicas", "query=2"]
    if transport == "rabbitmq":
        request.getfixturevalue("on_rabbitmq")
        up += ["--broker", BROKER_URL]
    assert "apply a changed Procfile or .env with `blogctl reload`" in blogctl(*up).stdout
    first = blogctl.json(*options, "post", "create", "written before the reloads")  # acknowledged: 201
    pids = blogctl.recorded_pids()
    processes = len(pids)

    assert blogctl.json(*options, "reload") == {
        "lines": [f"reload: nothing changed ({processes} processes as they were)"], "failed": []}
    assert blogctl.recorded_pids() == pids

    # A setting of Moderation's own: Moderation alone restarts, and decides by it.
    edit(project / ".env", "BLOG_MODERATION_REJECT=orange", "BLOG_MODERATION_REJECT=banana")
    out = blogctl(*options, "reload").stdout
    after = blogctl.recorded_pids()
    assert changed(pids, after) == {"moderation"}
    assert out.splitlines() == [
        f"restarted moderation (pid {pids['moderation']} -> {after['moderation']}): BLOG_MODERATION_REJECT changed",
        f"reload: 1 restarted; {processes - 1} left as they were"]
    [comment] = blogctl.json(*options, "comment", "create", first["id"], "bananas again")
    wait_until(lambda: blogctl.json(*options, "query")[first["id"]]["comments"] == [{**comment, "status": "rejected"}],
               timeout=20, message="the comment rejected by the new setting")

    # Query's Procfile line: both of its processes restart, nothing else.
    edit(project / "Procfile", "query: exec python -m services.query", "query: exec python -u -m services.query")
    out = blogctl(*options, "reload").stdout
    final = blogctl.recorded_pids()
    assert changed(after, final) == {"query", "query.2"}
    assert f"restarted query.2 (pid {after['query.2']} -> {final['query.2']}): its command changed" in out
    assert out.splitlines()[-1] == f"reload: 2 restarted; {processes - 2} left as they were"

    second = blogctl.json(*options, "post", "create", "written after the reloads")
    for port in (blogctl.ports["query"], query_2):  # no acknowledged write lost, in either replica of the view
        wait_until(lambda: {first["id"], second["id"]} <= set(requests.get(f"http://127.0.0.1:{port}/posts",
                                                                             timeout=5).json()),
                   timeout=20, message=f"both posts in the view on port {port}")
    rows = blogctl.json(*options, "status")["services"]
    assert {row["service"]: (row["pid"], row["process"], row["healthy"], row["restarts"]) for row in rows} == {
        name: (pid, "running", True, 0) for name, pid in final.items()}
    blogctl(*options, "down")
    blogctl.assert_nothing_left()


def test_reload_under_a_foreground_up_starts_and_stops_procfile_lines_and_refuses_to_move_data(blogctl, project):
    options = ["--procfile", str(project / "Procfile")]
    procfile = project / "Procfile"
    with foreground_up(blogctl, *options, "up") as up:
        pids = blogctl.recorded_pids()
        procfile.write_text(procfile.read_text() + "extra: exec sleep 120\n")
        out = blogctl(*options, "reload").stdout
        extra = blogctl.recorded_pids()["extra"]
        blogctl.seen_pids.add(extra)
        assert out.splitlines() == [f"started extra (pid {extra}): new in the formation",
                                    f"reload: 1 started; {len(pids)} left as they were"]
        elsewhere = "BLOG_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/elsewhere"
        edit(project / ".env", "BLOG_MODERATION_REJECT=orange", elsewhere)
        error = blogctl(*options, "reload", expect=1).stderr
        assert error.startswith("error: nothing reloaded: BLOG_DATABASE_URL changed: a reload keeps each service's data")
        assert blogctl.recorded_pids() == {**pids, "extra": extra}
        edit(project / ".env", elsewhere, "BLOG_MODERATION_REJECT=orange")
        edit(procfile, "extra: exec sleep 120\n", "")
        assert blogctl(*options, "reload").stdout.splitlines()[0] == (
            f"stopped extra (pid {extra}): no longer in the formation")
        assert blogctl.recorded_pids() == pids
        wait_until(lambda: "stopped extra" in "".join(up.output), timeout=10, message="the reload's lines in up's")
        os.kill(up.pid, signal.SIGINT)
        up.wait(30)
    out = output_of(up)
    assert f"started extra (pid {extra}): new in the formation" in out and "reload refused: BLOG_DATABASE_URL" in out
    assert "extra started" not in out and "restarted extra" not in out  # taken as started on purpose
    error = blogctl(*options, "reload", expect=1).stderr
    assert error.strip() == f"error: no formation is up in {blogctl.data_dir} — start one with `blogctl up`"
    blogctl.assert_nothing_left()
