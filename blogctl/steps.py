"""Steps the commands share, beside the supervisor (formation.py): start in order and wait for
health, find processes whose pid files are gone, and the services table."""
from __future__ import annotations

from graphlib import TopologicalSorter
from urllib.parse import urlsplit

from services.shared.config import service_of
from services.shared.service import Service
from services.table import spec

from . import render, restarts
from .formation import HEALTH_TIMEOUT
from .render import console, text
from .runtime import Runtime


def dependencies(names: list[str]) -> dict[str, set[str]]:
    """What each of `names` needs healthy before it starts, from the service table (among `names` only:
    what runs already is ready). A transport's own process (the bus) comes before every other
    service, so nobody's first call finds it missing; a service that handles no events comes after
    those that handle what it emits (on a broker their queues must exist before its first publish).
    A replica (`query.2`) starts as its service; Procfile entries outside the table come last."""
    table = {name: _spec(name) for name in names}
    services = [name for name, service in table.items() if service is not None]
    needs: dict[str, set[str]] = {}
    for name, service in table.items():
        if service is None:
            needs[name] = set(services)
        elif service.bus:
            needs[name] = set()
        else:
            needs[name] = {other for other in services if table[other].bus}
            if not service.consumes:
                needs[name] |= {other for other in services
                               if set(table[other].consumes) & {data.__name__ for data in service.emits}}
    return needs


def start_order(names: list[str]) -> list[list[str]]:
    """`names` in the phases they start in (`dependencies`): each phase once the one before is healthy."""
    sorter = TopologicalSorter(dependencies(names))
    sorter.prepare()
    phases = []
    while sorter.is_active():
        ready = sorter.get_ready()
        phases.append([name for name in names if name in ready])
        sorter.done(*ready)
    return phases


def _spec(name: str) -> Service | None:
    try:
        return spec(service_of(name))
    except KeyError:
        return None


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
    """Each Procfile process (each replica, and the gateway): its port and the host:port clients reach it at, its pid, process state, and whether its port answers /health as itself."""
    rows = []
    restarted = restarts.saved(rt.config.run_dir)
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
        address = rt.formation.addresses.get(state.name) if port is None else None  # the gateway's
        where = (urlsplit(rt.config.url(state.name)).hostname, port) if port is not None else address
        rows.append({
            "service": state.name, "port": port or (address[1] if address else None),
            "address": f"{where[0]}:{where[1]}" if where else None, "pid": pid, "process": process,
            "healthy": health is not None if port is not None else rt.is_healthy(state.name),
            "uptime": state.uptime, "health": health, "error": problem,
            "restarts": 0, "last_exit": None, "gave_up": None, **restarted.get(state.name, {}),
        })
    return rows


def show_services(rt: Runtime, names: list[str] | None = None) -> None:
    rows = [row for row in service_rows(rt) if names is None or row["service"] in names]
    console.print(render.services_table(rows))
