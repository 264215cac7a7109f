"""Following and searching the services' log files: what `up` in the foreground and `logs` print."""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from . import render
from .formation import Formation
from .render import console


def log_size(path: os.PathLike) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


SEARCHED = 16 * 1024 * 1024  # bytes at the end of each log that a search reads
# When a line was written: a service's text line (`2026-12-03 06:15:44,123 posts INFO ...`) or blogctl's marker
# (`--- blogctl 2026-12-03 06:15:44: ...`); a JSON line (BLOG_LOG_FORMAT=json) says it in "time".
STAMP = re.compile(r"^(?:--- blogctl )?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)")


@dataclass(frozen=True)
class LogFilter:
    """Which lines `logs` shows: matching `pattern`, written at `since` or later, of trace `trace` (a JSON line's
    `trace_id`, or a text line's ` trace_id=...` at its end)."""

    pattern: re.Pattern | None = None
    since: datetime | None = None
    trace: str | None = None

    @property
    def active(self) -> bool:
        return bool(self.pattern or self.since or self.trace)

    def keeps(self, line: str, when: datetime | None) -> bool:
        if self.pattern and not self.pattern.search(line):
            return False
        if self.since and (when is None or when < self.since):
            return False
        return not self.trace or line.endswith(f" trace_id={self.trace}") or _fields(line).get("trace_id") == self.trace


def _fields(line: str) -> dict:
    """A JSON log line's fields ({} for any other line)."""
    if not line.startswith("{"):
        return {}
    try:
        fields = json.loads(line)
    except ValueError:
        return {}
    return fields if isinstance(fields, dict) else {}


def written_at(line: str) -> datetime | None:
    """When `line` was written, if it says so."""
    stamp = _fields(line).get("time") or (match.group(1) if (match := STAMP.match(line)) else None)
    try:
        return datetime.strptime(str(stamp)[:19], "%Y-%m-%d %H:%M:%S") if stamp else None
    except ValueError:
        return None


def search(path: os.PathLike, keep: LogFilter) -> list[str]:
    """The lines of the log at `path` that `keep` keeps; a line with no time of its own (a traceback's) has its
    predecessor's."""
    try:
        with open(path, "rb") as log:
            log.seek(max(0, log_size(path) - SEARCHED))
            text = log.read().decode("utf-8", "replace")
    except OSError:
        return []
    found, when = [], None
    for line in text.splitlines():
        when = written_at(line) or when
        if keep.keeps(line, when):
            found.append(line)
    return found


class LogFollower:
    """Prints the lines appended to each service's log since `offsets`, prefixed and coloured like honcho."""

    def __init__(self, formation: Formation, offsets: dict[str, int], *, as_json: bool = False,
                 keep: LogFilter | None = None) -> None:
        self.formation = formation
        self.keep = keep or LogFilter()
        self.offsets = dict(offsets)
        self.partial = {name: b"" for name in offsets}
        self.width = max(map(len, offsets), default=0)
        self.colours = {name: render.LOG_COLOURS[i % len(render.LOG_COLOURS)] for i, name in enumerate(offsets)}
        self.as_json = as_json

    def follow(self, name: str, offset: int = 0) -> None:
        """Follow one more process's log (one a reload added) from `offset`."""
        if name not in self.offsets:
            self.colours[name] = render.LOG_COLOURS[len(self.offsets) % len(render.LOG_COLOURS)]
            self.width = max(self.width, len(name))
        self.offsets[name], self.partial[name] = offset, b""

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
            now = datetime.now()
            if self.keep.keeps(line, written_at(line) or now):
                self.emit(name, line, now)
