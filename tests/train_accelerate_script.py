"""Run by tests/test_train_accelerate.py under ``accelerate launch --multi_gpu --num_processes 2`` (gloo, CPU):
a restricted transformers Trainer on a tiny Llama, every parameter partly masked, dense then sparse.

    accelerate launch --multi_gpu --num_processes 2 tests/train_accelerate_script.py OUT_DIR

``restrict`` runs before the TrainingArguments exist (so before torch.distributed is initialised). Each rank
writes OUT_DIR/{mode}-rank{N}.json: entries outside the mask that moved, masked entries that moved, a checksum
of the trained weights (equal on both ranks when they stayed in step) and the world size the Trainer saw.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).parent))
import tiny_lm  # noqa: E402

import submask  # noqa: E402


def main(out: Path) -> None:
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, len(tiny_lm.WORDS) + 3, (8, 10), generator=generator)
    data = [{"input_ids": row, "attention_mask": torch.ones_like(row), "labels": row} for row in ids]
    for mode in ("dense", "sparse"):
        model = tiny_lm.model()
        mask = tiny_lm.seeded_mask(model)
        start = tiny_lm.start_of(model)
        submask.restrict(model, mask, mode=mode)
        args = transformers.TrainingArguments(
            output_dir=str(out / mode), max_steps=3, per_device_train_batch_size=2, learning_rate=1e-2,
            weight_decay=0.1, report_to="none", save_strategy="no", logging_strategy="no", use_cpu=True,
            disable_tqdm=True, ddp_backend="gloo")
        trainer = transformers.Trainer(model=model, args=args, train_dataset=data)
        trainer.train()
        moved, broken = tiny_lm.moved_inside_kept_outside(model.state_dict(), start, mask)
        checksum = sum(float(value.double().sum()) for value in model.state_dict().values())
        (out / f"{mode}-rank{rank}.json").write_text(json.dumps(
            {"moved": moved, "broken": broken, "masked": mask.count, "checksum": checksum,
             "world": args.world_size}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
