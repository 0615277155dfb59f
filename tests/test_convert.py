"""submask convert: masks written by the other side's own calls (torch.save, np.packbits + np.save, np.savez,
safetensors.torch.save_file, PEFT's save of a SHiRA adapter), read back bit for bit, and round trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import submask
from submask import FormatError, Mask, MismatchError, UsageError
from submask.cli import main
from submask.convert import convert, detect, read

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

SHAPES = {"b.bias": (7,), "a.weight": (5, 3), "c.weight": (2, 3, 4)}  # 15 + 7 + 24 = 46 bits: not a multiple of 8


def arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.random(shape) < 0.4 for name, shape in SHAPES.items()}


def assert_bits(mask: Mask, expected: dict[str, np.ndarray]) -> None:
    assert set(mask) == set(expected)
    for name, array in expected.items():
        assert np.array_equal(mask[name].to_numpy(), array), name


@pytest.mark.parametrize("kind", ["bool", "uint8", "float"])
def test_torch_save_dicts(tmp_path: Path, kind: str) -> None:
    source = arrays()
    dtype = {"bool": torch.bool, "uint8": torch.uint8, "float": torch.float32}[kind]
    torch.save({n: torch.from_numpy(a).to(dtype) for n, a in source.items()}, tmp_path / "m.pt")
    assert detect(tmp_path / "m.pt") == "torch"
    done = convert(tmp_path / "m.pt", tmp_path / "m.smask")
    assert (done.source, done.target, done.count) == ("torch", "smask", sum(int(a.sum()) for a in source.values()))
    assert_bits(submask.load(tmp_path / "m.smask"), source)


def test_values_other_than_0_1_are_refused(tmp_path: Path) -> None:
    torch.save({"w": torch.tensor([0.0, 1.0, 0.37])}, tmp_path / "scores.pt")
    with pytest.raises(FormatError, match="other than 0 and 1.*0.37"):
        convert(tmp_path / "scores.pt", tmp_path / "out.smask")
    np.savez(tmp_path / "u.npz", w=np.array([0, 2], np.int32))
    with pytest.raises(FormatError, match="other than 0 and 1"):
        convert(tmp_path / "u.npz", tmp_path / "out.smask")
    assert not (tmp_path / "out.smask").exists()


class Unsafe:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (print, ("ran",))


def test_unsafe_pickle_refused(tmp_path: Path) -> None:
    torch.save({"w": torch.ones(2, dtype=torch.bool), "why": Unsafe()}, tmp_path / "unsafe.pt")
    run = CliRunner().invoke(main, ["convert", str(tmp_path / "unsafe.pt"), "-o", str(tmp_path / "o.smask")])
    assert run.exit_code == 1 and "weights_only=True" in run.output and "\n" == run.output[-1]
    assert not (tmp_path / "o.smask").exists()


def test_npz_and_safetensors(tmp_path: Path) -> None:
    source = arrays(1)
    np.savez(tmp_path / "m.npz", **source)
    safetensors_torch.save_file({n: torch.from_numpy(a).to(torch.uint8) for n, a in source.items()},
                                tmp_path / "m.safetensors")
    assert detect(tmp_path / "m.npz") == "npz" and detect(tmp_path / "m.safetensors") == "safetensors"
    assert_bits(read(tmp_path / "m.npz")[1], source)
    assert_bits(read(tmp_path / "m.safetensors")[1], source)


def test_tall_masks_layout(tmp_path: Path) -> None:
    source = arrays(2)
    flat = np.concatenate([source[name].reshape(-1) for name in sorted(source)])  # TALL: sorted names, flattened
    np.save(tmp_path / "tall.npy", np.packbits(flat))
    like = Mask.from_numpy(source)
    submask.save(like, tmp_path / "like.smask")
    assert detect(tmp_path / "tall.npy") == "tall"
    with pytest.raises(UsageError, match="--like"):
        convert(tmp_path / "tall.npy", tmp_path / "t.smask")
    convert(tmp_path / "tall.npy", tmp_path / "t.smask", like=tmp_path / "like.smask")
    assert_bits(submask.load(tmp_path / "t.smask"), source)
    # a model checkpoint gives the shapes as well
    safetensors_torch.save_file({n: torch.zeros(s) for n, s in SHAPES.items()}, tmp_path / "model.safetensors")
    assert_bits(read(tmp_path / "tall.npy", like=tmp_path / "model.safetensors")[1], source)
    # several tasks in one archive: --key picks one
    np.savez(tmp_path / "tasks.npz", task1=np.packbits(flat), task2=np.packbits(~flat))
    assert detect(tmp_path / "tasks.npz") == "tall"
    with pytest.raises(UsageError, match="--key"):
        read(tmp_path / "tasks.npz", like=like)
    assert_bits(read(tmp_path / "tasks.npz", like=like, key="task2")[1], {n: ~a for n, a in source.items()})
    # a vector of another model is refused
    np.save(tmp_path / "short.npy", np.packbits(flat[:-9]))
    with pytest.raises(MismatchError, match="46 elements"):
        read(tmp_path / "short.npy", like=like)


def test_peft_shira_adapter(tmp_path: Path) -> None:
    peft = pytest.importorskip("peft")

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q = torch.nn.Linear(8, 6)
            self.out = torch.nn.Linear(6, 3)

    torch.manual_seed(0)
    base = Tiny()
    safetensors_torch.save_file(base.state_dict(), tmp_path / "base.safetensors")
    model = peft.get_peft_model(base, peft.ShiraConfig(r=1, target_modules=["q", "out"]))
    model.save_pretrained(tmp_path / "adapter")
    expected = {}
    for name, layer in (("q.weight", model.base_model.model.q), ("out.weight", model.base_model.model.out)):
        rows, cols = layer.shira_indices["default"].numpy()
        dense = np.zeros(layer.base_layer.weight.shape, bool)
        dense[rows, cols] = True
        expected[name] = dense
    assert detect(tmp_path / "adapter") == "shira"
    run = CliRunner().invoke(main, ["convert", str(tmp_path / "adapter"), "-o", str(tmp_path / "shira.smask"),
                                    "--like", str(tmp_path / "base.safetensors")])
    assert run.exit_code == 0, run.output
    assert_bits(submask.load(tmp_path / "shira.smask"), expected)


@pytest.mark.parametrize("via", ["safetensors", "torch", "npz", "tall"])
def test_round_trip_through_every_format(tmp_path: Path, via: str) -> None:
    source = arrays(3)
    original = Mask.from_numpy(source, kind="update", criterion={"name": "exact", "atol": None, "rtol": None})
    submask.save(original, tmp_path / "a.smask")
    suffix = {"safetensors": ".safetensors", "torch": ".pt", "npz": ".npz", "tall": ".npy"}[via]
    run = CliRunner().invoke(main, ["convert", str(tmp_path / "a.smask"), "-o", str(tmp_path / f"x{suffix}")])
    assert run.exit_code == 0, run.output
    if via == "safetensors":  # any safetensors reader loads the masks as they are
        loaded = safetensors_torch.load_file(tmp_path / "x.safetensors")
        assert all(loaded[n].dtype == torch.bool and np.array_equal(loaded[n].numpy(), a) for n, a in source.items())
    else:
        assert "not kept" in run.output
    if via == "torch":
        loaded = torch.load(tmp_path / "x.pt", weights_only=True)
        assert all(np.array_equal(loaded[n].numpy(), a) for n, a in source.items())
    back = ["--like", str(tmp_path / "a.smask")] if via == "tall" else []
    run = CliRunner().invoke(main, ["convert", str(tmp_path / f"x{suffix}"), "-o", str(tmp_path / "b.smask"), *back])
    assert run.exit_code == 0, run.output
    again = submask.load(tmp_path / "b.smask")
    assert_bits(again, source)
    if via == "safetensors":  # the metadata rode along in __metadata__
        assert again.metadata.criterion == original.metadata.criterion and again.metadata.kind == "update"


def test_uint8_export_and_names(tmp_path: Path) -> None:
    source = arrays(4)
    submask.save(Mask.from_numpy(source), tmp_path / "a.smask")
    convert(tmp_path / "a.smask", tmp_path / "u.npz", dtype="uint8", names=submask.names.NameMap(add_prefix="module."))
    with np.load(tmp_path / "u.npz") as archive:
        assert archive["module.a.weight"].dtype == np.uint8
        assert np.array_equal(archive["module.a.weight"], source["a.weight"])


def test_smask_reader_names_foreign_files(tmp_path: Path) -> None:
    torch.save({"w": torch.ones(3, dtype=torch.bool)}, tmp_path / "m.pt")
    with pytest.raises(FormatError, match="torch.save.*submask convert"):
        submask.load(tmp_path / "m.pt")
    safetensors_torch.save_file({"w": torch.ones(3, dtype=torch.bool)}, tmp_path / "m.safetensors")
    with pytest.raises(FormatError, match="submask convert"):
        submask.load(tmp_path / "m.safetensors")
