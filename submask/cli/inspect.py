"""``submask info`` and ``submask validate``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from .. import open as open_mask
from ..errors import SubmaskError
from ..format.stats import ladder_rungs, stats_problems
from ..hub.paths import is_hub_url
from .hub import hub_options
from .output import echo_json, format_table, json_option, percent, quiet_option


@click.command()
@click.argument("path")
@json_option
@hub_options("path")
@quiet_option
def info(path: str, as_json: bool, quiet: bool) -> None:
    """Summarise a mask and list its tensors (reads headers only)."""
    with open_mask(path) as mask_file:
        meta = mask_file.metadata
        entries = mask_file.entries.values()
        numel = sum(e.bits for e in entries)
        ones = sum(e.ones for e in entries)
        rows: list[dict[str, Any]] = [
            {"name": e.name, "shape": list(e.shape), "count": e.ones, "numel": e.bits,
             "density": e.ones / e.bits if e.bits else 0.0, "encoding": e.encoding,
             "bytes": mask_file.payload_size(e.name)}
            | ({"values": {"dtype": e.values.dtype, "size": e.values.size, "bytes": mask_file.values_size(e.name),
                           "planes": mask_file.value_planes(e.name)}} if e.values is not None else {})
            for e in entries
        ]
        stored = sum(r["bytes"] for r in rows)
        summary: dict[str, Any] = {
            "path": path if is_hub_url(path) else str(mask_file.path), "kind": meta.kind, "tensors": len(rows),
            "count": ones, "numel": numel, "density": ones / numel if numel else 0.0,
            "bits_per_param": 8 * stored / numel if numel else 0.0, "criterion": meta.criterion,
            "provenance": meta.provenance, "model": meta.model, "creator": meta.creator, "user": meta.user}
        if mask_file.has_values:
            summary["values"] = _values_summary([r["values"] for r in rows if "values" in r])
        if meta.checkpoint is not None:
            summary["checkpoint"] = [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in meta.checkpoint]
    if as_json:
        echo_json({**summary, "stats": meta.stats, "tensor_list": rows})
        return
    if quiet:
        return
    click.echo(f"{summary['path']}: {meta.kind} mask, {len(rows)} tensors, {ones:,} of {numel:,} set "
               f"(density {percent(summary['density']):.4g}%), {summary['bits_per_param']:.4f} bits/param stored")
    if "values" in summary:
        values = summary["values"]
        click.echo(f"values: {values['bytes']:,} bytes stored for {values['size']:,} bytes of values "
                   f"({len(values['dtypes'])} dtype(s)); planes per dtype, byte 0 first: "
                   + "; ".join(f"{dtype} ({count} tensor(s)): {', '.join(values['planes'].get(dtype, [])) or 'empty'}"
                               for dtype, count in values["dtypes"].items()))
    if "checkpoint" in summary:
        files = summary["checkpoint"]
        click.echo(f"rebuilds {len(files)} file(s), {sum(f['size'] for f in files):,} bytes: "
                   + ", ".join(f["name"] for f in files[:5]) + (", ..." if len(files) > 5 else ""))
    for key in ("criterion", "provenance", "model", "creator", "user"):
        if summary[key]:
            click.echo(f"{key}: {_describe(key, summary[key])}")
    rungs = ladder_rungs(meta.stats)
    if rungs:
        click.echo("count at atol: " + ", ".join(f"{atol:g}: {count:,}" for atol, count in rungs))
    for problem in stats_problems(meta.stats):
        click.echo(f"warning: {problem} (not shown; `submask validate` reports it)")
    values_column = ["values bytes"] if "values" in summary else []
    click.echo(format_table(["tensor", "shape", "count", "density %", "encoding", "bytes", *values_column],
                            [[r["name"], "x".join(map(str, r["shape"])) or "()", r["count"], percent(r["density"]),
                              r["encoding"], r["bytes"], *([r["values"]["bytes"]] if values_column else [])]
                             for r in rows]))


def _values_summary(values: list[dict[str, Any]]) -> dict[str, Any]:
    """Values of every tensor: bytes stored and decoded, tensors per dtype, and per dtype how each byte plane is
    stored ("stored", "zstd", or "mixed" when tensors or blocks differ)."""
    dtypes: dict[str, int] = {}
    planes: dict[str, list[set[str]]] = {}
    for v in values:
        dtypes[v["dtype"]] = dtypes.get(v["dtype"], 0) + 1
        if not v["size"]:  # no values: no planes to describe
            continue
        seen = planes.setdefault(v["dtype"], [set() for _ in v["planes"]])
        for plane, method in zip(seen, v["planes"]):
            plane.add(method)
    return {"bytes": sum(v["bytes"] for v in values), "size": sum(v["size"] for v in values), "dtypes": dtypes,
            "planes": {dtype: [m.pop() if len(m) == 1 else "mixed" for m in seen] for dtype, seen in planes.items()}}


def _describe(key: str, value: object) -> str:
    """One readable line for a metadata field: sources with revisions, combined masks as their operation and
    inputs, the model as its fingerprint and dtypes; anything else as short key=value pairs (--json has all)."""
    if key == "provenance" and isinstance(value, dict):
        combined = value.get("combined")
        if isinstance(combined, dict):
            inputs = [Path(str(i.get("path", "?"))).name if isinstance(i, dict) else str(i)
                      for i in combined.get("inputs", [])]
            return f"{combined.get('op', '?')} of {', '.join(inputs)}"
        return "; ".join(f"{role} {_source(source)}" for role, source in value.items())
    if key == "model" and isinstance(value, dict) and "fingerprint" in value:
        dtypes = value.get("dtypes")
        counts = ", ".join(f"{n} {d}" for d, n in dtypes.items()) if isinstance(dtypes, dict) else ""
        return f"fingerprint {_short(value['fingerprint'], 23)}" + (f", tensors: {counts}" if counts else "")
    if key == "creator" and isinstance(value, dict) and "library" in value:
        return " ".join(str(value[k]) for k in ("library", "version") if k in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_short(v)}" for k, v in value.items() if v is not None)
    return _short(value)


def _source(source: object) -> str:
    """A checkpoint source: its path or Hub id with the revision."""
    if isinstance(source, dict) and "source" in source:
        revision = f"@{source['revision']}" if source.get("revision") else ""
        return f"{source['source']}{revision}"
    return _short(source)


def _short(value: object, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)
    return text if len(text) <= limit else text[:limit - 3] + "..."


@click.command()
@click.argument("path")
@json_option
@hub_options("path")
@quiet_option
def validate(path: str, as_json: bool, quiet: bool) -> None:
    """Decode every tensor and check every checksum; exit 1 on any problem."""
    try:
        with open_mask(path) as mask_file:
            problems, tensors = mask_file.problems(), len(mask_file)
            if is_hub_url(path):  # name the URL given, not the cache file
                from ..hub.pull import as_typed  # here: a local mask needs none of the Hub's modules

                problems = [as_typed(problem, path, mask_file.path) for problem in problems]
    except SubmaskError as exc:
        problems, tensors = [str(exc)], 0
    if as_json:
        echo_json({"path": path, "ok": not problems, "tensors": tensors, "problems": problems})
    else:
        for problem in problems:
            click.echo(f"error: {problem}", err=True)
        if not problems and not quiet:
            click.echo(f"{path}: OK ({tensors} tensors, every checksum verified)")
    if problems:
        sys.exit(1)
