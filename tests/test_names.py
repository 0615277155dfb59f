"""Name mapping: NameMap, Mask.rename, names= in build/apply/compare/combine, and real wrappers (DDP, PEFT LoRA,
a policy with a value head) whose names differ from the plain model's."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import submask
from submask import Mask, MismatchError
from submask.cli import main
from submask.names import NameMap, suggest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.q = torch.nn.Linear(6, 6)
        self.v = torch.nn.Linear(6, 6)
        self.out = torch.nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.q(x) + self.v(x))


class PolicyWithValueHead(torch.nn.Module):
    """The shape of TRL's old AutoModelForCausalLMWithValueHead: ``pretrained_model.*`` plus ``v_head.*``."""

    def __init__(self, policy: torch.nn.Module) -> None:
        super().__init__()
        self.pretrained_model = policy
        self.v_head = torch.nn.Linear(3, 1)


def finetuned_state(model: torch.nn.Module, seed: int = 1) -> dict[str, torch.Tensor]:
    """The model's state dict with about half of each tensor's values changed."""
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.where(torch.rand(t.shape, generator=generator) < 0.5, t + 1, t)
            for name, t in model.state_dict().items()}


def plain_mask(base: dict, finetuned: dict) -> Mask:
    return Mask.from_torch({name: base[name] != finetuned[name] for name in base})


def test_name_map_steps_in_order() -> None:
    names = NameMap(strip_prefix="base_model.model.", rename=[(r"\.base_layer\.", ".")], add_prefix="m.")
    assert names("base_model.model.q.base_layer.weight") == "m.q.weight"
    assert names("other.weight") == "m.other.weight"  # no prefix to strip: the step passes it unchanged
    assert not NameMap() and NameMap(add_prefix="x.")
    with pytest.raises(submask.UsageError, match="rename"):
        NameMap(rename=[("(", "x")])
    with pytest.raises(submask.UsageError, match="rename"):
        NameMap(rename=[("a", r"\2")])


def test_mask_rename_and_collision() -> None:
    mask = Mask.from_numpy({"module.a": np.array([True, False]), "module.b": np.array([False, True, True])})
    renamed = mask.rename(NameMap(strip_prefix="module."))
    assert list(renamed) == ["a", "b"] and renamed["b"] == mask["module.b"]
    with pytest.raises(MismatchError, match="both map to 'x'"):
        mask.rename(lambda name: "x")


@pytest.mark.parametrize(("ours", "theirs", "expected"), [
    (["module.a.weight", "module.b.bias"], ["a.weight", "b.bias"], NameMap(strip_prefix="module.")),
    (["a.weight", "b.bias"], ["module.a.weight", "module.b.bias"], NameMap(add_prefix="module.")),
    (["base_model.model.q.base_layer.weight", "base_model.model.q.lora_A.default.weight",
      "base_model.model.out.weight"],
     ["q.weight", "out.weight"], NameMap(strip_prefix="base_model.model.", rename=[(r"\.base_layer\.", ".")])),
    (["a.weight"], ["zzz"], None),
])
def test_suggest(ours: list[str], theirs: list[str], expected: NameMap | None) -> None:
    assert suggest(theirs, ours) == expected


def test_value_head_wrapper(tmp_path: Path) -> None:
    policy = Tiny()
    base = {k: v.clone() for k, v in policy.state_dict().items()}
    finetuned = finetuned_state(policy)
    mask = plain_mask(base, finetuned)
    wrapped = PolicyWithValueHead(policy)
    wrapped_finetuned = {f"pretrained_model.{k}": v for k, v in finetuned.items()}
    with pytest.raises(MismatchError, match="--strip-prefix pretrained_model."):
        submask.apply_to_module(wrapped, wrapped_finetuned, mask)
    submask.apply_to_module(wrapped, wrapped_finetuned, mask, names=NameMap(strip_prefix="pretrained_model."))
    for name, value in policy.state_dict().items():
        assert torch.equal(value, finetuned[name]), name  # every changed value is in the mask, so all are taken


def test_peft_lora_wrapper() -> None:
    peft = pytest.importorskip("peft")
    model = Tiny()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    finetuned = finetuned_state(model)
    mask = plain_mask(base, finetuned)
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q", "v"]))
    assert "base_model.model.q.base_layer.weight" in dict(wrapped.named_parameters())
    names = NameMap(strip_prefix="base_model.model.", rename=[(r"\.base_layer\.", ".")])
    keyed = {name: finetuned[names(name)] for name, _ in wrapped.named_parameters() if names(name) in finetuned}
    with pytest.raises(MismatchError) as error:
        submask.apply_to_module(wrapped, keyed, mask)
    assert "--strip-prefix base_model.model. --rename '\\.base_layer\\.=.'" in str(error.value)
    submask.apply_to_module(wrapped, keyed, mask, names=names)
    merged = dict(wrapped.named_parameters())
    for name in keyed:
        assert torch.equal(merged[name], finetuned[names(name)]), name
    # the adapters themselves are not in the mask and stay as they were
    assert torch.count_nonzero(merged["base_model.model.q.lora_B.default.weight"]) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def ddp_model():
    dist = torch.distributed
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        yield torch.nn.parallel.DistributedDataParallel(Tiny())
    finally:
        dist.destroy_process_group()


def test_ddp_build_apply_and_cli(ddp_model: torch.nn.Module, tmp_path: Path) -> None:
    plain = Tiny()
    base = {k: v.clone() for k, v in plain.state_dict().items()}
    finetuned = finetuned_state(plain)
    ddp_finetuned = {f"module.{k}": v for k, v in finetuned.items()}
    assert set(ddp_model.state_dict()) == set(ddp_finetuned)
    safetensors_torch.save_file(base, tmp_path / "base.safetensors")
    safetensors_torch.save_file(ddp_finetuned, tmp_path / "ddp.safetensors")
    expected = plain_mask(base, finetuned)

    with pytest.raises(MismatchError, match="--strip-prefix module."):
        submask.build_mask(tmp_path / "base.safetensors", tmp_path / "ddp.safetensors")
    strip = NameMap(strip_prefix="module.")
    built = submask.build_mask(tmp_path / "base.safetensors", tmp_path / "ddp.safetensors", names=strip)
    assert set(built.mask) == set(expected) and all(built.mask[n] == expected[n] for n in expected)

    result = CliRunner().invoke(main, ["build", str(tmp_path / "base.safetensors"), str(tmp_path / "ddp.safetensors"),
                                       "-o", str(tmp_path / "cli.smask"), "--strip-prefix", "module.", "-q"])
    assert result.exit_code == 0, result.output
    from_cli = submask.load(tmp_path / "cli.smask")
    assert set(from_cli) == set(expected) and all(from_cli[n] == expected[n] for n in expected)

    # the DDP-wrapped module takes a plain mask through names=
    submask.apply_to_module(ddp_model, ddp_finetuned, expected, names=strip)
    for name, value in ddp_model.module.state_dict().items():
        assert torch.equal(value, finetuned[name]), name

    # apply on files: a DDP checkpoint pair and a plain mask; the output keeps the DDP names
    submask.save(expected, tmp_path / "plain.smask")
    safetensors_torch.save_file({f"module.{k}": v for k, v in base.items()}, tmp_path / "ddp_base.safetensors")
    apply = ["apply", str(tmp_path / "ddp_base.safetensors"), str(tmp_path / "ddp.safetensors"),
             str(tmp_path / "plain.smask"), "-o", str(tmp_path / "out"), "-q"]
    result = CliRunner().invoke(main, apply)
    assert result.exit_code == 1 and "--strip-prefix module." in result.output
    result = CliRunner().invoke(main, [*apply, "--strip-prefix", "module."])
    assert result.exit_code == 0, result.output
    out = safetensors_torch.load_file(next((tmp_path / "out").glob("*.safetensors")))
    assert all(torch.equal(out[name], value) for name, value in ddp_finetuned.items())


def test_compare_and_combine_with_names(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a = {"w": rng.random((4, 5)) < 0.5, "b": rng.random(7) < 0.5}
    b = {"w": rng.random((4, 5)) < 0.5, "b": rng.random(7) < 0.5}
    submask.save(Mask.from_numpy(a), tmp_path / "plain.smask")
    submask.save(Mask.from_numpy({f"module.{k}": v for k, v in b.items()}), tmp_path / "ddp.smask")
    paths = [str(tmp_path / "plain.smask"), str(tmp_path / "ddp.smask")]
    with pytest.raises(MismatchError, match="--strip-prefix module."):
        submask.compare(paths)
    result = submask.compare(paths, names=NameMap(strip_prefix="module."))
    inter = sum(int((a[k] & b[k]).sum()) for k in a)
    assert result.pair(0, 1).intersection == inter
    run = CliRunner().invoke(main, ["combine", "and", *paths, "-o", str(tmp_path / "and.smask"),
                                    "--strip-prefix", "module."])
    assert run.exit_code == 0, run.output
    combined = submask.load(tmp_path / "and.smask")
    assert set(combined) == {"w", "b"} and all(np.array_equal(combined[k].to_numpy(), a[k] & b[k]) for k in a)
    run = CliRunner().invoke(main, ["compare", *paths, "--rename", "^module\\.=", "--json"])
    assert run.exit_code == 0, run.output
    run = CliRunner().invoke(main, ["compare", *paths, "--rename", "no-equals"])
    assert run.exit_code == 2 and "REGEX=REPLACEMENT" in run.output


def test_values_build_refuses_names(tmp_path: Path) -> None:
    safetensors_torch.save_file({"w": torch.zeros(4)}, tmp_path / "a.safetensors")
    with pytest.raises(submask.UsageError, match="names"):
        submask.build_mask(tmp_path / "a.safetensors", tmp_path / "a.safetensors", values=True,
                           names=NameMap(add_prefix="x."))


def test_renamed_mask_fingerprint_follows_the_names(tmp_path: Path) -> None:
    shapes = {"module.w": (3, 2)}
    mask = Mask.from_numpy({"module.w": np.ones((3, 2), bool)},
                           model={"fingerprint": submask.model_fingerprint(shapes)})
    submask.save(mask, tmp_path / "m.smask")
    strip = NameMap(strip_prefix="module.")
    from submask.align import check_model

    with submask.open(tmp_path / "m.smask") as mask_file:
        for renamed in (mask.rename(strip), mask_file.renamed(strip)):
            check_model(renamed, {"w": (3, 2)})  # the recorded fingerprint was renamed with the tensors
            with pytest.raises(MismatchError):
                check_model(renamed, {"module.w": (3, 2)})
            assert mask_file.metadata.model == mask.metadata.model  # the file's own metadata is untouched
