"""``submask stats``, ``compare``, ``combine`` and ``plot`` on files written by ``submask.save``."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import submask
from submask import Mask
from submask.cli import main

LAYERS, MODULES = 4, ("self_attn.q_proj", "self_attn.v_proj", "mlp.up_proj")


def model_mask(seed: int, density: float) -> dict[str, np.ndarray]:
    """A small Llama-like mask whose density grows with the layer index."""
    rng = np.random.default_rng(seed)
    arrays = {"model.embed_tokens.weight": rng.random((50, 16)) < density / 4}
    for layer in range(LAYERS):
        for i, module in enumerate(MODULES):
            arrays[f"model.layers.{layer}.{module}.weight"] = rng.random((16, 24 + 8 * i)) < density * (layer + 1)
    return arrays


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[dict[str, np.ndarray]]]:
    root = tmp_path_factory.mktemp("cli_analysis")
    arrays = [model_mask(seed, density) for seed, density in enumerate((0.05, 0.08, 0.2))]
    paths = [root / f"run{i}.smask" for i in range(3)]
    for i, (path, mask) in enumerate(zip(paths, arrays)):
        submask.save(Mask.from_numpy(mask, kind="update", provenance={"seed": i}), path)
    return paths, arrays


def invoke(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_stats_table_and_json(files: tuple) -> None:
    paths, arrays = files
    code, out, _ = invoke("stats", paths[0], "--json")
    assert code == 0
    groups = json.loads(out)["groups"]
    assert list(groups) == ["all", "0", "1", "2", "3", "embeddings"]
    layer2 = [a for n, a in arrays[0].items() if ".layers.2." in n]
    assert groups["2"]["count"] == sum(a.sum() for a in layer2)
    assert groups["2"]["numel"] == sum(a.size for a in layer2)
    code, out, _ = invoke("stats", paths[0], "--by", "module")
    assert code == 0
    line = next(row for row in out.splitlines() if row.startswith("mlp.up_proj"))
    up = [a for n, a in arrays[0].items() if "up_proj" in n]
    assert line.split()[1] == str(sum(a.sum() for a in up))


def test_compare_json_csv_and_table(files: tuple) -> None:
    paths, arrays = files
    flat = [np.concatenate([a.ravel() for a in m.values()]) for m in arrays]
    code, out, _ = invoke("compare", *paths, "--json", "--by", "layer", "-q")
    assert code == 0
    data = json.loads(out)
    overall = [p for p in data["pairs"] if p["group"] == "all"]
    assert [(p["a"], p["b"]) for p in overall] == [(str(paths[i]), str(paths[j])) for i, j in [(0, 1), (0, 2), (1, 2)]]
    both = np.sum(flat[0] & flat[2])
    assert overall[1]["intersection"] == both
    assert overall[1]["overlap_a"] == pytest.approx(both / flat[0].sum())
    assert overall[1]["jaccard"] == pytest.approx(both / np.sum(flat[0] | flat[2]))
    assert {p["group"] for p in data["pairs"]} == {"all", "0", "1", "2", "3", "embeddings"}
    code, out, _ = invoke("compare", paths[0], paths[1], "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 1
    assert int(rows[0]["intersection"]) == np.sum(flat[0] & flat[1])
    assert float(rows[0]["global_chance_jaccard"]) == pytest.approx(
        submask.chance_jaccard(flat[0].mean(), flat[1].mean()))
    stratified = submask.pair_stats(submask.load(paths[0]), submask.load(paths[1])).chance_jaccard
    assert float(rows[0]["chance_jaccard"]) == pytest.approx(stratified)
    code, out, _ = invoke("compare", *paths, "--by", "layer")
    assert code == 0
    header, _, row = out.splitlines()[:3]
    assert header.split()[:6] == ["group", "A", "B", "|A", "and", "B|"] and "x chance (stratified)" in header
    assert row.split()[:4] == ["all", "run0.smask", "run1.smask", str(np.sum(flat[0] & flat[1]))]
    assert max(len(line) for line in out.splitlines()) <= 120
    assert "stratified" in out and "--json or --csv" in out  # each ratio names its baseline
    code, _, err = invoke("compare", paths[0], paths[1], "--csv", "--json")
    assert code == 2 and "--json and --csv" in err


def test_compare_mismatch_is_an_error_unless_common(files: tuple, tmp_path: Path) -> None:
    paths, arrays = files
    partial = {n: a for n, a in arrays[1].items() if "embed" not in n}
    submask.save(Mask.from_numpy(partial), tmp_path / "partial.smask")
    code, _, err = invoke("compare", paths[0], tmp_path / "partial.smask")
    assert code == 1 and err.startswith("error: ") and "--common" in err
    code, out, _ = invoke("compare", paths[0], tmp_path / "partial.smask", "--common", "--json")
    assert code == 0 and json.loads(out)["pairs"][0]["numel"] == sum(a.size for a in partial.values())
    code, _, err = invoke("compare", paths[0])
    assert code == 2 and "at least two" in err


def test_compare_and_plot_verify_crcs_unless_no_verify(files: tuple, tmp_path: Path) -> None:
    paths, _ = files
    data = bytearray(paths[0].read_bytes())
    with submask.open(paths[0]) as mask_file:
        name = next(n for n, e in mask_file.entries.items() if e.encoding == "raw" and 0 < e.ones < e.bits)
        at = bytes(data).index(mask_file.payload(name))
        payload = mask_file.payload(name)
    byte = next(i for i, value in enumerate(payload) if value not in (0, 255))
    data[at + byte] = ((payload[byte] << 1) | (payload[byte] >> 7)) & 0xFF  # rotated: other bits, same count
    damaged = tmp_path / "damaged.smask"
    damaged.write_bytes(bytes(data))
    code, _, err = invoke("compare", damaged, paths[1], "-q")
    assert code == 1 and "damaged.smask" in err and "CRC-32" in err
    code, out, _ = invoke("compare", damaged, paths[1], "-q", "--no-verify", "--json")
    assert code == 0 and json.loads(out)["pairs"][0]["count_a"] == sum(a.sum() for a in files[1][0].values())
    code, _, err = invoke("plot", damaged, paths[1], "-o", tmp_path / "plots", "-q", "--kind", "overlap")
    assert code == 1 and "CRC-32" in err
    assert invoke("plot", damaged, paths[1], "-o", tmp_path / "plots", "-q", "--no-verify", "--kind", "overlap")[0] == 0


def test_combine_writes_mask_with_provenance(files: tuple, tmp_path: Path) -> None:
    paths, arrays = files
    out_path = tmp_path / "both.smask"
    code, out, _ = invoke("combine", "and", paths[0], paths[1], "-o", out_path)
    assert code == 0 and str(out_path) in out
    code, out, _ = invoke("combine", "and", paths[0], paths[1], "-o", out_path, "-q", "--overwrite")
    assert (code, out) == (0, "")  # -q: no progress bar and no summary
    result = submask.load(out_path)
    name = "model.layers.3.mlp.up_proj.weight"
    np.testing.assert_array_equal(result[name].to_numpy(), arrays[0][name] & arrays[1][name])
    combined = result.metadata.provenance["combined"]
    assert combined["op"] == "and" and [i["provenance"] for i in combined["inputs"]] == [{"seed": 0}, {"seed": 1}]
    assert all(i["fingerprint"].startswith("sha256:") for i in combined["inputs"])
    code, _, err = invoke("combine", "not", paths[0], paths[1], "-o", tmp_path / "x.smask")
    assert code == 2 and "exactly one" in err and not (tmp_path / "x.smask").exists()  # a usage error


def test_plot_writes_png_heatmaps(files: tuple, tmp_path: Path) -> None:
    paths, _ = files
    code, out, _ = invoke("plot", *paths, "-o", tmp_path / "plots", "-q")
    assert code == 0
    written = [Path(line) for line in out.splitlines()]
    assert [p.name for p in written] == ["run0.density.png", "run1.density.png", "run2.density.png", "run0.layers.png",
                                         "run1.layers.png", "run2.layers.png", "overlap.png"]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("L"), dtype=float)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 300
        assert pixels.std() > 20, f"{path} looks blank"
        assert len(np.unique(pixels)) > 50


def _dominant_colour(path: Path) -> tuple[int, ...]:
    """The most frequent colour that is not white-ish: the heatmap's cells."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    colours, counts = np.unique(pixels[pixels.min(axis=1) < 200], axis=0, return_counts=True)
    return tuple(int(c) for c in colours[np.argmax(counts)])


def test_plot_keeps_same_named_masks_apart_on_one_colour_scale(tmp_path: Path) -> None:
    paths = []
    for folder, density in (("a", 0.1), ("b", 0.4)):
        bits = np.zeros(2000, bool)
        bits[: int(2000 * density)] = True
        paths.append(tmp_path / folder / "rl.smask")
        paths[-1].parent.mkdir()
        submask.save(Mask.from_numpy({"model.layers.0.mlp.up_proj.weight": bits.reshape(40, 50)}), paths[-1])
    code, out, _ = invoke("plot", *paths, "-o", tmp_path / "plots", "-q", "--kind", "density", "--kind", "overlap")
    assert code == 0
    assert [Path(line).name for line in out.splitlines()] == ["rl-1.density.png", "rl-2.density.png", "overlap.png"]
    sparse, dense = (_dominant_colour(tmp_path / "plots" / f"rl-{i}.density.png") for i in (1, 2))
    assert sparse == dense  # each mask on its own scale: both at the top of it
    code, out, _ = invoke("plot", *paths, "-o", tmp_path / "shared", "-q", "--kind", "density", "--shared-scale")
    sparse, dense = (_dominant_colour(tmp_path / "shared" / f"rl-{i}.density.png") for i in (1, 2))
    assert code == 0 and sparse != dense  # one scale: 10% and 40% get different colours


def test_info_is_readable_for_a_combined_mask(files: tuple, tmp_path: Path) -> None:
    paths, _ = files
    combined = tmp_path / "both.smask"
    assert invoke("combine", "or", *paths, "-o", combined, "-q")[0] == 0
    code, out, _ = invoke("info", combined)
    assert code == 0
    assert "provenance: or of run0.smask, run1.smask, run2.smask" in out.splitlines()
    assert max(len(line) for line in out.splitlines()[1:]) <= 120 and "{" not in out  # line 1 has the path
    assert "density %" in out
