"""``submask push``, ``submask pull`` and ``submask ls``: masks on the Hugging Face Hub."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from ..hub import list_masks, pull_mask, push_mask
from .output import echo_json, format_table, json_option, overwrite_option, percent, quiet_option


def _hub_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--endpoint, --token, --repo-type and -q, shared by every Hub command."""
    for option in (
        quiet_option,
        click.option("--repo-type", type=click.Choice(["model", "dataset", "space"]), default="model",
                      show_default=True, help="Kind of Hub repo."),
        click.option("--token", envvar="HF_TOKEN", default=None,
                     help="Hub token [env: HF_TOKEN; default: saved login]."),
        click.option("--endpoint", envvar="HF_ENDPOINT", default=None, help="Hub URL [env: HF_ENDPOINT]."),
    ):
        command = option(command)
    return command


@click.command()
@click.argument("file")
@click.argument("repo")
@click.option("--path", "path_in_repo", help="Path in the repo  [default: masks/FILENAME].")
@click.option("--revision", help="Branch to commit to  [default: the default branch].")
@click.option("--create-pr", is_flag=True, help="Open a pull request instead of committing to the branch.")
@click.option("--message", "-m", help="Commit message.")
@click.option("--overwrite", is_flag=True, help="Replace a mask already at --path.")
@click.option("--no-card", is_flag=True, help="Leave README.md alone (default: update its masks section).")
@click.option("--create-repo", is_flag=True, help="Create the repo first if it does not exist.")
@json_option
@_hub_options
def push(file: str, repo: str, path_in_repo: str | None, revision: str | None, create_pr: bool, message: str | None,
         overwrite: bool, no_card: bool, create_repo: bool, as_json: bool, repo_type: str, token: str | None,
         endpoint: str | None, quiet: bool) -> None:
    """Upload mask FILE (or a sharded mask's index) to Hub repo REPO in one commit."""
    pushed = push_mask(file, repo, path_in_repo, revision=revision, create_pr=create_pr, commit_message=message,
                       overwrite=overwrite, update_card=not no_card, create_repo=create_repo, repo_type=repo_type,
                       token=token, endpoint=endpoint)
    if as_json:
        echo_json({"repo": pushed.repo_id, "path": pushed.path, "revision": pushed.revision, "commit": pushed.commit,
                   "files": list(pushed.files), "pr_url": pushed.pr_url, "url": pushed.url})
        return
    if quiet:
        return
    click.echo(f"pushed {pushed.path} to {repo}@{pushed.revision} (commit {pushed.commit})")
    if pushed.pr_url:
        click.echo(f"pull request: {pushed.pr_url}")


@click.command()
@click.argument("repo")
@click.argument("path")
@click.option("--revision", help="Branch, tag or commit sha  [default: the default branch].")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Also copy the mask here.")
@overwrite_option
@json_option
@_hub_options
def pull(repo: str, path: str, revision: str | None, output: str | None, overwrite: bool, as_json: bool,
         repo_type: str, token: str | None, endpoint: str | None, quiet: bool) -> None:
    """Download the mask at PATH in Hub repo REPO; print its local path and the commit it came from."""
    pulled = pull_mask(repo, path, revision=revision, local_path=output, repo_type=repo_type, token=token,
                       endpoint=endpoint, overwrite=overwrite)
    if as_json:
        echo_json({"local_path": str(pulled.local_path), **pulled.source, "revision": pulled.revision,
                   "url": pulled.url})
    elif not quiet:
        click.echo(str(pulled.local_path))
        click.echo(f"commit {pulled.commit} ({repo}@{pulled.revision})")


@click.command(name="ls")
@click.argument("repo")
@click.option("--revision", help="Branch, tag or commit sha  [default: the default branch].")
@json_option
@_hub_options
def ls(repo: str, revision: str | None, as_json: bool, repo_type: str, token: str | None,
       endpoint: str | None, quiet: bool) -> None:
    """List the masks in Hub repo REPO, reading only their headers."""
    masks = list_masks(repo, revision, repo_type=repo_type, token=token, endpoint=endpoint)
    for problem in masks.problems:  # a damaged mask is reported, the others still listed
        click.echo(f"warning: {problem}", err=True)
    if as_json:
        echo_json({"repo": repo, "revision": revision, "masks": [m.to_json() for m in masks],
                   "problems": masks.problems})
        return
    if quiet:
        return
    if not masks:
        click.echo(f"no masks in {repo}")
        return
    click.echo(format_table(["path", "bytes", "kind", "tensors", "density %", "base model"],
                            [[m.path, m.size, m.kind, m.tensors, percent(m.density), m.base_model or "-"]
                             for m in masks]))
