"""Masks for merging: top-k and min-abs magnitude masks, k-of-n votes, and the paper's bf16 isclose rule
checked against torch's own isclose."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import submask
from submask import Mask, UsageError
from submask.cli import main

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path, dict, dict]:
    """A float32 pair with deliberate ties and unchanged elements."""
    generator = torch.Generator().manual_seed(0)
    base = {"a": torch.randn(40, 30, generator=generator), "b": torch.randn(257, generator=generator),
            "c": torch.zeros(16)}
    finetuned = {name: value + torch.randn(value.shape, generator=generator) * (torch.rand(value.shape) < 0.6)
                 for name, value in base.items()}
    finetuned["b"][:10] = base["b"][:10] + 0.5  # ties (same float64 magnitude where the sums round alike)
    finetuned["c"] = base["c"].clone()
    finetuned["c"][3] = 1.0  # one change in c
    safetensors_torch.save_file(base, tmp_path / "base.safetensors")
    safetensors_torch.save_file(finetuned, tmp_path / "ft.safetensors")
    return tmp_path / "base.safetensors", tmp_path / "ft.safetensors", base, finetuned


def magnitudes(base: dict, finetuned: dict) -> dict[str, np.ndarray]:
    return {n: np.abs(finetuned[n].numpy().astype(np.float64) - base[n].numpy().astype(np.float64))
            for n in base}


def reference_top_k(order: list[tuple[str, int, float]], k: int) -> set[tuple[str, int]]:
    """The k largest (name, index, magnitude) with magnitude > 0, ties to earlier (tensor order, index)."""
    eligible = [item for item in order if item[2] > 0]
    ranked = sorted(range(len(eligible)), key=lambda i: (-eligible[i][2], i))
    return {(eligible[i][0], eligible[i][1]) for i in ranked[:k]}


def set_positions(mask: Mask) -> set[tuple[str, int]]:
    return {(n, int(i)) for n in mask for i in mask[n].to_indices()}


def test_top_k_per_tensor(pair) -> None:
    base_path, ft_path, base, finetuned = pair
    built = submask.build_mask(base_path, ft_path, top_k="5%")
    mags = magnitudes(base, finetuned)
    for name, mag in mags.items():
        flat = mag.reshape(-1)
        expected = reference_top_k([(name, i, float(m)) for i, m in enumerate(flat)], math.floor(0.05 * flat.size))
        assert {(name, int(i)) for i in built.mask[name].to_indices()} == expected, name
    assert built.mask["c"].count == 0  # floor(0.05 * 16) = 0
    assert built.metadata.criterion["name"] == "top_k" and built.metadata.criterion["fraction"] == 0.05
    assert "lower flat index" in built.metadata.criterion["ties"]


@pytest.mark.parametrize("fraction", [0.01, 0.3, 1.0])
def test_top_k_global(pair, fraction: float) -> None:
    base_path, ft_path, base, finetuned = pair
    built = submask.build_mask(base_path, ft_path, top_k=fraction, top_k_scope="global")
    base_order = list(safetensors_torch.load_file(base_path))  # the base checkpoint's order
    mags = magnitudes(base, finetuned)
    order = [(n, i, float(m)) for n in base_order for i, m in enumerate(mags[n].reshape(-1))]
    assert set_positions(built.mask) == reference_top_k(order, math.floor(fraction * len(order)))


def test_top_k_ties_are_broken_by_index(tmp_path: Path) -> None:
    base = {"w": torch.zeros(10)}
    finetuned = {"w": torch.tensor([1.0, 2, 2, 2, 0, 2, 1, 0, 0, 3])}
    safetensors_torch.save_file(base, tmp_path / "b.safetensors")
    safetensors_torch.save_file(finetuned, tmp_path / "f.safetensors")
    mask = submask.build_mask(tmp_path / "b.safetensors", tmp_path / "f.safetensors", top_k=0.3).mask
    assert mask["w"].to_indices().tolist() == [1, 2, 9]  # 3 first, then the first two of the four 2s
    everything = submask.build_mask(tmp_path / "b.safetensors", tmp_path / "f.safetensors", top_k=1.0).mask
    assert everything["w"].to_indices().tolist() == [0, 1, 2, 3, 5, 6, 9]  # unchanged elements never set


def test_min_abs_and_cli(pair, tmp_path: Path) -> None:
    base_path, ft_path, base, finetuned = pair
    built = submask.build_mask(base_path, ft_path, min_abs=0.5)
    for name, mag in magnitudes(base, finetuned).items():
        assert np.array_equal(built.mask[name].to_numpy(), mag >= 0.5), name
    assert built.metadata.criterion == {"name": "min_abs", "atol": None, "rtol": None, "min_abs": 0.5}
    run = CliRunner().invoke(main, ["build", str(base_path), str(ft_path), "-o", str(tmp_path / "t.smask"),
                                    "--top-k", "5%", "--global", "--json"])
    assert run.exit_code == 0, run.output
    assert submask.load(tmp_path / "t.smask").metadata.criterion["scope"] == "global"
    for bad in (["--top-k", "5%", "--atol", "1e-3"], ["--top-k", "150%"], ["--global"], ["--min-abs", "0"]):
        run = CliRunner().invoke(main, ["build", str(base_path), str(ft_path), "-o", str(tmp_path / "x.smask"), *bad])
        assert run.exit_code in (1, 2) and not (tmp_path / "x.smask").exists(), bad


def test_vote(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    shapes = {"w": (33, 7), "b": (5,)}
    inputs = [{n: rng.random(s) < 0.5 for n, s in shapes.items()} for _ in range(4)]
    paths = []
    for i, arrays in enumerate(inputs):
        paths.append(str(tmp_path / f"m{i}.smask"))
        submask.save(Mask.from_numpy(arrays), paths[-1])
    for k in (1, 2, 4):
        run = CliRunner().invoke(main, ["combine", "vote", "--at-least", str(k), *paths, "-o",
                                        str(tmp_path / f"v{k}.smask")])
        assert run.exit_code == 0, run.output
        voted = submask.load(tmp_path / f"v{k}.smask")
        for name in shapes:
            expected = sum(a[name].astype(int) for a in inputs) >= k
            assert np.array_equal(voted[name].to_numpy(), expected), (k, name)
        assert voted.metadata.provenance["combined"]["at_least"] == k
    union = submask.load(tmp_path / "v1.smask")
    assert union["w"] == (submask.load(paths[0]) | submask.load(paths[1]) | submask.load(paths[2])
                          | submask.load(paths[3]))["w"]
    with pytest.raises(UsageError, match="at_least"):
        submask.combine_files("vote", paths, tmp_path / "bad.smask", at_least=5)
    run = CliRunner().invoke(main, ["combine", "vote", *paths, "-o", str(tmp_path / "bad.smask")])
    assert run.exit_code == 2 and not (tmp_path / "bad.smask").exists()  # a usage error


@pytest.mark.parametrize("device", ["cpu-numpy", "cpu-torch"])
def test_paper_rule_matches_torch_isclose(tmp_path: Path, device: str) -> None:
    generator = torch.Generator().manual_seed(1)
    base = (torch.randn(4096, generator=generator) * 0.02).to(torch.bfloat16)
    # differences around the tolerance: where float64 |d| <= 1e-5 and bf16 rounding disagree
    steps = torch.randn(4096, generator=generator) * 2e-5
    finetuned = (base.float() + steps).to(torch.bfloat16)
    finetuned[:8] = torch.tensor([float("nan"), float("inf"), 0.0, -0.0, 1e-5, -1e-5, 1.0013e-5, 1.0015e-5])
    base[:8] = torch.tensor([0.0, 0.0, -0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    delta = finetuned - base  # subtracted in bf16, as the paper's script does
    expected = ~torch.isclose(delta, torch.zeros_like(delta), atol=1e-5)
    if device == "cpu-numpy":
        safetensors_torch.save_file({"w": base}, tmp_path / "b.safetensors")
        safetensors_torch.save_file({"w": finetuned}, tmp_path / "f.safetensors")
        built = submask.build_mask(tmp_path / "b.safetensors", tmp_path / "f.safetensors", criterion="isclose_bf16")
    else:
        from submask.builder.backends import TorchBackend

        built = submask.build_mask({"w": base}, {"w": finetuned}, criterion="isclose_bf16",
                                   device=TorchBackend("cpu"))
    assert np.array_equal(built.mask["w"].to_numpy(), expected.numpy())
    by_atol = submask.build_mask({"w": base}, {"w": finetuned}, atol=1e-5).mask["w"].to_numpy()
    assert not np.array_equal(by_atol, expected.numpy())  # the float64 tolerance is another rule
    assert built.metadata.criterion["name"] == "isclose_bf16" and built.metadata.criterion["atol"] == 1e-5
    assert "bf16" in built.metadata.criterion["rule"]


def test_paper_rule_on_minilm(minilm_bf16) -> None:
    """On a real bf16 finetune, isclose_bf16 equals torch.isclose on the bf16 deltas, tensor by tensor."""
    built = submask.build_mask(minilm_bf16.base_file, minilm_bf16.finetuned_file, criterion="isclose_bf16")
    by_atol = submask.build_mask(minilm_bf16.base_file, minilm_bf16.finetuned_file, atol=1e-5).mask
    base = safetensors_torch.load_file(minilm_bf16.base_file)
    finetuned = safetensors_torch.load_file(minilm_bf16.finetuned_file)
    differ = 0
    for name, value in base.items():
        delta = finetuned[name] - value
        expected = ~torch.isclose(delta, torch.zeros_like(delta), atol=1e-5)
        assert np.array_equal(built.mask[name].to_numpy(), expected.numpy()), name
        differ += int((built.mask[name].to_numpy() != by_atol[name].to_numpy()).sum())
    print(f"isclose_bf16 vs atol=1e-5 on MiniLM bf16: {differ} of {built.numel} bits differ")
