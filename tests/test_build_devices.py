"""The torch backend against the numpy path, device-resident inputs, and what ``device="auto"`` picks (issue 13)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import save_file  # noqa: E402
from test_build import DTYPES, _bf16_pair, _every_code_pair, _pair_tensors  # noqa: E402

from submask import build_mask  # noqa: E402
from submask.builder.backends import NumpyBackend, TorchBackend, pack_bits, select_backend  # noqa: E402
from submask.builder.criteria import LADDER_ATOL, Criterion  # noqa: E402
from submask.checkpoints.dtypes import DTYPES as BUILD_DTYPES  # noqa: E402
from submask.checkpoints.dtypes import decode  # noqa: E402

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


def test_pack_bits_is_numpy_packbits_for_every_byte() -> None:
    """The one-multiply packing puts each flag on its own bit (no carries) for all 256 bytes, MSB first."""
    every_byte = np.arange(256, dtype=np.uint8)
    flags = torch.from_numpy(np.unpackbits(every_byte).astype(bool))
    out = torch.empty(256, dtype=torch.uint8)
    pack_bits(flags, out)
    assert out.tolist() == every_byte.tolist()


@pytest.mark.parametrize("numel", [1, 7, 9, 15, 17, 63, 65, 1001])
@pytest.mark.parametrize("criterion", [Criterion.make(), Criterion.make(atol=1e-4)])
def test_torch_backend_packs_a_partial_last_byte(numel: int, criterion: Criterion) -> None:
    """A tensor's last chunk may end mid-byte: its packed bits (zero padded), count and ladder equal numpy's."""
    base, finetuned = (side.view(torch.int16)[-numel:] for side in _bf16_pair(numel + 3, seed=numel))
    finetuned[-1] = base[-1] ^ 0x4000  # a large move (exponent bit), whose bit lands in the partial byte
    a, b = base.numpy().view(np.uint16), finetuned.numpy().view(np.uint16)
    with np.errstate(invalid="ignore"):
        expected = NumpyBackend().compare(a, b, BUILD_DTYPES["BF16"], criterion, ladder=True)
    for ladder in (True, False):
        got = TorchBackend("cpu").compare(base, finetuned, BUILD_DTYPES["BF16"], criterion, ladder)
        assert got.packed.tolist() == expected.packed.tolist()
        assert (got.ones, got.ladder) == (expected.ones, expected.ladder if ladder else None)
    assert expected.packed.size == -(-numel // 8) and expected.packed[-1] & 0x80 >> (numel - 1) % 8


def test_torch_ladder_counts_each_rung_on_the_device() -> None:
    """Differences exactly at a tolerance are within it; NaN (against a number or another NaN) and inf
    against -inf are within none; +0 vs -0 changes only the bytes; equal bytes (NaN and inf included)
    count nowhere."""
    nan, inf, rung = float("nan"), float("inf"), 1e-8
    pairs = [(0.0, rung, [1, 0, 0, 0, 0, 0]), (0.0, np.nextafter(rung, 1), [1, 1, 0, 0, 0, 0]),
             (1.0, 1.00005, [1, 1, 1, 1, 1, 0]), (1.0, 1.001, [1] * 6), (1.0, nan, [1] * 6),
             (nan, nan, [1] * 6), (inf, -inf, [1] * 6), (0.0, -0.0, [1, 0, 0, 0, 0, 0]),
             (nan, nan, [0] * 6), (inf, inf, [0] * 6), (2.5, 2.5, [0] * 6)]
    a = np.array([pair[0] for pair in pairs], dtype=np.float64).view(np.uint64)
    b = np.array([pair[1] for pair in pairs], dtype=np.float64).view(np.uint64)
    b[5] ^= np.uint64(1)  # another NaN payload
    expected_ladder = np.sum([pair[2] for pair in pairs], axis=0).tolist()
    f64 = BUILD_DTYPES["F64"]
    exact, within_rung = [1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], [0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
    for criterion, changed in [(Criterion.make(), exact), (Criterion.make(atol=rung), within_rung)]:
        got = TorchBackend("cpu").compare(a, b, f64, criterion, ladder=True)
        with np.errstate(invalid="ignore"):
            reference = NumpyBackend().compare(a, b, f64, criterion, ladder=True)
        assert got.ladder == reference.ladder == expected_ladder
        assert got.packed.tolist() == reference.packed.tolist() == np.packbits(changed).tolist()
        assert got.ones == reference.ones == sum(changed)


@pytest.mark.parametrize("dtype_name", ["BF16", "F16", "F8_E4M3", "F8_E5M2"])
def test_float32_ladder_of_narrow_floats_equals_float64_wherever_they_could_differ(dtype_name: str) -> None:
    """An exact build counts the ladder of narrow floats in float32. Its rounding of |y - x| can differ from
    float64's side of a rung only where the larger magnitude lies within 2^-12 of the rung: every such
    pair (larger magnitude within 2^-8, against every code, both ways round; every pair of 8-bit codes)
    counts as in float64."""
    dtype = BUILD_DTYPES[dtype_name]
    codes = np.arange(1 << 8 * dtype.itemsize, dtype=np.int64).astype(dtype.raw)
    with np.errstate(invalid="ignore"):
        closeness = np.abs(np.abs(decode(codes, dtype))[:, None] / np.array(LADDER_ATOL[1:]) - 1)
    near = codes if dtype.itemsize == 1 else codes[np.any(closeness < 2.0**-8, axis=1)]
    a, b = np.repeat(near, codes.size), np.tile(codes, near.size)
    a, b = np.concatenate([a, b]), np.concatenate([b, a])
    with np.errstate(invalid="ignore"):
        expected = NumpyBackend().compare(a, b, dtype, Criterion.make(), ladder=True)
    got = TorchBackend("cpu").compare(a, b, dtype, Criterion.make(), ladder=True)
    assert got.ladder == expected.ladder
    assert got.packed.tolist() == expected.packed.tolist()
    if dtype_name == "BF16":  # some pairs are this close to every rung
        assert near.size >= 2 * len(LADDER_ATOL[1:]) and 0 < expected.ladder[-1] < expected.ladder[1]


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
