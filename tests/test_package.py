"""Packaging promises: the core imports without the optional extras; the CLI lists every command."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

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
    assert (Path(submask.__file__).parent / "py.typed").is_file()


def test_misuse_is_a_usage_error() -> None:
    from submask.builder.criteria import Criterion

    with pytest.raises(submask.UsageError, match="criterion must be one of"):
        Criterion.make("fuzzy")
    with pytest.raises(submask.UsageError, match="apply to hf:// URLs only"):
        submask.open("local.smask", token="x")
    assert issubclass(submask.UsageError, submask.SubmaskError) and issubclass(submask.UsageError, ValueError)


# -- the lazy packages: names imported on first use (PEP 562) -----------------------------------------------------

LAZY_PACKAGES = ("submask", "submask.builder", "submask.checkpoints", "submask.format", "submask.hub")


def run_fresh(code: str) -> str:
    """``code`` in a new interpreter, where nothing of submask has been imported yet."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_every_public_name_resolves_to_its_home_in_a_fresh_process(package: str) -> None:
    code = f"""
import importlib
package = importlib.import_module({package!r})
homes = {{n: m for m, names in package._HOMES.items() for n in names.split()}}
for name in package.__all__:
    value = getattr(package, name)
    if name in homes:
        assert value is getattr(importlib.import_module({package!r} + "." + homes[name]), name), name
assert set(package.__all__) <= set(dir(package))
exec("from {package} import " + ", ".join(package.__all__))
try:
    package.no_such_name
except AttributeError as exc:
    print(exc)
"""
    assert run_fresh(code) == f"module {package!r} has no attribute 'no_such_name'"


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_lazy_names_match_the_imports_type_checkers_see(package: str) -> None:
    """``_HOMES`` and the imports under ``if TYPE_CHECKING:`` name the same modules: mypy and IDEs see what runs."""
    module = importlib.import_module(package)
    tree = ast.parse(Path(module.__file__ or "").read_text())
    checked = {alias.name: node.module for block in tree.body
               if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
               for node in block.body if isinstance(node, ast.ImportFrom) for alias in node.names}
    homes = {name: home for home, names in module._HOMES.items() for name in names.split()}
    assert checked == homes
    assert set(homes) <= set(module.__all__)


def test_submask_compare_is_the_function_whichever_import_comes_first() -> None:
    code = ("import submask.compare, submask; from submask.compare import Comparison; "
            "import submask.compare as c; print(callable(submask.compare), callable(c), submask.compare.__module__)")
    assert run_fresh(code) == "True True submask.compare"
    assert run_fresh("from submask import compare; import submask.compare; print(compare.__name__)") == "compare"


def test_the_cli_lists_and_loads_every_command() -> None:
    code = ("import sys, click; from submask.cli import COMMANDS, main; "
            "print(sorted(c.name for c in COMMANDS) == main.list_commands(click.Context(main)), "
            "'submask.cli.hub' in sys.modules, 'submask.cli.plot' in sys.modules)")
    assert run_fresh("import sys, submask.cli; print('submask.cli.plot' in sys.modules)") == "False"
    assert run_fresh(code) == "True True True"
