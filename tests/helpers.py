"""Test helpers: free ports, waiting for a condition, and real service processes that cannot leak."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import requests

from services.shared.config import SERVICES

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, message: str = "") -> T:
    """Poll `condition` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except (requests.RequestException, AssertionError) as exc:
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message or condition}: last error {last_exc}")


def port_is_listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Formation:
    """The four services as real processes on free ports, each in its own process group."""

    def __init__(self, data_dir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.ports = {service: free_port() for service in SERVICES}
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "BLOG_DATA_DIR": str(data_dir),
            "BLOG_HOST": "127.0.0.1",
            **{f"BLOG_{s.upper()}_PORT": str(p) for s, p in self.ports.items()},
            **(extra_env or {}),
        }
        self.processes: dict[str, subprocess.Popen] = {}

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def start(self, *services: str, wait: bool = True) -> None:
        for service in services or SERVICES:
            log = open(self.data_dir / f"{service}.log", "ab")
            self.processes[service] = subprocess.Popen(
                [sys.executable, "-m", f"services.{service}"],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
            log.close()
        if wait:
            for service in services or SERVICES:
                wait_until(lambda: self.health(service), timeout=15, message=f"{service} to be healthy")

    def health(self, service: str) -> dict:
        response = requests.get(f"{self.url(service)}/health", timeout=1)
        response.raise_for_status()
        return response.json()

    def kill(self, service: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes.pop(service)
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)

    def stop(self) -> None:
        for service in list(self.processes):
            self.kill(service, signal.SIGTERM)
