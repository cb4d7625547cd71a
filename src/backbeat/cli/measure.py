"""``backbeat measure ...`` and ``backbeat classify-ua``: measurement jobs from the command line."""

from __future__ import annotations

import click


@click.group()
def measure() -> None:
    """Count podcast downloads and ad delivery from logs (Apache Beam pipelines)."""


COMMANDS: list[click.Command] = [measure]
