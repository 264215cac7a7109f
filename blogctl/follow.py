"""Following the services' log files: what `up` in the foreground and `logs --follow` print."""
from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime

from . import render
from .formation import Formation
from .render import console


def log_size(path: os.PathLike) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


class LogFollower:
    """Prints the lines appended to each service's log since `offsets`, prefixed and coloured like honcho."""

    def __init__(self, formation: Formation, offsets: dict[str, int], *, as_json: bool = False) -> None:
        self.formation = formation
        self.offsets = dict(offsets)
        self.partial = {name: b"" for name in offsets}
        self.width = max(map(len, offsets), default=0)
        self.colours = {name: render.LOG_COLOURS[i % len(render.LOG_COLOURS)] for i, name in enumerate(offsets)}
        self.as_json = as_json

    def read_new(self) -> Iterator[tuple[str, str]]:
        for name in self.offsets:
            try:
                with open(self.formation.log_path(name), "rb") as log:
                    if log_size(self.formation.log_path(name)) < self.offsets[name]:
                        self.offsets[name] = 0  # the file was replaced
                    log.seek(self.offsets[name])
                    data = log.read(1024 * 1024)
            except OSError:
                continue
            self.offsets[name] += len(data)
            *complete, self.partial[name] = (self.partial[name] + data).split(b"\n")
            for line in complete:
                yield name, line.decode("utf-8", "replace").rstrip("\r")

    def emit(self, name: str, line: str, when: datetime | None) -> None:
        if self.as_json:
            render.print_json_line({"service": name, "line": line, "time": when.isoformat() if when else None})
        else:
            console.print(render.log_line(name, line, width=self.width, colour=self.colours[name], when=when),
                          soft_wrap=True)

    def print_new(self) -> None:
        for name, line in self.read_new():
            self.emit(name, line, datetime.now())
