"""File names in checkpoint layouts and sharded indexes (issue 21, item 3): one rule (FORMAT.md §8), applied by
validate, by every reader and by the writers: no NUL or control character, no separator, not '.' or '..', at
most 255 bytes of UTF-8."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_hostile import container

import submask
from submask import FormatError, Mask
from submask.format.reader import INDEX_SUFFIX
from submask.metadata import CheckpointFile, file_name_problem, is_bare_file_name

VECTORS = Path(__file__).resolve().parent.parent / "spec" / "vectors"
BAD_NAMES = ["model\x00.safetensors", "a\nb.json", "tab\there", "del\x7f", "c1\x85", "../x", "a/b", "a\\b", ".", "..",
             "", "x" * 256, "é" * 128, "\ud800.json"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_the_rule_refuses(name: str) -> None:
    assert file_name_problem(name) is not None and not is_bare_file_name(name)


@pytest.mark.parametrize("name", ["model.safetensors", "x" * 255, "é" * 127, "config (1).json", "..a", "日本.json"])
def test_the_rule_accepts(name: str) -> None:
    assert file_name_problem(name) is None


def delta_with_checkpoint_name(path: Path, name: str) -> Path:
    """The 1.2 delta vector with its config.json renamed ``name``, header checksum redone."""
    data = (VECTORS / "values-1.2.smask").read_bytes()
    (length,) = np.frombuffer(data[:8], "<u8")
    outer = json.loads(data[8 : 8 + int(length)])
    header: dict[str, Any] = json.loads(outer["__metadata__"]["submask"])
    header["checkpoint"]["files"][1]["name"] = name
    body = data[8 + int(length):]
    payloads = {}
    for entry, info in sorted(((k, v) for k, v in outer.items() if k != "__metadata__"),
                              key=lambda item: item[1]["data_offsets"][0]):
        begin, end = info["data_offsets"]
        payloads[entry] = body[begin:end]
    path.write_bytes(container(json.dumps(header), payloads))
    return path


def run(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "submask", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_a_nul_in_a_checkpoint_name_is_refused_by_validate_and_every_reader(tmp_path: Path) -> None:
    path = delta_with_checkpoint_name(tmp_path / "nul.smask", "config\x00.json")
    result = run("validate", path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "NUL" in result.stderr
    with pytest.raises(FormatError, match="NUL"):
        submask.open(path)
    result = run("apply", VECTORS / "values-1.2.smask", path, "-o", tmp_path / "out")  # rebuild from a delta
    assert result.returncode == 1 and "Traceback" not in result.stderr and "NUL" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_a_writer_refuses_a_checkpoint_name_a_reader_would(tmp_path: Path) -> None:
    delta = submask.load_delta(VECTORS / "values-1.2.smask")
    layout = list(delta.checkpoint or [])
    layout[1] = CheckpointFile("config\x01.json", layout[1].size, layout[1].sha256, text=layout[1].text)
    delta = dataclasses.replace(delta, checkpoint=layout)
    with pytest.raises(FormatError, match="control character"):
        submask.save(delta, tmp_path / "d.smask")
    assert not list(tmp_path.iterdir())


def test_an_index_naming_a_shard_with_a_control_character_is_refused(tmp_path: Path) -> None:
    mask = Mask.from_numpy({f"t{i}": np.arange(200) % (i + 2) == 0 for i in range(3)})
    submask.save(mask, tmp_path / "m.smask", max_shard_bytes=40)
    index_path = tmp_path / ("m.smask" + INDEX_SUFFIX)
    index = json.loads(index_path.read_text())
    first = next(iter(index["weight_map"].values()))
    (tmp_path / first).rename(tmp_path / (first + "\x1b"))
    index["weight_map"] = {k: v + "\x1b" if v == first else v for k, v in index["weight_map"].items()}
    index_path.write_text(json.dumps(index))
    with pytest.raises(FormatError, match="control character"):
        submask.open(index_path)
    result = run("validate", index_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr and "control character" in result.stderr


def test_a_sharded_writer_refuses_a_target_whose_shard_names_a_reader_would_refuse(tmp_path: Path) -> None:
    mask = Mask.from_numpy({f"t{i}": np.arange(200) % (i + 2) == 0 for i in range(3)})
    with pytest.raises(FormatError, match="control character"):
        submask.save(mask, tmp_path / "m\x07.smask", max_shard_bytes=40)
    assert not list(tmp_path.iterdir())
