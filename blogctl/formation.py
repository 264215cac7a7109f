"""The supervisor: start, stop and inspect the Procfile's processes, one session each.

Plain `honcho start` takes the whole formation down when any one process exits, which
would defeat the point of killing Posts to watch Query keep serving. So each Procfile
entry is started here in its own session (its own process group), with its pid recorded
in `<data_dir>/run/NAME.pid` and its output appended to `<data_dir>/run/NAME.log`.
Honcho still parses the Procfile and `.env`. One blogctl at a time changes a formation: the
commands that start or stop processes hold `RunLock`, an OS lock on `<data_dir>/run/lock`.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
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
LOCK_WAIT = 60.0  # seconds a command waits for another blogctl at work on the same data directory


class FormationError(BlogctlError):
    pass


class PortTaken(FormationError):
    """Something other than the service being started answers on its port."""

    def __init__(self, name: str, port: int, holder: str) -> None:
        super().__init__(f"{name} could not listen on {port}: in use by {holder} — stop that, or give {name} "
                         f"another port (--port {name}=N or BLOG_{name.upper()}_PORT)")
        self.name = name


class ServiceFailed(FormationError):
    """A process exited, or never became healthy, while we waited for it."""

    def __init__(self, name: str, reason: str, log: Path, tail: list[str]) -> None:
        super().__init__(f"{name} failed to start: {reason} — see {log} (last lines below)")
        self.name = name
        self.reason = reason
        self.tail = tail


@dataclass(frozen=True)
class Record:
    """What NAME.pid holds: enough to find the process again and to know it is still the same one."""

    pid: int
    start_ticks: str | None  # the kernel's start time: a reused pid has a different one
    started_at: float
    command: str
    env: dict[str, str] | None = None  # a digest of each variable it was started with (None: not known)


@dataclass(frozen=True)
class ProcessState:
    name: str
    state: str  # "running", "stopped" (on purpose: no pid file), or "exited" (a pid file whose process is gone)
    pid: int | None = None  # an exited process's last pid
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
    """The Procfile's processes under one run directory.

    Besides the Procfile's commands and `env`, a process may get more environment (`service_env`:
    a data directory of its own) and a command to run under (`prefix`: `ip netns exec HOST`); these
    mappings, like `env`, are read at each start, so their owner may change them between starts.
    `identify(name)` says who answers on a service's port ("posts (pid 12)"), None when nothing
    does: named when a start finds the port taken.
    """

    def __init__(
        self, procfile: Path, *, run_dir: Path, env: Mapping[str, str],
        addresses: Mapping[str, tuple[str, int]] | None = None, skipped: Mapping[str, str] | None = None,
        cwd: Path | None = None, identify: Callable[[str], str | None] | None = None,
        replicas: Mapping[str, str] | None = None, service_env: Mapping[str, Mapping[str, str]] | None = None,
        prefix: Mapping[str, list[str]] | None = None, extra: Mapping[str, str] | None = None,
    ) -> None:
        try:
            entries = dict(parse_procfile(procfile.read_text()).processes)
        except OSError as exc:
            raise FormationError(
                f"cannot read the Procfile at {procfile} ({exc.strerror}) — pass one with --procfile"
            ) from None
        # A replica (`query.2` of `query`) runs its entry's command, told which replica it is.
        self.commands: dict[str, str] = {}
        self.replica_env: dict[str, dict[str, str]] = {}
        for entry, command in entries.items():
            self.commands[entry] = command
            for replica, of in (replicas or {}).items():
                if of == entry:
                    self.commands[replica] = command
                    self.replica_env[replica] = {"BLOG_INSTANCE": replica}
        self.commands.update(extra or {})  # processes blogctl adds beside the Procfile's (the gateway)
        self.procfile = procfile
        self.cwd = cwd or procfile.parent  # where the processes run: honcho's rule unless told otherwise
        self.run_dir = run_dir
        self.env = env
        self.addresses = dict(addresses or {})
        self.skipped = dict(skipped or {})  # Procfile entries this mode does not run: name -> why
        self.service_env = service_env if service_env is not None else {}
        self.prefix = prefix if prefix is not None else {}
        self.identify = identify
        self._children: dict[str, subprocess.Popen] = {}  # started by this blogctl: reaped here

    @property
    def names(self) -> list[str]:
        return [name for name in self.commands if name not in self.skipped]

    def strays(self) -> list[str]:
        """Processes recorded in the run directory, still running, that this formation does not name (a
        replica left from a formation started with more of them, say)."""
        recorded = sorted(path.name.removesuffix(".pid") for path in self.run_dir.glob("*.pid"))
        return [name for name in recorded if name not in self.names and self.state(name).running]

    def check(self, names: list[str]) -> None:
        skipped = [n for n in names if n in self.skipped]
        if skipped:
            raise FormationError(f"{skipped[0]} is not run in this mode: {self.skipped[skipped[0]]}")
        unknown = [n for n in names if n not in self.commands and self._record(n) is None]
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
        proc = proc_stat(record.pid)
        if proc is None:
            return _signalable(record.pid) if not Path("/proc").is_dir() else False
        state, ticks = proc
        return state not in ("Z", "X") and (record.start_ticks is None or ticks == record.start_ticks)

    def state(self, name: str) -> ProcessState:
        record = self._record(name)
        if record is None:
            return ProcessState(name, "stopped")
        if not self._alive(name, record):
            return ProcessState(name, "exited", record.pid, record.started_at)
        return ProcessState(name, "running", record.pid, record.started_at)

    def states(self) -> list[ProcessState]:
        return [self.state(name) for name in self.names]

    def exit_code(self, name: str) -> int | None:
        child = self._children.get(name)
        return child.poll() if child is not None else None

    # Starting

    def child_env(self, name: str | None = None) -> dict[str, str]:
        env = {**self.env, **self.replica_env.get(name, {}), **self.service_env.get(name, {})}
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
            env = self.child_env(name)
            child = subprocess.Popen(
                command, shell=not prefix, cwd=self.cwd, env=env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self._children[name] = child
        self._write_record(name, Record(child.pid, _start_ticks(child.pid), time.time(), self.commands[name],
                                        fingerprint(env)))
        return self.state(name)

    def record(self, name: str) -> Record | None:
        """What NAME.pid says `name` was started as (None: no pid file)."""
        return self._record(name)

    def inherit(self, older: Formation) -> None:
        """Take over the processes `older` (this formation before a reload) started: their exit codes are ours to read."""
        self._children.update(older._children)

    def adopt(self, name: str, pid: int) -> ProcessState:
        """Record a running process of this formation whose pid file is gone (found by asking its port)."""
        self.check([name])
        try:
            pgid = os.getpgid(pid)
        except ProcessLookupError:
            return self.state(name)
        leader = pgid if proc_stat(pgid) is not None else pid
        self._write_record(name, Record(leader, _start_ticks(leader), time.time(), self.commands[name]))
        return self.state(name)

    def owns(self, name: str, pid: int) -> bool:
        """Whether `pid` belongs to the process group recorded for `name`."""
        record = self._record(name)
        try:
            return record is not None and os.getpgid(pid) == record.pid
        except ProcessLookupError:
            return False

    def _write_record(self, name: str, record: Record) -> None:
        """Write NAME.pid whole or not at all: a unique temporary file, then an atomic rename."""
        fd, tmp = tempfile.mkstemp(dir=self.run_dir, prefix=f".{name}.pid.")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(asdict(record), out)
            os.replace(tmp, self.pid_path(name))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _check_port_free(self, name: str) -> None:
        address = self.addresses.get(name)
        if not address:
            return
        holder = self.identify(name) if self.identify else ("a process blogctl did not start" if listening(*address)
                                                            else None)
        if holder:
            raise PortTaken(name, address[1], holder)

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
            if sig != signal.SIGKILL:
                _killpg(record.pid, signal.SIGCONT)  # a stopped (SIGSTOP) process takes its signal only once continued
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


def child_environment(root: Path, overrides: Mapping[str, str], dotenv: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment both blogctl's configuration and the services see: honcho's order, then blogctl's options.

    OS environment, then `.env` (wins, as under honcho; `dotenv`: as read already), then `--host`/`--port`/
    `--data-dir`; PATH starts with this interpreter's directory so the Procfile's `python` is the one running blogctl.
    """
    env = {**os.environ, **(read_dotenv(root) if dotenv is None else dotenv), **overrides}
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", os.defpath)])
    return env


def fingerprint(env: Mapping[str, str]) -> dict[str, str]:
    """A digest of each variable's value: enough to tell later which ones changed, without keeping the values in
    the run directory (they may hold passwords)."""
    return {key: hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:16]
            for key, value in env.items()}


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


def proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks) from /proc/PID/stat, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after "(comm)", which may contain spaces
    return fields[0], fields[19]


def _start_ticks(pid: int) -> str | None:
    stat = proc_stat(pid)
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


def listening(host: str, port: int) -> bool:
    host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


class DataDirError(FormationError):
    pass


def prepare_run_dir(data_dir: Path) -> Path:
    """Create `<data_dir>/run` (and the data directory, whose parent must exist), or say in one line why not."""
    run_dir = data_dir / "run"
    try:
        if not data_dir.is_dir():
            data_dir.mkdir()
        run_dir.mkdir(exist_ok=True)
    except OSError as exc:
        raise DataDirError(f"cannot use the data directory {data_dir}: {_why(data_dir, exc)} — choose another "
                           "with --data-dir or BLOG_DATA_DIR") from None
    return run_dir


def _why(data_dir: Path, exc: OSError) -> str:
    if exc.errno == errno.ENOENT and not data_dir.parent.exists():
        return f"its parent {data_dir.parent} does not exist"
    if exc.errno == errno.ENOTDIR or exc.errno == errno.EEXIST:
        for path in (data_dir, *data_dir.parents):
            if path.exists() and not path.is_dir():
                return f"{path} is not a directory"
    if exc.errno == errno.EROFS:
        return "it is on a read-only file system"
    return f"{exc.filename or data_dir}: {exc.strerror or exc}"


class RunLock:
    """One blogctl at a time per data directory: `flock` on `<run dir>/lock`, which names its holder.

    A second command waits (at most `wait` seconds, saying so through `on_wait`) or gives up
    in one line; the lock goes with the process, so a killed blogctl never leaves it held.
    """

    def __init__(self, data_dir: Path, command: str, *, wait: float = LOCK_WAIT,
                 on_wait: Callable[[str], None] | None = None) -> None:
        self.data_dir = data_dir
        self.command = command
        self.wait = wait
        self.on_wait = on_wait
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        path = prepare_run_dir(self.data_dir) / "lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise DataDirError(f"cannot use the data directory {self.data_dir}: {_why(self.data_dir, exc)} — "
                               "choose another with --data-dir or BLOG_DATA_DIR") from None
        try:
            if not self._try(fd):
                holder = _holder(fd)
                if self.on_wait:
                    self.on_wait(holder)
                if not wait_for(lambda: self._try(fd), timeout=self.wait, interval=0.1):
                    raise FormationError(
                        f"another blogctl ({_holder(fd) or holder}) is still at work on {self.data_dir} after "
                        f"{self.wait:g}s — try again once it has finished"
                    )
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}, `blogctl {self.command}`".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return self

    @staticmethod
    def _try(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def __exit__(self, *exc_info) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor releases the lock
            self.fd = None


def _holder(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "pid unknown"
    except OSError:
        return "pid unknown"
