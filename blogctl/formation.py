"""The supervisor: start, stop and inspect the Procfile's processes, one session each.

Plain `honcho start` takes the whole formation down when any one process exits, which
would defeat the point of killing Posts to watch Query keep serving. So each Procfile
entry is started here in its own session (its own process group), with its pid recorded
in `<data_dir>/run/NAME.pid` and its output appended to `<data_dir>/run/NAME.log`.
Honcho still parses the Procfile and `.env`.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from honcho.environ import parse as parse_dotenv
from honcho.environ import parse_procfile

from .errors import BlogctlError
from .polling import wait_for

STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
HEALTH_TIMEOUT = 20.0


class FormationError(BlogctlError):
    pass


class ServiceFailed(FormationError):
    """A process exited, or never became healthy, while we waited for it."""

    def __init__(self, name: str, reason: str, log: Path, tail: list[str]) -> None:
        super().__init__(f"{name} failed to start: {reason} — see {log} (last lines below)")
        self.name = name
        self.tail = tail


@dataclass(frozen=True)
class Record:
    """What NAME.pid holds: enough to find the process again and to know it is still the same one."""

    pid: int
    start_ticks: str | None  # the kernel's start time: a reused pid has a different one
    started_at: float
    command: str


@dataclass(frozen=True)
class ProcessState:
    name: str
    state: str  # "running", "stopped", or "exited" (a pid file whose process is gone)
    pid: int | None = None
    started_at: float | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def uptime(self) -> float | None:
        return round(time.time() - self.started_at, 1) if self.running and self.started_at else None


def read_dotenv(root: Path) -> dict[str, str]:
    path = root / ".env"
    return parse_dotenv(path.read_text()) if path.is_file() else {}


class Formation:
    def __init__(
        self, procfile: Path, *, run_dir: Path, env: Mapping[str, str],
        addresses: Mapping[str, tuple[str, int]] | None = None, skipped: Mapping[str, str] | None = None,
    ) -> None:
        try:
            self.commands: dict[str, str] = dict(parse_procfile(procfile.read_text()).processes)
        except OSError as exc:
            raise FormationError(
                f"cannot read the Procfile at {procfile} ({exc.strerror}) — run blogctl from the project "
                "or pass --procfile"
            ) from None
        self.procfile = procfile
        self.cwd = procfile.parent
        self.run_dir = run_dir
        self.env = dict(env)
        self.addresses = dict(addresses or {})
        self.skipped = dict(skipped or {})  # Procfile entries this mode does not run: name -> why
        # Per process, on top of the Procfile's command and `env` (the tests use them): more
        # environment (a data directory of its own), and a command to run it under (`ip netns exec HOST`).
        self.service_env: dict[str, dict[str, str]] = {}
        self.prefix: dict[str, list[str]] = {}
        self._children: dict[str, subprocess.Popen] = {}  # started by this blogctl: reaped here

    @property
    def names(self) -> list[str]:
        return [name for name in self.commands if name not in self.skipped]

    def check(self, names: list[str]) -> None:
        skipped = [n for n in names if n in self.skipped]
        if skipped:
            raise FormationError(f"{skipped[0]} is not run in this mode: {self.skipped[skipped[0]]}")
        unknown = [n for n in names if n not in self.commands]
        if unknown:
            raise FormationError(
                f"{', '.join(unknown)} not in {self.procfile} — it defines {', '.join(self.commands) or 'nothing'}"
            )

    def pid_path(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def log_path(self, name: str) -> Path:
        return self.run_dir / f"{name}.log"

    # Inspecting

    def _record(self, name: str) -> Record | None:
        try:
            return Record(**json.loads(self.pid_path(name).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def _alive(self, name: str, record: Record) -> bool:
        child = self._children.get(name)
        if child is not None and child.pid == record.pid and child.poll() is not None:
            return False  # reaped just now: no zombie left behind
        proc = _proc_stat(record.pid)
        if proc is None:
            return _signalable(record.pid) if not Path("/proc").is_dir() else False
        state, ticks = proc
        return state not in ("Z", "X") and (record.start_ticks is None or ticks == record.start_ticks)

    def state(self, name: str) -> ProcessState:
        record = self._record(name)
        if record is None:
            return ProcessState(name, "stopped")
        if not self._alive(name, record):
            return ProcessState(name, "exited")
        return ProcessState(name, "running", record.pid, record.started_at)

    def states(self) -> list[ProcessState]:
        return [self.state(name) for name in self.names]

    def exit_code(self, name: str) -> int | None:
        child = self._children.get(name)
        return child.poll() if child is not None else None

    # Starting

    def child_env(self, name: str) -> dict[str, str]:
        env = {**self.env, **self.service_env.get(name, {})}
        return {**env, "PYTHONUNBUFFERED": env.get("PYTHONUNBUFFERED", "1")}

    def start(self, name: str) -> ProcessState:
        """Start `name` unless it is running; return its state either way."""
        self.check([name])
        current = self.state(name)
        if current.running:
            return current
        self._check_port_free(name)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path(name), "ab") as log:
            log.write(_marker(f"starting {name}: {self.commands[name]}"))
            log.flush()
            prefix = self.prefix.get(name)
            command = [*prefix, "/bin/sh", "-c", self.commands[name]] if prefix else self.commands[name]
            child = subprocess.Popen(
                command, shell=not prefix, cwd=self.cwd, env=self.child_env(name),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self._children[name] = child
        record = Record(child.pid, _start_ticks(child.pid), time.time(), self.commands[name])
        tmp = self.pid_path(name).with_suffix(".pid.tmp")
        tmp.write_text(json.dumps(asdict(record)))
        tmp.replace(self.pid_path(name))
        return self.state(name)

    def _check_port_free(self, name: str) -> None:
        address = self.addresses.get(name)
        if address and _listening(*address):
            host, port = address
            raise FormationError(
                f"port {port} for {name} is already in use by a process blogctl did not start — stop it, "
                f"or choose other ports (--port {name}=N or BLOG_{name.upper()}_PORT)"
            )

    def wait_healthy(self, names: list[str], is_healthy: Callable[[str], bool], timeout: float = HEALTH_TIMEOUT) -> None:
        """Poll until every one of `names` is healthy; ServiceFailed names the first that died or stayed silent."""
        pending = list(names)

        def progress() -> bool:
            for name in list(pending):
                if is_healthy(name):
                    pending.remove(name)
                elif not self.state(name).running:
                    code = self.exit_code(name)
                    reason = f"it {describe_exit(code)}" if code is not None else "it is not running"
                    raise ServiceFailed(name, reason, self.log_path(name), self.tail(name))
            return not pending

        if not wait_for(progress, timeout=timeout, interval=0.05):
            name = pending[0]
            raise ServiceFailed(
                name, f"it did not answer /health within {timeout:g}s", self.log_path(name), self.tail(name)
            )

    # Stopping

    def stop(self, name: str, sig: int = signal.SIGTERM, grace: float = STOP_GRACE) -> ProcessState:
        """Signal the process group of `name`, escalate to SIGKILL after `grace`, and verify it is gone.

        Returns the state it had before (so callers can say what they stopped).
        """
        self.check([name])
        before = self.state(name)
        record = self._record(name)
        if before.running and record is not None:
            group_gone = lambda: not self._group_alive(name, record.pid)  # noqa: E731
            _killpg(record.pid, sig)
            if not wait_for(group_gone, timeout=grace):
                _killpg(record.pid, signal.SIGKILL)
                if not wait_for(group_gone, timeout=5.0):
                    raise FormationError(f"{name} (process group {record.pid}) is still alive after SIGKILL")
            with open(self.log_path(name), "ab") as log:
                log.write(_marker(f"{name} (pid {record.pid}) stopped by blogctl with {signal.Signals(sig).name}"))
        self.pid_path(name).unlink(missing_ok=True)
        return before

    def _group_alive(self, name: str, pgid: int) -> bool:
        child = self._children.get(name)
        if child is not None and child.pid == pgid:
            child.poll()  # reap our own child, or its zombie keeps the group "alive"
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    # Logs

    def tail(self, name: str, lines: int = 15) -> list[str]:
        try:
            with open(self.log_path(name), "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 64 * 1024))
                data = log.read()
        except OSError:
            return []
        return data.decode("utf-8", "replace").splitlines()[-lines:] if lines > 0 else []


def child_environment(root: Path, overrides: Mapping[str, str]) -> dict[str, str]:
    """The environment both blogctl's configuration and the services see: honcho's order, then blogctl's options.

    OS environment, then `.env` (wins, as under honcho), then `--host`/`--port`/`--data-dir`;
    PATH starts with this interpreter's directory so the Procfile's `python` is the one running blogctl.
    """
    env = {**os.environ, **read_dotenv(root), **overrides}
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", os.defpath)])
    return env


def describe_exit(code: int) -> str:
    """A return code as words: `exited with code 3`, `was killed by SIGKILL`."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _marker(text: str) -> bytes:
    return f"--- blogctl {time.strftime('%Y-%m-%d %H:%M:%S')}: {text} ---\n".encode()


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks) from /proc/PID/stat, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after "(comm)", which may contain spaces
    return fields[0], fields[19]


def _start_ticks(pid: int) -> str | None:
    stat = _proc_stat(pid)
    return stat[1] if stat else None


def _signalable(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _listening(host: str, port: int) -> bool:
    host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False
