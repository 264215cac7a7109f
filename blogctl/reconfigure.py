"""`blogctl reload`: apply a changed Procfile or `.env` to the running formation, restarting only what changed.

What a process should run is its `Spec`: its command (from the Procfile) and the environment it would be started
with. The process watching the formation (`blogctl up` in the foreground, or `blogctl supervise` after
`up --detach`) works that out again when asked, as a `blogctl up` with the same options started now would: its own
environment (the shell `up` ran in), `.env` read again from the directory `up` ran in, `up`'s options, the settings
recorded for the formation, and the Procfile read again. It compares each process's spec with what that process
was started with (its pid file keeps the command and a digest of each variable, not the values), and `plan` says
what to do: stop the processes gone from the formation, restart those whose spec changed, start the new ones
(a replica added, a Procfile line added); the others keep running, same pid. `Watcher.reload` (supervisor.py) acts.

Which variables count for which process (`reads`):
- blogctl's restart policy (`BLOG_RESTART*`, `BLOG_HEALTH_FAILURES`): for none; the watcher applies it from then on;
- the gateway's (`BLOG_GATEWAY_PORT`, `BLOG_GATEWAY`): for the gateway alone;
- a service's own settings (its declaration's model, `BLOG_MODERATION_REJECT`): for that service's processes alone;
- any other: for every process, since each reads the whole formation's table (ports, `BLOG_REPLICAS`, the secret).
Of the environment, only what a reload can change is compared (`compared`): the variables `.env` sets, and the
system's settings (`BLOG_*`, `OTEL_*`).

`blogctl reload` asks through the run directory: it makes `reload-ID.request` and waits for `reload-ID.json`, which
the watcher writes at its next look (every 0.1 to 0.2 s) once the reload is done.
"""
from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from services.shared.config import Config, service_of, settings_variable
from services.table import SERVICE_TABLE

from . import gateway, restarts
from .formation import Formation, fingerprint
from .polling import wait_for


@dataclass(frozen=True)
class Spec:
    """What a process runs: its command, and a digest of each variable of its environment (None: not recorded)."""

    command: str
    env: Mapping[str, str] | None


@dataclass(frozen=True)
class Change:
    name: str
    action: str  # "stop", "restart" or "start"
    why: str


# Each service's own settings (the fields of its declaration's model) -> that service: only its processes read them.
OWN_SETTINGS = {settings_variable(service.name, field): service.name
                for service in SERVICE_TABLE if service.settings for field in service.settings.model_fields}
GATEWAY_SETTINGS = ("BLOG_GATEWAY", "BLOG_GATEWAY_PORT")


def reads(process: str, variable: str) -> bool:
    """Whether a change of `variable` concerns `process` (a service, a replica such as `query.2`, or another entry)."""
    if restarts.is_setting(variable):
        return False
    if variable in GATEWAY_SETTINGS:
        return process == gateway.PROCESS
    owner = OWN_SETTINGS.get(variable)
    return owner is None or service_of(process) == owner


def running(formation: Formation) -> dict[str, Spec]:
    """Each running process of `formation` -> what it was started with, from its pid file."""
    specs = {}
    for state in formation.states():
        if state.running and (record := formation.record(state.name)) is not None:
            specs[state.name] = Spec(record.command, record.env)
    return specs


def wanted(formation: Formation) -> dict[str, Spec]:
    """Each process of `formation` -> what it would be started with now."""
    return {name: Spec(formation.commands[name], fingerprint(formation.child_env(name))) for name in formation.names}


SETTING_PREFIXES = ("BLOG_", "OTEL_")  # the system's own settings


def compared(*dotenvs: Iterable[str]) -> Callable[[str], bool]:
    """Which variables a reload compares: those `.env` sets (in any of `dotenvs`: as read before, and now) and the
    system's settings (`BLOG_*`, `OTEL_*`). Any other comes from the shell of the command that started the process
    (a `blogctl start` in another terminal passes on that terminal's), and no reload can change it."""
    keys = set().union(*dotenvs)
    return lambda variable: variable in keys or variable.startswith(SETTING_PREFIXES)


def _everything(variable: str) -> bool:
    return True


def difference(name: str, was: Spec, now: Spec, counts: Callable[[str], bool] = _everything) -> str | None:
    """Why `name`, started as `was`, needs a restart to run as `now`, in words; None when nothing it reads changed
    among the variables that `counts`."""
    parts = ["its command"] if was.command != now.command else []
    if was.env is None:
        parts.append("its settings (not recorded when it started)")
    else:
        now_env = now.env or {}
        variables = sorted(key for key in was.env.keys() | now_env.keys()
                           if counts(key) and reads(name, key) and was.env.get(key) != now_env.get(key))
        if variables:
            parts.append(", ".join(variables[:3]) + (f" and {len(variables) - 3} more" if len(variables) > 3 else ""))
    return f"{' and '.join(parts)} changed" if parts else None


def plan(before: Iterable[str], now_running: Mapping[str, Spec], specs: Mapping[str, Spec], *,
         retry: Iterable[str] = (), counts: Callable[[str], bool] = _everything) -> list[Change]:
    """What takes the formation from `before` (its processes' names), of which `now_running` run as recorded, to
    `specs` (each process's spec now): stop what is gone, restart what changed, start what is new, and start again
    the `retry` ones (a reload that could not start them). A process of `before` that is not running (stopped with
    `blogctl kill`, or not started: `up SERVICE...`) stays as it is. Only the variables that `counts` are compared."""
    before, retry = set(before), set(retry)
    changes = [Change(name, "stop", "no longer in the formation") for name in now_running if name not in specs]
    for name, spec in specs.items():
        if name in now_running:
            if why := difference(name, now_running[name], spec, counts):
                changes.append(Change(name, "restart", why))
        elif name not in before:
            changes.append(Change(name, "start", "new in the formation"))
        elif name in retry:
            changes.append(Change(name, "start", "it did not start at the last reload"))
    return changes


def unchangeable(old: Config, new: Config) -> str | None:
    """Why `new` cannot be applied to a running formation of `old` (its data would be elsewhere), or None."""
    for variable, was, now in (("BLOG_DATA_DIR", old.data_dir, new.data_dir),
                               ("BLOG_BROKER_URL", old.broker_url, new.broker_url),
                               ("BLOG_BROKER_NAMESPACE", old.broker_namespace, new.broker_namespace),
                               ("BLOG_DATABASE_URL", old.database_url, new.database_url)):
        if was != now:
            return (f"{variable} changed: a reload keeps each service's data where it is — to move the formation, "
                    "stop it (`blogctl down`) and start it again (`blogctl up`)")
    return None


# Asking the watcher, and its answer.

def ask(run_dir: Path, *, alive: Callable[[], bool], timeout: float) -> dict | None:
    """Ask the formation's watcher for a reload and wait for its answer ({"lines", "failed", "error"}); None when it
    ended, or did not answer within `timeout`."""
    ident = uuid.uuid4().hex
    request, answer = run_dir / f"reload-{ident}.request", run_dir / f"reload-{ident}.json"
    request.touch()
    try:
        wait_for(lambda: answer.exists() or not alive(), timeout=timeout, interval=0.1)
        try:
            return json.loads(answer.read_text())
        except (OSError, ValueError):
            return None
    finally:
        request.unlink(missing_ok=True)
        answer.unlink(missing_ok=True)


def requested(run_dir: Path) -> list[str]:
    """The reloads asked for and not answered yet (their ids)."""
    return sorted(path.name.removeprefix("reload-").removesuffix(".request") for path in run_dir.glob("reload-*.request"))


def reply(run_dir: Path, idents: Iterable[str], answer: dict) -> None:
    """Answer each reload asked for in `idents` whose asker still waits."""
    for ident in idents:
        if not (run_dir / f"reload-{ident}.request").exists():
            continue  # it gave up waiting
        tmp = run_dir / f".reload-{ident}.tmp"
        tmp.write_text(json.dumps(answer))
        os.replace(tmp, run_dir / f"reload-{ident}.json")
