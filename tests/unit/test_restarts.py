"""The restart policy's decisions, on a fake clock (as honcho's tests feed a FakeClock)."""
from __future__ import annotations

import signal

import pytest

from blogctl.errors import BlogctlError
from blogctl.restarts import MAX_DELAY, START_PERIOD, STEADY, Restarter, RestartPolicy, policies


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


def restarter(clock, **policy) -> Restarter:
    r = Restarter({"posts": RestartPolicy(**policy)}, clock=clock)
    r.started("posts")
    return r


def test_a_crash_is_restarted_after_a_backoff_that_doubles(clock):
    r = restarter(clock, backoff=0.5)
    delays = []
    for _ in range(4):
        assert "restarting in" in r.exited("posts", -signal.SIGKILL)
        start = clock.now
        while not r.due():
            clock.advance(0.125)  # exact in binary: the delays below are its multiples
        delays.append(round(clock.now - start, 2))
        r.started("posts", restart=True)
    assert delays == [0.5, 1.0, 2.0, 4.0]
    assert r.tracks["posts"].shown() == {"restarts": 4, "last_exit": "was killed by SIGKILL", "gave_up": None}


def test_the_delay_is_capped():
    assert RestartPolicy(backoff=1).delay(20) == MAX_DELAY


def test_a_flapping_process_is_given_up_after_the_maximum_and_says_why(clock):
    r = restarter(clock, max_restarts=2, backoff=0.1)
    for _ in range(2):
        r.exited("posts", 3)
        clock.advance(1)
        assert r.due() == ["posts"]
        r.started("posts", restart=True)
    note = r.exited("posts", 3)
    clock.advance(60)
    assert r.due() == []
    assert note == "posts exited with code 3; gave up after 2 restarts in a row (BLOG_RESTART_MAX)"
    assert r.tracks["posts"].gave_up == "exited with code 3; gave up after 2 restarts in a row"


def test_a_process_that_stayed_up_starts_a_new_row(clock):
    r = restarter(clock, max_restarts=1, backoff=0.1)
    r.exited("posts", 1)
    clock.advance(1)
    r.due()
    r.started("posts", restart=True)
    clock.advance(STEADY)
    assert "restarting in 0.1s" in r.exited("posts", 1)  # not given up: the last run was steady


@pytest.mark.parametrize("mode, code, restarted", [
    ("on-failure", 0, False), ("on-failure", 1, True), ("on-failure", None, True),
    ("always", 0, True), ("no", -9, False),
])
def test_the_mode_decides_which_exits_are_restarted(clock, mode, code, restarted):
    r = restarter(clock, mode=mode)
    r.exited("posts", code)
    clock.advance(1)
    assert (r.due() == ["posts"]) is restarted


def test_health_failures_count_only_in_a_row_and_after_a_first_answer(clock):
    r = restarter(clock, health_failures=3)
    assert not any(r.health("posts", False) for _ in range(5))  # still starting: never answered yet
    r.health("posts", True)
    assert [r.health("posts", False) for _ in range(2)] == [False, False]
    r.health("posts", True)  # an answer resets the count
    assert [r.health("posts", False) for _ in range(3)] == [False, False, True]


def test_a_process_that_never_answers_fails_its_health_checks_after_the_start_period(clock):
    r = restarter(clock, health_failures=2)
    clock.advance(START_PERIOD - 1)
    assert not any(r.health("posts", False) for _ in range(3))  # may still be starting
    clock.advance(1)
    assert [r.health("posts", False) for _ in range(2)] == [False, True]  # hung while starting


def test_a_deliberate_stop_cancels_a_pending_restart(clock):
    r = restarter(clock)
    r.exited("posts", 1)
    r.forget("posts")
    clock.advance(60)
    assert r.due() == []


def test_settings_per_service_and_replica_and_bad_values_are_one_line():
    env = {"BLOG_RESTART": "always", "BLOG_MODERATION_RESTART": "no", "BLOG_QUERY_2_RESTART": "on-failure",
           "BLOG_RESTART_MAX": "7", "BLOG_RESTART_BACKOFF": "0.2", "BLOG_HEALTH_FAILURES": "0"}
    got = policies(env, ["posts", "moderation", "query", "query.2", "query.3"])
    assert {name: p.mode for name, p in got.items()} == {
        "posts": "always", "moderation": "no", "query": "always", "query.2": "on-failure", "query.3": "always"}
    assert got["posts"] == RestartPolicy("always", max_restarts=7, backoff=0.2, health_failures=0)
    assert policies({}, ["posts"])["posts"] == RestartPolicy()
    with pytest.raises(BlogctlError, match=r"BLOG_RESTART='sometimes' is not one of on-failure, always, no"):
        policies({"BLOG_RESTART": "sometimes"}, ["posts"])
    with pytest.raises(BlogctlError, match=r"BLOG_RESTART_MAX='-1' is not a whole number"):
        policies({"BLOG_RESTART_MAX": "-1"}, ["posts"])
