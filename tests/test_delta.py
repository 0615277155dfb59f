"""Deltas (masks with values and checkpoint layout) from real MiniLM finetunes: build, rebuild byte for byte,
refusals, the Hub, and the in-memory form."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import numpy as np
import pytest

import submask
from submask import FormatError, MismatchError, UsageError, build_mask
from submask.accel import numba_enabled
from submask.checkpoints.dtypes import dtype_of_array
from submask.examples.minilm import reshard

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
INDEX = "model.safetensors.index.json"


def bits_of(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous().view(INT_VIEW[tensor.element_size()])


def load(path: Path) -> dict[str, torch.Tensor]:
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    return {name: t for f in files for name, t in safetensors_torch.load_file(f).items()}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def weight_files(model_dir: Path) -> list[str]:
    return sorted(p.name for p in model_dir.iterdir() if p.suffix == ".safetensors" or p.name == INDEX)


def assert_same_files(rebuilt: Path, original: Path) -> None:
    """``rebuilt`` holds exactly the weight files of ``original`` (and nothing else), byte for byte."""
    assert sorted(p.name for p in rebuilt.iterdir()) == weight_files(original)
    for name in weight_files(original):
        assert sha256(rebuilt / name) == sha256(original / name), name
        assert (rebuilt / name).read_bytes() == (original / name).read_bytes(), name


@pytest.fixture(scope="module", params=["bf16", "fp32"])
def pair(request: pytest.FixtureRequest):
    return request.getfixturevalue(f"minilm_{request.param}")


@pytest.fixture(scope="module")
def delta_file(pair, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A delta of ``pair`` written to disk once per dtype."""
    out = tmp_path_factory.mktemp("delta") / "rl.smask"
    build_mask(pair.base, pair.finetuned, out, values=True)
    return out


@pytest.fixture(scope="module")
def sharded(minilm_bf16, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The bf16 finetune re-saved in 3 shards with an index, and a delta of it against the single-file base."""
    root = tmp_path_factory.mktemp("sharded")
    finetuned = reshard(minilm_bf16.finetuned_file, root / "finetuned", 3)
    build_mask(minilm_bf16.base, finetuned, root / "sharded.smask", values=True)
    return finetuned, root / "sharded.smask"


def test_rebuild_is_byte_identical_to_the_finetuned_file(pair, delta_file: Path, tmp_path: Path) -> None:
    applied = submask.apply_mask(pair.base, delta_file, tmp_path / "out")
    assert_same_files(tmp_path / "out", pair.finetuned)
    changed = sum(int((bits_of(a) != bits_of(b)).sum()) for a, b in
                  zip(load(pair.base_file).values(), load(pair.finetuned_file).values()))
    assert 0 < applied.count == changed < applied.numel


def test_delta_values_are_the_finetuned_values_at_changed_positions(pair, delta_file: Path) -> None:
    base, finetuned = load(pair.base_file), load(pair.finetuned_file)
    delta = submask.load_delta(delta_file, base=base)  # values coded against the base (format 1.3) need it
    assert delta.mask.metadata.stats["whole"] == []
    assert list(delta.mask) == list(finetuned)  # every tensor, in the finetuned file's order
    for name, tensor in finetuned.items():
        changed = (bits_of(base[name]) != bits_of(tensor)).reshape(-1)
        assert torch.equal(delta.mask[name].to_torch().reshape(-1), changed), name
        expected = bits_of(tensor).reshape(-1)[changed].numpy().view(np.uint8)
        assert delta.values[name].dtype == dtype_of_array(tensor.dtype).name
        assert np.array_equal(delta.values[name].data, expected), name
    (record,) = delta.checkpoint
    raw = pair.finetuned_file.read_bytes()
    assert (record.name, record.size, record.sha256) == ("model.safetensors", len(raw), hashlib.sha256(raw).hexdigest())
    assert record.header.encode() == raw[8:8 + int.from_bytes(raw[:8], "little")]


def test_sharded_checkpoint_is_rebuilt_shard_by_shard_with_its_index(minilm_bf16, sharded, tmp_path: Path) -> None:
    finetuned, delta = sharded
    assert len(list(finetuned.glob("*.safetensors"))) == 3
    submask.apply_mask(minilm_bf16.base, delta, tmp_path / "out")
    assert_same_files(tmp_path / "out", finetuned)
    rebuilt = submask.load_delta(delta, base=load(minilm_bf16.base_file))
    assert rebuilt.checkpoint[-1].text == (finetuned / INDEX).read_text()


def test_base_sharded_otherwise_still_rebuilds(minilm_bf16, sharded, tmp_path: Path) -> None:
    finetuned, delta = sharded
    base = reshard(minilm_bf16.base_file, tmp_path / "base", 2)
    submask.apply_mask(base, delta, tmp_path / "out")
    assert_same_files(tmp_path / "out", finetuned)


def test_tensors_new_or_retyped_are_stored_whole(minilm_bf16, tmp_path: Path) -> None:
    tensors = load(minilm_bf16.finetuned_file)
    tensors["pooler.dense.bias"] = tensors["pooler.dense.bias"].float()  # another dtype than the base's
    tensors["classifier.weight"] = torch.randn(2, 384, dtype=torch.bfloat16)  # not in the base
    finetuned = tmp_path / "finetuned.safetensors"
    safetensors_torch.save_file(tensors, finetuned, metadata={"format": "pt"})
    built = build_mask(minilm_bf16.base, finetuned, tmp_path / "d.smask", values=True)
    assert sorted(built.stats["whole"]) == ["classifier.weight", "pooler.dense.bias"]
    delta = submask.load_delta(tmp_path / "d.smask", base=load(minilm_bf16.base_file))
    assert delta.mask["classifier.weight"].count == 2 * 384 and delta.values["pooler.dense.bias"].dtype == "F32"
    submask.apply_mask(minilm_bf16.base, tmp_path / "d.smask", tmp_path / "out")
    assert (tmp_path / "out" / "finetuned.safetensors").read_bytes() == finetuned.read_bytes()


def test_written_bytes_are_flushed_while_the_rest_is_made(minilm_bf16, tmp_path: Path, monkeypatch) -> None:
    """The writer flushes what it wrote (fdatasync) while later chunks are made, and the file is still byte for
    byte the finetuned one; a failing flush (here: the disk full) is an OutputError and leaves nothing."""
    import errno
    import os

    from submask import OutputError, rebuild_write

    if rebuild_write._FLUSH is None:
        pytest.skip("no os.fdatasync here: the final fsync flushes everything")
    delta = tmp_path / "d.smask"
    build_mask(minilm_bf16.base, minilm_bf16.finetuned, delta, values=True)
    flushed: list[int] = []

    def counted(fd: int) -> None:
        flushed.append(os.fstat(fd).st_size)
        os.fdatasync(fd)

    monkeypatch.setattr(rebuild_write, "WRITEBACK_BYTES", 1 << 20)
    monkeypatch.setattr(rebuild_write, "_FLUSH", counted)
    submask.apply_mask(minilm_bf16.base, delta, tmp_path / "out")
    assert_same_files(tmp_path / "out", minilm_bf16.finetuned)
    size = (tmp_path / "out" / "model.safetensors").stat().st_size
    assert len(flushed) >= 2 and 0 < flushed[0] < size  # flushed before the whole file was written

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(rebuild_write, "_FLUSH", full)
    with pytest.raises(OutputError, match="the disk is full.*nothing was written"):
        submask.apply_mask(minilm_bf16.base, delta, tmp_path / "out2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.smask", "out"]


def test_wrong_base_values_are_refused_and_nothing_is_left(minilm_bf16, tmp_path: Path) -> None:
    delta = tmp_path / "d.smask"
    build_mask(minilm_bf16.base, minilm_bf16.finetuned, delta, values=True)
    other = load(minilm_bf16.base_file)
    name = "encoder.layer.3.output.dense.weight"
    unchanged = ~submask.load(delta)[name].to_torch()
    other[name] = torch.where(unchanged, other[name] * 2, other[name])  # same names, shapes, dtypes
    safetensors_torch.save_file(other, tmp_path / "other.safetensors", metadata={"format": "pt"})
    with pytest.raises(MismatchError, match=r"model\.safetensors: the rebuilt file does not match.*other\.safetensors "
                                            r"is not the base"):
        submask.apply_mask(tmp_path / "other.safetensors", delta, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.smask", "other.safetensors"]


def test_base_of_another_dtype_or_model_is_refused_before_any_write(minilm_bf16, minilm_fp32, tmp_path) -> None:
    delta = tmp_path / "d.smask"
    build_mask(minilm_bf16.base, minilm_bf16.finetuned, delta, values=True)
    with pytest.raises(MismatchError, match=r"with other shapes or dtypes.*BF16 \[\d+(, \d+)*\] vs F32"):
        submask.apply_mask(minilm_fp32.base, delta, tmp_path / "out")
    smaller = load(minilm_bf16.base_file)
    del smaller["encoder.layer.0.attention.self.query.weight"]
    safetensors_torch.save_file(smaller, tmp_path / "smaller.safetensors")
    with pytest.raises(MismatchError, match=r"missing from .*smaller\.safetensors.*query\.weight"):
        submask.apply_mask(tmp_path / "smaller.safetensors", delta, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_damaged_values_payload_is_refused(minilm_bf16, tmp_path: Path) -> None:
    delta = tmp_path / "d.smask"
    build_mask(minilm_bf16.base, minilm_bf16.finetuned, delta, values=True)
    raw = bytearray(delta.read_bytes())
    raw[-3] ^= 0x5A  # inside the last payload: the values of the file's last tensor
    delta.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match=r"d\.smask, tensor '.*corrupt"):
        submask.apply_mask(minilm_bf16.base, delta, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.smask"]


def test_a_delta_needs_values_exact_criterion_and_every_tensor(minilm_bf16, tmp_path: Path) -> None:
    submask.save(build_mask(minilm_bf16.base, minilm_bf16.finetuned).mask, tmp_path / "plain.smask")
    with pytest.raises(UsageError, match=r"plain\.smask: holds no checkpoint layout.*FINETUNED MASK"):
        submask.apply_mask(minilm_bf16.base, tmp_path / "plain.smask", tmp_path / "out")
    with pytest.raises(UsageError, match="criterion must be 'exact'"):
        build_mask(minilm_bf16.base, minilm_bf16.finetuned, values=True, atol=1e-3)
    with pytest.raises(UsageError, match="drop it"):
        build_mask(minilm_bf16.base, minilm_bf16.finetuned, values=True, include="encoder.*")
    with pytest.raises(UsageError, match="invert"):
        submask.apply_mask(minilm_bf16.base, tmp_path / "plain.smask", tmp_path / "out", invert=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.smask"]


def test_in_memory_delta_and_apply_delta_give_the_finetuned_state_dict(pair, delta_file: Path, tmp_path) -> None:
    base, finetuned = load(pair.base_file), load(pair.finetuned_file)
    delta = build_mask(base, finetuned, values=True).delta
    assert delta.checkpoint is None  # a state dict has no files to record
    for given in (delta, delta_file):
        out = submask.apply_delta(base, given)
        assert list(out) == list(finetuned)
        for name, tensor in finetuned.items():
            assert out[name].dtype == tensor.dtype and torch.equal(bits_of(out[name]), bits_of(tensor)), name
    assert not torch.equal(bits_of(base["encoder.layer.0.attention.self.query.weight"]),
                           bits_of(finetuned["encoder.layer.0.attention.self.query.weight"]))  # base untouched
    from_files = build_mask(pair.base, pair.finetuned, values=True).delta
    submask.apply_mask(pair.base, from_files, tmp_path / "out")
    assert_same_files(tmp_path / "out", pair.finetuned)


def test_apply_delta_on_numpy_arrays(minilm_fp32, tmp_path: Path) -> None:
    base = {name: t.numpy() for name, t in load(minilm_fp32.base_file).items()}
    finetuned = {name: t.numpy() for name, t in load(minilm_fp32.finetuned_file).items()}
    out = submask.apply_delta(base, build_mask(base, finetuned, values=True).delta)
    assert list(out) == list(finetuned)
    for name, array in finetuned.items():
        assert out[name].dtype == array.dtype and out[name].tobytes() == array.tobytes(), name


def test_hub_round_trip(minilm_bf16, hub_api, hub_repo: str, hub_env, tmp_path: Path) -> None:
    """Base and finetuned model from the Hub (the LFS SHA-256 recorded), the delta pushed, then rebuilt from
    ``repo@base-commit`` and the delta's hf:// URL."""
    from huggingface_hub import CommitOperationAdd

    files = ["model.safetensors", "config.json"]
    base = hub_api.create_commit(hub_repo, [CommitOperationAdd(f, minilm_bf16.base / f) for f in files],
                                 commit_message="base").oid
    finetuned = hub_api.create_commit(hub_repo, [CommitOperationAdd(f, minilm_bf16.finetuned / f) for f in files],
                                      commit_message="finetuned").oid
    built = build_mask(f"{hub_repo}@{base}", f"{hub_repo}@{finetuned}", tmp_path / "step.smask", values=True,
                       hub_api=hub_api, cache_dir=tmp_path / "cache")
    lfs = {s.rfilename: s.lfs.sha256 for s in hub_api.model_info(hub_repo, revision=finetuned,
                                                                 files_metadata=True).siblings if s.lfs}
    assert built.metadata.checkpoint[0].sha256 == lfs["model.safetensors"] == sha256(minilm_bf16.finetuned_file)
    submask.push_mask(tmp_path / "step.smask", hub_repo, "deltas/step.smask")
    url = f"hf://{hub_repo}/deltas/step.smask"
    submask.apply_mask(f"{hub_repo}@{base}", url, tmp_path / "out", cache_dir=tmp_path / "cache2")
    assert_same_files(tmp_path / "out", minilm_bf16.finetuned)  # the weights only: config.json is not copied


@pytest.mark.parametrize("density", [0.0, 0.03, 0.5, 1.0])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint64])
def test_compiled_gather_and_scatter_match_numpy(density: float, dtype: type) -> None:
    """The kernels that take values out of a chunk (build) and put them back (rebuild), against numpy's
    boolean indexing, with and without numba; sizes not a multiple of 8 included."""
    from submask.accel import numba_disabled
    from submask.builder.values import chunk_values
    from submask.rebuild_kernels import scatter_into as _scatter_into

    rng = np.random.default_rng(int(density * 100))
    numel = 8 * 1021 + 5
    chosen = rng.random(numel) < density
    packed = np.packbits(chosen)
    chunk = rng.integers(0, np.iinfo(dtype).max, size=numel, dtype=dtype, endpoint=True)
    values = rng.integers(0, np.iinfo(dtype).max, size=int(chosen.sum()), dtype=dtype, endpoint=True)
    expected = chunk.copy()
    expected[chosen] = values
    for context in (contextlib.nullcontext(), numba_disabled()):
        with context:
            assert np.array_equal(chunk_values(chunk, packed), chunk[chosen].view(np.uint8))
            out = chunk.copy()
            _scatter_into(out, packed, values)
            assert np.array_equal(out, expected)


@pytest.mark.parametrize("density", [0.0, 0.03, 0.5, 1.0])
@pytest.mark.parametrize("dtype, raw", [("BF16", np.uint16), ("F32", np.uint32), ("I8", np.uint8),
                                        ("F64", np.uint64)])
def test_values_decoded_in_place_at_packed_bits_positions_or_everywhere(density: float, dtype: str, raw: type) -> None:
    """A rebuild decodes a block of differences into the base's chunk in place, whichever way the mask gives
    the set positions, with and without numba; a block whose size does not match the set positions is refused."""
    from submask import FormatError
    from submask.accel import numba_disabled
    from submask.format.diffs import encode_against, iter_blocks
    from submask.rebuild_kernels import decode_into

    rng = np.random.default_rng(int(density * 100))
    numel = 8 * 1021 + 5
    chosen = rng.random(numel) < density
    base = rng.integers(0, np.iinfo(raw).max, size=numel, dtype=raw, endpoint=True)
    new = base.copy()
    new[chosen] = rng.integers(0, np.iinfo(raw).max, size=int(chosen.sum()), dtype=raw, endpoint=True)
    _, payload = encode_against(new[chosen], base[chosen], dtype, block_elements=numel)
    zigzag = next(iter_blocks(payload, dtype, numel, int(chosen.sum())), np.empty(0, np.uint8))
    wheres = [np.packbits(chosen), np.flatnonzero(chosen)] + ([None] if chosen.all() else [])
    for context in (contextlib.nullcontext(), numba_disabled()):
        with context:
            for where in wheres:
                chunk = base.copy()
                decode_into(chunk, where, zigzag, dtype)
                assert np.array_equal(chunk, new), (where is None or where.dtype)
    with pytest.raises(FormatError, match="difference bytes for"):
        decode_into(base.copy(), np.packbits(chosen), np.zeros(zigzag.size + base.itemsize, np.uint8), dtype)


@pytest.mark.skipif(not numba_enabled(), reason="compares numba's kernel with the numpy path")
@pytest.mark.parametrize("numel", [1, 63, 64, 65, 3 * 64 * 8, 3 * 64 * 8 + 13])
@pytest.mark.parametrize("dtype", ["BF16", "F16", "F32", "F8_E4M3", "I32"])
def test_compiled_decode_at_packed_bits_writes_what_numpy_writes(numel: int, dtype: str) -> None:
    """The compiled decode at packed bits (each 64-bit word's set bits from its last, the chunk from its end)
    writes the numpy path's bytes: chunks ending on a word's boundary or inside one, weight-like floats (a few
    exponents, long runs of each) moved by a few units in the last place, the first and last elements set."""
    pytest.importorskip("numba")
    from submask.accel import numba_disabled
    from submask.format.diffs import encode_against, iter_blocks
    from submask.rebuild_kernels import _decode_at_bits, decode_into

    rng = np.random.default_rng(numel)
    weights = rng.normal(0.0, 0.02, numel).astype(np.float32)
    base = {"BF16": (weights.view(np.uint32) >> 16).astype(np.uint16),
            "F16": weights.astype(np.float16).view(np.uint16), "F32": weights.view(np.uint32),
            "F8_E4M3": rng.integers(0, 256, numel, dtype=np.uint16).astype(np.uint8),
            "I32": rng.integers(-1000, 1000, numel).astype(np.int32).view(np.uint32)}[dtype]
    chosen = rng.random(numel) < 0.3
    chosen[[0, -1]] = True
    new = base.copy()
    new[chosen] += rng.integers(-3, 4, int(chosen.sum())).astype(base.dtype)  # a few ulps, wrapping
    _, payload = encode_against(new[chosen], base[chosen], dtype, block_elements=8 * numel)
    zigzag = next(iter_blocks(payload, dtype, 8 * numel, int(chosen.sum())))
    assert _decode_at_bits.compiled is not None
    compiled = base.copy()
    decode_into(compiled, np.packbits(chosen), zigzag, dtype)
    with numba_disabled():
        numpy = base.copy()
        decode_into(numpy, np.packbits(chosen), zigzag, dtype)
    assert compiled.tobytes() == numpy.tobytes() == new.tobytes()


def test_rebuild_scatters_by_positions_or_packed_bits_alike(minilm_bf16, tmp_path: Path, monkeypatch) -> None:
    """Sparse Rice masks are scattered by their set positions (across chunks of the embedding), the others by
    their packed bits; forcing packed bits everywhere, or numpy without numba, rebuilds the same bytes."""
    from submask import rebuild_source
    from submask.accel import numba_disabled
    from submask.checkpoints.sources import CHUNK_ELEMENTS

    delta = tmp_path / "d.smask"
    build_mask(minilm_bf16.base, minilm_bf16.finetuned, delta, values=True)
    with submask.open(delta) as opened:
        listed = {name for name in opened.names if opened.positions(name) is not None}
        assert listed and set(opened.names) - listed  # both paths are taken
        assert any(opened.entries[name].bits > CHUNK_ELEMENTS for name in listed)  # positions over chunks
    for run, (context, positions_max) in enumerate([(contextlib.nullcontext(), rebuild_source.POSITIONS_MAX),
                                                    (numba_disabled(), rebuild_source.POSITIONS_MAX),
                                                    (contextlib.nullcontext(), 0)]):
        monkeypatch.setattr(rebuild_source, "POSITIONS_MAX", positions_max)
        with context:
            submask.apply_mask(minilm_bf16.base, delta, tmp_path / f"out{run}")
        assert_same_files(tmp_path / f"out{run}", minilm_bf16.finetuned)


def test_mask_positions_are_the_set_bits_with_every_check(minilm_bf16, tmp_path: Path) -> None:
    from dataclasses import replace

    from submask import ChecksumError
    from submask.format.tensors import decode_positions
    from submask.packed import unpack

    delta = tmp_path / "d.smask"
    build_mask(minilm_bf16.base, minilm_bf16.finetuned, delta, values=True)
    with submask.open(delta) as opened:
        for name in opened.names:
            positions, bits = opened.positions(name), opened[name]
            if positions is None:
                assert opened.entries[name].encoding not in ("rice", "rice-rows"), name
                continue
            assert positions.dtype == np.int64
            assert np.array_equal(positions, np.flatnonzero(unpack(bits.packed, bits.numel))), name
        name = max((n for n in opened.names if opened.positions(n) is not None), key=lambda n: opened.entries[n].ones)
        entry, payload = opened.entries[name], opened.payload(name)
    with pytest.raises(ChecksumError, match=rf"d\.smask, tensor '{name}': CRC-32 of the decoded bits is "
                                            rf"{entry.crc32}, header says 00000000"):
        decode_positions(replace(entry, crc32="00000000"), payload, delta)
    with pytest.raises(ChecksumError, match=rf"decoded {entry.ones} set bits, header says {entry.ones + 1}"):
        decode_positions(replace(entry, ones=entry.ones + 1), payload, delta)


def test_damaged_mask_payload_is_refused(minilm_bf16, tmp_path: Path) -> None:
    delta = tmp_path / "d.smask"
    build_mask(minilm_bf16.base, minilm_bf16.finetuned, delta, values=True)
    with submask.open(delta) as opened:
        name = max((n for n in opened.names if opened.entries[n].encoding == "rice"),
                   key=lambda n: opened.entries[n].ones)
        payload = opened.payload(name)
    raw = bytearray(delta.read_bytes())
    raw[raw.find(payload) + len(payload) // 2] ^= 0x5A
    delta.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match=rf"d\.smask, tensor '{name}': .*corrupt"):
        submask.apply_mask(minilm_bf16.base, delta, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.smask"]


def test_a_sharded_delta_rebuilds_too(minilm_bf16, tmp_path: Path) -> None:
    built = build_mask(minilm_bf16.base, minilm_bf16.finetuned, tmp_path / "d.smask", values=True,
                       max_shard_bytes=1 << 20)
    assert built.path.name == "d.smask.index.json" and len(list(tmp_path.glob("d-*.smask"))) > 1
    submask.apply_mask(minilm_bf16.base, tmp_path / "d.smask", tmp_path / "out")
    assert_same_files(tmp_path / "out", minilm_bf16.finetuned)


def test_apply_delta_refuses_a_mask_without_values_or_a_wrong_base(minilm_bf16, minilm_fp32, tmp_path) -> None:
    base = load(minilm_bf16.base_file)
    submask.save(build_mask(minilm_bf16.base, minilm_bf16.finetuned).mask, tmp_path / "plain.smask")
    with pytest.raises(UsageError, match=r"plain\.smask: 104 tensor\(s\) carry no values"):
        submask.apply_delta(base, tmp_path / "plain.smask")
    delta = build_mask(minilm_bf16.base, minilm_bf16.finetuned, values=True).delta
    with pytest.raises(MismatchError, match=r"the delta does not fit the base state dict.*BF16 .* vs F32"):
        submask.apply_delta(load(minilm_fp32.base_file), delta)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_values_of_state_dicts_on_the_gpu_match_the_cpu(minilm_bf16) -> None:
    """A build on the GPU takes the values where they are (torch views), tensors stored whole included."""
    base, finetuned = load(minilm_bf16.base_file), load(minilm_bf16.finetuned_file)
    finetuned["classifier.weight"] = torch.randn(2, 384, dtype=torch.bfloat16)
    on_cpu = build_mask(base, finetuned, values=True, device="cpu").delta
    on_gpu = build_mask({n: t.cuda() for n, t in base.items()}, {n: t.cuda() for n, t in finetuned.items()},
                        values=True).delta
    assert on_gpu.mask.metadata.stats["backend"].startswith("cuda") and dict(on_gpu.mask) == dict(on_cpu.mask)
    assert on_gpu.mask.metadata.stats["whole"] == ["classifier.weight"]
    for name, held in on_cpu.values.items():
        assert held.dtype == on_gpu.values[name].dtype and np.array_equal(held.data, on_gpu.values[name].data)
