"""The formation's commands as one call each into the supervisor: bring services up in the order
of need, restart them, wait until they are healthy.

`Formation` (formation.py) starts and stops single processes; this is what `up`, `restart` and
`wait` ask of it, with the run lock held while anything changes.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from services.shared.transport import TransportError, joins_processes, url_of

from .errors import BlogctlError
from .follow import log_size
from . import reconfigure, restarts
from .formation import (
    HEALTH_TIMEOUT, STOP_GRACE, DataDirError, FormationError, RunLock, ServiceFailed, describe_exit, proc_stat,
)
from .polling import wait_for
from .reconfigure import Change
from .render import console, text
from .restarts import Restarter, policies
from .runtime import PROCFILE, Runtime
from .steps import bring_up, recover, start_order


@dataclass(frozen=True)
class Brought:
    """What `Supervisor.up` did: who was running already, who it started, in which phases."""

    running: list[str]
    started: list[str]
    order: list[list[str]] = field(default_factory=list)
    offsets: dict[str, int] = field(default_factory=dict)  # each log's size before the start: where to stream from


class Supervisor:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def names(self, services: list[str] | None) -> list[str]:
        """`services` (every process of the formation when None), checked, each once."""
        names = services or self.rt.formation.names
        self.rt.formation.check(names)
        return list(dict.fromkeys(names))

    def up(self, services: list[str] | None = None, *, settings: Mapping[str, str] | None = None,
           timeout: float = HEALTH_TIMEOUT) -> Brought:
        """Start `services` (default: all) that are not running, the transport before its users, a phase
        at a time; `settings` (BLOG_BROKER_URL, BLOG_REPLICAS) shape the formation and are recorded
        for later commands."""
        rt = self.rt
        with rt.exclusive("up"):
            for setting, value in (settings or {}).items():
                if setting == "BLOG_BROKER_URL":
                    self._check_same_transport(value)
                rt.use(setting, value)
            if not joins_processes(rt.config):
                raise BlogctlError(f"{url_of(rt.config)} carries events only inside one process (it is for tests); "
                                   "a formation needs the HTTP bus (leave BLOG_BROKER_URL unset) or a broker such as "
                                   "amqp://")
            formation = rt.formation
            names = self.names(services)
            policies(rt.env, formation.names)  # a bad BLOG_RESTART* setting stops `up` before anything starts
            if strays := formation.strays():
                raise BlogctlError(f"{', '.join(strays)} still running but not part of this formation "
                                   f"({', '.join(formation.names)}) — stop the formation first (`blogctl down`)")
            recover(rt)
            running = [name for name in names if formation.state(name).running]
            missing = [name for name in names if name not in running]
            offsets = {name: log_size(formation.log_path(name)) for name in formation.names}
            if not missing:
                return Brought(running, [], offsets=offsets)
            order = start_order(missing)
            console.print(text(f"Start order: {self.order_text(order)}"), soft_wrap=True)
            rt.record()
            self._transport_reachable(timeout)
            bring_up(rt, missing, timeout)
            return Brought(running, missing, order, offsets)

    def order_text(self, order: list[list[str]]) -> str:
        """`bus → comments, query, moderation → posts`; on a broker it comes first, as what all need."""
        carrier = self.rt.inspection.describe()
        phases = [", ".join(phase) for phase in order]
        return " → ".join([carrier.name] + phases if carrier.process is None else phases)

    def _transport_reachable(self, timeout: float) -> None:
        """A transport outside the formation (a broker) answers before any service that uses it starts."""
        inspection = self.rt.inspection
        carrier = inspection.describe()
        if carrier.process is not None:
            return  # the formation's own process (the bus): started in the first phase
        problem: list[str] = []

        def answers() -> bool:
            try:
                inspection.backlog()
            except TransportError as exc:
                problem[:] = [str(exc)]
                return False
            return True

        if not wait_for(answers, timeout=timeout, interval=0.5):
            raise BlogctlError(f"{carrier.name} at {carrier.url} did not answer within {timeout:g}s ({problem[0]}) "
                               "— start it, or run on the HTTP bus (leave BLOG_BROKER_URL unset)")

    def _check_same_transport(self, broker: str) -> None:
        """`up --broker` onto a formation already running on another transport would split it in two."""
        rt = self.rt
        running = [s.name for s in rt.formation.states() if s.running]
        if running and rt.config.broker_url != broker:
            now = rt.inspection.describe()
            raise BlogctlError(f"{', '.join(running)} already running with events through {now.name} at {now.url} "
                               "— stop the formation first (`blogctl down`)")

    def restart(self, services: list[str] | None = None, *, timeout: float = HEALTH_TIMEOUT) -> dict[str, tuple]:
        """Stop `services` (default: every running one) and start them again in the order of need; each
        name -> (pid before or None, pid after)."""
        rt = self.rt
        formation = rt.formation
        with rt.exclusive("restart"):
            recover(rt)
            names = self.names(services) if services else [s.name for s in formation.states() if s.running]
            if not names:
                raise FormationError("nothing is running — start the services with `blogctl up`")
            before = {name: formation.stop(name).pid for name in reversed(names)}
            bring_up(rt, names, timeout)
            return {name: (before[name], formation.state(name).pid) for name in names}

    def wait(self, services: list[str] | None = None, *, timeout: float = HEALTH_TIMEOUT) -> dict[str, str]:
        """Poll until each of `services` (default: all) answers /health as itself; each that does not
        by `timeout` -> why (empty when all are healthy)."""
        names = self.names(services)
        pending = {name: "not checked" for name in names}

        def progress() -> bool:
            for name in list(pending):
                why = self._unhealthy(name)
                if why is None:
                    del pending[name]
                else:
                    pending[name] = why
            return not pending

        wait_for(progress, timeout=timeout, interval=0.1)
        return pending

    def _unhealthy(self, name: str) -> str | None:
        """Why `name` is not healthy now, or None when it is."""
        rt = self.rt
        state = rt.formation.state(name)
        if not state.running:
            return "not running" if state.state == "stopped" else "exited"
        try:
            return None if rt.is_healthy(name) else "not answering /health"
        except BlogctlError as exc:
            return str(exc)


@dataclass(frozen=True)
class Restarted:
    """One process restarted (or started) on purpose: its pid before (None: it was not running) and after (None: it
    did not start, `error` says why)."""

    name: str
    before: int | None
    after: int | None = None
    error: BlogctlError | None = None

    @property
    def pids(self) -> str:
        return f"pid {self.before} -> {self.after}" if self.before else f"pid {self.after}"


class Watcher:
    """Keeps the formation up by its restart policy (restarts.py), one `tick` at a time, and applies `blogctl
    reload` (reconfigure.py): what the foreground `up` and, after `up --detach`, `blogctl supervise` run.

    It acts only while holding the run lock, and looks again once it has it: a `blogctl kill` or `down`
    at work holds the lock until the pid file is gone, so what it stops on purpose is never restarted.
    """

    HEALTH_EVERY = 2.0  # seconds between two /health checks of the running processes

    def __init__(self, rt: Runtime, restarter: Restarter | None = None) -> None:
        self.rt = rt
        formation = rt.formation
        self.restarter = restarter or Restarter(policies(rt.env, formation.names))
        self.pids: dict[str, int | None] = {}
        for state in formation.states():
            self.pids[state.name] = state.pid  # one that exited already (between `up` and now) is handled at once
            if state.running:
                self.restarter.started(state.name)
        self.next_health = time.monotonic()  # the first tick checks: a process that hangs early is seen answering first
        self.unapplied: set[str] = set()  # processes a reload could not start: the next reload tries them again
        self.new_logs: dict[str, int] = {}  # processes a reload added -> their log's size before: where to print from

    @property
    def anything_running(self) -> bool:
        return any(pid is not None for pid in self.pids.values()) or any(
            track.due is not None for track in self.restarter.tracks.values())

    def tick(self) -> list[str]:
        """Look at every process once; restart what is due. Returns what happened, a line each."""
        notes: list[str] = []
        formation = self.rt.formation
        for state in formation.states():
            seen = self.pids.get(state.name)
            if state.running and state.pid != seen:  # started, by us or by `blogctl start`
                notes.append(f"{state.name} started (pid {state.pid})")
                self.pids[state.name] = state.pid
                self.restarter.started(state.name)
            elif not state.running and seen is not None:
                with self._locked() as locked:
                    if not locked:
                        continue  # another blogctl at work: look again next time
                    state = formation.state(state.name)
                    if state.state == "exited":
                        notes.append(self.restarter.exited(state.name, formation.exit_code(state.name)))
                    elif not state.running:
                        code = formation.exit_code(state.name)
                        how = describe_exit(code) if code is not None else "stopped"
                        notes.append(f"{state.name} {how} by blogctl; not restarted (`blogctl start {state.name}`)")
                        self.restarter.forget(state.name)
                    self.pids[state.name] = state.pid if state.running else None
        notes += self._restart_due()
        if time.monotonic() >= self.next_health:
            notes += self._check_health()
            self.next_health = time.monotonic() + self.HEALTH_EVERY
        if asked := reconfigure.requested(formation.run_dir):
            notes += self._answer(asked)
        if notes:
            restarts.save(self.rt.formation.run_dir, self.restarter.tracks)
        return notes

    def _answer(self, asked: list[str]) -> list[str]:
        """Reload for the `blogctl reload`s that asked, and tell them how it went."""
        try:
            lines, failed = self.reload()
            answer = {"lines": lines, "failed": failed, "error": None}
        except BlogctlError as exc:
            lines, answer = [f"reload refused: {exc}"], {"lines": [], "failed": [], "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - a reload that went wrong must not end what keeps the formation up
            why = f"{type(exc).__name__}: {exc}"
            lines, answer = [f"reload failed: {why}"], {"lines": [], "failed": [], "error": f"the reload failed ({why})"}
        reconfigure.reply(self.rt.formation.run_dir, asked, answer)
        return lines

    def reload(self) -> tuple[list[str], list[str]]:
        """Apply a changed Procfile or setting (`blogctl reload`): stop the processes gone from the formation,
        restart those whose command or settings changed, start the new ones; the others keep running. A line per
        process acted on and a summary, and the processes that did not start. BlogctlError, with nothing changed,
        for a setting that cannot be applied to a running formation."""
        old = self.rt
        new = old.reread()
        if why := reconfigure.unchangeable(old.config, new.config):
            raise BlogctlError(why)
        new.formation.inherit(old.formation)
        changes = reconfigure.plan(old.formation.names, reconfigure.running(old.formation),
                                   reconfigure.wanted(new.formation), retry=self.unapplied,
                                   counts=reconfigure.compared(old.dotenv, new.dotenv))
        policy_changed = self._policy_changes(old.env, new.env)
        lines = [f"restart policy: {', '.join(policy_changed)} changed; it applies from now"] if policy_changed else []
        stops = [change for change in changes if change.action == "stop"]
        if stops:
            with old.exclusive("reload"):
                for change in reversed(stops):
                    before = old.formation.stop(change.name)
                    self.pids.pop(change.name, None)
                    self.restarter.tracks.pop(change.name, None)
                    lines.append(f"stopped {change.name} (pid {before.pid}): {change.why}")
        self.rt = new
        self.restarter.policies = policies(new.env, new.formation.names)
        new.record()
        starts = {change.name: change for change in changes if change.action != "stop"}
        self.new_logs.update({name: log_size(new.formation.log_path(name)) for name, change in starts.items()
                              if change.action == "start"})
        failed = []
        for done in self.restart_each(starts):
            change = starts[done.name]
            self.unapplied.discard(done.name)
            if done.error is None:
                lines.append(f"{'restarted' if done.before else 'started'} {done.name} ({done.pids}): {change.why}")
                continue
            self.unapplied.add(done.name)
            failed.append(done.name)
            reason = done.error.reason + f" — see {new.formation.log_path(done.name)}" if isinstance(
                done.error, ServiceFailed) else str(done.error)
            lines.append(f"could not start {done.name} ({reason}): {change.why}; the next `blogctl reload` tries again")
        lines.append(self._summary(changes, failed, len(new.formation.names), policy=bool(policy_changed)))
        return lines, failed

    @staticmethod
    def _policy_changes(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
        return sorted(key for key in old.keys() | new.keys() if restarts.is_setting(key) and old.get(key) != new.get(key))

    @staticmethod
    def _summary(changes: list[Change], failed: list[str], processes: int, policy: bool) -> str:
        acted = {change.name for change in changes if change.action != "stop"}
        if not changes:
            return f"reload: {'no process changed' if policy else 'nothing changed'} ({processes} processes as they were)"
        counts = [(word, sum(1 for change in changes if change.action == action and change.name not in failed))
                  for action, word in (("restart", "restarted"), ("start", "started"), ("stop", "stopped"))]
        done = [f"{count} {word}" for word, count in counts if count] + (
            [f"{len(failed)} did not start"] if failed else [])
        return f"reload: {', '.join(done)}; {processes - len(acted)} left as they were"

    def restart_each(self, names: Iterable[str]) -> list[Restarted]:
        """Restart (or start) each of `names` on its own, in the order of need, so one that fails to start stays
        its own failure and the others run; each taken as restarted on purpose (no restart counted, none due)."""
        done = []
        for name in [name for phase in start_order(list(names)) for name in phase]:
            before = self.rt.formation.state(name)
            try:
                [(_, after)] = Supervisor(self.rt).restart([name]).values()
            except BlogctlError as exc:
                self.reloaded(name, None)  # a failed start is stopped again (bring_up)
                done.append(Restarted(name, before.pid if before.running else None, error=exc))
                continue
            self.reloaded(name, after)
            done.append(Restarted(name, before.pid if before.running else None, after))
        return done

    def reloaded(self, name: str, pid: int | None) -> None:
        """`name` was restarted on purpose (`up --reload`, `blogctl reload`): its new pid (None: it did not start),
        taken without a note; no restart counted, none due."""
        self.pids[name] = pid
        if pid is None:
            self.restarter.forget(name)
        else:
            self.restarter.started(name)

    def _restart_due(self) -> list[str]:
        notes = []
        for name in self.restarter.due():
            with self._locked() as locked:
                if not locked:
                    continue  # another blogctl at work: next time
                if self.rt.formation.state(name).state == "exited":
                    notes.append(self._start(name))
                else:
                    self.restarter.forget(name)  # started or stopped by a blogctl meanwhile
        return notes

    def _check_health(self) -> list[str]:
        notes = []
        for name, pid in self.pids.items():
            if pid is None or name not in self.rt.config.ports:
                continue
            if self.restarter.health(name, self.supervisor._unhealthy(name) is None):
                with self._locked() as locked:
                    if locked and self.rt.formation.state(name).pid == pid:
                        failures = self.restarter.policies[name].health_failures
                        self.rt.formation.stop(name)
                        self.restarter.track(name).last_exit = f"failed /health {failures} times in a row"
                        notes.append(f"{name} failed /health {failures} times in a row; " + self._start(name))
        return notes

    def _start(self, name: str) -> str:
        try:
            state = self.rt.formation.start(name)
        except BlogctlError as exc:
            self.restarter.track(name).gave_up = f"could not start again: {exc}"
            return f"{name} could not start again: {exc}"
        self.pids[name] = state.pid
        self.restarter.started(name, restart=True)
        return f"restarted {name} (pid {state.pid})"

    @property
    def supervisor(self) -> Supervisor:
        return Supervisor(self.rt)

    @contextmanager
    def _locked(self) -> Iterator[bool]:
        """The run lock if it is free now (True), else False at once."""
        lock = RunLock(self.rt.config.data_dir, "up (keeping the formation up)", wait=0)
        try:
            lock.__enter__()
        except DataDirError:
            raise
        except FormationError:
            yield False
            return
        try:
            yield True
        finally:
            lock.__exit__(None, None, None)


WATCHER_FILE = "supervise.json"  # who watches the formation (not a .pid file: it is no process of the Procfile)
HANDED_OPTIONS = "BLOGCTL_UP_OPTIONS"  # how `up --detach` hands its options to `blogctl supervise`


@dataclass(frozen=True)
class Watching:
    """The process that watches a formation (keeps it up, applies `blogctl reload`)."""

    pid: int
    command: str  # "up" (in the foreground) or "supervise" (after `up --detach`)


def watching(run_dir: Path) -> Watching | None:
    """Who watches the formation of `run_dir` now, or None."""
    try:
        saved = json.loads((run_dir / WATCHER_FILE).read_text())
        pid, ticks, command = saved["pid"], saved["start_ticks"], saved.get("command", "supervise")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    stat = proc_stat(pid)
    return Watching(pid, command) if stat is not None and stat[0] not in ("Z", "X") and stat[1] == ticks else None


def watch_from_here(run_dir: Path, command: str, pid: int | None = None) -> None:
    """Record `pid` (default: this process) as the formation's watcher."""
    pid = pid or os.getpid()
    (run_dir / WATCHER_FILE).write_text(json.dumps({"pid": pid, "start_ticks": proc_stat(pid)[1], "command": command}))


def stop_watching_from_here(run_dir: Path) -> None:
    """This process watches the formation no longer."""
    found = watching(run_dir)
    if found is None or found.pid == os.getpid():
        (run_dir / WATCHER_FILE).unlink(missing_ok=True)


class DetachedWatcher:
    """After `up --detach`, `blogctl supervise` runs `Watcher` in a session of its own, so the restart
    policy holds and `blogctl reload` is applied with no terminal open; `down` stops it, and it ends by
    itself once nothing runs.

    A separate small process rather than a daemon inside a service: the services stay plain Procfile
    commands, and the watcher's own crash leaves them running (`blogctl up --detach` starts it again).
    It is started with `up`'s own environment and options (handed over in HANDED_OPTIONS), so a reload
    works out each process's settings as the `up` would.
    """

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.run_dir = rt.config.run_dir

    def start(self) -> Watching:
        """Start the watcher unless one runs (a foreground `up` watches its formation itself); who watches."""
        if (found := watching(self.run_dir)) is not None:
            return found
        options = [] if self.rt.procfile == PROCFILE else ["--procfile", str(self.rt.procfile)]
        with open(self.run_dir / "supervise.log", "ab") as log:
            child = subprocess.Popen([sys.executable, "-m", "blogctl", *options, "supervise"],
                                     env={**os.environ, HANDED_OPTIONS: json.dumps(self.rt.overrides)},
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        watch_from_here(self.run_dir, "supervise", child.pid)
        return Watching(child.pid, "supervise")

    def stop(self) -> None:
        """Stop `blogctl supervise` (a foreground `up` is left alone: it ends once its services are stopped)."""
        found = watching(self.run_dir)
        if found is not None and found.command != "supervise":
            return
        if found is not None:
            os.kill(found.pid, signal.SIGTERM)
            wait_for(lambda: watching(self.run_dir) is None, timeout=STOP_GRACE)
        (self.run_dir / WATCHER_FILE).unlink(missing_ok=True)
