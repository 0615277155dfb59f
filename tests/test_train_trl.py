"""TRL's real SFT, DPO and GRPO trainers on a tiny Llama built here (CPU, two steps each): ``restrict`` before
the trainer is built keeps every entry outside the mask in both modes, ``UpdateDensityCallback`` logs density
and writes an update mask into each checkpoint and next to the final model, and the reference model TRL loads
is neither restricted nor moved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import submask

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")
import tiny_lm  # noqa: E402

from submask.integrations import ReferenceSyncCallback, UpdateDensityCallback  # noqa: E402
from submask.train import restriction_of  # noqa: E402

TRAINERS = ("sft", "dpo", "grpo")


def reward_yes(completions: list[str], **_: Any) -> list[float]:
    """A toy reward: how often the completion says "yes"."""
    return [float(completion.count("yes")) for completion in completions]


def build(which: str, model: Any, out: Path) -> Any:
    common = dict(output_dir=str(out), max_steps=2, per_device_train_batch_size=2, learning_rate=1e-2,
                  weight_decay=0.1, report_to="none", save_strategy="steps", save_steps=1, save_only_model=True,
                  logging_strategy="no", use_cpu=True, disable_tqdm=True)
    tokenizer = tiny_lm.tokenizer()
    if which == "sft":
        data = datasets.Dataset.from_list([{"text": "the cat sat on a mat ."}, {"text": "the dog ran on a rug ."}])
        return trl.SFTTrainer(model=model, args=trl.SFTConfig(**common, max_length=16), train_dataset=data,
                              processing_class=tokenizer)
    if which == "dpo":
        pairs = [("is the cat good ?", "yes", "no"), ("where did the dog go ?", "on a mat", "bad")]
        data = datasets.Dataset.from_list([{"prompt": prompt, "chosen": chosen, "rejected": rejected}
                                           for prompt, chosen, rejected in pairs])
        return trl.DPOTrainer(model=model, args=trl.DPOConfig(**common, max_length=16), train_dataset=data,
                              processing_class=tokenizer)
    data = datasets.Dataset.from_list([{"prompt": "is the cat good ?"}, {"prompt": "where did the dog go ?"}])
    config = trl.GRPOConfig(**common, num_generations=2, max_completion_length=4, beta=0.1)  # beta: a reference
    return trl.GRPOTrainer(model=model, reward_funcs=reward_yes, args=config, train_dataset=data,
                           processing_class=tokenizer)


@pytest.fixture(scope="module", params=[(which, mode) for which in TRAINERS for mode in ("dense", "sparse")],
                ids=lambda param: "-".join(param))
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    which, mode = request.param
    root = tmp_path_factory.mktemp(f"{which}-{mode}")
    model = tiny_lm.saved_model(root / "policy")
    mask = tiny_lm.seeded_mask(model)
    start = tiny_lm.start_of(model)
    submask.restrict(model, mask, mode=mode)  # before the trainer is built: the natural order
    trainer = build(which, model, root / "out")
    UpdateDensityCallback(log_every=1).attach(trainer)
    reference = getattr(trainer, "ref_model", None)
    trainer.train()
    trainer.save_model()
    return {"which": which, "mode": mode, "model": model, "mask": mask, "start": start, "trainer": trainer,
            "reference": reference, "out": root / "out"}


@pytest.mark.slow
def test_entries_outside_the_mask_keep_their_bits_and_masked_ones_move(run: dict[str, Any]) -> None:
    moved, broken = tiny_lm.moved_inside_kept_outside(run["model"].state_dict(), run["start"], run["mask"])
    assert broken == 0, f"{run['which']} {run['mode']}: {broken} entries outside the mask moved"
    assert moved > 0.9 * run["mask"].count


@pytest.mark.slow
def test_density_is_logged_every_step(run: dict[str, Any]) -> None:
    logged = [entry for entry in run["trainer"].state.log_history if "update_density" in entry]
    assert [entry["step"] for entry in logged] == [1, 2]
    assert 0 < logged[-1]["update_density"] <= tiny_lm.DENSITY * 1.1
    assert "update_density/mlp.up_proj" in logged[-1]


@pytest.mark.slow
def test_a_mask_goes_into_each_checkpoint_and_next_to_the_final_model(run: dict[str, Any]) -> None:
    out, mask = run["out"], run["mask"]
    final = submask.load(out / "update.smask")
    assert (out / "model.safetensors").is_file()
    saved = __import__("safetensors.torch", fromlist=["load_file"]).load_file(out / "model.safetensors")
    for name, bits in final.items():  # the final mask is what changed in the saved model, inside the mask
        changed = saved[name].view(torch.int32) != run["start"][name].view(torch.int32)
        assert torch.equal(bits.to_torch(), changed), name
        assert not (bits.to_torch() & ~mask[name].to_torch()).any(), name
    assert final.count > 0.9 * mask.count
    for step in (1, 2):
        assert 0 < submask.load(out / f"checkpoint-{step}" / "update.smask").count <= final.count


@pytest.mark.slow
def test_the_reference_model_is_not_restricted_and_does_not_move(run: dict[str, Any]) -> None:
    reference = run["reference"]
    if run["which"] == "sft":
        assert reference is None  # SFT keeps no reference
        return
    assert restriction_of(reference) is None
    assert not any(name.endswith("_submask_values") for name, _ in reference.named_parameters())
    for name, value in reference.state_dict().items():
        assert torch.equal(value, run["start"][name]), name


ALPHA = 0.6  # TRL's default ref_model_mixup_alpha


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_dpo_that_syncs_its_reference_into_the_policy_keeps_the_guarantee(mode: str, tmp_path: Path) -> None:
    """TR-DPO (``sync_ref_model=True``) mixes the policy into the reference model after each sync step:
    the policy keeps every entry outside the mask, and the reference gets exactly TRL's mixture of its own
    start and the policy's weights (by name: sparse mode's values are no weights of the reference)."""
    model = tiny_lm.saved_model(tmp_path / "policy")
    mask = tiny_lm.seeded_mask(model)
    start = tiny_lm.start_of(model)
    submask.restrict(model, mask, mode=mode)
    pairs = [("is the cat good ?", "yes", "no"), ("where did the dog go ?", "on a mat", "bad")]
    data = datasets.Dataset.from_list([{"prompt": prompt, "chosen": chosen, "rejected": rejected}
                                       for prompt, chosen, rejected in pairs])
    config = trl.DPOConfig(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=2,
                           learning_rate=1e-2, weight_decay=0.1, report_to="none", save_strategy="no",
                           logging_strategy="no", use_cpu=True, disable_tqdm=True, max_length=16,
                           sync_ref_model=True, ref_model_sync_steps=2, ref_model_mixup_alpha=ALPHA)
    trainer = trl.DPOTrainer(model=model, args=config, train_dataset=data, processing_class=tiny_lm.tokenizer())
    ReferenceSyncCallback().attach(trainer)
    reference = trainer.ref_model
    trainer.train()
    moved, broken = tiny_lm.moved_inside_kept_outside(model.state_dict(), start, mask)
    assert broken == 0 and moved > 0.9 * mask.count
    assert restriction_of(reference) is None and restriction_of(model) is not None
    assert not any(name.endswith("_submask_values") for name, _ in reference.named_parameters())
    policy = model.state_dict()
    for name, value in reference.named_parameters():  # one sync, after step 2: (1 - alpha) start + alpha policy
        expected = start[name].clone().mul_(1.0 - ALPHA).add_(policy[name], alpha=ALPHA)
        assert torch.equal(value.detach(), expected), name


def test_a_reference_sync_between_models_of_other_parameters_is_refused() -> None:
    policy, reference = tiny_lm.model(), torch.nn.Linear(4, 4)
    before = reference.weight.detach().clone()
    with pytest.raises(submask.MismatchError, match="load the reference from the policy's own checkpoint"):
        ReferenceSyncCallback.sync_target_model(policy, reference, ALPHA)
    assert torch.equal(reference.weight, before)  # refused before writing anything
