"""The streaming N x N comparison, per-group densities and file combining, against numpy bools; and the
positions fast path of the rice codec."""

from __future__ import annotations

import importlib
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from masks import random_bools

import submask
from submask import ChecksumError, FormatError, Mask, MaskMetadata, MaskWriter, MismatchError
from submask.accel import numba_disabled, numba_enabled
from submask.breakdown import density_breakdown, group_of
from submask.codecs import RiceCodec, rice_kernels_compiled
from submask.combine import combine_files, content_fingerprint
from submask.compare import compare
from submask.format.tensors import encode_tensor
from submask.packed import pack
from submask.tensor_counts import _TABLE, _WINDOW, _common_counts, _Operand, _pair_count
from submask.workers import thread_pool

compare_module = importlib.import_module("submask.compare")

# sizes and densities that take every route: rice positions (sparse, across several 2^22 windows), rice
# with zeros coded (dense), zstd, raw, empty and full tensors, and a zero-size tensor
SHAPES = {
    "model.embed_tokens.weight": (64, 33),
    "model.layers.0.self_attn.q_proj.weight": (2200, 2000),
    "model.layers.0.mlp.up_proj.weight": (300, 50),
    "model.layers.1.self_attn.q_proj.weight": (40, 41),
    "model.layers.1.mlp.up_proj.weight": (0, 8),
    "model.norm.weight": (64,),
}
DENSITIES = {  # per mask, per tensor
    "seed1": [0.01, 0.002, 0.2, 0.97, 0.5, 0.0],  # 0.2: zstd (from about 42%, raw)
    "seed2": [0.02, 0.004, 0.6, 0.5, 0.5, 1.0],
    "dpo": [0.5, 0.03, 0.01, 0.001, 0.5, 0.2],
}


def make_arrays(label: str, seed: int) -> dict[str, np.ndarray]:
    return random_bools(SHAPES, dict(zip(SHAPES, DENSITIES[label])), seed)


@pytest.fixture(scope="module")
def masks(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[dict[str, np.ndarray]]]:
    root = tmp_path_factory.mktemp("compare")
    paths, arrays = [], []
    for seed, label in enumerate(DENSITIES):
        arrays.append(make_arrays(label, seed))
        paths.append(root / f"{label}.smask")
        submask.save(Mask.from_numpy(arrays[-1], kind="update", provenance={"run": label}), paths[-1])
    with submask.open(paths[0]) as f:
        assert {e.encoding for e in f.entries.values()} >= {"rice", "zstd", "raw"}
    return paths, arrays


@pytest.fixture(params=["numba", "numpy"])
def kernels(request: pytest.FixtureRequest):
    """Run a test with the compiled kernels (where numba is installed) and with the numpy paths."""
    if request.param == "numpy":
        with numba_disabled():
            yield request.param
    else:
        if not numba_enabled():
            pytest.skip("numba is not installed")
        assert rice_kernels_compiled()  # started outside a job: small comparisons use them too (accel.job)
        yield request.param


@pytest.mark.parametrize("verify", [True, False])
@pytest.mark.parametrize("by", ["overall", "layer", "module", "tensor"])
def test_compare_matches_numpy(masks: tuple, by: str, kernels: str, verify: bool) -> None:
    paths, arrays = masks
    result = compare(paths, by=by, workers=2, verify=verify)
    assert result.labels == [str(p) for p in paths]
    assert list(result.groups)[0] == "all"
    for group, counts in result.groups.items():
        names = [n for n in SHAPES if group in ("all", group_of(n, by))]
        flat = [np.concatenate([a[n].ravel() for n in names]) for a in arrays]
        assert counts.numel == flat[0].size
        for i, j in [(0, 1), (0, 2), (1, 2), (2, 0)]:
            stats = result.pair(i, j, group)
            assert (stats.count_a, stats.count_b) == (flat[i].sum(), flat[j].sum())
            assert stats.intersection == np.sum(flat[i] & flat[j]), (group, i, j)
            chance = sum(arrays[i][n].sum() * arrays[j][n].sum() / arrays[i][n].size
                         for n in names if arrays[i][n].size)
            assert stats.chance_intersection == pytest.approx(chance)


def test_in_memory_masks_and_worker_counts_agree_with_files(masks: tuple) -> None:
    paths, arrays = masks
    from_files = compare(paths, by="layer", workers=1)
    in_memory = compare([Mask.from_numpy(a) for a in arrays], by="layer", workers=3)
    assert in_memory.labels == ["mask 1", "mask 2", "mask 3"]
    for group in from_files.groups:
        np.testing.assert_array_equal(from_files.groups[group].intersections, in_memory.groups[group].intersections)
    matrix = from_files.matrix("overlap_a")
    assert matrix[0, 1] == pytest.approx(from_files.pair(0, 1).intersection / from_files.pair(0, 1).count_a)
    assert np.allclose(np.diagonal(matrix), 1.0)


@pytest.mark.parametrize("count", [2, 3])
def test_work_split_across_threads_gives_the_same_counts(masks: tuple, monkeypatch: pytest.MonkeyPatch,
                                                         count: int) -> None:
    paths = masks[0][:count]
    alone = compare(paths, by="tensor", workers=1)
    monkeypatch.setattr(compare_module, "SPLIT_WORK", 0)  # these masks are small: split them all the same
    tasks, real = [], compare_module._compare_chunk

    def counted(chunk: object, verify: bool) -> list[np.ndarray]:
        tasks.append(chunk)
        return real(chunk, verify)

    monkeypatch.setattr(compare_module, "_compare_chunk", counted)
    split = compare(paths, by="tensor", workers=2)
    assert len(tasks) >= 2  # one task per worker at least
    for group in alone.groups:
        np.testing.assert_array_equal(alone.groups[group].intersections, split.groups[group].intersections)


def split_counts(paths: list[Path]) -> list[list[int]]:
    """Per-tensor intersections of ``paths`` compared on two threads."""
    result = compare(paths, by="tensor", workers=2)
    return [result.groups[name].intersections.tolist() for name in SHAPES]


def test_threads_are_kept_between_calls_and_made_anew_after_fork(masks: tuple,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import multiprocessing

    paths = masks[0][:2]
    monkeypatch.setattr(compare_module, "SPLIT_WORK", 0)
    expected = split_counts(paths)
    pool = thread_pool(2)
    assert split_counts(paths) == expected and thread_pool(2) is pool  # the same threads again
    context = multiprocessing.get_context("fork")  # the child has the pool object but none of its threads
    with context.Pool(1) as child:
        assert child.apply_async(split_counts, (paths,)).get(timeout=60) == expected


def test_a_failing_split_comparison_leaves_the_threads_usable(masks: tuple, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    name = "model.layers.0.self_attn.q_proj.weight"
    data = bytearray(masks[0][0].read_bytes())
    with submask.open(masks[0][0]) as f:
        at = bytes(data).index(f.payload(name))
    data[at + 20 : at + 60] = bytes(40)
    (tmp_path / "bad.smask").write_bytes(bytes(data))
    monkeypatch.setattr(compare_module, "SPLIT_WORK", 0)
    for _ in range(3):
        with pytest.raises(FormatError, match=rf"bad\.smask, tensor '{name}'"):
            compare([tmp_path / "bad.smask", masks[0][1]], workers=2)
    alone = compare(masks[0][:2], by="tensor", workers=1)
    assert split_counts(masks[0][:2]) == [alone.groups[n].intersections.tolist() for n in SHAPES]


def test_compare_mismatch_and_common(masks: tuple, tmp_path: Path) -> None:
    paths, arrays = masks
    fewer = {k: v for k, v in arrays[1].items() if k != "model.norm.weight"}
    submask.save(Mask.from_numpy(fewer), tmp_path / "fewer.smask")
    with pytest.raises(MismatchError, match="model.norm.weight"):
        compare([paths[0], tmp_path / "fewer.smask"])
    result = compare([paths[0], tmp_path / "fewer.smask"], common=True)
    assert result.groups["all"].numel == sum(np.prod(s) for n, s in SHAPES.items() if n != "model.norm.weight")


@pytest.mark.parametrize("verify", [True, False])
def test_corrupt_sparse_payload_is_reported_with_file_and_tensor(masks: tuple, tmp_path: Path, kernels: str,
                                                                 verify: bool) -> None:
    name = "model.layers.0.self_attn.q_proj.weight"
    data = bytearray(masks[0][0].read_bytes())
    with submask.open(masks[0][0]) as f:
        assert f.entries[name].encoding == "rice"
        payload = f.payload(name)
    at = bytes(data).index(payload)
    data[at + 20 : at + 60] = bytes(40)  # zero part of the first block's unary code: counts no longer match
    (tmp_path / "bad.smask").write_bytes(bytes(data))
    for order in ([tmp_path / "bad.smask", masks[0][1]], [masks[0][1], tmp_path / "bad.smask"]):  # decoded, streamed
        with pytest.raises(FormatError, match=rf"bad\.smask, tensor '{name}'"):
            compare(order, verify=verify)


def damaged_copy(bools: np.ndarray, path: Path, encoding: str) -> np.ndarray:
    """Write ``bools``' header entry over the payload of ``bools`` with one set bit moved: same popcount, other
    CRC-32 (what a payload bit flip that keeps the count gives), and the payload CRC-32 (format 1.3) of the
    original payload. Returns the bits the payload holds."""
    moved = bools.copy()
    moved.flat[np.flatnonzero(bools)[0]] = False
    moved.flat[np.flatnonzero(~bools)[-1]] = True
    entry, original = encode_tensor("w", bools.shape, pack(bools), int(bools.sum()), encoding)
    _, payload = encode_tensor("w", moved.shape, pack(moved), int(moved.sum()), encoding)
    with MaskWriter(path, MaskMetadata()) as writer:
        writer.add_encoded(replace(entry, payload_crc32=f"{zlib.crc32(original):08x}"), payload)
    return moved


@pytest.mark.parametrize("encoding", ["raw", "zstd", "rice", "rice-rows"])
def test_compare_verifies_crcs_unless_told_not_to(tmp_path: Path, kernels: str, encoding: str) -> None:
    bools = np.random.default_rng(7).random((300, 200)) < 0.01
    moved = damaged_copy(bools, tmp_path / "bad.smask", encoding)
    submask.save(Mask.from_numpy({"w": bools}), tmp_path / "good.smask")
    for order in ([tmp_path / "bad.smask", tmp_path / "good.smask"], [tmp_path / "good.smask", tmp_path / "bad.smask"]):
        with pytest.raises(ChecksumError, match=r"bad\.smask, tensor 'w': CRC-32 of the decoded bits"):
            compare(order)
        unverified = compare(order, verify=False)  # counted as stored: the damage goes unnoticed
        assert unverified.pair(0, 1).intersection == np.sum(bools & moved) < bools.sum()


def test_density_breakdown_reads_counts_per_group(masks: tuple) -> None:
    paths, arrays = masks
    groups = density_breakdown(paths[0], "module")
    assert list(groups) == ["all", "embeddings", "self_attn.q_proj", "mlp.up_proj", "norm"]
    q = arrays[0]["model.layers.0.self_attn.q_proj.weight"], arrays[0]["model.layers.1.self_attn.q_proj.weight"]
    assert groups["self_attn.q_proj"].count == q[0].sum() + q[1].sum()
    assert groups["self_attn.q_proj"].density == pytest.approx((q[0].sum() + q[1].sum()) / (q[0].size + q[1].size))
    assert groups["all"].count == sum(a.sum() for a in arrays[0].values())


@pytest.mark.parametrize("op,reference", [("and", lambda x: x[0] & x[1] & x[2]), ("or", lambda x: x[0] | x[1] | x[2]),
                                          ("xor", lambda x: x[0] ^ x[1] ^ x[2]),
                                          ("diff", lambda x: x[0] & ~x[1] & ~x[2])])
def test_combine_files_matches_numpy_and_records_inputs(masks: tuple, tmp_path: Path, op: str, reference) -> None:
    paths, arrays = masks
    out = combine_files(op, paths, tmp_path / "out.smask")
    result = submask.load(out)
    for name in SHAPES:
        np.testing.assert_array_equal(result[name].to_numpy(), reference([a[name] for a in arrays]))
    inputs = result.metadata.provenance["combined"]["inputs"]
    assert result.metadata.provenance["combined"]["op"] == op and result.metadata.kind == "update"
    with submask.open(paths[2]) as f:
        assert inputs[2] == {"path": str(paths[2]), "fingerprint": content_fingerprint(f), "provenance": {"run": "dpo"}}
    assert len({i["fingerprint"] for i in inputs}) == 3


def test_combine_not_of_one_file(masks: tuple, tmp_path: Path) -> None:
    paths, arrays = masks
    result = submask.load(combine_files("not", paths[:1], tmp_path / "not.smask"))
    assert result.count == result.numel - sum(a.sum() for a in arrays[0].values())


@settings(max_examples=40, deadline=None)
@given(numel=st.integers(0, 3000), density=st.sampled_from([0.0, 0.003, 0.05, 0.4, 0.6, 0.97, 1.0]),
       seed=st.integers(0, 2**16), block_bits=st.sampled_from([8, 64, 1024, 1 << 22]))
def test_decode_positions_matches_the_set_bits(numel: int, density: float, seed: int, block_bits: int) -> None:
    bools = np.random.default_rng(seed).random(numel) < density
    payload, config = RiceCodec(block_bits).encode(pack(bools), numel)
    positions = RiceCodec().from_config(config).positions(payload, numel)
    assert positions.dtype == np.int64
    np.testing.assert_array_equal(positions, np.flatnonzero(bools))


def test_decode_positions_rejects_bad_payloads() -> None:
    bools = np.random.default_rng(3).random(5000) < 0.02
    payload, config = RiceCodec(1024).encode(pack(bools), bools.size)
    with pytest.raises(FormatError, match="after its last block"):
        RiceCodec().from_config(config).positions(payload + b"\0", bools.size)
    with pytest.raises(FormatError, match="ends inside"):
        RiceCodec().from_config(config).positions(payload[:-3], bools.size)
    with pytest.raises(FormatError, match="block_bits"):
        RiceCodec().from_config({"block_bits": 7}).positions(payload, bools.size)


@pytest.mark.skipif(not numba_enabled(), reason="a payload streams only through numba's kernels")
def test_a_streamed_operand_counts_against_a_positions_operand() -> None:
    """``tensor_counts._pair_count`` of two operands as ``_decode`` can leave them when the first's codec lists
    positions but does not stream and the second's streams: positions against a payload left encoded."""
    rng = np.random.default_rng(4)
    numel = 70_001
    a, b = rng.random(numel) < 0.01, rng.random(numel) < 0.03
    payload_b, _ = RiceCodec().encode(pack(b), numel)
    first = _Operand(numel, int(a.sum()), positions=np.flatnonzero(a))
    second = _Operand(numel, int(b.sum()), streamed=(RiceCodec(), payload_b, "b.smask, tensor 'w': "))
    assert _pair_count(first, second) == int(np.sum(a & b))


@pytest.mark.parametrize("densities,window", [
    ([0.001], _WINDOW), ([0.001, 0.05], _WINDOW), ([0.001, 0.05, 0.0, 0.3, 0.01], _WINDOW),
    ([0.001, 0.05, 0.0, 0.3, 0.01, *[0.02] * 6], _WINDOW),  # two groups of marking arrays
    ([0.0003, 0.001, 0.0], _TABLE),  # sparse: windows of the whole table
])
def test_common_counts_of_positions_match_numpy(densities: list[float], window: int) -> None:
    """Every pair's common positions, across windows (one ending on a window's last element, one empty), in
    groups of 8 marking arrays, the table cleared after each (dense: whole, sparse: by position), as later calls
    show."""
    rng = np.random.default_rng(len(densities))
    numel = 3 * window + 5
    masks = [rng.random(numel) < density for density in densities]
    masks[0][window - 1] = True  # a window's last element
    if len(masks) > 1:
        masks[1][2 * window : 3 * window] = False  # a window without positions
    expected = [[int(np.sum(a & b)) for b in masks] for a in masks]
    positions = [np.flatnonzero(bools) for bools in masks]
    for _ in range(3):
        assert _common_counts(positions, numel).tolist() == expected
    assert _common_counts(positions[::-1], numel).tolist() == [row[::-1] for row in expected[::-1]]
