"""Commands that run the formation: up, down, status, logs, kill, start, restart, wait, reload."""
from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from datetime import datetime, timedelta
from typing import Annotated

import typer
from rich.text import Text

from services.shared.transport import REGISTRY, TransportError

from . import gateway, reconfigure, render
from .errors import BlogctlError
from .follow import LogFilter, LogFollower, log_size, search
from .formation import HEALTH_TIMEOUT
from .options import JsonOption, Signal, TimeoutOption, process_argument
from .reload import Reloader
from .render import console, text
from .runtime import Runtime, runtime
from .steps import bring_up, recover, service_rows, show_services
from .supervisor import (
    HANDED_OPTIONS, DetachedWatcher, Supervisor, Watcher, stop_watching_from_here, watch_from_here, watching,
)


def up(
    ctx: typer.Context,
    services: Annotated[list[str] | None, process_argument(
        "Start only these services (or replicas); the others can be started later with `blogctl start`.",
        required=False, metavar="SERVICE")] = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Return once all are healthy; leave them running.")] = False,
    broker: Annotated[str | None, typer.Option(
        "--broker", metavar="URL",
        help="Carry events through the broker at URL instead of the HTTP bus, which is then not started "
        f"(default: BLOG_BROKER_URL; the schemes known: {', '.join(REGISTRY)}).",
    )] = None,
    database: Annotated[str | None, typer.Option(
        "--database", metavar="URL",
        help="Keep the writers' tables (Posts, Comments, Moderation) in this PostgreSQL database, a schema each, "
        "so they can have replicas (default: BLOG_DATABASE_URL; unset: a SQLite file each).",
    )] = None,
    replicas: Annotated[list[str] | None, typer.Option(
        "--replicas", metavar="SERVICE=N",
        help="Run N processes of a service that can have replicas, e.g. query=2: query and query.2, each with its "
        "own port (100 above the last), database and subscription (default: BLOG_REPLICAS); posts, comments and "
        "moderation too with --database. Repeatable.",
    )] = None,
    gateway_on: Annotated[bool, typer.Option(
        "--gateway",
        help="Put nginx in front, on one port (BLOG_GATEWAY_PORT, default 4080), routing as the course's ingress "
        "does to every replica (default: BLOG_GATEWAY).",
    )] = False,
    reload: Annotated[bool, typer.Option(
        "--reload",
        help="In the foreground, watch the services' Python files and restart the services whose code changed "
        "(all of them for services/shared/ or services/table.py), keeping their data.",
    )] = False,
    timeout: TimeoutOption = HEALTH_TIMEOUT,
) -> None:
    """Start the services in the Procfile (or those named), in the order of need, and wait until each answers /health.

    The order comes from the service table, and `up` prints it: the bus (or the broker, which must answer) first,
    then the services that handle events, then those that only emit them.
    In the foreground it then streams the services' logs, honcho-style; Ctrl-C stops them all.
    A service that dies (or is killed) does not take the others down.
    """
    if reload and detach:
        raise typer.BadParameter("--reload watches from the foreground; leave out --detach", param_hint="--reload")
    rt = runtime(ctx)
    reloader = Reloader() if reload else None  # watching before anything starts: a problem stops `up` at once
    settings = {"BLOG_BROKER_URL": broker} if broker is not None else {}
    if database is not None:
        settings["BLOG_DATABASE_URL"] = database
    if replicas:
        settings["BLOG_REPLICAS"] = ",".join(replicas)
    if gateway_on:
        if why := gateway.nginx_missing():
            raise BlogctlError(f"cannot start the gateway: {why}")
        settings["BLOG_GATEWAY"] = "1"
    brought = Supervisor(rt).up(services, settings=settings, timeout=timeout)
    if detach:
        watcher = (rt.wiring.detach or (lambda rt: DetachedWatcher(rt).start()))(rt)
    if not brought.started:
        console.print("The formation is already up; nothing changed." if not services else
                      text(f"Already running: {', '.join(brought.running)}; nothing changed."), soft_wrap=True)
        show_services(rt)
        if reloader:
            raise BlogctlError("nothing to reload from here: the formation was started by another `blogctl up` "
                               "(stop it with `blogctl down`, then `blogctl up --reload`)")
        return
    if brought.running:
        console.print(text(f"Already running: {', '.join(brought.running)}. Started: {', '.join(brought.started)}."),
                      soft_wrap=True)
    show_services(rt)
    console.print(render.mode_line(rt.config, rt.inspection.describe()), soft_wrap=True)
    console.print(Text.assemble("Blog page: ", (rt.client.page_url(), "bold")), soft_wrap=True)
    if rt.config.gateway:
        front = f"http://{rt.formation.addresses[gateway.PROCESS][0]}:{rt.config.gateway_port}/"
        console.print(Text.assemble("Gateway (every route, one port): ", (front, "bold")), soft_wrap=True)
    if detach:
        console.print(f"Running in the background, kept up by `blogctl {watcher.command}` (pid {watcher.pid}); logs in "
                      f"{rt.formation.run_dir}. Stop with `blogctl down`; apply a changed Procfile or .env with "
                      "`blogctl reload`.", markup=False, soft_wrap=True)
        return
    # The lock is let go while the logs stream, so `blogctl down` or `kill` from elsewhere can act.
    console.print("Streaming logs; press Ctrl-C to stop every service.", style="dim")
    _serve_in_foreground(rt, brought.offsets, reloader)


def _serve_in_foreground(rt: Runtime, offsets: dict[str, int], reloader: Reloader | None = None) -> None:
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    follower = LogFollower(rt.formation, offsets)
    watcher = Watcher(rt)  # its runtime is the formation as last reloaded (`blogctl reload`)
    DetachedWatcher(rt).stop()  # left by an `up --detach` of some of the services: one watcher at a time
    watch_from_here(rt.config.run_dir, "up")
    if reloader:
        console.print(text(f"Reloading the services whose code changes under {reloader.directory}"), soft_wrap=True)
    try:
        try:
            while True:  # until Ctrl-C or SIGTERM, or until every service has stopped
                follower.print_new()
                notes = watcher.tick() + (reloader.tick(watcher) if reloader else [])  # the reloader's look is the pause
                for name, offset in watcher.new_logs.items():  # processes a reload added
                    follower.follow(name, offset)
                watcher.new_logs.clear()
                if notes:
                    follower.print_new()
                for note in notes:
                    console.print(text(note, "bold yellow"), soft_wrap=True)
                if not watcher.anything_running:  # `blogctl down` from elsewhere, say
                    console.print("Every service has stopped; `blogctl up` starts them again.", style="bold")
                    return
                if not reloader:
                    time.sleep(0.1)
        except KeyboardInterrupt:
            console.print("Stopping the formation…", style="bold")
        # Stopping runs with Ctrl-C ignored, so a second press cannot leave a service behind.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        rt = watcher.rt
        with rt.exclusive("up"):
            for name in reversed(rt.formation.names):
                before = rt.formation.stop(name)
                if before.running:
                    console.print(text(f"stopped {name} (pid {before.pid})"))
            rt.forget()
        follower.print_new()
    finally:
        stop_watching_from_here(watcher.rt.config.run_dir)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def down(ctx: typer.Context) -> None:
    """Stop every service (SIGTERM, then SIGKILL if one lingers) and verify each is gone."""
    rt = runtime(ctx)
    with rt.exclusive("down"):
        formation = rt.formation
        DetachedWatcher(rt).stop()  # first: nothing restarts what down stops (it would wait for the lock anyway)
        recover(rt)
        everything = [*formation.names, *formation.strays()]
        stopped = [before for name in reversed(everything) if (before := formation.stop(name)).running]
        rt.forget()
        left = [listener for name in formation.names if name in rt.config.ports
                and (listener := rt.listener(name)).ours]
    for before in reversed(stopped):
        console.print(text(f"stopped {before.name} (pid {before.pid})"))
    if left:
        pids = " ".join(f"-{listener.pid}" for listener in left)
        raise BlogctlError(f"still running: {', '.join(listener.holder for listener in left)} — stop them with "
                           f"`kill -TERM -- {pids}`")
    if not stopped:
        console.print("Nothing was running; nothing changed.")


def status(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Each service's port, pid, health and uptime, and what still waits for each consumer.

    On the HTTP bus: each subscriber's cursor and lag; on a broker: each consumer's queue depth.
    """
    rt = runtime(ctx)
    rows = service_rows(rt)
    carrier = rt.inspection.describe()
    backlog, error = None, None
    try:
        backlog = rt.inspection.backlog()
    except TransportError as exc:
        error = str(exc)
    if json_output:
        render.print_json({
            "mode": _mode(rt), "data_dir": str(rt.config.data_dir), "services": rows, carrier.backlog_of: backlog,
            "transport": {"name": carrier.name, "url": carrier.url, "log": carrier.log, "error": error},
        })
        return
    console.print(render.services_table(rows))
    console.print(render.mode_line(rt.config, carrier), soft_wrap=True)
    console.print(text(f"Data directory: {rt.config.data_dir}"), soft_wrap=True)
    untracked = [f"{row['service']} (pid {row['pid']})" for row in rows if row["process"] == "untracked"]
    if untracked:
        console.print(text(f"{', '.join(untracked)} running without a pid file (the run state under "
                           f"{rt.config.run_dir} was deleted): `blogctl down` stops them", "yellow"), soft_wrap=True)
    if not any(row["process"] in ("running", "untracked") for row in rows):
        console.print("Nothing is running; start the services with `blogctl up`.", markup=False)
    if backlog is not None:
        console.print(render.backlog_table(carrier, backlog))
    else:
        console.print(Text.assemble(f"{render.backlog_title(carrier)}: unknown — ", render.safe(error)),
                      style="yellow", soft_wrap=True)


def _mode(rt: Runtime) -> dict:
    return {"transport": rt.inspection.describe().kind, "signed": bool(rt.config.secret)}


def logs(
    ctx: typer.Context,
    services: Annotated[list[str] | None, process_argument(
        "Services (or replicas); all of them if left out.", required=False, metavar="SERVICE")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until Ctrl-C.")] = False,
    lines: Annotated[int | None, typer.Option(
        "--lines", "-n", min=0, show_default=False,
        help="How many recent lines to show per service (default: 20; with a filter, every match).")] = None,
    grep: Annotated[str | None, typer.Option("--grep", "-g", metavar="RE",
                                             help="Only lines matching this regular expression.")] = None,
    since: Annotated[str | None, typer.Option(
        "--since", metavar="AGE", help="Only lines written in the last AGE: 90s, 5m, 2h, 1d.")] = None,
    trace: Annotated[str | None, typer.Option(
        "--trace", metavar="TRACE_ID", help="Only the lines of this trace (a traced write's `traceparent`, or `blogctl trace`).")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Show the services' logs (kept in the data directory's run/ folder), searched with --grep, --since, --trace."""
    rt = runtime(ctx)
    formation = rt.formation
    names = Supervisor(rt).names(services)
    present = [name for name in names if formation.log_path(name).exists()]
    if not present:
        raise BlogctlError(
            f"no logs for {', '.join(names)} in {formation.run_dir} — start the services with `blogctl up`"
        )
    keep = LogFilter(_pattern(grep), _since(since), trace)
    if keep.active:
        found = {name: search(formation.log_path(name), keep) for name in present}
        tails = {name: matches[-lines:] if lines is not None else matches for name, matches in found.items()}
    else:
        tails = {name: formation.tail(name, 20 if lines is None else lines) for name in present}
    if json_output and not follow:
        render.print_json(tails)
        return
    follower = LogFollower(formation, {name: log_size(formation.log_path(name)) for name in names}, as_json=json_output,
                           keep=keep)
    for name, tail in tails.items():
        for line in tail:
            follower.emit(name, line, when=None)
    if not follow:
        return
    try:
        while True:  # until Ctrl-C, like `tail -f`
            follower.print_new()
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass


def _pattern(grep: str | None) -> re.Pattern | None:
    try:
        return re.compile(grep) if grep else None
    except re.error as exc:
        raise typer.BadParameter(f"{grep!r} is not a regular expression: {exc}", param_hint="--grep") from None


AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _since(age: str | None) -> datetime | None:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", age.strip()) if age else None
    if age and not match:
        raise typer.BadParameter(f"{age!r} is not an age such as 90s, 5m, 2h or 1d", param_hint="--since")
    return datetime.now() - timedelta(seconds=float(match.group(1)) * AGE_UNITS[match.group(2)]) if match else None


def kill(
    ctx: typer.Context,
    services: Annotated[list[str], process_argument("The services (or replicas, e.g. query.2) to kill.")],
    sig: Annotated[Signal, typer.Option("--signal", "-s", help="The signal to send to the process group.")] = Signal.KILL,
) -> None:
    """Kill services with a real signal (SIGKILL by default, as a crash would) and verify they are gone.

    The other services keep running.
    """
    rt = runtime(ctx)
    formation = rt.formation
    not_running = []
    with rt.exclusive("kill"):
        recover(rt)
        for name in Supervisor(rt).names(services):
            before = formation.stop(name, getattr(signal, f"SIG{sig.value}"))
            if before.running:
                console.print(text(f"killed {name} (pid {before.pid}) with SIG{sig.value}; it is gone"))
            else:
                not_running.append(name)
    if not_running:
        raise BlogctlError(f"{', '.join(not_running)} not running — nothing to kill (see `blogctl status`)")


def start(
    ctx: typer.Context,
    services: Annotated[list[str], process_argument("The services (or replicas, e.g. query.2) to start.")],
    timeout: TimeoutOption = HEALTH_TIMEOUT,
) -> None:
    """Start single services and wait until they answer /health."""
    rt = runtime(ctx)
    names = Supervisor(rt).names(services)
    missing = []
    with rt.exclusive("start"):
        recover(rt)
        for name in names:
            state = rt.formation.state(name)
            if state.running:
                console.print(text(f"{name} is already running (pid {state.pid})"))
            else:
                missing.append(name)
        if missing:
            bring_up(rt, missing, timeout)
    show_services(rt, names)


def restart(
    ctx: typer.Context,
    services: Annotated[list[str] | None, process_argument(
        "The services (or replicas) to restart; every running one if left out.", required=False,
        metavar="SERVICE")] = None,
    timeout: TimeoutOption = HEALTH_TIMEOUT,
) -> None:
    """Stop services and start them again, in the order of need, and wait until each answers /health.

    Their data stays; a service that was not running is started.
    """
    rt = runtime(ctx)
    for name, (before, after) in Supervisor(rt).restart(services, timeout=timeout).items():
        was = f"pid {before} → {after}" if before else f"was not running; now pid {after}"
        console.print(text(f"restarted {name} ({was})"), soft_wrap=True)


def wait(
    ctx: typer.Context,
    services: Annotated[list[str] | None, process_argument(
        "The services (or replicas) to wait for; every one of the formation if left out.", required=False,
        metavar="SERVICE")] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0, help="Seconds to wait in all.")] = HEALTH_TIMEOUT,
    json_output: JsonOption = False,
) -> None:
    """Wait until each service answers /health: exit 0 when all do, 1 naming those that do not (for scripts and CI)."""
    rt = runtime(ctx)
    supervisor = Supervisor(rt)
    names = supervisor.names(services)
    unhealthy = supervisor.wait(names, timeout=timeout)
    if json_output:
        render.print_json({"healthy": [name for name in names if name not in unhealthy], "unhealthy": unhealthy})
        if unhealthy:
            raise typer.Exit(1)
        return
    if unhealthy:
        raise BlogctlError(f"not healthy after {timeout:g}s: "
                           + "; ".join(f"{name} ({why})" for name, why in unhealthy.items()))
    console.print(text(f"healthy: {', '.join(names)}"), soft_wrap=True)


def supervise(ctx: typer.Context) -> None:
    """Keep the running formation up by its restart policy, and apply `blogctl reload`, until every service has
    stopped (`up --detach` starts this in the background; `down` stops it)."""
    rt = runtime(ctx)
    for setting, value in json.loads(os.environ.pop(HANDED_OPTIONS, "{}")).items():  # `up`'s options
        rt.use(setting, value)
    watcher = Watcher(rt)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    console.print(text(f"supervising {', '.join(name for name, pid in watcher.pids.items() if pid)}"), soft_wrap=True)
    while watcher.anything_running:
        for note in watcher.tick():
            console.print(text(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {note}"), soft_wrap=True)
        time.sleep(0.2)
    console.print("every service has stopped; nothing left to supervise", markup=False)


RELOAD_TIMEOUT = 120.0  # seconds `blogctl reload` waits: restarts in the order of need, each waited for


def reload(
    ctx: typer.Context,
    timeout: Annotated[float, typer.Option(
        "--timeout", min=0, help="Seconds to wait for the reload to be done, restarts included.")] = RELOAD_TIMEOUT,
    json_output: JsonOption = False,
) -> None:
    """Apply a changed Procfile or .env to the running formation: restart only the processes whose command or
    settings changed, start the new ones (a replica, a Procfile line), stop those removed; the others keep running.

    The running `blogctl up` (or its `blogctl supervise`) reads them again as it would if started now: the Procfile,
    `.env` in the directory `up` ran in, `up`'s options and its own environment. The environment of this command is
    not read: put a setting in `.env`.
    """
    rt = runtime(ctx)
    run_dir = rt.config.run_dir
    found = watching(run_dir)
    if found is None:
        running = [state.name for state in rt.formation.states() if state.running]
        if not running:
            raise BlogctlError(f"no formation is up in {rt.config.data_dir} — start one with `blogctl up`")
        raise BlogctlError(f"nothing watches the formation in {rt.config.data_dir} ({', '.join(running)} running "
                           "without `blogctl up` or `blogctl supervise`) — `blogctl up --detach` starts its watcher")
    answer = reconfigure.ask(run_dir, alive=lambda: watching(run_dir) == found, timeout=timeout)
    if answer is None:
        how = "ended" if watching(run_dir) != found else f"did not answer within {timeout:g}s"
        raise BlogctlError(f"`blogctl {found.command}` (pid {found.pid}) {how} — see `blogctl status`")
    if answer.get("error"):
        raise BlogctlError(f"nothing reloaded: {answer['error']}")
    if json_output:
        render.print_json({"lines": answer["lines"], "failed": answer["failed"]})
        if answer["failed"]:
            raise typer.Exit(1)
        return
    for line in answer["lines"]:
        console.print(text(line), soft_wrap=True)
    if answer["failed"]:
        raise BlogctlError(f"{', '.join(answer['failed'])} did not start with the new settings (see above)")
