"""The restart policy: which process that exited (or stopped answering /health) is started again, and when.

Settings, read from the environment blogctl already gathered (OS environment, `.env`, options):
- `BLOG_RESTART` = `on-failure` (default: a non-zero exit or a signal), `always`, or `no`;
  `BLOG_<NAME>_RESTART` for one service (`BLOG_QUERY_2_RESTART` for a replica, else its service's).
- `BLOG_RESTART_MAX` (default 5): restarts in a row before giving up; a process that stayed up
  `STEADY` seconds starts a new row.
- `BLOG_RESTART_BACKOFF` (default 0.5 s): the first delay, doubled at each restart in a row, at most `MAX_DELAY`.
- `BLOG_HEALTH_FAILURES` (default 3, 0: never): /health failing this many checks in a row restarts a
  process that has answered since its start, or that has been up `START_PERIOD` seconds without answering
  (hung while starting: as docker's health check counts failures after its start period).

A process blogctl stops on purpose (`kill`, `down`, the demos) loses its pid file first, so it is
"stopped", not "exited", and nothing here sees it. This module decides; `Watcher` in supervisor.py acts.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.shared.config import service_of

from .errors import BlogctlError
from .formation import HEALTH_TIMEOUT, describe_exit

MODES = ("on-failure", "always", "no")
MAX_DELAY = 30.0  # seconds: the longest wait between two restarts
STEADY = 60.0  # seconds up after which a process's restarts in a row start again from zero
START_PERIOD = HEALTH_TIMEOUT  # seconds a process may take to answer /health first, as `up` waits for it


@dataclass(frozen=True)
class RestartPolicy:
    mode: str = "on-failure"
    max_restarts: int = 5
    backoff: float = 0.5
    health_failures: int = 3

    def wants(self, code: int | None) -> bool:
        """Whether an exit with `code` (None: unknown, the process was not our child) calls for a restart."""
        return self.mode == "always" or (self.mode == "on-failure" and code != 0)

    def delay(self, in_a_row: int) -> float:
        return min(self.backoff * 2 ** in_a_row, MAX_DELAY)


def _setting(env: Mapping[str, str], name: str, parse: Callable[[str], object], default: object, what: str):
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        parsed = parse(value)
    except ValueError:
        parsed = None
    if parsed is None:
        raise BlogctlError(f"bad configuration: {name}={value!r} is not {what}")
    return parsed


def _mode(value: str) -> str | None:
    return value if value in MODES else None


def _count(value: str) -> int | None:
    return number if (number := int(value)) >= 0 else None


def _seconds(value: str) -> float | None:
    return number if (number := float(value)) > 0 else None


def policies(env: Mapping[str, str], names: list[str]) -> dict[str, RestartPolicy]:
    """Each of `names`' restart policy from the `BLOG_RESTART*` settings; BlogctlError names a bad one."""
    modes = f"one of {', '.join(MODES)}"
    default = _setting(env, "BLOG_RESTART", _mode, "on-failure", modes)
    common = dict(
        max_restarts=_setting(env, "BLOG_RESTART_MAX", _count, 5, "a whole number, 0 or more"),
        backoff=_setting(env, "BLOG_RESTART_BACKOFF", _seconds, 0.5, "a number of seconds above 0"),
        health_failures=_setting(env, "BLOG_HEALTH_FAILURES", _count, 3, "a whole number, 0 or more"),
    )

    def mode(name: str) -> str:
        own = f"BLOG_{name.upper().replace('.', '_')}_RESTART"
        of_service = f"BLOG_{service_of(name).upper()}_RESTART"
        return _setting(env, own, _mode, None, modes) or _setting(env, of_service, _mode, default, modes)

    return {name: RestartPolicy(mode(name), **common) for name in names}


COMMON_SETTINGS = ("BLOG_RESTART", "BLOG_RESTART_MAX", "BLOG_RESTART_BACKOFF", "BLOG_HEALTH_FAILURES")


def is_setting(variable: str) -> bool:
    """Whether `variable` is one of the settings above: read by blogctl, by no service."""
    return variable in COMMON_SETTINGS or (variable.startswith("BLOG_") and variable.endswith("_RESTART"))


@dataclass
class Track:
    """One process's restarts, as `status` shows them."""

    restarts: int = 0  # in all, since the formation came up
    in_a_row: int = 0
    last_exit: str | None = None  # "exited with code 3", "was killed by SIGKILL", "failed /health 3 times"
    gave_up: str | None = None  # why it is left stopped
    due: float | None = None  # when to start it again (clock time)
    up_since: float | None = None
    health_failures: int = 0
    answered: bool = False  # /health answered since this start: from then on, failures count

    def shown(self) -> dict:
        return {"restarts": self.restarts, "last_exit": self.last_exit, "gave_up": self.gave_up}


@dataclass
class Restarter:
    """Decides what to restart and when, from what it is told; the clock is injected (a fake in tests)."""

    policies: dict[str, RestartPolicy]
    clock: Callable[[], float] = time.monotonic
    tracks: dict[str, Track] = field(default_factory=dict)

    def track(self, name: str) -> Track:
        return self.tracks.setdefault(name, Track())

    def started(self, name: str, *, restart: bool = False) -> None:
        """`name` runs from now on; `restart`: started again by the policy, counted."""
        track = self.track(name)
        track.due, track.up_since, track.health_failures, track.answered = None, self.clock(), 0, False
        if restart:
            track.restarts += 1
            track.in_a_row += 1
        else:
            track.gave_up = None

    def exited(self, name: str, code: int | None, *, reason: str | None = None) -> str:
        """`name` stopped without being asked to: schedule its restart, or give up. Returns what was decided,
        in words, for the log."""
        track, policy = self.track(name), self.policies.get(name, RestartPolicy(mode="no"))
        now = self.clock()
        track.last_exit = reason or (describe_exit(code) if code is not None else "exited (exit code unknown)")
        if track.up_since is not None and now - track.up_since >= STEADY:
            track.in_a_row = 0
        track.up_since = None
        if not policy.wants(code) and reason is None:
            track.gave_up = f"{track.last_exit}; restart policy {policy.mode}"
            return f"{name} {track.last_exit}; not restarted (restart policy {policy.mode})"
        if track.in_a_row >= policy.max_restarts:
            track.gave_up = f"{track.last_exit}; gave up after {track.in_a_row} restarts in a row"
            return f"{name} {track.last_exit}; gave up after {track.in_a_row} restarts in a row (BLOG_RESTART_MAX)"
        delay = policy.delay(track.in_a_row)
        track.due, track.gave_up = now + delay, None
        return f"{name} {track.last_exit}; restarting in {delay:g}s (restart {track.in_a_row + 1} of at most " \
               f"{policy.max_restarts} in a row)"

    def due(self) -> list[str]:
        """The processes whose restart is due now (each stays due until `started` or `forget`)."""
        now = self.clock()
        return [name for name, track in self.tracks.items() if track.due is not None and track.due <= now]

    def health(self, name: str, answered: bool) -> bool:
        """One /health check of a running process; True when it has now failed too often in a row."""
        track, policy = self.track(name), self.policies.get(name, RestartPolicy(mode="no"))
        if answered:
            track.answered, track.health_failures = True, 0
            return False
        if policy.health_failures == 0 or policy.mode == "no":
            return False
        if not track.answered and (track.up_since is None or self.clock() - track.up_since < START_PERIOD):
            return False  # still starting
        track.health_failures += 1
        return track.health_failures >= policy.health_failures

    def forget(self, name: str) -> None:
        """Started or stopped on purpose: no restart pending."""
        if name in self.tracks:
            self.tracks[name].due = None


RESTARTS_FILE = "restarts.json"  # in the run directory: what `status` shows of each process's restarts


def save(run_dir: Path, tracks: Mapping[str, Track]) -> None:
    path = run_dir / RESTARTS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({name: track.shown() for name, track in tracks.items()}))
    os.replace(tmp, path)


def saved(run_dir: Path) -> dict[str, dict]:
    """Each process's restarts as last saved: {"restarts", "last_exit", "gave_up"}; {} when none were."""
    try:
        shown = json.loads((run_dir / RESTARTS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return shown if isinstance(shown, dict) else {}
