"""Steps the commands share, beside the supervisor (formation.py): start in order and wait for
health, find processes whose pid files are gone, and the services table."""
from __future__ import annotations

from services.shared.config import service_of
from services.table import spec

from . import render
from .formation import HEALTH_TIMEOUT
from .render import console, text
from .runtime import Runtime


def start_order(names: list[str]) -> list[list[str]]:
    """`names` in the phases they start in, from the service table: the bus before its clients (so
    nobody's first call finds it missing), then the consumers before the rest (on a broker their
    queues must exist before anything is published); Procfile entries outside the table last."""
    def phase(name: str) -> int:
        try:
            service = spec(service_of(name))  # a replica (`query.2`) starts with its service
        except KeyError:
            return 2
        return 0 if service.bus else 1 if service.consumes else 2

    phases = [[name for name in names if phase(name) == number] for number in range(3)]
    return [names for names in phases if names]


def bring_up(rt: Runtime, names: list[str], timeout: float = HEALTH_TIMEOUT) -> None:
    """Start `names`, a phase at a time (`start_order`), and wait until each answers /health as
    itself; on failure stop what this call started."""
    formation = rt.formation
    started = []
    try:
        for phase in start_order(names):
            for name in phase:
                formation.start(name)
                started.append(name)
            with console.status(f"Waiting for {', '.join(phase)} to answer /health…"):
                formation.wait_healthy(phase, rt.is_healthy, timeout)
    except BaseException:
        for name in started:
            formation.stop(name)
        raise


def recover(rt: Runtime) -> list[str]:
    """Record again the services of this data directory that answer on their ports without a pid
    file (the run state was deleted under them), so that `down`, `kill` and `up` see them."""
    found = []
    for state in rt.formation.states():
        if not state.running and state.name in rt.config.ports:
            listener = rt.listener(state.name)
            if listener.ours and rt.formation.adopt(state.name, listener.pid).running:
                found.append(f"{state.name} (pid {listener.pid})")
    if found:
        console.print(text(f"Found {', '.join(found)} running without a pid file; recorded again."), soft_wrap=True)
    return found


def service_rows(rt: Runtime) -> list[dict]:
    """Each Procfile process: its port, pid, process state, and whether its port answers /health as itself."""
    rows = []
    for state in rt.formation.states():
        port = rt.config.ports.get(state.name)
        pid, process, health, problem = state.pid, state.state, None, None
        if port is not None:
            listener = rt.listener(state.name)
            if listener.ours:
                health, problem = (listener.health, None) if listener.problem is None else (None, listener.problem)
                if not state.running:  # its pid file is gone, but the service says who it is
                    pid, process = listener.pid, "untracked"
            elif listener.holder is not None:
                problem = f"port taken by {listener.holder}"
                if not state.running:
                    process = "external"
            else:
                problem = "unreachable"
        rows.append({
            "service": state.name, "port": port, "pid": pid, "process": process,
            "healthy": health is not None if port is not None else state.running,
            "uptime": state.uptime, "health": health, "error": problem,
        })
    return rows


def show_services(rt: Runtime, names: list[str] | None = None) -> None:
    rows = [row for row in service_rows(rt) if names is None or row["service"] in names]
    console.print(render.services_table(rows))
