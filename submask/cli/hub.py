"""``submask push``, ``submask pull`` and ``submask ls``, and the Hub options every command shares.

One grammar for a Hub thing: ``hf://ORG/NAME[@REVISION][/path]`` (or a bare ``ORG/NAME[@REVISION]`` where a repo
or model is expected), with ``--revision``, ``--token`` and ``--endpoint`` on every command that may talk to the Hub.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..hub.paths import hub_target, is_hub_url, parse_hub_ref
from ..hub.remote import hub_settings
from .output import echo_json, format_table, json_option, overwrite_option, percent, quiet_option

_BARE_REPO = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+(?:@\S+)?")
_FILE_SUFFIXES = (".smask", ".json", ".safetensors")  # local files, never a repo id


def hub_options(*inputs: str, bare: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add --revision, --token and --endpoint to a command whose arguments ``inputs`` may be Hub things.

    --revision applies to every Hub input that names no revision of its own (``hf://...``, and with ``bare`` an
    ``ORG/NAME`` that is no local path); --token and --endpoint to every Hub request the command makes.
    """
    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def run(*args: Any, revision: str | None, token: str | None, endpoint: str | None, **kwargs: Any) -> Any:
            if revision is not None:
                found = False
                for name in inputs:
                    value = kwargs[name]
                    values = value if isinstance(value, tuple) else (value,)
                    pinned = tuple(with_revision(v, revision, bare) if v is not None else v for v in values)
                    found = found or any(v is not None and _is_hub(v, bare) for v in values)
                    kwargs[name] = pinned if isinstance(value, tuple) else pinned[0]
                if not found:
                    raise click.UsageError(
                        "--revision applies to Hub inputs (hf://ORG/NAME[@REVISION]/...); none given")
            with hub_settings(token, endpoint):
                return command(*args, **kwargs)

        for option in (
            click.option("--endpoint", envvar="HF_ENDPOINT", default=None, help="Hub URL [env: HF_ENDPOINT]."),
            click.option("--token", envvar="HF_TOKEN", default=None,
                         help="Hub token [env: HF_TOKEN; default: saved login]."),
            click.option("--revision", help="Branch, tag or commit of every Hub input that names none "
                                            "(hf://ORG/NAME@REVISION is the same)."),
        ):
            run = option(run)
        return run

    return decorate


def _is_hub(text: str, bare: bool) -> bool:
    return is_hub_url(text) or (bare and bool(_BARE_REPO.fullmatch(text)) and not text.endswith(_FILE_SUFFIXES)
                                and not Path(text).exists())


def with_revision(text: str, revision: str, bare: bool = False) -> str:
    """``text`` pinned to ``revision`` when it is a Hub input without a revision; a UsageError when it names
    another one; unchanged when it is local."""
    if not _is_hub(text, bare):
        return text
    target = hub_target(text, None, revision)
    if is_hub_url(text):
        return target.url
    return f"{target.repo_id}@{target.revision}"


_repo_type = click.option("--repo-type", type=click.Choice(["model", "dataset", "space"]), default="model",
                          show_default=True, help="Kind of Hub repo (an hf://datasets/... URL says it too).")


@click.command()
@click.argument("repo")
@click.argument("file")
@click.argument("path_in_repo", metavar="[PATH]", required=False)
@click.option("--create-pr", is_flag=True, help="Open a pull request instead of committing to the branch.")
@click.option("--message", "-m", help="Commit message.")
@click.option("--overwrite", is_flag=True, help="Replace a mask already at PATH.")
@click.option("--no-card", is_flag=True, help="Leave README.md alone (default: update its masks section).")
@click.option("--create-repo", is_flag=True, help="Create the repo first if it does not exist.")
@click.option("--force", is_flag=True, help="Push even if the mask does not fit the safetensors weights in the repo.")
@click.option("--base-model", metavar="ORG/NAME[@REV]",
              help="The Hub model the mask describes, for the card (a mask built from the Hub records it).")
@json_option
@_repo_type
@quiet_option
@hub_options("repo", bare=True)
def push(repo: str, file: str, path_in_repo: str | None, create_pr: bool, message: str | None, overwrite: bool,
         no_card: bool, create_repo: bool, force: bool, base_model: str | None, as_json: bool, repo_type: str,
         quiet: bool) -> None:
    """Upload mask FILE (or a sharded mask's index) to Hub repo REPO at PATH (default masks/FILENAME) in one commit.

    The order is `hf upload`'s: REPO FILE [PATH]. REPO is ORG/NAME, or hf://ORG/NAME[@BRANCH][/PATH]. The
    mask must fit the repo's safetensors weights (names and shapes, read from their headers) unless --force.
    The commit also updates the model card (masks table, base_model and a submask tag in its metadata) and
    uploads the mask's density picture next to it, unless --no-card.
    """
    if Path(repo).is_file() and not Path(file).exists():
        raise click.UsageError(f"push takes REPO FILE [PATH], in the order of `hf upload`: submask push {file} {repo}")
    from ..hub.push import push_mask  # here: every command has the Hub options, few push

    pushed = push_mask(file, repo, path_in_repo, create_pr=create_pr, commit_message=message, overwrite=overwrite,
                       update_card=not no_card, create_repo=create_repo, force=force, base_model=base_model,
                       repo_type=repo_type)
    for problem in pushed.problems:
        click.echo(f"warning: {problem}", err=True)
    if as_json:
        echo_json({"repo": pushed.repo_id, "path": pushed.path, "revision": pushed.revision, "commit": pushed.commit,
                   "files": list(pushed.files), "picture": pushed.picture, "pr_url": pushed.pr_url, "url": pushed.url,
                   "problems": list(pushed.problems)})
        return
    if quiet:
        return
    click.echo(f"pushed {pushed.path} to {pushed.repo_id}@{pushed.revision} (commit {pushed.commit})")
    if pushed.pr_url:
        click.echo(f"pull request: {pushed.pr_url}")


@click.command()
@click.argument("repo")
@click.argument("path", required=False)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Also copy the mask here.")
@overwrite_option
@json_option
@_repo_type
@quiet_option
@hub_options("repo", bare=True)
def pull(repo: str, path: str | None, output: str | None, overwrite: bool, as_json: bool, repo_type: str,
         quiet: bool) -> None:
    """Download a mask: hf://ORG/NAME[@REVISION]/PATH, or REPO PATH. Prints only its local path (the commit it
    came from goes to stderr), so $(submask pull ...) is the file."""
    from ..hub.pull import pull_mask

    pulled = pull_mask(repo, path, local_path=output, repo_type=repo_type, overwrite=overwrite)
    if as_json:
        echo_json({"local_path": str(pulled.local_path), **pulled.source, "revision": pulled.revision,
                   "url": pulled.url})
        return
    click.echo(str(pulled.local_path))  # even with -q: it is the command's answer
    if not quiet:
        click.echo(f"commit {pulled.commit} ({pulled.repo_id}@{pulled.revision})", err=True)


@click.command(name="ls")
@click.argument("repo")
@json_option
@_repo_type
@quiet_option
@hub_options("repo", bare=True)
def ls(repo: str, as_json: bool, repo_type: str, quiet: bool) -> None:
    """List the masks in Hub repo REPO (ORG/NAME, or hf://ORG/NAME[@REVISION][/FOLDER]), reading only headers."""
    from ..hub.listing import list_masks

    masks = list_masks(repo, repo_type=repo_type)
    for problem in masks.problems:  # a mask that cannot be read is reported, the others still listed
        click.echo(f"warning: {problem}", err=True)
    if as_json:
        target = hub_target(repo)
        echo_json({"repo": target.repo_id, "revision": target.revision, "masks": [m.to_json() for m in masks],
                   "problems": masks.problems})
        return
    if quiet:
        return
    if not masks:
        shown = parse_hub_ref(repo).url if is_hub_url(repo) else repo
        click.echo(f"no masks in {shown}")
        return
    click.echo(format_table(["path", "bytes", "kind", "tensors", "density %", "base model"],
                            [[m.path, m.size, m.kind, m.tensors, percent(m.density), m.base_model or "-"]
                             for m in masks]))
