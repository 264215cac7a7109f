"""The one exception type the command line reports as a single line instead of a traceback."""
from __future__ import annotations


class BlogctlError(Exception):
    """An expected failure: str() says what failed and what to do about it, in one line."""
