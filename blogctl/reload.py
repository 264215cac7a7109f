"""`blogctl up --reload`: restart the services whose Python code changed, and only those.

Which service a file belongs to comes from the service table: a service is its package, `services.<name>`
(services/table.py), so a file under `services/<name>/` is that service's and restarts its processes (its
replicas too). Any other file of the services package (`services/shared/`, `services/table.py`) is code every
service may import: it restarts them all. blogctl's own files are not watched: they restart nothing.

Restarting goes through `Watcher.restart_each`, as `blogctl reload` does (and through `Supervisor.restart`, as
`blogctl restart` does): each service's data stays.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import services
import watchfiles
from services.shared.config import service_of
from services.table import SERVICE_TABLE

from .errors import BlogctlError
from .formation import ServiceFailed
from .supervisor import Watcher

TICK_MS = 100  # how long one look for changes may wait: the foreground loop's pause
DEBOUNCE_MS = 400  # changes this close together (an editor's save, a `git checkout`) make one reload


def services_directory() -> Path:
    """Where the services' code is imported from (the source tree in an editable install)."""
    return Path(services.__file__).parent


def changed_services(paths: Iterable[Path], directory: Path) -> dict[str, list[str]]:
    """Each service whose code is among `paths` (files under the services package `directory`) -> those files,
    shown from the package's parent (`services/posts/store.py`). A file outside every service's package
    counts for all of them; a path outside `directory` for none."""
    changed: dict[str, list[str]] = {}
    for path in sorted(set(paths)):
        try:
            inside = path.relative_to(directory)
        except ValueError:
            continue
        shown = str(Path(directory.name) / inside)
        mine = [spec.name for spec in SERVICE_TABLE if len(inside.parts) > 1 and inside.parts[0] == spec.name]
        for name in mine or [spec.name for spec in SERVICE_TABLE]:
            changed.setdefault(name, []).append(shown)
    return changed


class Reloader:
    """Watches the services' Python files; each `tick` waits up to TICK_MS for changes and restarts the running
    processes of the services whose code changed, one at a time in the order of need, so one that fails to start
    leaves the others running. A process whose restart failed (its new code does not start) is tried again at the
    next change of its code."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = (directory or services_directory()).resolve()
        self.failed: set[str] = set()
        self.changes = watchfiles.watch(self.directory, watch_filter=watchfiles.PythonFilter(),
                                        debounce=DEBOUNCE_MS, rust_timeout=TICK_MS, yield_on_timeout=True)
        try:
            next(self.changes)  # watching from now on, not from the first tick
        except OSError as exc:  # too many inotify watches, say
            raise BlogctlError(f"cannot watch {self.directory} for changes: {exc}") from None

    def tick(self, watcher: Watcher) -> list[str]:
        """Restart what changed since the last tick. Returns a line per process restarted (or not)."""
        changed = changed_services((Path(path) for _, path in next(self.changes)), self.directory)
        formation = watcher.rt.formation  # the formation as last reloaded (`blogctl reload`)
        names = [name for name in formation.names if service_of(name) in changed
                 and (formation.state(name).running or name in self.failed)]
        notes = []
        for done in watcher.restart_each(names):
            why = f"{', '.join(changed[service_of(done.name)])} changed"
            if done.error is not None:
                self.failed.add(done.name)
                exc = done.error
                reason = f"{exc.reason}; its log is above" if isinstance(exc, ServiceFailed) else str(exc)
                notes.append(f"could not reload {done.name} ({reason}): {why}; trying again at the next change")
                continue
            self.failed.discard(done.name)
            was = f"pid {done.before} -> {done.after}" if done.before else f"was not running; now pid {done.after}"
            notes.append(f"reloaded {done.name} ({was}): {why}")
        return notes
