"""The services' apps in this process, wired through the in-memory bus, as the service table lists them."""
from __future__ import annotations

from importlib import import_module

from flask import Flask

from services.shared.components import components
from services.shared.config import Config
from services.table import DEFAULT_SUBSCRIBERS
from services.shared.transport import InMemoryBus

ROUNDS = 20  # a write's events cause at most a few more (a comment, its decision, its update)


def create_apps(config: Config, bus: InMemoryBus, names: tuple[str, ...] = DEFAULT_SUBSCRIBERS) -> dict[str, Flask]:
    """Each service's app on `bus`, consuming. Relays and catch-ups are not started: `relay()` and
    `components(app)["catch-up"].catch_up_once()` drive them."""
    apps = {}
    for name in names:
        app = apps[name] = import_module(f"services.{name}.app").create_app(config, bus.transport(name))
        if "consumer" in components(app):
            components(app)["consumer"].start()
    return apps


def relay(apps: dict[str, Flask]) -> None:
    """Move every outbox to the bus, round after round until none has anything left, as the relay
    threads would: an event one service handles may make it emit another."""
    for _ in range(ROUNDS):
        moved = 0
        for app in apps.values():
            if "relay" in components(app):
                while done := components(app)["relay"].relay_once():
                    moved += done
        if not moved:
            return
    raise AssertionError(f"the outboxes were still not empty after {ROUNDS} rounds")
