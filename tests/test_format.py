"""The .smask container: round trips, lazy access, sharding, metadata, atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import submask
from submask import Mask, MaskMetadata, MaskWriter, TensorMask
from submask.errors import FormatError, MismatchError

SHAPES = {"scalar": (), "empty": (0, 7), "odd": (3, 5, 7), "row": (1, 1000), "big": (64, 513)}


def sample_mask(density: float = 0.05, seed: int = 0) -> Mask:
    rng = np.random.default_rng(seed)
    arrays = {name: rng.random(shape) < density for name, shape in SHAPES.items()}
    return Mask.from_numpy(arrays, kind="pruning", user={"note": "test"})


@pytest.mark.parametrize("encoding", ["auto", "raw", "zstd", "rice"])
def test_save_then_load_round_trips_every_shape(tmp_path: Path, encoding: str) -> None:
    mask = sample_mask()
    submask.save(mask, tmp_path / "m.smask", encoding=encoding)
    loaded = submask.load(tmp_path / "m.smask")
    assert list(loaded) == list(mask)
    for name, tensor in mask.items():
        assert loaded[name].shape == SHAPES[name]
        np.testing.assert_array_equal(loaded[name].to_numpy(), tensor.to_numpy())
    assert loaded.metadata.kind == "pruning" and loaded.metadata.user == {"note": "test"}
    assert loaded.count == mask.count and loaded.numel == sum(int(np.prod(s)) for s in SHAPES.values())


@settings(max_examples=40, deadline=None)
@given(arrays=st.dictionaries(st.text("abcdefgh._", min_size=1, max_size=12),
                              hnp.arrays(np.bool_, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=9)),
                              max_size=5))
def test_property_any_bool_arrays_round_trip(tmp_path_factory: pytest.TempPathFactory,
                                             arrays: dict[str, np.ndarray]) -> None:
    path = tmp_path_factory.mktemp("prop") / "p.smask"
    submask.save(Mask.from_numpy(arrays), path)
    loaded = submask.load(path)
    assert set(loaded) == set(arrays)
    for name, array in arrays.items():
        np.testing.assert_array_equal(loaded[name].to_numpy(), array)


def test_open_decodes_only_the_tensor_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "m.smask"
    submask.save(sample_mask(), path, encoding="raw")
    with submask.open(path) as mask_file:
        assert mask_file.entries["big"].shape == (64, 513)
        assert mask_file.entries["big"].ones == sample_mask()["big"].count
        big_at = mask_file._container("big")._data_start + mask_file._container("big")._spans["big"][0]
    data = bytearray(path.read_bytes())
    data[big_at + 3] ^= 0xFF  # corrupt one tensor's payload
    path.write_bytes(bytes(data))
    with submask.open(path) as mask_file:
        assert mask_file["odd"] == sample_mask()["odd"]  # the others still read
        with pytest.raises(submask.ChecksumError, match="'big'"):
            mask_file["big"]


def test_payloads_into_reads_runs_in_one_read_and_any_order_one_by_one(tmp_path: Path) -> None:
    submask.save(sample_mask(), tmp_path / "m.smask")
    with submask.open(tmp_path / "m.smask") as mask:
        for names in (list(mask.entries), list(mask.entries)[1:3], list(mask.entries)[::-1], ["odd", "row"]):
            out = np.full(sum(mask.payload_size(name) for name in names), 0xEE, np.uint8)
            mask.payloads_into(names, out.data)
            assert out.tobytes() == b"".join(mask.payload(name) for name in names)
        names = list(mask.entries)
        os.truncate(tmp_path / "m.smask", (tmp_path / "m.smask").stat().st_size - 1)  # cut short while open
        with pytest.raises(FormatError, match="payload is truncated"):
            mask.payloads_into(names, np.empty(sum(map(mask.payload_size, names)), np.uint8).data)


def test_file_is_a_plain_safetensors_file(tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.numpy import load_file

    submask.save(sample_mask(), tmp_path / "m.smask")
    tensors = load_file(tmp_path / "m.smask")
    assert set(tensors) == set(SHAPES)
    assert all(t.dtype == np.uint8 and t.ndim == 1 for t in tensors.values())
    with safe_open(tmp_path / "m.smask", framework="numpy") as f:
        text, digest = f.metadata()["submask"], f.metadata()["submask_sha256"]
    header = json.loads(text)
    assert header["format"] == "submask" and header["version"] == "1.3"  # 1.3: payload CRC-32s (§4.5)
    assert digest == hashlib.sha256(text.encode("utf-8")).hexdigest()  # the 1.1 header checksum, FORMAT.md §2.1
    assert header["tensors"]["odd"]["bits"] == 105


def test_conversions_numpy_torch_indices() -> None:
    torch = pytest.importorskip("torch")
    bools = np.random.default_rng(2).random((17, 9)) < 0.3
    tensor = TensorMask.from_numpy(bools)
    np.testing.assert_array_equal(tensor.to_torch().numpy(), bools)
    assert tensor.to_torch().dtype == torch.bool
    assert TensorMask.from_torch(torch.from_numpy(bools)) == tensor
    np.testing.assert_array_equal(tensor.to_indices(), np.flatnonzero(bools))
    assert TensorMask.from_indices(np.flatnonzero(bools), bools.shape) == tensor
    assert tensor.count == bools.sum() and tensor.density == pytest.approx(bools.mean())
    with pytest.raises(MismatchError, match="indices"):
        TensorMask.from_indices(np.array([17 * 9]), bools.shape)


def test_sharded_mask_writes_index_and_reads_back(tmp_path: Path) -> None:
    mask = sample_mask(density=0.5)
    submask.save(mask, tmp_path / "s.smask", max_shard_bytes=4096, encoding="raw")
    index = json.loads((tmp_path / "s.smask.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 2 and all((tmp_path / s).is_file() for s in shards)
    assert not (tmp_path / "s.smask").exists()
    assert index["metadata"]["total_ones"] == mask.count
    loaded = submask.load(tmp_path / "s.smask")  # the plain path resolves to the index
    assert all(loaded[name] == mask[name] for name in mask)


def test_unknown_top_level_fields_and_minor_versions_are_kept_on_rewrite(tmp_path: Path) -> None:
    metadata = MaskMetadata(kind="update", extra={"future_field": {"x": 1}}, minor_version=7)
    with MaskWriter(tmp_path / "a.smask", metadata) as writer:
        writer.add("w", TensorMask.from_numpy(np.ones(10, bool)))
    first = submask.load(tmp_path / "a.smask")
    assert first.metadata.extra == {"future_field": {"x": 1}}
    submask.save(first, tmp_path / "b.smask")
    second = submask.open(tmp_path / "b.smask")
    assert second.metadata.extra == {"future_field": {"x": 1}}
    assert second.metadata.minor_version == 7


def test_a_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "m.smask"
    submask.save(sample_mask(), target)
    before = target.read_bytes()
    with pytest.raises(RuntimeError):
        with MaskWriter(target, MaskMetadata(), overwrite=True) as writer:
            writer.add("w", TensorMask.from_numpy(np.ones(10, bool)))
            raise RuntimeError("interrupted")
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.smask"]


def test_duplicate_tensor_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(MismatchError, match="w"):
        with MaskWriter(tmp_path / "d.smask", MaskMetadata()) as writer:
            writer.add("w", TensorMask.from_numpy(np.ones(3, bool)))
            writer.add("w", TensorMask.from_numpy(np.ones(3, bool)))
    assert not (tmp_path / "d.smask").exists()


def test_check_model_reports_missing_extra_and_reshaped_tensors() -> None:
    mask = Mask.from_numpy({"a": np.zeros((2, 3), bool), "b": np.zeros(4, bool)})
    mask.check_model({"a": (2, 3), "b": (4,)})
    with pytest.raises(MismatchError) as info:
        mask.check_model({"a": (3, 2), "c": (4,)})
    assert "a (2, 3) vs (3, 2)" in str(info.value) and "'b'" in str(info.value)


def test_model_fingerprint_depends_on_names_and_shapes_only() -> None:
    one = submask.model_fingerprint({"a": (2, 3), "b": [4]})
    assert one == submask.model_fingerprint({"b": (4,), "a": [2, 3]})
    assert one != submask.model_fingerprint({"a": (3, 2), "b": (4,)})
    assert one.startswith("sha256:") and len(one) == len("sha256:") + 64


@pytest.mark.parametrize("metadata", [
    MaskMetadata(user={"loss": float("nan")}),
    MaskMetadata(user={"best": float("inf")}),
    MaskMetadata(user={"tags": {"a", "b"}}),
    MaskMetadata(kind=""),
    MaskMetadata(model={"fingerprint": "md5:abc"}),
    MaskMetadata(stats={"ladder": {"atol": [0.0], "changed": [1.5]}}),
], ids=["nan", "infinity", "set", "empty-kind", "fingerprint", "stats"])
def test_the_writer_refuses_metadata_a_reader_would_reject(tmp_path: Path, metadata: MaskMetadata) -> None:
    with pytest.raises(FormatError, match="m.smask"):
        with MaskWriter(tmp_path / "m.smask", metadata) as writer:
            writer.add("w", TensorMask.from_numpy(np.ones(3, bool)))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["", "__metadata__"])
def test_the_writer_refuses_tensor_names_safetensors_reserves(tmp_path: Path, name: str) -> None:
    with pytest.raises(FormatError, match="reserves"):
        submask.save(Mask.from_numpy({name: np.ones(3, bool)}), tmp_path / "m.smask")
    assert list(tmp_path.iterdir()) == []


def test_a_kind_from_a_newer_minor_version_is_read_and_kept(tmp_path: Path) -> None:
    submask.save(Mask.from_numpy({"w": np.ones(3, bool)}, kind="x-adapter", minor_version=4), tmp_path / "m.smask")
    mask = submask.load(tmp_path / "m.smask")
    assert mask.metadata.kind == "x-adapter" and mask.metadata.minor_version == 4
    submask.save(mask, tmp_path / "again.smask")
    assert (tmp_path / "again.smask").read_bytes() == (tmp_path / "m.smask").read_bytes()
