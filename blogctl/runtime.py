"""What a command works with: the configuration, the HTTP client and the supervisor, built from the global options.

The services' configuration module is the only port table: `--host`, `--port` and `--data-dir`
become `BLOG_*` variables and go through `config.load()` like everything else.
"""
from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from urllib.parse import urlsplit

import typer

from services.shared import config as config_module
from services.shared.config import SERVICES, Config

from .client import BlogClient, ServiceError
from .errors import BlogctlError
from .formation import Formation, child_environment

ROOT = Path(__file__).resolve().parent.parent  # the project: Procfile, .env, services/

# The services as a choice for arguments (validation and shell completion come with it).
Service = enum.Enum("Service", {name: name for name in SERVICES}, type=str)


def make_formation(config: Config, procfile: Path, env: Mapping[str, str]) -> Formation:
    addresses = {name: (urlsplit(config.url(name)).hostname, port) for name, port in config.ports.items()}
    return Formation(procfile, run_dir=config.run_dir, env=env, addresses=addresses)


@dataclass(frozen=True)
class Wiring:
    """Factories for a command's collaborators. Tests hand in fakes: `CliRunner().invoke(app, args, obj=Wiring(...))`."""

    client: Callable[[Config], BlogClient] = BlogClient
    formation: Callable[[Config, Path, Mapping[str, str]], Formation] = make_formation


class Runtime:
    """Built lazily, so `--help` works even when a `BLOG_*` variable is broken."""

    def __init__(self, *, overrides: dict[str, str], procfile: Path | None, wiring: Wiring | None = None) -> None:
        self.overrides = overrides
        self.procfile = procfile or ROOT / "Procfile"
        self.wiring = wiring or Wiring()

    @cached_property
    def env(self) -> dict[str, str]:
        env = child_environment(self.procfile.parent, self.overrides)
        # Relative data directories mean "in the project", where the services run.
        env["BLOG_DATA_DIR"] = str((self.procfile.parent / env.get("BLOG_DATA_DIR", ".blog")).resolve())
        return env

    @cached_property
    def config(self) -> Config:
        try:
            return config_module.load(self.env)
        except config_module.ConfigError as exc:
            raise BlogctlError(f"bad configuration: {exc} — fix the variable or pass --host/--port") from None

    @cached_property
    def client(self) -> BlogClient:
        return self.wiring.client(self.config)

    @cached_property
    def formation(self) -> Formation:
        return self.wiring.formation(self.config, self.procfile, self.env)

    def is_healthy(self, name: str) -> bool:
        if name not in self.config.ports:  # a Procfile entry that is not one of our services
            return self.formation.state(name).running
        try:
            self.client.health(name)
        except ServiceError:
            return False
        return True


def runtime(ctx: typer.Context) -> Runtime:
    return ctx.find_root().obj


def port_overrides(values: list[str]) -> dict[str, str]:
    """`--port posts=5100` as `BLOG_POSTS_PORT=5100`."""
    overrides = {}
    for value in values:
        name, sep, port = value.partition("=")
        if not sep or name not in SERVICES or not port.isdigit():
            raise typer.BadParameter(f"{value!r} is not SERVICE=PORT with SERVICE one of {', '.join(SERVICES)}")
        overrides[f"BLOG_{name.upper()}_PORT"] = port
    return overrides
