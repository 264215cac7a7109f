"""The bench: a fresh formation measured against a bare endpoint of the same web server.

`load` the one load generator (the fault tests use it too), `carriers` what carries the events,
`bare` the bare endpoint, `scenarios` what is measured, `report` the figures, `command` the
`blogctl bench` command.
"""
from .command import bench

__all__ = ["bench"]
