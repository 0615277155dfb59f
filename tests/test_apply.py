"""apply: sparse-update models from a real MiniLM finetune, on disk (API and CLI) and in memory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import submask
from submask import Mask, MismatchError, SourceError, SubmaskError, TensorMask
from submask.cli import main

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def bits_of(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's raw bits as a signed integer tensor of its width (so bf16 values compare bitwise)."""
    return tensor.contiguous().view(INT_VIEW[tensor.element_size()])


def load(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a model dir (sharded or not) or a .safetensors file."""
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    return {name: t for f in files for name, t in safetensors_torch.load_file(f).items()}


def changed_mask(base: dict, finetuned: dict) -> Mask:
    """The exact update mask, computed here independently of submask.build: where the bits differ."""
    return Mask.from_torch({name: bits_of(base[name]) != bits_of(finetuned[name]) for name in base})


def half_of(mask: Mask, seed: int = 0) -> Mask:
    """A random half of the set positions of ``mask`` (and a few unchanged positions), so that taking the
    finetuned value where it is set differs from taking it everywhere."""
    rng = np.random.default_rng(seed)
    return Mask.from_numpy({name: m.to_numpy() & (rng.random(m.shape) < 0.5) | (rng.random(m.shape) < 0.01)
                            for name, m in mask.items()})


def assert_selected(out: dict, inside: dict, outside: dict, mask: Mask) -> None:
    """``out`` equals ``inside`` bit for bit where ``mask`` is set and ``outside`` elsewhere."""
    assert list(out) == list(inside) or set(out) == set(inside)
    for name, value in out.items():
        assert value.dtype == inside[name].dtype and value.shape == inside[name].shape, name
        expected = bits_of(outside[name])
        if name in mask:
            expected = torch.where(mask[name].to_torch(), bits_of(inside[name]), expected)
        assert torch.equal(bits_of(value), expected), name


@pytest.fixture(scope="module", params=["bf16", "fp32"])
def pair(request: pytest.FixtureRequest):
    return request.getfixturevalue(f"minilm_{request.param}")


@pytest.fixture(scope="module")
def tensors(pair):
    return load(pair.base_file), load(pair.finetuned_file)


def test_independent_mask_matches_submask_build(minilm_bf16) -> None:
    base, finetuned = load(minilm_bf16.base_file), load(minilm_bf16.finetuned_file)
    independent = changed_mask(base, finetuned)
    assert 0 < independent.count < independent.numel  # a real sparse update: some values changed, most not
    if not hasattr(submask, "build_mask"):
        pytest.skip("submask.build_mask is not available")
    built = submask.build_mask(minilm_bf16.base_file, minilm_bf16.finetuned_file).mask
    assert {name: built[name] for name in built} == {name: independent[name] for name in built}


def test_apply_takes_finetuned_inside_and_base_outside(pair, tensors, tmp_path) -> None:
    base, finetuned = tensors
    mask = half_of(changed_mask(base, finetuned))
    applied = submask.apply_mask(pair.base, pair.finetuned, mask, tmp_path / "out")
    out = load(tmp_path / "out")
    assert_selected(out, finetuned, base, mask)
    assert applied.count == mask.count and applied.numel == sum(t.numel() for t in base.values())
    assert any(not torch.equal(bits_of(out[n]), bits_of(finetuned[n])) for n in out)  # not a plain copy


def test_full_diff_mask_reproduces_the_finetuned_file_byte_for_byte(pair, tensors, tmp_path) -> None:
    mask = changed_mask(*tensors)
    submask.apply_mask(pair.base, pair.finetuned, mask, tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == pair.finetuned_file.read_bytes()
    side_files = sorted(p.name for p in pair.finetuned.iterdir() if p.suffix != ".safetensors")
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.suffix != ".safetensors") == side_files


def test_invert_keeps_finetuned_outside_the_mask(pair, tensors, tmp_path) -> None:
    base, finetuned = tensors
    mask = half_of(changed_mask(base, finetuned), seed=1)
    applied = submask.apply_mask(pair.base, pair.finetuned, mask, tmp_path / "out", invert=True)
    assert_selected(load(tmp_path / "out"), base, finetuned, mask)
    assert applied.count == applied.numel - mask.count


def test_tensors_missing_from_the_mask_take_base_values(minilm_bf16, tmp_path) -> None:
    base, finetuned = load(minilm_bf16.base_file), load(minilm_bf16.finetuned_file)
    full = changed_mask(base, finetuned)
    kept = [name for name in full if full[name].count][:5]
    mask = Mask({name: full[name] for name in kept})
    submask.apply_mask(minilm_bf16.base, minilm_bf16.finetuned, mask, tmp_path / "out")
    out = load(tmp_path / "out")
    assert_selected(out, finetuned, base, mask)
    assert any(full[name].count and name not in mask for name in full)


def test_applied_dir_loads_with_transformers(minilm_bf16, tmp_path) -> None:
    transformers = pytest.importorskip("transformers")
    base, finetuned = load(minilm_bf16.base_file), load(minilm_bf16.finetuned_file)
    mask = half_of(changed_mask(base, finetuned))
    submask.apply_mask(minilm_bf16.base, minilm_bf16.finetuned, mask, tmp_path / "out")
    model = transformers.AutoModel.from_pretrained(tmp_path / "out", local_files_only=True, dtype=torch.bfloat16)
    expected = load(tmp_path / "out")
    state = model.state_dict()
    name = "encoder.layer.0.attention.self.query.weight"
    assert torch.equal(bits_of(state[name]), bits_of(expected[name]))
    assert not torch.equal(bits_of(state[name]), bits_of(finetuned[name]))


def test_sharded_input_keeps_its_sharding(minilm_bf16, tmp_path) -> None:
    from submask.examples.minilm import reshard

    finetuned_dir = reshard(minilm_bf16.finetuned_file, tmp_path / "ft", 3)
    base_dir = reshard(minilm_bf16.base_file, tmp_path / "base", 2)  # the base may be sharded differently
    base, finetuned = load(minilm_bf16.base_file), load(minilm_bf16.finetuned_file)
    mask = half_of(changed_mask(base, finetuned))
    submask.apply_mask(base_dir, finetuned_dir, mask, tmp_path / "out")
    index = "model.safetensors.index.json"
    assert (tmp_path / "out" / index).read_text() == (finetuned_dir / index).read_text()
    shards = sorted(p.name for p in finetuned_dir.glob("*.safetensors"))
    assert sorted(p.name for p in (tmp_path / "out").glob("*.safetensors")) == shards and len(shards) == 3
    for shard in shards:
        assert list(load(tmp_path / "out" / shard)) == list(load(finetuned_dir / shard))
    assert_selected(load(tmp_path / "out"), finetuned, base, mask)


def test_mask_from_a_smask_file_or_open_mask_file(minilm_bf16, tmp_path) -> None:
    base, finetuned = load(minilm_bf16.base_file), load(minilm_bf16.finetuned_file)
    mask = half_of(changed_mask(base, finetuned))
    submask.save(mask, tmp_path / "half.smask")
    submask.apply_mask(minilm_bf16.base, minilm_bf16.finetuned, tmp_path / "half.smask", tmp_path / "a")
    with submask.open(tmp_path / "half.smask") as mask_file:
        submask.apply_mask(minilm_bf16.base, minilm_bf16.finetuned, mask_file, tmp_path / "b")
    expected = (tmp_path / "a" / "model.safetensors").read_bytes()
    assert (tmp_path / "b" / "model.safetensors").read_bytes() == expected
    assert_selected(load(tmp_path / "a"), finetuned, base, mask)


def test_mask_for_another_model_is_rejected_and_nothing_is_written(minilm_bf16, tmp_path) -> None:
    bad = Mask({"encoder.layer.0.attention.self.query.weight": TensorMask.full((384, 385), True),
                "decoder.weight": TensorMask.full((2,), True)})
    with pytest.raises(MismatchError, match=r"decoder\.weight.*query\.weight \(384, 385\) vs \(384, 384\)"):
        submask.apply_mask(minilm_bf16.base, minilm_bf16.finetuned, bad, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_checkpoints_of_other_architectures_or_dtypes_are_rejected(minilm_bf16, minilm_fp32, tmp_path) -> None:
    mask = Mask({})
    with pytest.raises(MismatchError, match="dtypes.*BF16 vs F32"):
        submask.apply_mask(minilm_fp32.base, minilm_bf16.finetuned, mask, tmp_path / "out")
    smaller = load(minilm_bf16.base_file)
    del smaller["pooler.dense.weight"]
    safetensors_torch.save_file(smaller, tmp_path / "smaller.safetensors")
    with pytest.raises(MismatchError, match=r"pooler\.dense\.weight"):
        submask.apply_mask(tmp_path / "smaller.safetensors", minilm_bf16.finetuned, mask, tmp_path / "out")
    with pytest.raises(SourceError, match="no-such-dir"):
        submask.apply_mask(tmp_path / "no-such-dir", minilm_bf16.finetuned, mask, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_existing_output_is_replaced_only_with_overwrite(minilm_bf16, tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    with pytest.raises(SubmaskError, match="not empty.*overwrite"):
        submask.apply_mask(minilm_bf16.base, minilm_bf16.finetuned, Mask({}), out)
    assert (out / "old.txt").read_text() == "keep me"
    submask.apply_mask(minilm_bf16.base, minilm_bf16.finetuned, Mask({}), out, overwrite=True)
    assert not (out / "old.txt").exists()
    assert (out / "model.safetensors").read_bytes() == minilm_bf16.base_file.read_bytes()  # empty mask: base
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging or old dirs left behind
    with pytest.raises(SubmaskError, match="holds an input"):
        submask.apply_mask(minilm_bf16.base, minilm_bf16.finetuned, Mask({}), minilm_bf16.finetuned, overwrite=True)


@pytest.mark.parametrize("invert", [False, True])
def test_apply_to_state_dict_torch_and_numpy(minilm_bf16, invert: bool) -> None:
    base, finetuned = load(minilm_bf16.base_file), load(minilm_bf16.finetuned_file)
    mask = half_of(changed_mask(base, finetuned))
    inside, outside = (base, finetuned) if invert else (finetuned, base)
    assert_selected(submask.apply_to_state_dict(base, finetuned, mask, invert=invert), inside, outside, mask)
    as_numpy = {name: bits_of(t).numpy() for name, t in base.items()}, {
        name: bits_of(t).numpy() for name, t in finetuned.items()}
    out = submask.apply_to_state_dict(*as_numpy, mask, invert=invert)
    name = "encoder.layer.1.output.dense.weight"
    expected = np.where(mask[name].to_numpy(), bits_of(inside[name]).numpy(), bits_of(outside[name]).numpy())
    assert np.array_equal(out[name], expected)


def test_apply_to_state_dict_rejects_other_architectures(minilm_bf16) -> None:
    base = load(minilm_bf16.base_file)
    other = dict(base)
    other["extra.weight"] = torch.zeros(2)
    with pytest.raises(MismatchError, match=r"extra\.weight"):
        submask.apply_to_state_dict(base, other, Mask({}))


@pytest.mark.parametrize("invert", [False, True])
def test_apply_to_module_in_place(minilm_bf16, invert: bool) -> None:
    transformers = pytest.importorskip("transformers")
    base, finetuned = load(minilm_bf16.base_file), load(minilm_bf16.finetuned_file)
    mask = half_of(changed_mask(base, finetuned))
    model = transformers.AutoModel.from_pretrained(minilm_bf16.base, local_files_only=True, dtype=torch.bfloat16)
    submask.apply_to_module(model, finetuned, mask, invert=invert)
    inside, outside = (base, finetuned) if invert else (finetuned, base)
    state = {name: t for name, t in model.state_dict().items() if name in base}
    assert_selected(state, {n: inside[n] for n in state}, outside, mask)
    with pytest.raises(MismatchError, match="missing"):
        submask.apply_to_module(model, {}, mask)


def test_cli_apply_writes_a_model_dir(minilm_bf16, tmp_path) -> None:
    base, finetuned = load(minilm_bf16.base_file), load(minilm_bf16.finetuned_file)
    mask = half_of(changed_mask(base, finetuned))
    submask.save(mask, tmp_path / "m.smask")
    args = [str(minilm_bf16.base), str(minilm_bf16.finetuned), str(tmp_path / "m.smask"), "-o", str(tmp_path / "o")]
    result = CliRunner().invoke(main, ["apply", *args])
    assert result.exit_code == 0, result.output
    assert f"{mask.count:,} of" in result.output
    assert_selected(load(tmp_path / "o"), finetuned, base, mask)
    assert json.loads((tmp_path / "o" / "config.json").read_text()) == json.loads(
        (minilm_bf16.finetuned / "config.json").read_text())

    result = CliRunner().invoke(main, ["apply", *args, "--invert", "--quiet", "--overwrite"])
    assert result.exit_code == 0 and result.output == ""
    assert_selected(load(tmp_path / "o"), base, finetuned, mask)

    result = CliRunner().invoke(main, ["apply", *args[:3], "-o", str(minilm_bf16.base)])
    assert result.exit_code == 1 and "error:" in result.output
