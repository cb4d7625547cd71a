"""``backbeat demo``: the whole ads loop on the embedded defaults, in about a minute."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from backbeat.config import Settings


@click.command()
@click.option(
    "--opportunities",
    default=4000,
    show_default=True,
    type=click.IntRange(100, 1_000_000),
    help="Ad breaks in the simulated day.",
)
@click.option("--listeners", default=1500, show_default=True, type=click.IntRange(10, 1_000_000))
@click.option("--seed", default=7, show_default=True, type=int, help="Seed for a repeatable day.")
@click.pass_obj
def demo(settings: Settings, opportunities: int, listeners: int, seed: int) -> None:
    """Book a demo advertiser book, simulate a day of listening against the HTTP app, count, and report."""
    from backbeat.demo.run import run_demo

    run_demo(settings, opportunities=opportunities, listeners=listeners, seed=seed)
