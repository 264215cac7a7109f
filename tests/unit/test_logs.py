"""The log lines' formatters: logging's own time stamp, made once a second."""
from __future__ import annotations

import json
import logging

from services.shared.logs import JsonLines, TextLines


def record(created: float) -> logging.LogRecord:
    line = logging.LogRecord("blog.access", logging.INFO, __file__, 1, "GET /posts 200 1.0 ms", None, None)
    line.created, line.msecs = created, (created - int(created)) * 1000
    return line


def test_the_time_stamp_is_loggings_own_across_seconds():
    text, as_json, plain = TextLines("posts"), JsonLines("posts"), logging.Formatter()
    for created in (1764752522.803, 1764752522.999, 1764752523.004, 1764752522.5):  # and back: a clock set back
        line = record(created)
        assert text.format(line).startswith(f"{plain.formatTime(line)} posts INFO GET /posts")
        assert json.loads(as_json.format(line))["time"] == plain.formatTime(line)
