"""torch.save checkpoints (pytorch_model.bin, .pt), single and sharded, beside their safetensors twins; formats
submask does not read are named with the way out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import submask
from submask import SourceError
from submask.cli import main

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")
transformers = pytest.importorskip("transformers")


def tiny_bert(seed: int) -> transformers.BertModel:
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16)
    return transformers.BertModel(config)


def finetune(model: torch.nn.Module, seed: int) -> None:
    """Change about a third of the values of every float tensor, in place."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.where(torch.rand(parameter.shape, generator=generator) < 0.3, 0.01, 0.0))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same base/finetuned pair as sharded pytorch_model*.bin dirs and as safetensors dirs."""
    from huggingface_hub import save_torch_state_dict

    root = tmp_path_factory.mktemp("pickled")
    model = tiny_bert(0)
    for stage in ("base", "ft"):
        if stage == "ft":
            finetune(model, 1)
        for kind, safe in (("bin", False), ("st", True)):
            (root / f"{stage}_{kind}").mkdir()
            save_torch_state_dict(model.state_dict(), root / f"{stage}_{kind}", safe_serialization=safe,
                                  max_shard_size="20KB" if kind == "bin" else "5GB")
            model.config.save_pretrained(root / f"{stage}_{kind}")
    return {p.name: p for p in root.iterdir()}


def test_sharded_bin_builds_the_safetensors_mask(pairs: dict[str, Path], tmp_path: Path) -> None:
    assert (pairs["ft_bin"] / "pytorch_model.bin.index.json").exists()
    assert len(list(pairs["ft_bin"].glob("pytorch_model-*.bin"))) >= 2
    from_bin = submask.build_mask(pairs["base_bin"], pairs["ft_bin"], atol=1e-7).mask
    from_st = submask.build_mask(pairs["base_st"], pairs["ft_st"], atol=1e-7).mask
    assert set(from_bin) == set(from_st) and from_bin.count > 0
    assert all(from_bin[name] == from_st[name] for name in from_st)
    run = CliRunner().invoke(main, ["build", str(pairs["base_bin"]), str(pairs["ft_bin"]), "-o",
                                    str(tmp_path / "m.smask"), "--json"])
    assert run.exit_code == 0, run.output
    assert submask.load(tmp_path / "m.smask").count == submask.build_mask(pairs["base_st"], pairs["ft_st"]).count


def test_single_files_zip_and_legacy(tmp_path: Path) -> None:
    base = {"w": torch.arange(12, dtype=torch.bfloat16).reshape(3, 4), "b": torch.zeros(5)}
    finetuned = {"w": base["w"].clone(), "b": torch.tensor([0.0, 1.0, 0.0, 2.0, 0.0])}
    finetuned["w"][1, 2] = 99
    torch.save(base, tmp_path / "base.pt")
    torch.save(finetuned, tmp_path / "ft.pt", _use_new_zipfile_serialization=False)  # the legacy format
    mask = submask.build_mask(tmp_path / "base.pt", tmp_path / "ft.pt").mask
    assert mask["w"].to_indices().tolist() == [6] and mask["b"].to_indices().tolist() == [1, 3]
    # a Lightning-style checkpoint keeps its weights under "state_dict"
    torch.save({"state_dict": finetuned, "epoch": 3}, tmp_path / "ft.ckpt")
    assert submask.build_mask(tmp_path / "base.pt", tmp_path / "ft.ckpt").count == 3


def test_apply_writes_safetensors(pairs: dict[str, Path], tmp_path: Path) -> None:
    mask = submask.build_mask(pairs["base_st"], pairs["ft_st"]).mask
    half = submask.Mask.from_numpy({n: m.to_numpy() & (np.arange(m.numel).reshape(m.shape) % 2 == 0)
                                    for n, m in mask.items()})
    submask.apply_mask(pairs["base_bin"], pairs["ft_bin"], half, tmp_path / "from_bin")
    submask.apply_mask(pairs["base_st"], pairs["ft_st"], half, tmp_path / "from_st")
    out_bin = tmp_path / "from_bin"
    assert (out_bin / "model.safetensors.index.json").exists() and not list(out_bin.glob("*.bin*"))
    loaded = transformers.BertModel.from_pretrained(out_bin)  # a real reader takes the written files
    expected = safetensors_torch.load_file(tmp_path / "from_st" / "model.safetensors")
    state = loaded.state_dict()
    assert all(torch.equal(state[name], value) for name, value in expected.items())


def test_values_refused_for_pickles(pairs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="byte for byte.*safetensors"):
        submask.build_mask(pairs["base_bin"], pairs["ft_bin"], tmp_path / "d.smask", values=True)
    assert not (tmp_path / "d.smask").exists()


class Payload:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (print, ("ran",))


def test_unsafe_and_odd_pickles(tmp_path: Path) -> None:
    torch.save({"w": torch.zeros(2), "extra": Payload()}, tmp_path / "unsafe.pt")
    with pytest.raises(SourceError, match="weights_only=True"):
        submask.build_mask(tmp_path / "unsafe.pt", tmp_path / "unsafe.pt")
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(SourceError, match="not a state dict"):
        submask.build_mask(tmp_path / "list.pt", tmp_path / "list.pt")


@pytest.mark.parametrize(("name", "content", "named"), [
    ("model.gguf", b"GGUF\x03\x00\x00\x00", "GGUF"),
    ("weights.bin", b"GGUF\x03\x00\x00\x00", "GGUF"),
    ("model.onnx", b"\x08\x07\x12\x07pytorch", "ONNX"),
    ("tf_model.h5", b"\x89HDF\r\n\x1a\n", "TensorFlow"),
])
def test_unsupported_formats_are_named(tmp_path: Path, name: str, content: bytes, named: str) -> None:
    (tmp_path / name).write_bytes(content)
    run = CliRunner().invoke(main, ["build", str(tmp_path / name), str(tmp_path / name), "-o",
                                    str(tmp_path / "m.smask")])
    assert run.exit_code == 1 and named in run.output and "save_pretrained" in run.output, run.output
    assert not (tmp_path / "m.smask").exists()
    run = CliRunner().invoke(main, ["build", str(tmp_path), str(tmp_path), "-o", str(tmp_path / "m.smask")])
    assert run.exit_code == 1 and (named in run.output or "no model.safetensors" in run.output), run.output
