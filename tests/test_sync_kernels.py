"""The receiver's loops of a weight sync (submask.sync.kernels): values decoded from a tensor's own previous values
block by block and written in place, the same bytes on every path (compiled over the tensor's memory, numpy, and
torch indexing as for a tensor on another device)."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from submask import Patch, UsageError  # noqa: E402
from submask.accel import numba_disabled  # noqa: E402
from submask.format.values import TensorValues, encode_tensor_values  # noqa: E402
from submask.packed import from_positions  # noqa: E402
from submask.sync import PatchTensor  # noqa: E402
from submask.sync.kernels import decode_at, host_view, write_at  # noqa: E402
from submask.sync.state import bits  # noqa: E402
from submask.sync.values import Differences, decode_patch_values  # noqa: E402

NUMEL, BLOCK = 5000, 512  # ten blocks, so the per-block exponent order is exercised
DTYPES = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}


def case(dtype: Any, seed: int = 3) -> tuple[Any, np.ndarray, np.ndarray, Differences]:
    """A tensor, the positions of a step's changes, their new value bytes, and those coded against the tensor's."""
    rng = np.random.default_rng(seed)
    tensor = torch.randn(NUMEL, generator=torch.Generator().manual_seed(seed)).to(dtype)
    positions = np.flatnonzero(rng.random(NUMEL) < 0.05).astype(np.int64)
    positions = positions[(positions < 1024) | (positions >= 1536)]  # a block with no change
    previous = bits(tensor).view(-1)[torch.from_numpy(positions)].numpy()
    moves = rng.integers(-3, 4, positions.size).astype(previous.dtype)  # a few ulps, either way
    new = (previous + moves).view(np.uint8)
    entry, payload = encode_tensor_values("w", TensorValues(DTYPES[dtype], new, previous.view(np.uint8)),
                                          positions.size, {"block_elements": BLOCK},
                                          packed=from_positions(positions, NUMEL), numel=NUMEL)
    differences = decode_patch_values(entry, payload, positions.size, "test", "w", positions, NUMEL)
    assert isinstance(differences, Differences)
    return tensor, positions, new, differences


PATHS = {"compiled": contextlib.nullcontext, "numpy": numba_disabled}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("path", ["compiled", "numpy", "torch indexing"])
def test_values_decode_from_the_tensor_and_are_written_in_place(dtype: Any, path: str) -> None:
    tensor, positions, new, differences = case(dtype)
    assert differences.counts.size == -(-NUMEL // BLOCK) and differences.counts[2] == 0
    before = bits(tensor).clone()
    start, version = tensor.data_ptr(), tensor._version
    with PATHS.get(path, contextlib.nullcontext)():
        view = None if path == "torch indexing" else host_view(tensor)
        values = decode_at(tensor, view, positions, differences)
        assert values.tobytes() == new.tobytes()
        assert torch.equal(bits(tensor), before)  # decoding reads the tensor, writes nothing
        write_at(tensor, view, positions, values)
    after = bits(tensor).view(-1)
    assert after[torch.from_numpy(positions)].numpy().tobytes() == new.tobytes()
    untouched = np.ones(NUMEL, bool)
    untouched[positions] = False
    assert torch.equal(after[torch.from_numpy(untouched)], before.view(-1)[torch.from_numpy(untouched)])
    assert tensor.data_ptr() == start and tensor._version > version  # in place, and autograd sees the write


@pytest.mark.parametrize("path", ["compiled", "numpy", "torch indexing"])
def test_a_tensor_whose_every_entry_changed_decodes_from_the_tensor_itself(path: str) -> None:
    tensor = torch.randn(NUMEL, generator=torch.Generator().manual_seed(5)).to(torch.bfloat16)
    previous = bits(tensor).view(-1).numpy().copy()
    new = (previous + np.random.default_rng(5).integers(-3, 4, NUMEL).astype(previous.dtype)).view(np.uint8)
    entry, payload = encode_tensor_values("w", TensorValues("BF16", new, previous.view(np.uint8)), NUMEL,
                                          {"block_elements": BLOCK}, packed=from_positions(np.arange(NUMEL), NUMEL),
                                          numel=NUMEL)
    differences = decode_patch_values(entry, payload, NUMEL, "test", "w", None, NUMEL)
    assert isinstance(differences, Differences)
    with PATHS.get(path, contextlib.nullcontext)():
        view = None if path == "torch indexing" else host_view(tensor)
        values = decode_at(tensor, view, None, differences)
        assert values.tobytes() == new.tobytes() and bits(tensor).view(-1).numpy().tobytes() == previous.tobytes()
        write_at(tensor, view, None, values)
    assert bits(tensor).view(-1).numpy().tobytes() == new.tobytes()

def test_a_view_is_the_tensors_memory() -> None:
    tensor = torch.zeros(8, dtype=torch.bfloat16, requires_grad=True)
    view = host_view(tensor)
    assert view is not None and view.dtype == np.uint16 and view.size == 8
    view[3] = 0x3F80  # bf16 1.0
    assert tensor[3].item() == 1.0


@pytest.mark.parametrize("positions", [[3, 1], [2, 2], [-1, 2], [2, 8], np.array([1, 2], np.int32)])
def test_a_patch_whose_positions_would_write_outside_the_tensor_or_out_of_order_is_refused(positions: Any) -> None:
    values = np.zeros(2 * len(positions), np.uint8)
    tensor = PatchTensor((2, 4), "BF16", np.asarray(positions, getattr(positions, "dtype", np.int64)), values)
    with pytest.raises(UsageError, match="ascending order below its 8 entries"):
        Patch("sha256:" + "0" * 64, "sha256:" + "1" * 64, 1, {"w": tensor})
    Patch("sha256:" + "0" * 64, "sha256:" + "1" * 64, 1, {"w": PatchTensor((2, 4), "BF16", np.array([0, 7]), values)})
