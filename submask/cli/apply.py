"""``submask apply``: write a sparse-update model (finetuned values where a mask is set, base elsewhere)."""

from __future__ import annotations

import click

from ..apply import apply_mask
from .root import main


@main.command("apply")
@click.argument("base")
@click.argument("finetuned")
@click.argument("mask")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Model directory to write (created atomically).")
@click.option("--invert", is_flag=True, help="Keep the finetuned values OUTSIDE the mask (base values inside).")
@click.option("--overwrite", is_flag=True, help="Replace the output directory if it exists and is not empty.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
def apply_command(base: str, finetuned: str, mask: str, out_dir: str, invert: bool, overwrite: bool,
                  quiet: bool) -> None:
    """Write BASE + MASK * (FINETUNED - BASE) as a model dir: the finetuned model's tensor names, dtypes,
    shards and config/tokenizer files. BASE and FINETUNED are model dirs or .safetensors files; MASK is a
    .smask file (or sharded index)."""
    from tqdm import tqdm  # here, not at import: every command line would pay for it

    with tqdm(unit="B", unit_scale=True, unit_divisor=1024, disable=quiet, desc="apply", delay=0.5) as bar:
        def progress(nbytes: int, total: int) -> None:
            bar.total = total
            bar.update(nbytes)

        applied = apply_mask(base, finetuned, mask, out_dir, invert=invert, overwrite=overwrite, progress=progress)
    if not quiet:
        share = applied.from_finetuned / applied.numel if applied.numel else 0.0
        click.echo(f"wrote {applied.path}: {applied.tensors} tensors, {applied.from_finetuned:,} of "
                   f"{applied.numel:,} values from the finetuned model ({share:.4%})")
