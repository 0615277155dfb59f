"""The README's ten-line tour, run for real on MiniLM (the push goes to the local Hub server)."""

from __future__ import annotations

from pathlib import Path

import pytest

import submask

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def test_readme_tour(minilm_bf16, hub_api, hub_repo, tmp_path: Path) -> None:
    base, finetuned = minilm_bf16.base, minilm_bf16.finetuned
    built = submask.build_mask(base, finetuned, tmp_path / "rl.smask", progress=True)
    path, ladder = built.path, built.stats["ladder"]
    with submask.open(built.path) as f:
        query = f["encoder.layer.0.attention.self.query.weight"]
    assert ladder["changed"]["__all__"][0] == submask.load(path).count == built.ones and 0 < query.density < 1
    cmp = submask.compare([path, path], by="module")
    assert cmp.pair(0, 1).jaccard == 1.0 and cmp.pair(0, 1).chance_jaccard < 1.0
    applied = submask.apply_mask(base, finetuned, path, tmp_path / "sparse-rl")
    assert applied.from_finetuned == submask.load(path).count
    model = transformers.AutoModel.from_pretrained(tmp_path / "sparse-rl", local_files_only=True)
    parameters = {name for name, _ in model.named_parameters()}
    mask = submask.load(path)
    handle = submask.restrict(model, path, mode="sparse")  # the mask lists buffers too (11.3): they are left alone
    optimizer = torch.optim.AdamW(handle.parameters(), lr=1e-5, weight_decay=0.1)
    assert sum(p.numel() for group in optimizer.param_groups for p in group["params"]) == sum(
        m.count for n, m in mask.items() if n in parameters)
    tracker = submask.UpdateTracker(model)
    assert tracker.density().overall == 0.0 and tracker.mask().numel == sum(model.get_parameter(n).numel() for n in parameters)
    pushed = submask.push_mask(path, hub_repo, "masks/rl.smask", endpoint=hub_api.endpoint, token=hub_api.token)
    assert submask.pull_mask(hub_repo, "masks/rl.smask", endpoint=hub_api.endpoint,
                             token=hub_api.token).commit == pushed.commit
