"""The formation's commands as one call each into the supervisor: bring services up in the order
of need, restart them, wait until they are healthy.

`Formation` (formation.py) starts and stops single processes; this is what `up`, `restart` and
`wait` ask of it, with the run lock held while anything changes.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from services.shared.transport import TransportError, joins_processes, url_of

from .errors import BlogctlError
from .follow import log_size
from .formation import HEALTH_TIMEOUT, FormationError
from .polling import wait_for
from .render import console, text
from .runtime import Runtime
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

