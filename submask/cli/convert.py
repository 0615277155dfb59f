"""``submask convert``: masks from and for other tools (calls ``submask.convert.convert``)."""

from __future__ import annotations

import click

from ..convert import FORMATS, convert
from ..convert.writers import DTYPES, WRITERS
from ..names import NameMap
from .names import names_option
from .output import echo_json, json_option, overwrite_option, percent, quiet_option


@click.command("convert")
@click.argument("source_path", metavar="IN")
@click.option("-o", "--output", required=True, help="The file to write; its suffix picks the format unless --to.")
@click.option("--from", "source", type=click.Choice(FORMATS), help="The input's format (default: detected).")
@click.option("--to", "target", type=click.Choice(list(WRITERS)),
              help="The output's format (default: from the suffix: .smask, .safetensors, .pt, .npz, .npy = tall).")
@click.option("--like", help="The model or mask (path or Hub id) whose tensor names and shapes a TALL-masks vector "
                             "or a SHiRA adapter lacks.")
@click.option("--key", help="Which vector of an .npz or torch dict of TALL-masks vectors (one per task).")
@click.option("--dtype", type=click.Choice(DTYPES), default="bool", show_default=True,
              help="Element type of safetensors, torch and npz exports.")
@names_option("the input")
@overwrite_option
@json_option
@quiet_option
def convert_command(source_path: str, output: str, source: str | None, target: str | None, like: str | None,
                    key: str | None, dtype: str, names: NameMap | None, overwrite: bool, as_json: bool,
                    quiet: bool) -> None:
    """Convert a mask between formats: IN is a .smask, a safetensors file of bool or 0/1 tensors, a torch.save
    dict of 0/1 tensors (loaded with weights_only), an .npz of 0/1 arrays, a TALL-masks packed vector (.npy,
    or one of an .npz/torch dict with --key; needs --like) or a PEFT SHiRA adapter (needs --like). Values
    other than 0 and 1 are refused, not rounded. The bits are the same in every format; what the output
    format cannot hold (metadata, names) is said.
    """
    done = convert(source_path, output, source=source, target=target, like=like, key=key, names=names, dtype=dtype,
                   overwrite=overwrite)
    density = done.count / done.numel if done.numel else 0.0
    if as_json:
        echo_json({"path": output, "from": done.source, "to": done.target, "tensors": done.tensors,
                   "count": done.count, "numel": done.numel, "density": density, "dropped": done.dropped})
        return
    if not quiet:
        click.echo(f"wrote {output} ({done.target}) from {source_path} ({done.source}): {done.tensors} tensors, "
                   f"{done.count:,} of {done.numel:,} set (density {percent(density):.4g}%)")
    for what in done.dropped:  # a loss is said even with -q
        click.echo(f"not kept by the {done.target} format: {what}", err=quiet)
