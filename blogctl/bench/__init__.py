"""The bench: a fresh formation measured against a bare endpoint of the same web server.

`load` the one load generator (the fault tests use it too), `carriers` what carries the events,
`bare` the bare endpoint, `harness` what every scenario measures with (`Bench`), `scenarios`,
`views` and `tails` what is measured, `servers` the web servers compared, `report` the figures,
`command` the `blogctl bench` command.
"""
from .command import bench

__all__ = ["bench"]
