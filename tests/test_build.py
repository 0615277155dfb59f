"""Build criteria on every dtype, streaming in chunks, the ladder, sources, matching and atomicity."""

from __future__ import annotations

import itertools
import json
import math
import os
import struct
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import save_file  # noqa: E402

import submask  # noqa: E402
from submask import MismatchError, SourceError, SubmaskError, build_mask  # noqa: E402
from submask.builder import kernels  # noqa: E402
from submask.builder.backends import NumpyBackend, TorchBackend  # noqa: E402
from submask.builder.criteria import LADDER_ATOL, Criterion  # noqa: E402
from submask.checkpoints.dtypes import DTYPES as BUILD_DTYPES  # noqa: E402
from submask.checkpoints.dtypes import fp8_table  # noqa: E402

NAN, INF = math.nan, math.inf
ATOL, RTOL = 0.5, 0.25
CRITERIA = {"exact": {}, "atol": {"atol": ATOL}, "rtol": {"rtol": RTOL}}

# (base, finetuned, changed under (exact, atol=0.5, rtol=0.25)); "-nan" is a NaN with the sign bit flipped.
FLOAT_PAIRS = [
    (1.0, 1.0, (0, 0, 0)),
    (1.0, 1.25, (1, 0, 0)),
    (1.0, 2.0, (1, 1, 1)),
    (4.0, 5.0, (1, 1, 0)),
    (-1.5, -1.75, (1, 0, 0)),
    (0.0, -0.0, (1, 0, 0)),  # signed zero: changed bitwise only
    (NAN, NAN, (0, 0, 0)),  # same NaN bits: unchanged
    (NAN, "-nan", (1, 1, 1)),  # NaNs with other bits: changed
    (NAN, 1.0, (1, 1, 1)),
]
INF_PAIRS = [(INF, INF, (0, 0, 0)), (INF, 4.0, (1, 1, 1)), (-INF, INF, (1, 1, 1))]  # inf never within rtol * inf
INT_PAIRS = [(3, 3, (0, 0, 0)), (3, 4, (1, 1, 0)), (0, 1, (1, 1, 1)), (100, 120, (1, 1, 0)), (10, 20, (1, 1, 1))]
SIGNED_PAIRS = [(-5, -4, (1, 1, 0)), (-1, 1, (1, 1, 1))]
BOOL_PAIRS = [(False, False, (0, 0, 0)), (True, True, (0, 0, 0)), (False, True, (1, 1, 1)), (True, False, (1, 1, 1))]

DTYPES = {
    "BF16": (torch.bfloat16, FLOAT_PAIRS + INF_PAIRS),
    "F16": (torch.float16, FLOAT_PAIRS + INF_PAIRS),
    "F32": (torch.float32, FLOAT_PAIRS + INF_PAIRS),
    "F64": (torch.float64, FLOAT_PAIRS + INF_PAIRS),
    "F8_E4M3": (torch.float8_e4m3fn, FLOAT_PAIRS),  # e4m3fn has no infinities
    "F8_E5M2": (torch.float8_e5m2, FLOAT_PAIRS + INF_PAIRS),
    "I8": (torch.int8, INT_PAIRS + SIGNED_PAIRS),
    "I16": (torch.int16, INT_PAIRS + SIGNED_PAIRS),
    "I32": (torch.int32, INT_PAIRS + SIGNED_PAIRS),
    "I64": (torch.int64, INT_PAIRS + SIGNED_PAIRS),
    "U8": (torch.uint8, INT_PAIRS),
    "U16": (torch.uint16, INT_PAIRS),
    "U32": (torch.uint32, INT_PAIRS),
    "U64": (torch.uint64, INT_PAIRS),
    "BOOL": (torch.bool, BOOL_PAIRS),
}


def _signed(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.view(getattr(torch, f"int{8 * tensor.element_size()}"))


def _pair_tensors(dtype: torch.dtype, pairs: list) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Base and finetuned tensors holding ``pairs``, and the expected changed bits (rows: criteria)."""
    def column(values: list) -> torch.Tensor:
        plain = [NAN if v == "-nan" else v for v in values]
        if dtype.is_floating_point:
            return torch.tensor(plain, dtype=torch.float64).to(dtype)
        return torch.tensor(plain, dtype=torch.int64 if dtype != torch.bool else torch.bool).to(dtype)

    base, finetuned = column([p[0] for p in pairs]), column([p[1] for p in pairs])
    for k, pair in enumerate(pairs):
        if pair[1] == "-nan":
            raw = _signed(finetuned)
            raw[k] ^= torch.iinfo(raw.dtype).min
    return base, finetuned, np.array([p[2] for p in pairs], dtype=bool).T


@pytest.fixture(params=["numba", "numpy"])
def cpu_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """Runs a test with the compiled kernel, then with the numpy path (the fallback without numba)."""
    if request.param == "numba":
        pytest.importorskip("numba")
    monkeypatch.setenv("SUBMASK_NO_NUMBA", "1" if request.param == "numpy" else "0")
    kernels.diff_bits.reset()
    assert (kernels.diff_bits.compiled is None) == (request.param == "numpy")
    yield request.param
    kernels.diff_bits.reset()


@pytest.fixture(scope="module")
def dtype_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """Two safetensors files with one tensor per dtype, and each tensor's expected bits per criterion."""
    root = tmp_path_factory.mktemp("dtypes")
    base, finetuned, expected = {}, {}, {}
    for name, (dtype, pairs) in DTYPES.items():
        base[name], finetuned[name], expected[name] = _pair_tensors(dtype, pairs)
    save_file(base, root / "base.safetensors")
    save_file(finetuned, root / "finetuned.safetensors")
    return root / "base.safetensors", root / "finetuned.safetensors", expected


@pytest.mark.parametrize("device", ["cpu", "torch-cpu"])
@pytest.mark.parametrize("criterion", list(CRITERIA))
def test_criteria_on_every_dtype(dtype_files, criterion: str, device: str, cpu_path: str) -> None:
    base, finetuned, expected = dtype_files
    backend = TorchBackend("cpu") if device == "torch-cpu" else device
    mask = build_mask(base, finetuned, criterion=criterion, device=backend, **CRITERIA[criterion]).mask
    row = list(CRITERIA).index(criterion)
    assert set(mask) == set(DTYPES)
    for name in DTYPES:
        assert mask[name].to_numpy().tolist() == expected[name][row].tolist(), name
    assert mask.metadata.criterion == {"name": criterion, "atol": None, "rtol": None, **CRITERIA[criterion]}
    assert mask.metadata.stats["dtypes"] == {name: name for name in DTYPES}


@pytest.mark.parametrize(("dtype", "name"), [(torch.float8_e4m3fn, "e4m3"), (torch.float8_e5m2, "e5m2")])
def test_fp8_tables_match_torch(dtype: torch.dtype, name: str) -> None:
    table = fp8_table(4, 3, 7, ieee=False) if name == "e4m3" else fp8_table(5, 2, 15, ieee=True)
    reference = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(dtype).to(torch.float64).numpy()
    np.testing.assert_array_equal(table, reference)  # NaNs compare equal in assert_array_equal
    assert np.isnan(table).sum() == (2 if name == "e4m3" else 6)


def _bf16_pair(numel: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A bf16 tensor and a copy with updates of many magnitudes (some below every ladder tolerance)."""
    generator = torch.Generator().manual_seed(seed)
    base = (torch.randn(numel, generator=generator) * 10.0 ** torch.randint(-6, 1, (numel,), generator=generator))
    step = torch.randn(numel, generator=generator) * 10.0 ** torch.randint(-9, -2, (numel,), generator=generator)
    step[torch.rand(numel, generator=generator) < 0.5] = 0
    base = base.to(torch.bfloat16)
    finetuned = (base.double() + step.double()).to(torch.bfloat16)
    finetuned[:3] = torch.tensor([NAN, INF, -0.0])
    return base, finetuned


def test_ladder_counts_match_numpy(cpu_path: str) -> None:
    base, finetuned = _bf16_pair(50_003, seed=1)
    mask = build_mask({"w": base}, {"w": finetuned}, chunk_bytes=4096, workers=3).mask
    x, y = base.double().numpy(), finetuned.double().numpy()
    differ = _signed(base).numpy() != _signed(finetuned).numpy()
    with np.errstate(invalid="ignore"):
        expected = [int(differ.sum())] + [
            int((differ & ~((np.abs(y - x) <= t) & np.isfinite(x) & np.isfinite(y))).sum()) for t in LADDER_ATOL[1:]]
    ladder = mask.metadata.stats["ladder"]
    assert ladder["atol"] == list(LADDER_ATOL)
    assert ladder["changed"]["w"] == expected
    assert ladder["changed"]["__all__"] == expected
    assert expected[0] > expected[3] > expected[-1] > 0  # the tolerance matters on this data
    assert mask.count == expected[0]


def _every_code_pair(dtype_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Raw elements: every code of an 8/16-bit dtype against several others (NaN payloads, infinities, signed
    zeros, subnormals included); random bit patterns for wider dtypes."""
    dtype = BUILD_DTYPES[dtype_name]
    if dtype.itemsize <= 2:
        codes = np.arange(1 << 8 * dtype.itemsize, dtype=np.int64)
        base = np.concatenate([codes] * 4)
        finetuned = np.concatenate([codes, codes ^ 1, codes ^ (1 << 8 * dtype.itemsize - 1), np.roll(codes, 7)])
        return base.astype(dtype.raw), finetuned.astype(dtype.raw)
    generator = np.random.default_rng(5)
    base = generator.integers(0, 256, 40_000 * dtype.itemsize, dtype=np.uint8).view(dtype.raw)
    finetuned = base.copy()
    finetuned[::3] ^= dtype.raw.type(1)  # tiny moves
    finetuned[1::3] = generator.integers(0, 256, finetuned[1::3].nbytes, dtype=np.uint8).view(dtype.raw)
    return base, finetuned


@pytest.mark.parametrize("dtype_name", list(BUILD_DTYPES))
def test_compiled_kernel_agrees_with_numpy(dtype_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fused kernel's bits, counts and ladder equal the numpy path's for every criterion, code by code, with
    the ladder or without."""
    pytest.importorskip("numba")
    a, b = _every_code_pair(dtype_name)
    dtype, backend = BUILD_DTYPES[dtype_name], NumpyBackend()
    for criterion, ladder in itertools.product((Criterion.make(), Criterion.make(atol=0.0),
                                                Criterion.make(atol=1e-3), Criterion.make(rtol=0.01)), (True, False)):
        results = []
        for disabled in ("1", "0"):
            monkeypatch.setenv("SUBMASK_NO_NUMBA", disabled)
            kernels.diff_bits.reset()
            with np.errstate(invalid="ignore", over="ignore"):  # inf - inf in the numpy path
                results.append(backend.compare(a, b, dtype, criterion, ladder=ladder))
        expected, got = results
        assert got.packed.tolist() == expected.packed.tolist(), (criterion, ladder)
        assert (got.ones, got.ladder) == (expected.ones, expected.ladder), (criterion, ladder)
        assert 0 < got.ones < a.size
    kernels.diff_bits.reset()


def test_no_ladder() -> None:
    base, finetuned = _bf16_pair(100, seed=2)
    assert "ladder" not in build_mask({"w": base}, {"w": finetuned}, ladder=False).mask.metadata.stats


@pytest.mark.parametrize("criterion", list(CRITERIA))
def test_chunked_build_equals_single_chunk(criterion: str, cpu_path: str) -> None:
    """Chunk boundaries (tiny chunks, a tensor whose size is not a multiple of 8, many threads) change nothing."""
    base, finetuned = _bf16_pair(10_007, seed=3)
    state_a = {"w": base.reshape(1, 10_007), "b": base[:13].float(), "empty": torch.zeros(0, 4)}
    state_b = {"w": finetuned.reshape(1, 10_007), "b": finetuned[:13].float(), "empty": torch.zeros(0, 4)}
    kwargs = CRITERIA[criterion]
    whole = build_mask(state_a, state_b, workers=1, **kwargs).mask
    chunked = build_mask(state_a, state_b, chunk_bytes=64, workers=4, **kwargs).mask
    assert dict(whole) == dict(chunked)
    assert whole.metadata.stats == chunked.metadata.stats
    assert whole["empty"].shape == (0, 4) and whole["empty"].count == 0
    if criterion == "exact":
        np.testing.assert_array_equal(whole["w"].to_numpy(), (_signed(base) != _signed(finetuned)).reshape(1, -1))


def test_module_and_state_dict_sources_agree_with_files(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 3))
    tuned = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 3))
    tuned.load_state_dict(model.state_dict())
    with torch.no_grad():
        tuned[0].weight[2:4] += 1e-3
        tuned[2].bias[1] = -tuned[2].bias[1]
    save_file(model.state_dict(), tmp_path / "a.safetensors")
    save_file(tuned.state_dict(), tmp_path / "b.safetensors")
    from_modules = build_mask(model, tuned, rtol=1e-6).mask
    from_numpy = build_mask({k: v.numpy() for k, v in model.state_dict().items()},
                            {k: v.numpy() for k, v in tuned.state_dict().items()}, rtol=1e-6).mask
    from_files = build_mask(tmp_path / "a.safetensors", tmp_path / "b.safetensors", rtol=1e-6).mask
    assert dict(from_modules) == dict(from_numpy) == dict(from_files)
    assert from_modules["0.weight"].count == 2 * 16 and from_modules["2.bias"].count == 1
    assert from_modules.count == 33
    assert from_modules.metadata.provenance["base"]["source"] == "Sequential module"
    assert from_files.metadata.provenance["finetuned"]["files"] == {
        "b.safetensors": {"size": (tmp_path / "b.safetensors").stat().st_size,
                          "mtime_ns": (tmp_path / "b.safetensors").stat().st_mtime_ns, "sha256": None}}


def _two_files(tmp_path: Path, a: dict, b: dict) -> tuple[Path, Path]:
    save_file(a, tmp_path / "a.safetensors")
    save_file(b, tmp_path / "b.safetensors")
    return tmp_path / "a.safetensors", tmp_path / "b.safetensors"


def test_mismatched_tensors_error_and_intersect(tmp_path: Path) -> None:
    a = {"same": torch.ones(4), "only_a": torch.ones(2), "shape": torch.ones(3), "dtype": torch.ones(2)}
    b = {"same": torch.tensor([1.0, 2, 1, 1]), "only_b": torch.ones(2), "shape": torch.ones(4),
         "dtype": torch.ones(2, dtype=torch.int32)}
    base, finetuned = _two_files(tmp_path, a, b)
    with pytest.raises(MismatchError) as info:
        build_mask(base, finetuned).mask
    message = str(info.value)
    for expected in ("'only_a'", "'only_b'", "shape F32 [3] vs F32 [4]",
                     "dtype F32 [2] vs I32 [2]", "intersect=True", "--include"):
        assert expected in message
    mask = build_mask(base, finetuned, intersect=True).mask
    assert list(mask) == ["same"] and mask["same"].to_numpy().tolist() == [False, True, False, False]
    assert mask.metadata.stats["skipped"] == {"base_only": ["only_a"], "finetuned_only": ["only_b"],
                                              "mismatched": ["dtype", "shape"]}
    assert list(build_mask(base, finetuned, include="sam*").mask) == ["same"]
    assert list(build_mask(base, finetuned, include=["re:^sa", "nothing"]).mask) == ["same"]
    with pytest.raises(MismatchError, match="matches no tensor"):
        build_mask(base, finetuned, include="zzz*").mask


CROSS_PAIRS = [  # (bf16 base, fp32 finetune): values widen exactly, so "exact" means the same value
    (1.0, 1.0), (1.0, 1.0 + 2**-20), (1.0, 1.5), (4.0, 4.25), (0.0, -0.0), (-0.0, -0.0),
    (NAN, NAN), (NAN, -NAN), (NAN, 1.0), (INF, INF), (INF, -INF), (-2.0, -2.0 - 2**-12)]


def _changed_by_value(x: np.ndarray, y: np.ndarray, name: str, tolerance: float) -> np.ndarray:
    """Independent reference of the build criteria on float64 values (see submask.builder.criteria)."""
    same_bits = x.view(np.uint64) == y.view(np.uint64)
    with np.errstate(invalid="ignore"):
        delta = np.abs(y - x)
        within = {"exact": np.zeros_like(same_bits), "atol": delta <= tolerance,
                  "rtol": (delta <= tolerance * np.maximum(np.abs(x), np.abs(y))) & np.isfinite(delta)}[name]
    return ~(same_bits | within)


@pytest.mark.parametrize("base_dtype,finetuned_dtype", [(torch.bfloat16, torch.float32),
                                                        (torch.float32, torch.bfloat16),
                                                        (torch.float16, torch.float64),
                                                        (torch.float8_e4m3fn, torch.float32)])
def test_float_dtypes_compare_by_value(tmp_path: Path, base_dtype: torch.dtype,
                                       finetuned_dtype: torch.dtype) -> None:
    pairs = [(x, y) for x, y in CROSS_PAIRS if base_dtype != torch.float8_e4m3fn or not math.isinf(x)]
    a = torch.tensor([x for x, _ in pairs], dtype=torch.float64).to(base_dtype)
    b = torch.tensor([y for _, y in pairs], dtype=torch.float64).to(finetuned_dtype)
    base, finetuned = _two_files(tmp_path, {"w": a.repeat(300), "ids": torch.arange(4)},
                                 {"w": b.repeat(300), "ids": torch.tensor([0, 1, 5, 3])})
    x, y = a.double().repeat(300).numpy(), b.double().repeat(300).numpy()
    x, y = (np.where(np.isnan(v), np.nan, v) for v in (x, y))  # across dtypes, every NaN is one value
    for name, tolerance in (("exact", 0.0), ("atol", 2**-10), ("rtol", 0.1)):
        kwargs = {} if name == "exact" else {name: tolerance}
        mask = build_mask(base, finetuned, chunk_bytes=64, **kwargs).mask
        np.testing.assert_array_equal(mask["w"].to_numpy(), _changed_by_value(x, y, name, tolerance), err_msg=name)
        assert mask["ids"].to_numpy().tolist() == [False, False, True, False]
        assert mask.metadata.criterion["cross_dtype"] == "float64 values"
        a_name, b_name = (submask.checkpoints.dtypes.dtype_of_array(d).name for d in (base_dtype, finetuned_dtype))
        assert mask.metadata.stats["cross_dtype"] == {"w": [a_name, b_name]}
        ladder = mask.metadata.stats["ladder"]["changed"]["w"]
        assert ladder[0] == int(_changed_by_value(x, y, "exact", 0).sum())
        assert ladder[4] == int(_changed_by_value(x, y, "atol", 1e-5).sum())
    same = build_mask(base, base).mask
    assert "cross_dtype" not in same.metadata.criterion and "cross_dtype" not in same.metadata.stats


def test_criterion_arguments_are_checked() -> None:
    state = {"w": torch.ones(3)}
    for kwargs in ({"criterion": "atol"}, {"atol": -1.0}, {"criterion": "exact", "atol": 1e-5},
                   {"atol": 1e-5, "rtol": 1e-3}, {"criterion": "fuzzy"}, {"atol": math.nan}):
        with pytest.raises(SubmaskError):
            build_mask(state, state, **kwargs).mask
    with pytest.raises(SubmaskError, match="device"):
        build_mask(state, state, device="tpu").mask


def _write_raw(path: Path, header: object, data: bytes = b"", length: int | None = None) -> Path:
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded) if length is None else length) + encoded + data)
    return path


@pytest.mark.parametrize(("header", "data", "length", "problem"), [
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, None, "truncated"),
    ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, None, "8 bytes instead of 12"),
    ({"w": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8, None, "not supported"),
    ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}, b"", None, "invalid shape"),
    ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, b"\0" * 4, None, "invalid data_offsets"),
    ({"w": 1}, b"", None, "non-object entry"),
    ([], b"", None, "not a JSON object"),
    ({}, b"", 10**6, "header length of 1000000 bytes, larger than the file"),
])
def test_bad_safetensors_files_raise_source_error(tmp_path: Path, header, data, length, problem) -> None:
    good = tmp_path / "good.safetensors"
    save_file({"w": torch.ones(2)}, good)
    bad = _write_raw(tmp_path / "bad.safetensors", header, data, length)
    with pytest.raises(SourceError) as info:
        build_mask(good, bad).mask
    assert problem in str(info.value) and str(bad) in str(info.value)


def test_unreadable_sources(tmp_path: Path) -> None:
    (tmp_path / "garbage.safetensors").write_bytes(b"\x05\0\0\0\0\0\0\0{{{{{")
    with pytest.raises(SourceError, match="unreadable JSON header"):
        build_mask(tmp_path / "garbage.safetensors", tmp_path / "garbage.safetensors").mask
    with pytest.raises(SourceError, match="no such file"):
        build_mask(tmp_path / "missing.safetensors", tmp_path / "garbage.safetensors").mask
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no model.safetensors.index.json"):
        build_mask(tmp_path / "empty", tmp_path / "empty").mask
    with pytest.raises(SourceError, match="cannot read a checkpoint from a int"):
        build_mask(3, 4).mask
    with pytest.raises(SourceError, match="not a tensor"):
        build_mask({"w": [1, 2]}, {"w": [1, 2]}).mask


class _InterruptedState(dict):
    """A state dict whose tensor ``boom`` cannot be read: Ctrl-C arrives in the middle of the build."""

    def __getitem__(self, name: str) -> object:
        if name == "boom":
            raise KeyboardInterrupt
        return super().__getitem__(name)


def test_interrupted_build_leaves_no_file(tmp_path: Path) -> None:
    state = {f"t{k}": torch.full((1000,), float(k)) for k in range(5)}
    state["boom"] = torch.ones(10)
    state.update({f"u{k}": torch.ones(1000) for k in range(5)})
    out = tmp_path / "out" / "mask.smask"
    with pytest.raises(KeyboardInterrupt):
        build_mask(state, _InterruptedState(state), out, max_shard_bytes=1, workers=2).path
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_build_to_file_and_sharded_file(tmp_path: Path) -> None:
    base, finetuned = _bf16_pair(20_000, seed=4)
    state_a = {f"layer{k}.weight": base[k * 4000:(k + 1) * 4000] for k in range(5)}
    state_b = {f"layer{k}.weight": finetuned[k * 4000:(k + 1) * 4000] for k in range(5)}
    in_memory = build_mask(state_a, state_b, atol=1e-6).mask
    single = build_mask(state_a, state_b, tmp_path / "one.smask", atol=1e-6).path
    assert single == tmp_path / "one.smask"
    sharded = build_mask(state_a, state_b, tmp_path / "many.smask", atol=1e-6, max_shard_bytes=200).path
    assert sharded == tmp_path / "many.smask.index.json"
    # a shard limit the whole mask fits in writes one file, even over an older index
    whole = build_mask(state_a, state_b, tmp_path / "many.smask", atol=1e-6, max_shard_bytes=10**9, overwrite=True)
    assert whole.path == tmp_path / "many.smask"
    assert len(list(tmp_path.glob("many-*-of-*.smask"))) > 1
    for path in (single, sharded):
        loaded = submask.load(path)
        assert dict(loaded) == dict(in_memory)
        assert loaded.metadata.stats == in_memory.metadata.stats
        assert loaded.metadata.model["fingerprint"] == submask.model_fingerprint(
            {name: tuple(t.shape) for name, t in state_a.items()})
        assert loaded.metadata.model["dtypes"] == {"BF16": 5}


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("criterion", list(CRITERIA))
def test_cuda_backend_matches_cpu(dtype_files, criterion: str) -> None:
    base, finetuned, expected = dtype_files
    on_gpu = build_mask(base, finetuned, criterion=criterion, device="cuda", **CRITERIA[criterion]).mask
    on_cpu = build_mask(base, finetuned, criterion=criterion, device="cpu", **CRITERIA[criterion]).mask
    assert on_gpu.metadata.stats["backend"].startswith("cuda")
    assert dict(on_gpu) == dict(on_cpu)
    assert on_gpu.metadata.stats["ladder"] == on_cpu.metadata.stats["ladder"]


def test_build_returns_one_result_type_with_its_counts(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    base = {"w": rng.standard_normal((40, 30)).astype(np.float32), "b": np.zeros(7, np.float32)}
    finetuned = {name: value.copy() for name, value in base.items()}
    finetuned["w"][rng.random((40, 30)) < 0.2] += 1
    in_memory = build_mask(base, finetuned)
    assert isinstance(in_memory, submask.BuiltMask) and in_memory.path is None
    assert in_memory.count == in_memory.mask.count == in_memory.stats["changed"]
    assert (in_memory.tensors, in_memory.numel) == (2, 1207)
    with pytest.raises(submask.UsageError, match="kept in memory"):
        os.fspath(in_memory)
    written = build_mask(base, finetuned, tmp_path / "m.smask")
    assert written.mask is None and written.path == tmp_path / "m.smask" and os.fspath(written) == str(written.path)
    assert (written.count, written.numel, written.tensors) == (in_memory.count, 1207, 2)
    assert submask.load(written).tensors == in_memory.mask.tensors
    combined = submask.combine_files("not", [written], tmp_path / "not.smask")
    assert (combined.count, combined.numel, combined.tensors) == (1207 - written.count, 1207, 2)
    assert submask.load(combined).count == combined.count
