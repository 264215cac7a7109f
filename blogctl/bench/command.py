"""`blogctl bench`: the thin command over the scenarios, printing the report and writing it as JSON."""
from __future__ import annotations

import json
import signal
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from .. import render
from ..errors import BlogctlError
from ..render import console
from .report import figures_table
from .scenarios import SCENARIOS, run_bench


def bench(
    quick: Annotated[bool, typer.Option("--quick", help="Small sizes (well under a minute): checks every scenario runs and loses nothing.")] = False,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the figures as JSON.")] = Path("bench-results.json"),
    json_output: Annotated[bool, typer.Option("--json", help="Print the figures as JSON and nothing else.")] = False,
    broker: Annotated[str | None, typer.Option(
        "--broker", metavar="URL", help="Run the formation on RabbitMQ at URL instead of the HTTP bus.",
    )] = None,
    servers: Annotated[bool, typer.Option(
        "--servers", help="Also serve the bare endpoint and Posts on waitress, granian and gunicorn (those installed), same run.",
    )] = False,
    database: Annotated[str | None, typer.Option(
        "--database", metavar="URL", envvar="BLOG_DATABASE_URL",
        help="An empty PostgreSQL database for the gateway rows (two Posts replicas); its schemas are dropped after.",
    )] = None,
    only: Annotated[list[str] | None, typer.Option(
        "--only", metavar="SCENARIO",
        help=f"Run only this scenario (repeatable; besides the bare endpoint): {', '.join(SCENARIOS)}.",
    )] = None,
) -> None:
    """Benchmark a fresh formation (free ports, temporary data) against a bare endpoint of the same server."""
    # A SIGTERM (a timeout, a CI runner) unwinds like Ctrl-C, so the formation and the bare endpoint are stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    report = run_bench(quick=quick, broker=broker, servers=servers, only=only or (), database=database)
    data = {**asdict(report), "lost_nothing": report.lost_nothing}
    output.write_text(json.dumps(data, indent=2))
    if json_output:
        render.print_json(data)
    else:
        console.print(figures_table(report))
        for scenario, why in report.skipped:
            console.print(render.text(f"skipped {scenario}: {why}", "yellow"))
        for what, held, detail in report.checks:
            console.print(render.text(f"{'✓' if held else '✗'} {what}: {detail}", "green" if held else "red"))
        console.print(render.text(f"Figures written to {output}"))
    if not report.lost_nothing:
        raise BlogctlError("the benchmark lost events: see the checks above")
