"""``submask demo``: the whole story on a real model (see ``submask.examples.demo``)."""

from __future__ import annotations

import click

from .root import main


@main.command()
@click.option("--out", "out_dir", default="submask-demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the models, masks, report.json and plots.")
@click.option("--steps", default=8, show_default=True, type=click.IntRange(1, 1000),
              help="AdamW steps per finetuning run (fewer is faster).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def demo(out_dir: str, steps: int, quiet: bool) -> None:
    """Finetune MiniLM four ways on CPU, build, compare and apply the update masks (needs submask[demo])."""
    from ..examples.demo import run_demo

    run_demo(out_dir, steps=steps, progress=not quiet, echo=click.echo)
