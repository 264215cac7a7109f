"""The real supervisor with stand-in processes (`sleep`): pid files, process groups, stale pids, failures."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from blogctl.formation import Formation, FormationError, ServiceFailed, child_environment
from tests.helpers import free_port, process_group_alive, wait_until


@pytest.fixture
def make_formation(tmp_path):
    made: list[Formation] = []

    def make(procfile: str, **kwargs) -> Formation:
        (tmp_path / "Procfile").write_text(procfile)
        kwargs.setdefault("env", dict(os.environ))
        formation = Formation(tmp_path / "Procfile", run_dir=tmp_path / "run", **kwargs)
        made.append(formation)
        return formation

    yield make
    for formation in made:  # never leak a process, even when a test fails
        for name in formation.names:
            formation.stop(name, signal.SIGKILL, grace=1)


def test_start_records_a_pid_and_stop_takes_the_whole_group_down(make_formation):
    # The shell leaves a grandchild in the group: stopping must take it too.
    formation = make_formation("a: sleep 60 & exec sleep 60\nb: exec sleep 60\n")
    state = formation.start("a")
    assert state.running and json.loads(formation.pid_path("a").read_text())["pid"] == state.pid
    assert formation.state("b").state == "stopped"
    before = formation.stop("a")
    assert before.pid == state.pid and not process_group_alive(state.pid)
    assert formation.state("a").state == "stopped" and not formation.pid_path("a").exists()
    assert "stopped by blogctl with SIGTERM" in formation.tail("a")[-1]


def test_a_process_ignoring_sigterm_is_killed_after_the_grace_period(make_formation):
    formation = make_formation("stubborn: trap '' TERM; sleep 60 & wait\n")
    pid = formation.start("stubborn").pid
    wait_until(lambda: "sleep" in os.popen(f"ps -o comm= -g {pid}").read(), timeout=5)
    formation.stop("stubborn", grace=0.3)
    assert not process_group_alive(pid)


def test_a_dead_process_or_a_reused_pid_is_not_running(make_formation):
    formation = make_formation("a: exec sleep 60\n")
    formation.run_dir.mkdir()
    formation.pid_path("a").write_text(json.dumps(
        {"pid": os.getpid(), "start_ticks": "1", "started_at": 0.0, "command": "x"}))  # our pid, not our start time
    assert formation.state("a").state == "exited"
    formation.stop("a")  # must not signal this test process
    state = formation.start("a")
    os.killpg(state.pid, signal.SIGKILL)
    wait_until(lambda: formation.state("a").state == "exited", timeout=5)
    assert formation.exit_code("a") == -signal.SIGKILL


def test_a_process_that_exits_is_named_with_its_log(make_formation):
    formation = make_formation("good: exec sleep 60\nbad: echo cannot listen >&2; exit 3\n")
    formation.start("good")
    formation.start("bad")
    with pytest.raises(ServiceFailed) as failure:
        formation.wait_healthy(["good", "bad"], lambda name: False, timeout=5)
    assert failure.value.name == "bad"
    assert "exited with code 3" in str(failure.value) and "cannot listen" in failure.value.tail


def test_a_silent_process_times_out_by_name(make_formation):
    formation = make_formation("slow: exec sleep 60\n")
    formation.start("slow")
    with pytest.raises(ServiceFailed, match="slow failed to start: it did not answer /health within 0.2s"):
        formation.wait_healthy(["slow"], lambda name: False, timeout=0.2)


def test_a_busy_port_is_refused_before_starting(make_formation):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        formation = make_formation("posts: exec sleep 60\n", addresses={"posts": ("127.0.0.1", port)})
        with pytest.raises(FormationError, match=f"posts could not listen on {port}: in use by a process blogctl did not start"):
            formation.start("posts")
    assert formation.state("posts").state == "stopped"


def test_unknown_names_and_a_missing_procfile_are_clear(make_formation, tmp_path):
    formation = make_formation("a: exec sleep 60\n")
    with pytest.raises(FormationError, match="nope not in"):
        formation.start("nope")
    with pytest.raises(FormationError, match="cannot read the Procfile"):
        Formation(tmp_path / "missing", run_dir=tmp_path / "run", env={})


def test_children_get_dotenv_the_overrides_and_this_python_first_on_path(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("FROM_DOTENV=1\nBLOG_POSTS_PORT=1111\n")
    monkeypatch.setenv("BLOG_POSTS_PORT", "2222")
    env = child_environment(tmp_path, {"BLOG_QUERY_PORT": str(free_port())})
    assert env["FROM_DOTENV"] == "1"
    assert env["BLOG_POSTS_PORT"] == "1111"  # .env wins over the OS environment, as under honcho
    assert env["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)


def test_process_group_alive_sees_a_group_die_after_it_was_seen_alive():
    child = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        assert process_group_alive(child.pid)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(5)
    assert not process_group_alive(child.pid)  # asked again about the same group: not an earlier answer


def test_a_process_gets_its_own_environment_and_runs_under_its_own_prefix(make_formation):
    formation = make_formation('a: echo "data=$DATA via=$VIA"; exec sleep 60\nb: echo "data=$DATA"; exec sleep 60\n',
                               env={**os.environ, "DATA": "shared"}, service_env={"a": {"DATA": "its own"}},
                               prefix={"a": ["env", "VIA=prefix"]})  # as `ip netns exec HOST` runs a service on a test host
    pids = {name: formation.start(name).pid for name in ("a", "b")}
    wait_until(lambda: "data=its own via=prefix" in formation.tail("a"), timeout=5)
    wait_until(lambda: "data=shared" in formation.tail("b"), timeout=5)
    for name, pid in pids.items():
        formation.stop(name)
        assert not process_group_alive(pid)
