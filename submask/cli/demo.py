"""``submask demo``: the whole story on a real model (see ``submask.examples.demo``)."""

from __future__ import annotations

import click

from .output import overwrite_option, progress_option, show_progress


@click.command()
@click.option("-o", "--output", "out_dir", default="submask-demo", show_default=True,
              type=click.Path(file_okay=False), help="Folder for the models, masks, report.json and plots.")
@click.option("--out", "old_out_dir", hidden=True, type=click.Path(file_okay=False),
              help="Former name of --output.")
@click.option("--steps", default=8, show_default=True, type=click.IntRange(1, 1000),
              help="AdamW steps per finetuning run (fewer is faster).")
@overwrite_option
@progress_option
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def demo(out_dir: str, old_out_dir: str | None, steps: int, overwrite: bool, progress: bool | None,
         quiet: bool) -> None:
    """Finetune MiniLM four ways on CPU, build, compare and apply the update masks (needs submask[demo])."""
    from ..examples.demo import run_demo

    run_demo(old_out_dir or out_dir, steps=steps, progress=show_progress(progress, quiet), echo=click.echo,
             overwrite=overwrite)
