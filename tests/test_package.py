"""Packaging promises: the core imports without the optional extras; the CLI lists every command."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

import submask
from submask.cli import main

OPTIONAL = ("torch", "huggingface_hub", "matplotlib", "transformers", "safetensors")


def test_core_and_cli_import_without_optional_packages() -> None:
    code = ("import sys, submask, submask.cli; "
            f"print(','.join(m for m in {OPTIONAL!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_every_command_is_registered() -> None:
    expected = {"info", "validate", "build", "stats", "compare", "combine", "plot", "apply", "push", "pull", "ls",
                "demo"}
    assert expected <= set(main.list_commands(click.Context(main)))  # each imported only when it runs
    result = CliRunner().invoke(main, ["--version"])
    assert submask.__version__ in result.output


def test_public_names_exist() -> None:
    missing = [name for name in submask.__all__ if not hasattr(submask, name)]
    assert not missing


def test_package_ships_its_type_hints() -> None:
    from pathlib import Path

    assert (Path(submask.__file__).parent / "py.typed").is_file()


def test_misuse_is_a_usage_error() -> None:
    from submask.builder.criteria import Criterion

    with pytest.raises(submask.UsageError, match="criterion must be one of"):
        Criterion.make("fuzzy")
    with pytest.raises(submask.UsageError, match="apply to hf:// URLs only"):
        submask.open("local.smask", token="x")
    assert issubclass(submask.UsageError, submask.SubmaskError) and issubclass(submask.UsageError, ValueError)
