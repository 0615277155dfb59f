"""``submask apply``: write a sparse-update model (finetuned values where a mask is set, base elsewhere)."""

from __future__ import annotations

import click

from ..apply import apply_mask
from .output import echo_json, json_option, overwrite_option, percent, progress_option, show_progress


@click.command("apply")
@click.argument("base")
@click.argument("finetuned")
@click.argument("mask")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Model directory to write (created atomically).")
@click.option("--invert", is_flag=True, help="Keep the finetuned values OUTSIDE the mask (base values inside).")
@overwrite_option
@progress_option
@json_option
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
def apply_command(base: str, finetuned: str, mask: str, out_dir: str, invert: bool, overwrite: bool,
                  progress: bool | None, as_json: bool, quiet: bool) -> None:
    """Write BASE + MASK * (FINETUNED - BASE) as a model dir: the finetuned model's tensor names, dtypes,
    shards and config/tokenizer files. BASE and FINETUNED are model dirs or .safetensors files; MASK is a
    .smask file (or sharded index)."""
    from tqdm import tqdm  # here, not at import: every command line would pay for it

    shown = show_progress(progress, quiet or as_json)
    with tqdm(unit="B", unit_scale=True, unit_divisor=1024, disable=not shown, desc="apply", delay=0.5) as bar:
        def report(nbytes: int, total: int) -> None:
            bar.total = total
            bar.update(nbytes)

        applied = apply_mask(base, finetuned, mask, out_dir, invert=invert, overwrite=overwrite, progress=report)
    share = applied.from_finetuned / applied.numel if applied.numel else 0.0
    if as_json:
        echo_json({"path": str(applied.path), "tensors": applied.tensors, "numel": applied.numel,
                   "from_finetuned": applied.from_finetuned, "density": share})
    elif not quiet:
        click.echo(f"wrote {applied.path}: {applied.tensors} tensors, {applied.from_finetuned:,} of "
                   f"{applied.numel:,} values from the finetuned model ({percent(share):.4g}%)")
