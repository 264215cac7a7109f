"""blogctl: run, drive and explain the blog's event-driven services."""

__version__ = "0.1.0"
