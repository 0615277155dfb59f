"""``submask info`` and ``submask validate`` through click's runner and as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from masks import random_mask
from test_bad_input import edit_header

import submask
from submask import Mask
from submask.cli import main


def make_mask(path: Path) -> Mask:
    mask = random_mask({"layer.0.w": (30, 40), "layer.0.b": (40,)}, {"layer.0.w": 0.1, "layer.0.b": 0.0}, seed=5)
    submask.save(mask, path)
    return mask


def test_info_json_reports_counts_from_the_header(tmp_path: Path) -> None:
    mask = make_mask(tmp_path / "m.smask")
    result = CliRunner().invoke(main, ["info", str(tmp_path / "m.smask"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["count"] == mask.count and report["numel"] == 1240 and report["tensors"] == 2
    assert {row["name"]: row["count"] for row in report["tensor_list"]} == {"layer.0.w": mask["layer.0.w"].count,
                                                                           "layer.0.b": 0}


def test_info_table_lists_every_tensor(tmp_path: Path) -> None:
    make_mask(tmp_path / "m.smask")
    result = CliRunner().invoke(main, ["info", str(tmp_path / "m.smask")])
    assert result.exit_code == 0
    assert "layer.0.w" in result.output and "30x40" in result.output and "update mask, 2 tensors" in result.output


def test_validate_passes_a_sound_file_and_fails_a_corrupt_one(tmp_path: Path) -> None:
    path = tmp_path / "m.smask"
    make_mask(path)
    ok = CliRunner().invoke(main, ["validate", str(path), "--json"])
    assert ok.exit_code == 0 and json.loads(ok.output)["ok"] is True
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    bad = CliRunner().invoke(main, ["validate", str(path), "--json"])
    assert bad.exit_code == 1
    report = json.loads(bad.output)
    assert report["ok"] is False and report["problems"]


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "junk.smask").write_bytes(b"junk")
    result = subprocess.run([sys.executable, "-m", "submask", "info", str(tmp_path / "junk.smask")],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_info_shows_odd_stats_and_validate_reports_them(tmp_path: Path) -> None:
    odd = {"changed": 3, "ladder": {"atol": [0.0, 1e-8], "changed": {"__all__": [1.5, 2]}}}  # counts not integers
    make_mask(tmp_path / "m.smask")
    path = edit_header(tmp_path / "m.smask", lambda header: header.update(stats=odd))
    info = CliRunner().invoke(main, ["info", str(path)])
    assert info.exit_code == 0 and info.exception is None, info.output
    assert "warning: stats 'ladder' must be" in info.output and "layer.0.w" in info.output
    validate = CliRunner().invoke(main, ["validate", str(path)])
    assert validate.exit_code == 1 and "stats 'ladder' must be" in validate.output


def test_info_shows_the_ladder_in_either_documented_form() -> None:
    vectors = Path(__file__).resolve().parent.parent / "spec" / "vectors"
    info = CliRunner().invoke(main, ["info", str(vectors / "rich_metadata-1.1.smask")])  # "changed": [counts]
    assert "count at atol: 0: 40, 1e-08: 38, 1e-05: 30" in info.output
