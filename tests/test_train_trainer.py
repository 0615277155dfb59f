"""Restricting before a transformers Trainer is built keeps the mask under the Trainer's own AdamW with weight
decay: a tiny Llama built here, the real Trainer, both modes."""

from __future__ import annotations

from pathlib import Path

import pytest

import submask

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
import tiny_lm  # noqa: E402


def dataset(count: int = 8) -> list[dict]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, len(tiny_lm.WORDS) + 3, (count, 12), generator=generator)
    return [{"input_ids": row, "attention_mask": torch.ones_like(row), "labels": row} for row in ids]


def arguments(out: Path, **changes) -> transformers.TrainingArguments:
    settings = dict(output_dir=str(out), max_steps=4, per_device_train_batch_size=4, learning_rate=1e-2,
                    weight_decay=0.1, report_to="none", save_strategy="no", logging_strategy="no", use_cpu=True,
                    disable_tqdm=True)
    return transformers.TrainingArguments(**{**settings, **changes})


@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_restrict_before_the_trainer_keeps_entries_outside_the_mask(tmp_path: Path, mode: str) -> None:
    model = tiny_lm.model()
    mask = tiny_lm.seeded_mask(model)
    start = tiny_lm.start_of(model)
    submask.restrict(model, mask, mode=mode)
    transformers.Trainer(model=model, args=arguments(tmp_path), train_dataset=dataset()).train()
    moved, broken = tiny_lm.moved_inside_kept_outside(model.state_dict(), start, mask)
    assert broken == 0, f"{broken} entries outside the mask moved"
    assert moved > 0.9 * mask.count


def test_a_frozen_parameter_made_trainable_again_is_refused(tmp_path: Path) -> None:
    """Unlisted parameters are frozen; a step that would move one (it has a gradient again) is refused."""
    model = tiny_lm.model()
    mask = submask.Mask({name: bits for name, bits in tiny_lm.seeded_mask(model).items() if "mlp" in name})
    submask.restrict(model, mask)
    model.requires_grad_(True)
    trainer = transformers.Trainer(model=model, args=arguments(tmp_path), train_dataset=dataset())
    with pytest.raises(submask.UsageError, match="that restrict\\(\\) froze"):
        trainer.train()


def test_an_optimizer_built_before_sparse_restrict_is_refused() -> None:
    model = tiny_lm.model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    submask.restrict(model, tiny_lm.seeded_mask(model), mode="sparse")
    model(**{key: value.unsqueeze(0) for key, value in dataset(1)[0].items()}).loss.backward()
    with pytest.raises(submask.UsageError, match="built before restrict"):
        optimizer.step()
