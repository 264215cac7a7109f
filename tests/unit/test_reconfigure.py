"""What `blogctl reload` does to each process: the plan from what runs (as recorded) to what the Procfile and the
settings say now, with hand-made specs."""
from __future__ import annotations

from pathlib import Path

from blogctl.formation import fingerprint
from blogctl.reconfigure import Change, Spec, ask, compared, plan, reads, reply, requested, unchangeable
from services.table import load

COMMANDS = {"bus": "exec python -m services.bus", "posts": "exec python -m services.posts",
            "query": "exec python -m services.query", "query.2": "exec python -m services.query",
            "moderation": "exec python -m services.moderation"}
ENV = {"PATH": "/usr/bin", "BLOG_POSTS_PORT": "4000", "BLOG_MODERATION_REJECT": "orange", "BLOG_RESTART": "always"}


def specs(commands=None, env=None, **per_process) -> dict[str, Spec]:
    """Each process's spec: the shared environment, and `per_process` (query_2=...) on top of its own."""
    return {name: Spec(command, fingerprint({**ENV, **(env or {}), **per_process.get(name.replace(".", "_"), {})}))
            for name, command in (commands or COMMANDS).items()}


def test_nothing_changed_is_an_empty_plan():
    assert plan(COMMANDS, specs(), specs()) == []


def test_a_services_own_setting_restarts_that_services_processes_only():
    now = specs(env={"BLOG_MODERATION_REJECT": "banana"})
    assert plan(COMMANDS, specs(), now) == [Change("moderation", "restart", "BLOG_MODERATION_REJECT changed")]


def test_a_setting_every_process_reads_restarts_every_process():
    now = specs(env={"BLOG_POSTS_PORT": "4100"})  # the bus delivers to Posts there; each reads the port table
    assert [(c.name, c.action, c.why) for c in plan(COMMANDS, specs(), now)] == [
        (name, "restart", "BLOG_POSTS_PORT changed") for name in COMMANDS]


def test_the_restart_policy_restarts_nothing():
    assert plan(COMMANDS, specs(), specs(env={"BLOG_RESTART": "no", "BLOG_QUERY_RESTART": "no"})) == []
    assert not reads("query", "BLOG_QUERY_RESTART") and not reads("posts", "BLOG_HEALTH_FAILURES")


def test_the_gateways_settings_are_the_gateways_alone():
    assert reads("gateway", "BLOG_GATEWAY_PORT") and not reads("query", "BLOG_GATEWAY_PORT")
    assert reads("moderation", "BLOG_MODERATION_REJECT") and not reads("gateway", "BLOG_MODERATION_REJECT")
    assert reads("query.2", "BLOG_SECRET") and reads("stats", "BLOG_STATS_ANYTHING")  # an entry outside the table


def test_only_what_a_reload_can_change_is_compared():
    # Started by a `blogctl start` in another terminal: its shell's own variables differ, and count for nothing.
    other_shell = specs(env={"WINDOWID": "7", "BLOG_LOG_FORMAT": "json"})
    counts = compared({"PYTHONUNBUFFERED", "FOO"}, {"PYTHONUNBUFFERED"})  # .env as read before, and now
    assert [c.why for c in plan(COMMANDS, other_shell, specs(), counts=counts)] == ["BLOG_LOG_FORMAT changed"] * 5
    removed = specs(env={"FOO": "1"})  # a line taken out of .env: back to the shell's value (none here)
    assert [c.why for c in plan(COMMANDS, removed, specs(), counts=counts)] == ["FOO changed"] * 5
    assert counts("OTEL_SDK_DISABLED") and not counts("PATH")


def test_a_changed_procfile_line_restarts_every_replica_of_it():
    commands = {**COMMANDS, "query": "exec python -u -m services.query", "query.2": "exec python -u -m services.query"}
    assert plan(COMMANDS, specs(), specs(commands)) == [
        Change("query", "restart", "its command changed"), Change("query.2", "restart", "its command changed")]


def test_a_replica_of_its_own_and_several_variables_in_one_line():
    now = specs(query_2={"A": "1", "B": "2", "C": "3", "D": "4"})
    assert plan(COMMANDS, specs(), now) == [Change("query.2", "restart", "A, B, C and 1 more changed")]
    both = specs({**COMMANDS, "query.2": "other"}, query_2={"A": "1"})
    assert plan(COMMANDS, specs(), both) == [Change("query.2", "restart", "its command and A changed")]


def test_new_processes_start_removed_ones_stop_and_stopped_ones_stay_stopped():
    running = {name: spec for name, spec in specs().items() if name != "posts"}  # posts stopped with `blogctl kill`
    commands = {**{name: c for name, c in COMMANDS.items() if name != "query.2"}, "query.3": "x", "extra": "sleep 60"}
    assert plan(COMMANDS, running, specs(commands)) == [
        Change("query.2", "stop", "no longer in the formation"),
        Change("query.3", "start", "new in the formation"), Change("extra", "start", "new in the formation")]
    assert plan(COMMANDS, running, specs(), retry=["posts"]) == [
        Change("posts", "start", "it did not start at the last reload")]


def test_a_process_started_without_a_record_of_its_settings_is_restarted():
    running = {**specs(), "posts": Spec(COMMANDS["posts"], None)}  # adopted, or started by an older blogctl
    assert plan(COMMANDS, running, specs()) == [
        Change("posts", "restart", "its settings (not recorded when it started) changed")]


def test_the_data_and_the_transport_cannot_move_under_a_running_formation():
    config = load({"BLOG_DATA_DIR": "/data"})
    assert unchangeable(config, load({"BLOG_DATA_DIR": "/data", "BLOG_MODERATION_REJECT": "x"})) is None
    for change in ({"BLOG_DATA_DIR": "/elsewhere"}, {"BLOG_BROKER_URL": "amqp://h//"},
                   {"BLOG_DATABASE_URL": "postgresql://h/db"}):
        why = unchangeable(config, load({"BLOG_DATA_DIR": "/data", **change}))
        assert why.startswith(f"{next(iter(change))} changed: a reload keeps each service's data where it is")


def test_a_reload_is_asked_for_and_answered_through_the_run_directory(tmp_path: Path):
    assert requested(tmp_path) == []
    answered = {}

    def watcher_alive() -> bool:  # the watcher's look, as its tick makes it
        if asked := requested(tmp_path):
            reply(tmp_path, asked, {"lines": ["reload: nothing changed"], "failed": [], "error": None})
            answered["ids"] = asked
        return True

    assert ask(tmp_path, alive=watcher_alive, timeout=5)["lines"] == ["reload: nothing changed"]
    assert len(answered["ids"]) == 1 and list(tmp_path.iterdir()) == []  # nothing left behind
    assert ask(tmp_path, alive=lambda: False, timeout=5) is None  # the watcher is gone: no answer
    assert ask(tmp_path, alive=lambda: True, timeout=0.2) is None  # nobody answers in time
    assert list(tmp_path.iterdir()) == []
