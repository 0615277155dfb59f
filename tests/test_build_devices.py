"""The torch backend against the numpy path, device-resident inputs, and what ``device="auto"`` picks (issue 13)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import save_file  # noqa: E402
from test_build import DTYPES, _bf16_pair, _every_code_pair, _pair_tensors  # noqa: E402

from submask import build_mask  # noqa: E402
from submask.build.backends import NumpyBackend, TorchBackend, select_backend  # noqa: E402
from submask.build.criteria import Criterion  # noqa: E402
from submask.checkpoints.dtypes import DTYPES as BUILD_DTYPES  # noqa: E402

CRITERIA = [Criterion.make(), Criterion.make(atol=0.0), Criterion.make(atol=1e-3), Criterion.make(rtol=0.01)]


@pytest.mark.parametrize("dtype_name", list(BUILD_DTYPES))
def test_torch_backend_equals_numpy_code_by_code(dtype_name: str) -> None:
    """Every code of 8/16-bit dtypes against others (NaN payloads, +-0, inf, subnormals, fp8), random bits
    for wider ones: the torch backend's bits, counts and ladder equal the numpy path's, from numpy chunks
    and from torch chunks alike."""
    a, b = _every_code_pair(dtype_name)
    dtype, numpy_backend, torch_backend = BUILD_DTYPES[dtype_name], NumpyBackend(), TorchBackend("cpu")
    as_tensor = [torch.from_numpy(raw.view(dtype.signed)) for raw in (a, b)]
    for criterion in CRITERIA:
        with np.errstate(invalid="ignore", over="ignore"):  # inf - inf in the numpy path
            expected = numpy_backend.compare(a, b, dtype, criterion, ladder=True)
        for got in (torch_backend.compare(a, b, dtype, criterion, ladder=True),
                    torch_backend.compare(*as_tensor, dtype, criterion, ladder=True)):
            assert got.packed.tolist() == expected.packed.tolist(), criterion
            assert (got.ones, got.ladder) == (expected.ones, expected.ladder), criterion
        assert 0 < expected.ones < a.size
    if dtype.kind == "float":
        np.testing.assert_array_equal(torch_backend.widen(as_tensor[0], dtype).numpy().view(np.uint64),
                                      numpy_backend.widen(a, dtype))


def _state_dicts() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    base, finetuned = {}, {}
    for name, (dtype, pairs) in DTYPES.items():
        base[name], finetuned[name], _ = _pair_tensors(dtype, pairs)
    base["w"], finetuned["w"] = _bf16_pair(20_001, seed=3)
    base["cross"], finetuned["cross"] = base["w"].clone(), finetuned["w"].float()
    finetuned["cross"][5:50] += 1e-6  # fp32 moves a bf16 cannot hold
    return base, finetuned


@pytest.mark.parametrize("kwargs", [{}, {"atol": 1e-5}, {"rtol": 1e-3}])
def test_torch_tensors_on_the_torch_backend_equal_the_numpy_path(tmp_path: Path, kwargs: dict) -> None:
    """State dicts of torch tensors go to the torch backend as tensors (what a GPU-resident model does),
    cross-dtype tensors widened there; files and the numpy path give the same bits, counts and ladder."""
    base, finetuned = _state_dicts()
    save_file(base, tmp_path / "a.safetensors")
    save_file(finetuned, tmp_path / "b.safetensors")
    expected = build_mask(tmp_path / "a.safetensors", tmp_path / "b.safetensors", device="cpu", **kwargs).mask
    for device in ("cpu", TorchBackend("cpu")):
        got = build_mask(base, finetuned, device=device, chunk_bytes=4096, workers=2, **kwargs).mask
        assert dict(got) == dict(expected)
        assert got.metadata.stats["ladder"] == expected.metadata.stats["ladder"]
        assert got.metadata.stats["cross_dtype"] == {"cross": ["BF16", "F32"]}
    assert expected.count > 0 and expected["cross"].count >= expected["w"].count
    if not kwargs:  # the fp32-only moves count as changes under exact
        assert expected["cross"].count > expected["w"].count


def test_auto_compares_files_and_cpu_tensors_on_the_cpu(tmp_path: Path) -> None:
    base, finetuned = _state_dicts()
    assert build_mask(base, finetuned).mask.metadata.stats["backend"] == "cpu"
    module = torch.nn.Linear(4, 2)
    assert build_mask(module, module).mask.metadata.stats["backend"] == "cpu"
    save_file(base, tmp_path / "a.safetensors")
    assert build_mask(tmp_path / "a.safetensors", base).mask.metadata.stats["backend"] == "cpu"
    assert isinstance(select_backend("auto"), NumpyBackend)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("placement", ["both", "base-on-cpu", "finetuned-on-cpu"])
@pytest.mark.parametrize("kwargs", [{}, {"atol": 1e-5}])
def test_gpu_resident_state_dicts_are_compared_on_the_gpu(placement: str, kwargs: dict) -> None:
    base, finetuned = _state_dicts()
    expected = build_mask(base, finetuned, device="cpu", **kwargs).mask
    if placement != "base-on-cpu":
        finetuned = {name: value.cuda() for name, value in finetuned.items()}
    if placement != "finetuned-on-cpu":
        base = {name: value.cuda() for name, value in base.items()}
    got = build_mask(base, finetuned, **kwargs).mask
    assert got.metadata.stats["backend"] == "cuda:0"
    assert dict(got) == dict(expected)
    assert got.metadata.stats["ladder"] == expected.metadata.stats["ladder"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kwargs", [{}, {"atol": 1e-5}, {"rtol": 1e-3}])
def test_files_to_cuda_through_pinned_buffers_and_streams(tmp_path: Path, kwargs: dict) -> None:
    """Many chunks on several worker threads (each with its own stream and pinned buffers), cross-dtype
    tensors included: the same bits, counts and ladder as the CPU."""
    base, finetuned = _state_dicts()
    save_file(base, tmp_path / "a.safetensors")
    save_file(finetuned, tmp_path / "b.safetensors")
    files = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    expected = build_mask(*files, device="cpu", **kwargs).mask
    for _ in range(3):  # a race between a thread's copies and its buffer's next read would show as a difference
        got = build_mask(*files, device="cuda", workers=4, chunk_bytes=1024, **kwargs).mask
        assert got.metadata.stats["backend"] == "cuda:0"
        assert dict(got) == dict(expected)
        assert got.metadata.stats["ladder"] == expected.metadata.stats["ladder"]
    assert TorchBackend("cuda").staging(64).ctypes.data and torch.from_numpy(
        TorchBackend("cuda").staging(64)).is_pinned()
