"""The options and arguments the commands share, declared once: `--json`, `--timeout`, the
processes a command acts on (a service, or a replica such as `query.2`), a signal."""
from __future__ import annotations

import enum
from typing import Annotated

import typer

from . import gateway
from .runtime import runtime

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON and nothing else.")]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", min=1, help="Seconds to wait for each service to answer /health.")
]


class Signal(str, enum.Enum):
    KILL = "KILL"
    TERM = "TERM"
    INT = "INT"


def _known(ctx: typer.Context) -> list[str]:
    """The processes of the formation: its services and replicas, and the gateway when it has one."""
    config = runtime(ctx).config
    return [*config.instances, *([gateway.PROCESS] if config.gateway else [])]


def _processes(ctx: typer.Context, names: list[str] | str | None):
    """Arguments naming processes of the formation: a service, a replica such as `query.2`, the gateway."""
    known = _known(ctx)
    for name in [names] if isinstance(names, str) else names or []:
        if name not in known:
            raise typer.BadParameter(f"{name!r} is not one of {', '.join(known)}")
    return names


def _complete_processes(ctx: typer.Context, incomplete: str) -> list[str]:
    return [name for name in _known(ctx) if name.startswith(incomplete)]


def process_argument(help: str, *, required: bool = True, metavar: str | None = None):
    return typer.Argument(help=help, metavar=metavar or ("SERVICE..." if required else "[SERVICE]"), callback=_processes,
                          autocompletion=_complete_processes, show_default=False)
