"""``count_changes``: a build's counts without its mask (what ``UpdateTracker.density`` uses during training)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import save_file  # noqa: E402
from test_build import _bf16_pair  # noqa: E402
from test_build_devices import _state_dicts  # noqa: E402

import submask  # noqa: E402
from submask.builder import count_changes  # noqa: E402
from submask.builder.backends import TorchBackend  # noqa: E402
from submask.builder.criteria import Criterion  # noqa: E402
from submask.checkpoints.dtypes import DTYPES as BUILD_DTYPES  # noqa: E402


@pytest.mark.parametrize("device", ["cpu", "torch"])
@pytest.mark.parametrize("kwargs", [{}, {"atol": 1e-5}, {"rtol": 1e-3}, {"include": "w*"}])
def test_counts_equal_the_builds(tmp_path: Path, kwargs: dict, device: str) -> None:
    """Per tensor: elements, changed elements and ladder, as the mask of the same build has them; from
    files and from state dicts, on the numpy path and the torch backend."""
    base, finetuned = _state_dicts()
    save_file(base, tmp_path / "a.safetensors")
    save_file(finetuned, tmp_path / "b.safetensors")
    backend = "cpu" if device == "cpu" else TorchBackend("cpu")
    mask = submask.build_mask(base, finetuned, device="cpu", **kwargs).mask
    ladder = mask.metadata.stats["ladder"]["changed"]
    for inputs in [(base, finetuned), (tmp_path / "a.safetensors", tmp_path / "b.safetensors")]:
        counts = count_changes(*inputs, device=backend, chunk_bytes=4096, **kwargs)
        assert counts.numel == {name: tensor.numel for name, tensor in mask.items()}
        assert counts.changed == {name: tensor.count for name, tensor in mask.items()}
        assert counts.ladder == {name: ladder[name] for name in mask}
        assert counts.backend == "cpu"  # TorchBackend("cpu") is named as its device
    assert 0 < sum(counts.changed.values()) < sum(counts.numel.values())
    assert count_changes(base, finetuned, ladder=False, **kwargs).ladder is None


def test_counts_keep_no_bits() -> None:
    """A build holds each tensor's packed bits (numel / 8 bytes); counting holds the chunks in flight only."""
    numel = 1 << 27
    base = torch.zeros(numel, dtype=torch.uint8)
    finetuned = base.clone()
    finetuned[::3] = 1
    options = {"workers": 1, "chunk_bytes": 1 << 20, "device": "cpu"}
    peaks = {}
    for name, run in {"build": lambda: submask.build_mask({"t": base}, {"t": finetuned}, **options),
                      "count": lambda: count_changes({"t": base}, {"t": finetuned}, **options)}.items():
        tracemalloc.start()
        result = run()
        peaks[name] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        del result
    assert peaks["build"] >= numel // 8
    assert peaks["count"] < numel // 8 // 3, peaks  # the 1 MiB chunk buffers of both sides, and such


def test_tracker_density_from_counts_equals_the_masks(tmp_path: Path) -> None:
    """``density()`` counts without a mask and gives what the mask gives; module fractions follow the
    criterion (here atol), as the overall fraction does."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.LayerNorm(32), torch.nn.Linear(32, 8))
    tracker = submask.UpdateTracker(model, atol=1e-3)
    with torch.no_grad():
        model[0].weight[:4] += 1e-4  # within the tolerance: unchanged under atol, changed bitwise
        model[2].weight[:2] += 1.0
    density = tracker.density()
    assert density == submask.UpdateDensity.of(tracker.mask())
    assert density.modules["0"] == 0.0 and density.ladder[0.0] > 0.0
    assert density.modules["2"] == pytest.approx(2 * 32 / (8 * 32 + 8))
    numel = sum(p.numel() for p in model.parameters())
    assert density.overall == pytest.approx(2 * 32 / numel)
    np.testing.assert_allclose(density.tensors["2.weight"], 2 * 32 / 256)


def test_tensors_without_values_are_refused() -> None:
    """A model on the meta device (made without weights) has nothing to compare: a clear SourceError, from a
    build, a count and the tracker alike."""
    model = torch.nn.Linear(3, 3, device="meta")
    empty, real = {"w": torch.zeros(4, device="meta")}, {"w": torch.zeros(4)}
    runs = [lambda: submask.build_mask(model, model), lambda: count_changes(empty, real),
            lambda: submask.UpdateTracker(model).density()]
    for run in runs:
        with pytest.raises(submask.SourceError, match=r"tensor '(weight|w)' is on the meta device.*load the weights"):
            run()


def test_the_torch_backend_sends_back_only_counts_when_no_bits_are_asked_for() -> None:
    base, finetuned = _bf16_pair(10_001, seed=9)
    backend, dtype = TorchBackend("cpu"), BUILD_DTYPES["BF16"]
    a, b = (value.view(torch.int16) for value in (base, finetuned))
    with_bits = backend.compare(a, b, dtype, Criterion.make(), ladder=True)
    counts_only = backend.compare(a, b, dtype, Criterion.make(), ladder=True, bits=False)
    assert counts_only.packed is None and with_bits.packed.size == 1251
    assert (counts_only.ones, counts_only.ladder) == (with_bits.ones, with_bits.ladder) and 0 < with_bits.ones


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_a_model_spread_over_two_gpus_is_compared_on_each() -> None:
    """Tensors on cuda:0 and cuda:1 (as ``device_map="auto"`` places a large model) are compared where each
    lives; the counts and bits equal the CPU build's."""
    base, finetuned = _state_dicts()
    placed = [{name: value.to(f"cuda:{k % 2}") for k, (name, value) in enumerate(side.items())}
              for side in (base, finetuned)]
    expected = submask.build_mask(base, finetuned, device="cpu").mask
    assert dict(submask.build_mask(*placed).mask) == dict(expected)
    assert count_changes(*placed).changed == {name: tensor.count for name, tensor in expected.items()}
