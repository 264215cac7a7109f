"""A service's long-lived parts (its transport, consumer, catch-up, outbox relay, the bus's
deliveries), registered by its `create_app` and started and stopped by the one runner.

`create_app` only registers: nothing consumes, relays or opens a thread until `start()`.
Parts start in the order they were registered and stop in reverse, so the transport a
service registers first is closed last, after everything that uses it has stopped.
"""
from __future__ import annotations

import logging
from typing import Protocol, TypeVar

from flask import Flask

log = logging.getLogger(__name__)


class Component(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


C = TypeVar("C", bound=Component)


class Components:
    """The parts of one service, by name, in start order."""

    def __init__(self) -> None:
        self._parts: dict[str, Component] = {}
        self._started: list[tuple[str, Component]] = []

    def add(self, name: str, part: C) -> C:
        if name in self._parts:
            raise ValueError(f"a component named {name!r} is already registered")
        self._parts[name] = part
        return part

    def __getitem__(self, name: str) -> Component:
        return self._parts[name]

    def __contains__(self, name: object) -> bool:
        return name in self._parts

    @property
    def names(self) -> list[str]:
        return list(self._parts)

    def start(self) -> None:
        for name, part in self._parts.items():
            part.start()
            self._started.append((name, part))

    def release_requests(self) -> None:
        """Before the server stops: end what holds a request open (the bus's log streams), so that its
        request threads finish at once rather than at the server's shutdown timeout. Each part that
        holds requests has `release_requests`; the others are left to `stop`."""
        for name, part in self._started:
            release = getattr(part, "release_requests", None)
            if release is not None:
                try:
                    release()
                except Exception:  # noqa: BLE001 - the server stops either way
                    log.exception("releasing the requests of %s failed", name)

    def stop(self) -> None:
        """Stop what was started, newest first; one part failing to stop does not keep the rest running."""
        while self._started:
            name, part = self._started.pop()
            try:
                part.stop()
            except Exception:  # noqa: BLE001 - stopping must reach every part
                log.exception("stopping %s failed", name)


def components(app: Flask) -> Components:
    """The app's components (an empty set for an app that registered none)."""
    return app.extensions.setdefault("components", Components())


class Closing:
    """A resource (the transport) as a component: nothing to start, closed on stop."""

    def __init__(self, resource) -> None:
        self.resource = resource

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self.resource.close()
