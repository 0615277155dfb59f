"""Masks of real finetunes (all-MiniLM-L6-v2, a few AdamW steps on CPU) against independent computations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")
from safetensors.torch import load_file  # noqa: E402

import submask  # noqa: E402
from submask import SourceError, build_mask  # noqa: E402
from submask.cli import main  # noqa: E402
from submask.examples.minilm import reshard  # noqa: E402

#: Observed on this pair: about 95% of bf16 values stay bit-identical after 3 steps at lr 2e-5.
MIN_UNCHANGED_BF16 = 0.5


def _changed_bits(base_file: Path, finetuned_file: Path) -> dict[str, np.ndarray]:
    """Which stored values differ, computed with torch from fully loaded state dicts."""
    a, b = load_file(base_file), load_file(finetuned_file)
    width = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    return {name: (a[name].view(width[a[name].element_size()]) != b[name].view(width[b[name].element_size()]))
            .numpy() for name in a}


def test_bf16_mask_equals_torch_and_most_values_are_unchanged(minilm_bf16) -> None:
    mask = build_mask(minilm_bf16.base_file, minilm_bf16.finetuned_file).mask
    expected = _changed_bits(minilm_bf16.base_file, minilm_bf16.finetuned_file)
    assert list(mask) == list(expected)
    for name, bits in expected.items():
        np.testing.assert_array_equal(mask[name].to_numpy(), bits, err_msg=name)
    changed = sum(int(bits.sum()) for bits in expected.values())
    assert mask.count == changed > 0
    assert 1 - mask.density > MIN_UNCHANGED_BF16
    assert mask.metadata.model["dtypes"] == {"BF16": len(expected) - 1, "I64": 1}  # I64: position_ids


def test_fp32_tolerance_masks_equal_torch(minilm_fp32) -> None:
    a, b = load_file(minilm_fp32.base_file), load_file(minilm_fp32.finetuned_file)
    for kwargs, unchanged in (
        ({"atol": 1e-6}, lambda x, y: (y - x).abs() <= 1e-6),
        ({"rtol": 1e-4}, lambda x, y: (y - x).abs() <= 1e-4 * torch.maximum(x.abs(), y.abs())),
    ):
        mask = build_mask(minilm_fp32.base, minilm_fp32.finetuned, **kwargs).mask
        for name in a:
            x, y = a[name].double(), b[name].double()
            np.testing.assert_array_equal(mask[name].to_numpy(), (~unchanged(x, y)).numpy(), err_msg=name)
        assert 0 < mask.count < mask.numel


def test_ladder_on_real_finetune(minilm_fp32) -> None:
    mask = build_mask(minilm_fp32.base_file, minilm_fp32.finetuned_file, ladder=True).mask
    a, b = load_file(minilm_fp32.base_file), load_file(minilm_fp32.finetuned_file)
    ladder = mask.metadata.stats["ladder"]
    deltas = torch.cat([(b[n].double() - a[n].double()).abs().reshape(-1) for n in a])
    expected = [int((deltas > tolerance).sum()) for tolerance in ladder["atol"]]
    assert ladder["changed"]["__all__"] == expected
    assert ladder["changed"]["__all__"][0] == mask.count
    assert ladder["changed"]["__all__"] == sorted(ladder["changed"]["__all__"], reverse=True)


def test_sharded_input_gives_the_same_mask(minilm_bf16, tmp_path: Path) -> None:
    single = build_mask(minilm_bf16.base_file, minilm_bf16.finetuned_file).mask
    base = reshard(minilm_bf16.base_file, tmp_path / "base", 3)
    finetuned = reshard(minilm_bf16.finetuned_file, tmp_path / "finetuned", 2)
    sharded = build_mask(base, finetuned, workers=3, chunk_bytes=1 << 16).mask
    assert dict(sharded) == dict(single)
    assert len(sharded.metadata.provenance["base"]["files"]) == 3
    assert sharded.metadata.model == single.metadata.model


def test_missing_shard_names_shard_and_index(minilm_bf16, tmp_path: Path) -> None:
    base = reshard(minilm_bf16.base_file, tmp_path / "base", 3)
    (base / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(SourceError) as info:
        build_mask(base, minilm_bf16.finetuned_file).mask
    assert "model-00002-of-00003.safetensors" in str(info.value)
    assert "model.safetensors.index.json" in str(info.value)


def test_cli_build_writes_a_valid_mask(minilm_bf16, tmp_path: Path) -> None:
    out = tmp_path / "rl.smask"
    runner = CliRunner()
    result = runner.invoke(main, ["build", str(minilm_bf16.base), str(minilm_bf16.finetuned), "-o", str(out),
                                  "--atol", "1e-5", "--include", "*encoder*", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "values changed" in result.output and "1e-05" in result.output
    mask = submask.load(out)
    assert mask.metadata.criterion == {"name": "atol", "atol": 1e-5, "rtol": None}
    assert mask and all("encoder" in name for name in mask)
    assert mask.metadata.provenance["base"]["source"] == str(minilm_bf16.base)
    info = runner.invoke(main, ["info", str(out), "--json"])
    assert info.exit_code == 0 and '"kind": "update"' in info.output
    validate = runner.invoke(main, ["validate", str(out)])
    assert validate.exit_code == 0 and "OK" in validate.output

    sharded = runner.invoke(main, ["build", str(minilm_bf16.base_file), str(minilm_bf16.finetuned_file), "-o",
                                   str(tmp_path / "s.smask"), "--max-shard-size", "2KB", "--quiet", "--no-ladder"])
    assert sharded.exit_code == 0 and sharded.output == ""
    assert "ladder" not in submask.load(tmp_path / "s.smask.index.json").metadata.stats
    assert runner.invoke(main, ["validate", str(tmp_path / "s.smask.index.json")]).exit_code == 0

    bad = runner.invoke(main, ["build", str(minilm_bf16.base), str(tmp_path / "nope"), "-o", str(out), "--overwrite"])
    assert bad.exit_code == 1 and "error:" in bad.output and "no such file" in bad.output
    size = runner.invoke(main, ["build", "a", "b", "-o", str(out), "--max-shard-size", "lots"])
    assert size.exit_code == 2 and "not a size" in size.output


def test_bf16_base_against_fp32_finetune_compares_values(minilm_bf16, minilm_fp32, tmp_path: Path) -> None:
    """A trainer that loads a bf16 base and saves fp32 weights (the base widened, plus real fp32 updates)."""
    from safetensors.torch import save_file

    base = load_file(minilm_bf16.base_file)
    fp32_base, fp32_finetuned = load_file(minilm_fp32.base_file), load_file(minilm_fp32.finetuned_file)
    finetuned = {name: value.float() + (fp32_finetuned[name] - fp32_base[name]) if value.is_floating_point()
                 else fp32_finetuned[name] for name, value in base.items()}
    save_file(finetuned, tmp_path / "model.safetensors")
    for kwargs in ({}, {"atol": 1e-6}):
        mask = build_mask(minilm_bf16.base_file, tmp_path / "model.safetensors", **kwargs).mask
        for name, value in base.items():
            x, y = value.double(), finetuned[name].double()
            expected = x.view(torch.int64) != y.view(torch.int64)
            if kwargs:
                expected &= (y - x).abs() > 1e-6
            np.testing.assert_array_equal(mask[name].to_numpy(), expected.numpy(), err_msg=name)
        assert 0 < mask.count < mask.numel
        assert mask.metadata.criterion["cross_dtype"] == "float64 values"
        assert set(mask.metadata.stats["cross_dtype"]) == {n for n, v in base.items() if v.is_floating_point()}
        assert mask.metadata.stats["cross_dtype"]["embeddings.word_embeddings.weight"] == ["BF16", "F32"]
