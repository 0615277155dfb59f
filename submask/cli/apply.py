"""``submask apply``: write a sparse-update model (finetuned values where a mask is set, base elsewhere), or
rebuild a finetuned checkpoint from its base and a delta."""

from __future__ import annotations

import contextlib

import click

from ..apply import apply_mask
from ..errors import UsageError
from ..names import NameMap
from .hub import hub_options
from .names import names_option
from .output import echo_json, json_option, overwrite_option, percent, progress_option, show_progress


@click.command("apply")
@click.argument("base")
@click.argument("finetuned")
@click.argument("mask", required=False)
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Model directory to write (created atomically).")
@click.option("--invert", is_flag=True, help="Keep the finetuned values OUTSIDE the mask (base values inside).")
@names_option("the checkpoints, to the mask's")
@overwrite_option
@progress_option
@json_option
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
@hub_options("base", "finetuned", "mask", bare=True)
def apply_command(base: str, finetuned: str, mask: str | None, out_dir: str, invert: bool, names: NameMap | None,
                  overwrite: bool, progress: bool | None, as_json: bool, quiet: bool) -> None:
    """Write BASE + MASK * (FINETUNED - BASE) as a model dir: the finetuned model's tensor names, dtypes,
    shards and config/tokenizer files. BASE and FINETUNED are model dirs or .safetensors files; MASK is a
    .smask file (or sharded index).

    With two inputs, BASE DELTA (a mask built with --values), rebuild the finetuned checkpoint's weight
    files byte for byte, each checked against the SHA-256 the delta records; nothing else is written
    (config and tokenizer files are not part of a delta, so nothing vouches for them: copy them yourself).
    Any input may be on the Hub: hf://org/name[@revision][/path] (a model may also be org/name[@revision]).
    """
    if mask is None and invert:
        raise UsageError("--invert needs FINETUNED and MASK; a delta rebuilds the finetuned checkpoint only")
    shown = show_progress(progress, quiet or as_json)
    inputs = (finetuned, out_dir) if mask is None else (finetuned, mask, out_dir)
    with contextlib.ExitStack() as stack:
        report = None
        if shown:  # tqdm only then: importing it (and its multiprocessing lock) costs a command line ~0.1 s
            from tqdm import tqdm

            bar = stack.enter_context(tqdm(unit="B", unit_scale=True, unit_divisor=1024, desc="apply", delay=0.5))

            def report(nbytes: int, total: int) -> None:
                bar.total = total
                bar.update(nbytes)

        applied = apply_mask(base, *inputs, invert=invert, overwrite=overwrite, progress=report, names=names)
    share = applied.density
    if as_json:
        echo_json({"path": str(applied.path), "tensors": applied.tensors, "count": applied.count,
                   "numel": applied.numel, "density": share, "rebuilt": mask is None})
    elif quiet:
        return
    elif mask is None:
        click.echo(f"rebuilt {applied.path}: {applied.tensors} tensors, {applied.count:,} of "
                   f"{applied.numel:,} values from the delta ({percent(share):.4g}%); every file matches its "
                   "recorded SHA-256 (weights only: copy config and tokenizer files from the finetuned model)")
    else:
        click.echo(f"wrote {applied.path}: {applied.tensors} tensors, {applied.count:,} of "
                   f"{applied.numel:,} values from the finetuned model ({percent(share):.4g}%)")
