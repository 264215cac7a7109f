"""Commands that run the formation: up, down, status, logs, kill, start."""
from __future__ import annotations

import signal
import time
from typing import Annotated

import typer
from rich.text import Text

from services.shared.transport import REGISTRY, TransportError, joins_processes, url_of

from . import render
from .errors import BlogctlError
from .follow import LogFollower, log_size
from .formation import HEALTH_TIMEOUT, Formation, describe_exit
from .options import JsonOption, Signal, TimeoutOption, process_argument
from .render import console, text
from .runtime import Runtime, runtime
from .steps import bring_up, recover, service_rows, show_services


def _names(services: list[str] | None, formation: Formation) -> list[str]:
    names = services or formation.names
    formation.check(names)
    return list(dict.fromkeys(names))


def up(
    ctx: typer.Context,
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
    timeout: TimeoutOption = HEALTH_TIMEOUT,
) -> None:
    """Start every service in the Procfile and wait until each answers /health.

    In the foreground it then streams the services' logs, honcho-style; Ctrl-C stops them all.
    A service that dies (or is killed) does not take the others down.
    """
    rt = runtime(ctx)
    with rt.exclusive("up"):
        if broker is not None:
            _check_same_transport(rt, broker)
            rt.use("BLOG_BROKER_URL", broker)
        if database is not None:
            rt.use("BLOG_DATABASE_URL", database)
        if replicas:
            rt.use("BLOG_REPLICAS", ",".join(replicas))
        if not joins_processes(rt.config):
            raise BlogctlError(f"{url_of(rt.config)} carries events only inside one process (it is for tests); a "
                               "formation needs the HTTP bus (leave BLOG_BROKER_URL unset) or a broker such as amqp://")
        formation = rt.formation
        if strays := formation.strays():
            raise BlogctlError(f"{', '.join(strays)} still running but not part of this formation "
                               f"({', '.join(formation.names)}) — stop the formation first (`blogctl down`)")
        recover(rt)
        states = formation.states()
        missing = [s.name for s in states if not s.running]
        if not missing:
            console.print("The formation is already up; nothing changed.")
            show_services(rt)
            return
        running = [s.name for s in states if s.running]
        if running:
            console.print(text(f"Already running: {', '.join(running)}. Starting: {', '.join(missing)}."))
        offsets = {name: log_size(formation.log_path(name)) for name in formation.names}
        rt.record()
        bring_up(rt, missing, timeout)
        show_services(rt)
        console.print(render.mode_line(rt.config, rt.inspection.describe()), soft_wrap=True)
        console.print(Text.assemble("Blog page: ", (rt.client.page_url(), "bold")), soft_wrap=True)
        if detach:
            console.print(f"Running in the background; logs in {formation.run_dir}. Stop with `blogctl down`.",
                          markup=False, soft_wrap=True)
            return
    # The lock is let go while the logs stream, so `blogctl down` or `kill` from elsewhere can act.
    console.print("Streaming logs; press Ctrl-C to stop every service.", style="dim")
    _serve_in_foreground(rt, offsets)


def _check_same_transport(rt: Runtime, broker: str) -> None:
    """`up --broker` onto a formation already running on another transport would split it in two."""
    running = [s.name for s in rt.formation.states() if s.running]
    if running and rt.config.broker_url != broker:
        now = rt.inspection.describe()
        raise BlogctlError(f"{', '.join(running)} already running with events through {now.name} at {now.url} — "
                           "stop the formation first (`blogctl down`)")


def _serve_in_foreground(rt: Runtime, offsets: dict[str, int]) -> None:
    formation = rt.formation
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    follower = LogFollower(formation, offsets)
    pids = {s.name: s.pid for s in formation.states()}
    try:
        try:
            while True:  # until Ctrl-C or SIGTERM, or until every service has stopped
                follower.print_new()
                states = formation.states()
                for state in states:
                    if state.pid != pids[state.name]:
                        follower.print_new()
                        if state.running:
                            note = f"{state.name} started (pid {state.pid})"
                        else:
                            code = formation.exit_code(state.name)
                            how = describe_exit(code) if code is not None else "exited"
                            note = f"{state.name} {how}"
                            if any(other.running for other in states):
                                note += f"; the others keep running (`blogctl start {state.name}`)"
                        console.print(text(note, "bold yellow"), soft_wrap=True)
                        pids[state.name] = state.pid
                if not any(state.running for state in states):  # `blogctl down` from elsewhere, say
                    console.print("Every service has stopped; `blogctl up` starts them again.", style="bold")
                    return
                time.sleep(0.1)
        except KeyboardInterrupt:
            console.print("Stopping the formation…", style="bold")
        # Stopping runs with Ctrl-C ignored, so a second press cannot leave a service behind.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        with rt.exclusive("up"):
            for name in reversed(formation.names):
                before = formation.stop(name)
                if before.running:
                    console.print(text(f"stopped {name} (pid {before.pid})"))
            rt.forget()
        follower.print_new()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def down(ctx: typer.Context) -> None:
    """Stop every service (SIGTERM, then SIGKILL if one lingers) and verify each is gone."""
    rt = runtime(ctx)
    with rt.exclusive("down"):
        formation = rt.formation
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
    service: Annotated[str | None, process_argument("One service (or replica); all of them if left out.",
                                                     required=False)] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until Ctrl-C.")] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", min=0, help="How many recent lines to show per service.")] = 20,
    json_output: JsonOption = False,
) -> None:
    """Show the services' logs (kept in the data directory's run/ folder)."""
    formation = runtime(ctx).formation
    names = _names([service] if service else None, formation)
    present = [name for name in names if formation.log_path(name).exists()]
    if not present:
        raise BlogctlError(
            f"no logs for {', '.join(names)} in {formation.run_dir} — start the services with `blogctl up`"
        )
    tails = {name: formation.tail(name, lines) for name in present}
    if json_output and not follow:
        render.print_json(tails)
        return
    follower = LogFollower(formation, {name: log_size(formation.log_path(name)) for name in names}, as_json=json_output)
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
        for name in _names(services, formation):
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
    names = _names(services, rt.formation)
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
