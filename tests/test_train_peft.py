"""A LoRA model from the real peft package, restricted and tracked with masks in its base model's names:
names map by themselves, the adapters stay trainable unless asked otherwise, and the tracker's masks are the
merged model's against the base, in base names."""

from __future__ import annotations

import pytest

import submask

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
import tiny_lm  # noqa: E402

UNFROZEN = "model.layers.0.mlp.up_proj.weight"  # a base weight trained (restricted) next to the adapters


def lora(model: torch.nn.Module) -> peft.PeftModel:
    return peft.get_peft_model(model, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                                      init_lora_weights="gaussian"))


def steps(model: torch.nn.Module, count: int = 3) -> None:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    ids = torch.randint(3, len(tiny_lm.WORDS) + 3, (4, 10), generator=torch.Generator().manual_seed(2))
    for _ in range(count):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def test_a_base_named_mask_restricts_a_lora_model_and_the_adapters_train() -> None:
    base = tiny_lm.model()
    mask = tiny_lm.seeded_mask(base)  # base model's names
    model = lora(base)
    model.get_parameter(f"base_model.model.{UNFROZEN}").requires_grad_(True)
    start = {name: value.detach().clone() for name, value in model.named_parameters()}
    restriction = submask.restrict(model, mask)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert f"base_model.model.{UNFROZEN}" in trainable
    assert len(trainable) == 1 + 8  # lora_A and lora_B of q_proj and v_proj in 2 layers
    steps(model)
    restriction.remove()
    for name, value in model.named_parameters():
        if "lora_" in name:
            assert not torch.equal(value, start[name]), f"{name}: the adapter did not train"
            continue
        changed = value.detach() != start[name]
        base_name = submask.wrappers.peft_names(name)
        if base_name == UNFROZEN:
            inside = mask[base_name].to_torch()
            assert not changed[~inside].any() and changed[inside].float().mean() > 0.9
        else:
            assert not changed.any(), name


def test_adapters_freeze_when_asked() -> None:
    model = lora(tiny_lm.model())
    submask.restrict(model, tiny_lm.seeded_mask(tiny_lm.model()), missing="freeze")
    assert not any(p.requires_grad for p in model.parameters())


def test_tracker_masks_are_the_merged_models_in_base_names(tmp_path) -> None:
    base = tiny_lm.model()
    start = tiny_lm.start_of(base)
    model = lora(base)
    tracker = submask.UpdateTracker(model)
    assert tracker.density().overall == 0.0
    steps(model)
    path = tracker.save(tmp_path / "lora.smask")
    mask = submask.load(path)
    assert list(mask) == list(start)  # the base model's names, every parameter, no adapter
    merged = model.merge_and_unload().state_dict()
    for name, bits in mask.items():
        assert torch.equal(bits.to_torch(), merged[name] != start[name]), name
    assert mask.count == sum(int(bits.count) for name, bits in mask.items() if "q_proj" in name or "v_proj" in name)
    assert mask.count > 0
    full = tiny_lm.model()  # a full finetune of the same base: its mask compares with the LoRA one in one call
    full_tracker = submask.UpdateTracker(full)
    steps(full)
    comparison = submask.compare([path, full_tracker.save(tmp_path / "full.smask")])
    assert 0 < comparison.pair(0, 1).jaccard < 1
