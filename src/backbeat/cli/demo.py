"""``backbeat demo``."""

from __future__ import annotations

import click


@click.command()
def demo() -> None:
    """Book a demo advertiser, simulate a day of listening against the HTTP app, and report."""
