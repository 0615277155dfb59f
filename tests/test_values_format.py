"""Values in the format (FORMAT.md §12): the planes encoding, values records, deltas in files and in memory."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import submask
from submask import CheckpointFile, Delta, Mask, MaskMetadata, MaskWriter, TensorMask, TensorValues
from submask.checkpoints.dtypes import DTYPES
from submask.errors import ChecksumError, FormatError, MismatchError, UnknownEncodingError, UsageError
from submask.format.header import DTYPE_SIZES, ValuesEntry
from submask.format.values import (
    PIECE_VALUES,
    decode_values,
    encode_values,
    iter_value_blocks,
    plane_methods,
    read_values,
)

W_HEADER = '{"w":{"dtype":"BF16","shape":[40,30],"data_offsets":[0,2400]}}   '  # what validate checks (§12.3)
CHECKPOINT = [CheckpointFile("model.safetensors", 8 + len(W_HEADER) + 2400, "ab" * 32, header=W_HEADER),
              CheckpointFile("config.json", 20, "cd" * 32, text='{"hidden_size": 16}\n')]


def value_bytes(count: int, itemsize: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, count * itemsize, dtype=np.uint8)


def bf16_weights(count: int, seed: int = 0) -> np.ndarray:
    """bfloat16 bytes of N(0, 0.02) weights: the high byte (sign and exponent) compresses, the low one does not."""
    weights = np.random.default_rng(seed).normal(0, 0.02, count).astype(np.float32)
    return (weights.view(np.uint32) >> 16).astype("<u2").view(np.uint8)


def delta(seed: int = 0, dtype: str = "BF16") -> Delta:
    rng = np.random.default_rng(seed)
    mask = Mask.from_numpy({"w": rng.random((40, 30)) < 0.3, "b": np.ones(7, bool), "none": np.zeros(5, bool)},
                           kind="update")
    itemsize = DTYPE_SIZES[dtype]
    values = {name: TensorValues(dtype, value_bytes(tensor.count, itemsize, seed)) for name, tensor in mask.items()}
    return Delta(mask, values, CHECKPOINT if dtype == "BF16" else checkpoint_of(dtype))


def checkpoint_of(dtype: str) -> list[CheckpointFile]:
    """CHECKPOINT with "w" recorded in ``dtype`` (a layout lists each tensor in its values' dtype, §12.3)."""
    size = 40 * 30 * DTYPE_SIZES[dtype]
    header = json.dumps({"w": {"dtype": dtype, "shape": [40, 30], "data_offsets": [0, size]}})
    return [CheckpointFile("model.safetensors", 8 + len(header) + size, "ab" * 32, header=header), CHECKPOINT[1]]


def header_of(path: Path) -> dict:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length])


# --- the planes encoding ---

@pytest.mark.parametrize("dtype", sorted(DTYPE_SIZES))
def test_every_dtype_round_trips(dtype: str) -> None:
    data = value_bytes(1000, DTYPE_SIZES[dtype])
    encoding, payload = encode_values(data, DTYPE_SIZES[dtype], block_values=300)
    assert encoding == {"id": "planes", "block_values": 300}
    np.testing.assert_array_equal(decode_values(payload, encoding, 1000, DTYPE_SIZES[dtype]), data)


@pytest.mark.parametrize("count", [0, 1, 63, 64, 65, 128, 129])
def test_block_boundaries_round_trip_and_pieces_cover_the_bytes(count: int) -> None:
    data = bf16_weights(count)
    encoding, payload = encode_values(data, 2, block_values=64)
    nblocks = -(-count // 64)
    assert len(payload) >= nblocks * 2 * 5 and (count or payload == b"")
    np.testing.assert_array_equal(decode_values(payload, encoding, count, 2), data)
    pieces = list(iter_value_blocks(payload, encoding, count, 2))
    np.testing.assert_array_equal(np.concatenate(pieces) if pieces else np.zeros(0, np.uint8), data)


def test_pieces_are_bounded_whatever_the_block() -> None:
    count = 2 * PIECE_VALUES + 5
    data = bf16_weights(count)
    encoding, payload = encode_values(data, 2, block_values=count)
    pieces = list(iter_value_blocks(payload, encoding, count, 2))
    assert [piece.size for piece in pieces] == [2 * PIECE_VALUES, 2 * PIECE_VALUES, 10]
    np.testing.assert_array_equal(np.concatenate(pieces), data)


@settings(max_examples=60, deadline=None)
@given(itemsize=st.sampled_from([1, 2, 4, 8]), count=st.integers(0, 300), block_values=st.integers(1, 70),
       seed=st.integers(0, 2**16), low=st.booleans())
def test_property_any_values_round_trip(itemsize: int, count: int, block_values: int, seed: int, low: bool) -> None:
    data = value_bytes(count, itemsize, seed) // (64 if low else 1)  # low: compressible planes too
    encoding, payload = encode_values(data, itemsize, block_values)
    np.testing.assert_array_equal(decode_values(payload, encoding, count, itemsize), data)


def test_exponent_planes_are_compressed_and_mantissa_planes_stored() -> None:
    data = bf16_weights(100_000)
    encoding, payload = encode_values(data, 2)
    entry = ValuesEntry("v", "BF16", encoding, data.size, "00000000")
    assert plane_methods(entry, payload, 100_000) == ["stored", "zstd"]
    assert len(payload) < 0.8 * data.size  # the sign and exponent byte takes well under half its size


def test_the_payload_layout_is_the_one_specified() -> None:
    data = np.array([1, 2, 3, 4, 5, 6], np.uint8)  # three 2-byte values, blocks of two
    _, payload = encode_values(data, 2, block_values=2)
    assert payload == (b"\0\2\0\0\0" + bytes([1, 3]) + b"\0\2\0\0\0" + bytes([2, 4])
                       + b"\0\1\0\0\0" + bytes([5]) + b"\0\1\0\0\0" + bytes([6]))


@pytest.mark.parametrize("damage, message", [
    (lambda p: p[:-1], "fewer than the 28"),
    (lambda p: p[:1] + (1000).to_bytes(4, "little") + p[5:], "runs past"),
    (lambda p: p + b"\0", "after its last block"),
    (lambda p: b"\2" + p[1:], "neither 0"),
    (lambda p: p[:1] + (3).to_bytes(4, "little") + p[5:], "stored value plane holds 3 bytes"),
    (lambda p: p[:1] + (1).to_bytes(4, "little") + p[5:] + b"\0", "stored value plane holds 1 bytes"),
])
def test_damaged_payloads_are_refused(damage, message: str) -> None:
    data = np.arange(8, dtype=np.uint8)
    encoding, payload = encode_values(data, 2, block_values=2)
    with pytest.raises(FormatError, match=message):
        decode_values(damage(payload), encoding, 4, 2, path="x.smask", name="w")


@pytest.mark.parametrize("encoding, error", [({"id": "x-ans"}, UnknownEncodingError),
                                             ({"id": "planes"}, FormatError),
                                             ({"id": "planes", "block_values": 0}, FormatError),
                                             ({"id": "planes", "block_values": 2**26 + 1}, FormatError),
                                             ({"id": "planes", "block_values": 4, "x": 1}, FormatError)])
def test_encoding_settings_are_checked(encoding: dict, error: type) -> None:
    with pytest.raises(error, match="x.smask, tensor 'w'"):
        decode_values(b"", encoding, 0, 2, path="x.smask", name="w")


def test_the_crc_and_size_of_a_record_are_checked() -> None:
    data = value_bytes(10, 2)
    encoding, payload = encode_values(data, 2)
    with pytest.raises(ChecksumError, match="CRC-32"):
        read_values(ValuesEntry("v", "BF16", encoding, 20, "00000000"), payload, 10)
    with pytest.raises(UnknownEncodingError, match="upgrade"):
        read_values(ValuesEntry("v", "F4", encoding, 20, "00000000"), payload, 10)


def test_the_dtype_table_is_the_checkpoints_one() -> None:
    assert DTYPE_SIZES == {name: dtype.itemsize for name, dtype in DTYPES.items()}


# --- values in files ---

def test_a_delta_round_trips_through_a_file(tmp_path: Path) -> None:
    original = delta()
    submask.save(original, tmp_path / "d.smask")
    loaded = submask.load_delta(tmp_path / "d.smask")
    assert loaded.checkpoint == CHECKPOINT
    assert set(loaded.values) == {"w", "b", "none"}
    for name, values in original.values.items():
        assert loaded.values[name].dtype == "BF16"
        np.testing.assert_array_equal(loaded.values[name].data, values.data)
        np.testing.assert_array_equal(loaded.mask[name].packed, original.mask[name].packed)
    mask = submask.load(tmp_path / "d.smask")  # a delta is a mask too
    assert mask.metadata.checkpoint is None and mask.count == original.mask.count


def test_a_delta_declares_version_1_3_and_the_extension(tmp_path: Path) -> None:
    submask.save(delta(), tmp_path / "d.smask")
    outer = header_of(tmp_path / "d.smask")
    header = json.loads(outer.pop("__metadata__")["submask"])
    assert header["version"] == "1.3"
    assert header["extensions"] == [{"name": "values", "must_understand": True}]
    assert list(header)[-2:] == ["checkpoint", "tensors"]
    assert header["tensors"]["w"]["values"]["entry"] == "~values/w"
    assert list(header["tensors"]["w"]) == ["shape", "bits", "ones", "encoding", "crc32", "values", "payload_crc32"]
    # payloads: each tensor's mask, then its values
    assert list(outer) == ["w", "~values/w", "b", "~values/b", "none", "~values/none"]
    assert outer["~values/none"]["shape"] == [0]


def test_a_mask_without_values_declares_no_extension(tmp_path: Path) -> None:
    submask.save(delta().mask, tmp_path / "m.smask")
    header = json.loads(header_of(tmp_path / "m.smask")["__metadata__"]["submask"])
    assert header["version"] == "1.3" and header["extensions"] == [] and "checkpoint" not in header
    assert submask.load_delta(tmp_path / "m.smask").values == {}


def test_rewriting_a_deltas_mask_drops_the_extension_with_the_values(tmp_path: Path) -> None:
    submask.save(delta(), tmp_path / "d.smask")
    with submask.open(tmp_path / "d.smask") as delta_file:
        assert delta_file.metadata.declares_values and delta_file.metadata.checkpoint == CHECKPOINT
        with MaskWriter(tmp_path / "m.smask", delta_file.metadata) as writer:
            for name in delta_file:
                writer.add(name, delta_file[name])
    header = json.loads(header_of(tmp_path / "m.smask")["__metadata__"]["submask"])
    # a layout lists tensors that must have values (FORMAT.md §12.3): with none written, it goes too
    assert header["extensions"] == [] and "checkpoint" not in header
    assert submask.open(tmp_path / "m.smask").problems() == []
    mask = submask.load(tmp_path / "m.smask")
    submask.save(mask, tmp_path / "again.smask")
    header = json.loads(header_of(tmp_path / "again.smask")["__metadata__"]["submask"])
    assert header["extensions"] == [] and "checkpoint" not in header


def test_a_layout_listing_a_tensor_without_values_is_refused_before_writing(tmp_path: Path) -> None:
    submask.save(delta(), tmp_path / "d.smask")
    with submask.open(tmp_path / "d.smask") as delta_file:
        with pytest.raises(UsageError, match="needs the values of every tensor it lists"):
            with MaskWriter(tmp_path / "m.smask", delta_file.metadata) as writer:
                writer.add("b", delta_file["b"], values=delta_file.values("b"))  # "w", listed, has none
                writer.add("w", delta_file["w"])
    assert not (tmp_path / "m.smask").exists()


def test_mask_file_reads_values_lazily_and_in_pieces(tmp_path: Path) -> None:
    count = PIECE_VALUES + 100
    mask = TensorMask.from_numpy(np.ones(count, bool))
    data = bf16_weights(count)
    with MaskWriter(tmp_path / "d.smask", MaskMetadata()) as writer:
        writer.add("w", mask, values=TensorValues("BF16", data), values_config={"block_values": 1000})
        writer.add("plain", TensorMask.from_numpy(np.ones(3, bool)))
    with submask.open(tmp_path / "d.smask") as delta_file:
        assert delta_file.has_values and delta_file.values("plain") is None
        assert delta_file.entries["w"].values.encoding == {"id": "planes", "block_values": 1000}
        np.testing.assert_array_equal(delta_file.values("w").data, data)
        pieces = list(delta_file.value_blocks("w"))
        assert max(piece.size for piece in pieces) <= 2 * PIECE_VALUES
        np.testing.assert_array_equal(np.concatenate(pieces), data)
        assert delta_file.values_size("w") < data.size and delta_file.values_size("plain") == 0
        assert delta_file.value_planes("w") == ["stored", "zstd"] and delta_file.value_planes("plain") == []
        assert list(delta_file.value_blocks("plain")) == [] and delta_file.problems() == []


def test_a_damaged_values_payload_is_caught_by_values_and_validate(tmp_path: Path) -> None:
    path = tmp_path / "d.smask"
    submask.save(delta(), path)
    data = bytearray(path.read_bytes())
    (length,) = struct.unpack("<Q", data[:8])
    end = header_of(path)["~values/w"]["data_offsets"][1]
    data[8 + length + end - 1] ^= 0x10  # the last byte of a stored plane
    path.write_bytes(bytes(data))
    with submask.open(path) as delta_file:
        assert delta_file["w"].count == delta().mask["w"].count  # the mask itself is sound
        with pytest.raises(ChecksumError, match=f"{path}, tensor 'w'.*CRC-32 of the decoded values"):
            delta_file.values("w")
        with pytest.raises(ChecksumError):
            list(delta_file.value_blocks("w"))
        assert len(delta_file.problems()) == 1 and "tensor 'w'" in delta_file.problems()[0]


def test_values_entry_names_avoid_tensor_names(tmp_path: Path) -> None:
    with MaskWriter(tmp_path / "d.smask", MaskMetadata()) as writer:
        writer.add("w", TensorMask.from_numpy(np.ones(2, bool)), values=TensorValues("U8", np.array([1, 2], np.uint8)))
        writer.add("~values/w", TensorMask.from_numpy(np.ones(1, bool)),
                   values=TensorValues("U8", np.array([3], np.uint8)))
    with submask.open(tmp_path / "d.smask") as delta_file:
        assert delta_file.entries["w"].values.entry == "~values/w~2"
        assert delta_file.entries["~values/w"].values.entry == "~values/~values/w"
        assert delta_file.values("w").data.tolist() == [1, 2] and delta_file.values("~values/w").data.tolist() == [3]


def test_a_sharded_delta_keeps_each_tensors_values_in_its_shard(tmp_path: Path) -> None:
    original = delta()
    submask.save(original, tmp_path / "d.smask", max_shard_bytes=16)
    index = json.loads((tmp_path / "d.smask.index.json").read_text())
    assert index["metadata"]["version"] == "1.3" and len(set(index["weight_map"].values())) == 3
    loaded = submask.load_delta(tmp_path / "d.smask")
    assert loaded.checkpoint == CHECKPOINT
    for name, values in original.values.items():
        np.testing.assert_array_equal(loaded.values[name].data, values.data)


@pytest.mark.parametrize("dtype", ["BOOL", "F32", "I64", "F64"])
def test_deltas_of_other_dtypes_round_trip(tmp_path: Path, dtype: str) -> None:
    original = delta(seed=3, dtype=dtype)
    submask.save(original, tmp_path / "d.smask")
    loaded = submask.load_delta(tmp_path / "d.smask")
    for name, values in original.values.items():
        assert loaded.values[name].dtype == dtype
        np.testing.assert_array_equal(loaded.values[name].data, values.data)


def test_bad_values_are_refused_before_writing(tmp_path: Path) -> None:
    mask = Mask.from_numpy({"w": np.ones(3, bool)})
    with pytest.raises(UsageError, match="dtype 'F4'"):
        TensorValues("F4", np.zeros(3, np.uint8))
    with pytest.raises(UsageError, match="1-D uint8"):
        TensorValues("BF16", np.zeros(3, np.uint8))
    with pytest.raises(MismatchError, match="3 set positions"):
        Delta(mask, {"w": TensorValues("BF16", np.zeros(4, np.uint8))})
    with pytest.raises(MismatchError, match="does not hold"):
        Delta(mask, {"x": TensorValues("U8", np.zeros(3, np.uint8))})
    with pytest.raises(MismatchError, match="3 set positions"), MaskWriter(tmp_path / "d.smask", MaskMetadata()) as w:
        w.add("w", mask["w"], values=TensorValues("U8", np.zeros(2, np.uint8)))
    assert not (tmp_path / "d.smask").exists()


@pytest.mark.parametrize("files, message", [
    ([CheckpointFile("../model.safetensors", 1, "ab" * 32, text="")], "bare file name"),
    ([CheckpointFile("a\\b", 1, "ab" * 32, text="")], "bare file name"),
    ([CheckpointFile("a", 1, "AB" * 32, text="")], "sha256"),
    ([CheckpointFile("a", -1, "ab" * 32, text="")], "size"),
    ([CheckpointFile("a", 1, "ab" * 32)], "'header' or 'text'"),
    ([CheckpointFile("a", 1, "ab" * 32, text=""), CheckpointFile("a", 2, "ab" * 32, text="")], "listed twice"),
])
def test_a_checkpoint_layout_a_reader_would_reject_is_refused(tmp_path: Path, files: list, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        submask.save(Delta(Mask.from_numpy({"w": np.ones(1, bool)}), {}, files), tmp_path / "d.smask")
    assert not (tmp_path / "d.smask").exists()


def test_threads_read_values_of_one_open_file_together(tmp_path: Path) -> None:
    """Payloads are read with positional reads: threads decoding several tensors never move each other's place."""
    from concurrent.futures import ThreadPoolExecutor

    data = {f"t{i}": bf16_weights(PIECE_VALUES + 1000 * i, seed=i) for i in range(6)}
    with MaskWriter(tmp_path / "d.smask", MaskMetadata()) as writer:
        for name, values in data.items():
            mask = TensorMask.from_numpy(np.ones(values.size // 2, bool))
            writer.add(name, mask, "raw", values=TensorValues("BF16", values), values_config={"block_values": 5000})
    with submask.open(tmp_path / "d.smask") as delta_file, ThreadPoolExecutor(6) as pool:
        for _ in range(3):
            decoded = pool.map(lambda name: np.concatenate(list(delta_file.value_blocks(name))), data)
            for (name, expected), got in zip(data.items(), decoded):
                np.testing.assert_array_equal(got, expected, err_msg=name)


def test_the_whole_stat_is_a_list_of_tensor_names(tmp_path: Path) -> None:
    from submask.format.stats import stats_problems

    assert stats_problems({"whole": ["w", "b"]}) == []
    assert stats_problems({"whole": {"w": 1}}) == ["stats 'whole' must be a list of tensor names (tensors a delta "
                                                   "stores whole), got {'w': 1}"]
    with pytest.raises(FormatError, match="stats 'whole'"):
        submask.save(Mask.from_numpy({"w": np.ones(1, bool)}, stats={"whole": "w"}), tmp_path / "m.smask")


def test_metadata_changed_while_writing_is_checked_before_the_file_appears(tmp_path: Path) -> None:
    metadata = MaskMetadata()
    with pytest.raises(FormatError, match="bare file name"):
        with MaskWriter(tmp_path / "d.smask", metadata) as writer:
            writer.add("w", TensorMask.from_numpy(np.ones(2, bool)))
            metadata.checkpoint = [CheckpointFile("sub/model.safetensors", 1, "ab" * 32, header="{}")]
    assert list(tmp_path.iterdir()) == []
