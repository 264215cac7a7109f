"""The Query view at any point of the log: `blogctl query --at` and `query --diff`.

The log is replayed, through the transport's inspection seam (`read_log`, so on every transport),
into a throwaway `QueryView` on a temporary database: the same apply path as the Query service's,
never a second read model. A position is a sequence number, or an ISO time (the events logged up
to then; a time without a zone is UTC, as the log's times are).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from services.query import QueryView, open_view
from services.shared.events import Event
from services.shared.transport import Inspection

from .errors import BlogctlError
from .events import log_pages

PAGE = 1000  # events per read of the log


@dataclass(frozen=True)
class Position:
    """A point of the log: after event `seq`, or after every event logged by `time`."""

    seq: int | None = None
    time: datetime | None = None
    text: str = ""  # as the person wrote it

    @classmethod
    def parse(cls, value: str) -> Position:
        if value.isdigit():
            return cls(seq=int(value), text=value)
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise BlogctlError(f"{value!r} is neither a sequence number nor an ISO time "
                               "(such as 42, or 2026-11-26T12:00:00)") from None
        return cls(time=when if when.tzinfo else when.replace(tzinfo=timezone.utc), text=value)

    def includes(self, event: Event) -> bool:
        if self.seq is not None:
            return (event.seq or 0) <= self.seq
        return _logged_at(event) <= self.time


def _logged_at(event: Event) -> datetime:
    when = datetime.fromisoformat(event.time) if event.time else datetime.max.replace(tzinfo=timezone.utc)
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def views_at(log: Inspection, positions: list[Position]) -> list[tuple[int, dict]]:
    """For each position: the sequence number it comes to, and the view there.

    One replay serves them all: the log is read once, up to the furthest, applied a slice at a
    time, and the view is taken as the replay passes each position. A position past the log's
    end, or a time before its first event, is an error saying where the log starts or ends.
    """
    found: dict[int, tuple[int, dict]] = {}
    waiting = list(range(len(positions)))
    with tempfile.TemporaryDirectory(prefix="blogctl-view-") as tmp:
        view = open_view(Path(tmp) / "query.db")
        try:
            applied, first = 0, None
            for page in log_pages(log, page=PAGE):
                first = first or page[0]
                pending: list[Event] = []
                for event in page:
                    reached = [i for i in waiting if not positions[i].includes(event)]
                    if reached:
                        applied = _apply(view, pending, applied)
                        pending = []
                        for i in reached:
                            found[i] = (applied, view.as_dict())
                            waiting.remove(i)
                        if not waiting:
                            break
                    pending.append(event)
                applied = _apply(view, pending, applied)
                if not waiting:
                    break
            for i in waiting:  # the log ended first
                if positions[i].seq is not None and positions[i].seq > applied:
                    raise BlogctlError(f"position {positions[i].seq} is past the end of the log: it ends at seq {applied}"
                                       + ("" if applied else " (it is empty)"))
                found[i] = (applied, view.as_dict())
        finally:
            view.db.close()
    for i, (seq, _) in found.items():
        if positions[i].time is not None and seq == 0:
            raise BlogctlError(f"nothing was logged by {positions[i].text}: " + (
                f"the first event (seq {first.seq}) was logged at {first.time}" if first else "the log is empty"))
    return [found[i] for i in range(len(positions))]


def _apply(view: QueryView, events: list[Event], applied: int) -> int:
    """Apply `events` (a contiguous slice of the log) to the view; the position it is now at."""
    if not events:
        return applied
    view.apply(events, from_log=True)
    return events[-1].seq


def diff(before: dict, after: dict) -> dict:
    """What changed from view `before` to view `after`: posts and comments added, statuses changed."""
    posts_added, comments_added, statuses_changed = [], [], []
    for post_id, post in after.items():
        old = before.get(post_id)
        if old is None:
            posts_added.append({"id": post_id, "title": post["title"]})
        old_comments = {c["id"]: c for c in (old or {}).get("comments", [])}
        for comment in post.get("comments", []):
            was = old_comments.get(comment["id"])
            if was is None:
                comments_added.append({"post_id": post_id, **comment})
            elif was["status"] != comment["status"]:
                statuses_changed.append({"post_id": post_id, "id": comment["id"], "content": comment["content"],
                                         "from": was["status"], "to": comment["status"]})
    return {"posts_added": posts_added, "comments_added": comments_added, "statuses_changed": statuses_changed}
