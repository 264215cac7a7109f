"""A process of the bench's own (the bare endpoint, a server under comparison) run by the one
supervisor, `Formation`, as the formation's services are: in a process group of its own, its
output in a log, waited for until it answers, stopped by its group (SIGTERM, then SIGKILL).
And the one way to pick a free port on loopback.
"""
from __future__ import annotations

import os
import shlex
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from services.shared.http import HttpClient, Unreachable

from .formation import Formation


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def supervised(name: str, module: str, *args: str, answers: str, env: Mapping[str, str] | None = None,
               timeout: float = 30.0) -> Iterator[int]:
    """`python -m module args...` as process `name` until the block ends (gives its pid); ready once
    `answers` (a URL) answers 200. ServiceFailed, with the end of its log, when it dies or stays silent."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"blogctl-{name}-"))
    procfile = run_dir / "Procfile"
    procfile.write_text(f"{name}: exec {shlex.join([sys.executable, '-m', module, *args])}\n")
    formation = Formation(procfile, run_dir=run_dir, env={**os.environ, **(env or {})}, cwd=Path.cwd())
    try:
        with HttpClient(timeout=1) as http:
            def ready(_: str) -> bool:
                try:
                    return http.get(answers).status_code == 200
                except Unreachable:
                    return False

            formation.start(name)
            formation.wait_healthy([name], ready, timeout=timeout)
        yield formation.state(name).pid
    finally:
        formation.stop(name)
        shutil.rmtree(run_dir, ignore_errors=True)
