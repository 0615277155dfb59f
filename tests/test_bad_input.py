"""Every rejection path of the reader: bad files raise a SubmaskError with a useful message, never a crash."""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import submask
from submask import ChecksumError, FormatError, Mask, SubmaskError, UnknownEncodingError, VersionError


def write_sample(path: Path, encoding: str = "auto") -> Path:
    rng = np.random.default_rng(0)
    arrays = {"a": rng.random((5, 7)) < 0.3, "b": rng.random(40) < 0.02, "s": np.array(True)}
    submask.save(Mask.from_numpy(arrays), path, encoding=encoding)
    return path


def read_parts(path: Path) -> tuple[dict[str, Any], bytes]:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length]), data[8 + length:]


def edit_header(path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """Rewrite the submask header of ``path`` through ``edit``, keeping the payloads as they are and the
    header checksum valid, so that the check after it is the one tested."""
    outer, payload = read_parts(path)
    header = json.loads(outer["__metadata__"]["submask"])
    edit(header)
    write_parts(path, outer, payload, json.dumps(header))
    return path


def write_parts(path: Path, outer: dict[str, Any], payload: bytes, header_text: str | None = None) -> None:
    """Write a container; with ``header_text``, as its submask header, checksummed."""
    if header_text is not None:
        outer["__metadata__"].update(submask=header_text,
                                     submask_sha256=hashlib.sha256(header_text.encode("utf-8")).hexdigest())
    encoded = json.dumps(outer).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + payload)


def load_everything(path: Path) -> None:
    with submask.open(path) as mask_file:
        for name in mask_file:
            mask_file[name]


def test_truncation_at_every_byte_is_rejected(tmp_path: Path) -> None:
    data = write_sample(tmp_path / "full.smask").read_bytes()
    cut = tmp_path / "cut.smask"
    for length in range(len(data)):
        cut.write_bytes(data[:length])
        with pytest.raises(FormatError):
            load_everything(cut)


def test_header_length_larger_than_the_file(tmp_path: Path) -> None:
    path = write_sample(tmp_path / "m.smask")
    data = path.read_bytes()
    path.write_bytes(struct.pack("<Q", len(data) * 2) + data[8:])
    with pytest.raises(FormatError, match="larger than the file"):
        submask.open(path)


def test_absurd_header_length_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "m.smask"
    path.write_bytes(struct.pack("<Q", 2**63) + b"{}")
    with pytest.raises(FormatError, match="limit"):
        submask.open(path)


@pytest.mark.parametrize("encoding", ["raw", "zstd", "rice"])
def test_a_header_claiming_10_to_the_12_bits_allocates_nothing(tmp_path: Path, encoding: str) -> None:
    def claim_huge(header: dict[str, Any]) -> None:
        entry = header["tensors"]["a"]
        entry.update(shape=[10**6, 10**6], bits=10**12)
        entry["encoding"] = {**entry["encoding"], "id": encoding} if encoding != "rice" else entry["encoding"]

    path = edit_header(write_sample(tmp_path / "m.smask", encoding=encoding), claim_huge)
    with submask.open(path) as mask_file:
        assert mask_file.entries["a"].bits == 10**12
        with pytest.raises(FormatError):
            mask_file["a"]


SCHEMA_VIOLATIONS: dict[str, Callable[[dict[str, Any]], None]] = {
    "format": lambda h: h.update(format="other"),
    "version type": lambda h: h.update(version=1),
    "version text": lambda h: h.update(version="1.x"),
    "kind type": lambda h: h.update(kind=7),
    "kind empty": lambda h: h.update(kind=""),
    "provenance": lambda h: h.update(provenance=[1, 2]),
    "extensions": lambda h: h.update(extensions=[{"name": 3}]),
    "tensors": lambda h: h.update(tensors=[]),
    "shape": lambda h: h["tensors"]["a"].update(shape=[-5, 7]),
    "shape type": lambda h: h["tensors"]["a"].update(shape="5x7"),
    "bits vs shape": lambda h: h["tensors"]["a"].update(bits=36),
    "ones > bits": lambda h: h["tensors"]["a"].update(ones=36),
    "ones negative": lambda h: h["tensors"]["a"].update(ones=-1),
    "crc": lambda h: h["tensors"]["a"].update(crc32="XYZ"),
    "encoding": lambda h: h["tensors"]["a"].update(encoding="raw"),
    "entry type": lambda h: h["tensors"].update(a=[1]),
    "missing entry": lambda h: h["tensors"].pop("b"),
}


@pytest.mark.parametrize("violation", list(SCHEMA_VIOLATIONS))
def test_json_that_is_not_the_schema_is_rejected(tmp_path: Path, violation: str) -> None:
    path = edit_header(write_sample(tmp_path / "m.smask"), SCHEMA_VIOLATIONS[violation])
    with pytest.raises(FormatError) as info:
        load_everything(path)
    assert str(path) in str(info.value)


def test_raw_payload_size_inconsistent_with_shape(tmp_path: Path) -> None:
    path = edit_header(write_sample(tmp_path / "m.smask", encoding="raw"),
                       lambda h: h["tensors"]["a"].update(shape=[5, 9], bits=45))
    with pytest.raises(FormatError, match="'a'"):
        load_everything(path)


@pytest.mark.parametrize("encoding", ["raw", "zstd", "rice"])
def test_flipped_payload_bit_is_caught(tmp_path: Path, encoding: str) -> None:
    path = write_sample(tmp_path / "m.smask", encoding=encoding)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # last byte of the last payload ("s" is last: flip in "b" or the scalar)
    path.write_bytes(bytes(data))
    error = ChecksumError if encoding == "raw" else SubmaskError
    with pytest.raises(error):
        load_everything(path)
    assert submask.open(path).problems()


def test_flipped_bit_in_every_payload_byte_never_passes_silently(tmp_path: Path) -> None:
    path = write_sample(tmp_path / "m.smask", encoding="raw")
    original = path.read_bytes()
    outer, payload = read_parts(path)
    start = len(original) - len(payload)
    for offset in range(start, len(original)):
        data = bytearray(original)
        data[offset] ^= 0x10
        path.write_bytes(bytes(data))
        assert submask.open(path).problems(), f"flip at byte {offset} went unnoticed"


def test_unknown_encoding_names_the_encoding_and_the_fix(tmp_path: Path) -> None:
    path = edit_header(write_sample(tmp_path / "m.smask"),
                       lambda h: h["tensors"]["a"].update(encoding={"id": "ans-v9"}))
    with submask.open(path) as mask_file:
        mask_file["b"]  # other tensors stay readable
        with pytest.raises(UnknownEncodingError, match="ans-v9.*upgrade"):
            mask_file["a"]


def test_newer_major_version_is_refused(tmp_path: Path) -> None:
    path = edit_header(write_sample(tmp_path / "m.smask"), lambda h: h.update(version="2.0"))
    with pytest.raises(VersionError, match="upgrade submask"):
        submask.open(path)


def test_newer_minor_version_and_unknown_fields_are_read(tmp_path: Path) -> None:
    def newer(header: dict[str, Any]) -> None:
        header.update(version="1.9", shiny={"new": True})
        header["extensions"] = [{"name": "fancy-index", "must_understand": False}]
        header["tensors"]["a"]["extra_field"] = 1

    mask = submask.load(edit_header(write_sample(tmp_path / "m.smask"), newer))
    assert mask.metadata.extra == {"shiny": {"new": True}}
    assert mask.metadata.minor_version == 9


def test_unknown_must_understand_extension_is_refused(tmp_path: Path) -> None:
    path = edit_header(write_sample(tmp_path / "m.smask"),
                       lambda h: h.update(extensions=[{"name": "block-sparse", "must_understand": True}]))
    with pytest.raises(VersionError, match="block-sparse"):
        submask.open(path)


CONTAINER_DAMAGE: dict[str, Callable[[dict[str, Any], bytes], tuple[dict[str, Any], bytes]]] = {
    "not a mask": lambda o, p: ({k: v for k, v in o.items() if k != "__metadata__"}, p),
    "metadata not string": lambda o, p: ({**o, "__metadata__": {"submask": {"a": 1}}}, p),
    "wrong dtype": lambda o, p: ({**o, "a": {**o["a"], "dtype": "F32"}}, p),
    "overlap": lambda o, p: ({**o, "b": {**o["b"], "data_offsets": o["a"]["data_offsets"],
                                           "shape": o["a"]["shape"]}}, p),
    "trailing data": lambda o, p: (o, p + b"\x00" * 8),
    "negative offset": lambda o, p: ({**o, "a": {**o["a"], "data_offsets": [-1, 4]}}, p),
}


@pytest.mark.parametrize("damage", list(CONTAINER_DAMAGE))
def test_damaged_safetensors_container_is_rejected(tmp_path: Path, damage: str) -> None:
    path = write_sample(tmp_path / "m.smask", encoding="raw")
    write_parts(path, *CONTAINER_DAMAGE[damage](*read_parts(path)))
    with pytest.raises(FormatError):
        load_everything(path)


@pytest.mark.parametrize("garbage", [b"", b"\x00" * 7, b"not a mask at all", struct.pack("<Q", 4) + b"\xff\xfe[]"])
def test_garbage_files_are_rejected(tmp_path: Path, garbage: bytes) -> None:
    path = tmp_path / "g.smask"
    path.write_bytes(garbage)
    with pytest.raises(FormatError):
        submask.open(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="no such file"):
        submask.open(tmp_path / "absent.smask")
    with pytest.raises(FormatError, match="directory"):
        submask.open(tmp_path)


def test_sharded_mask_with_a_missing_shard_or_bad_index(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    mask = Mask.from_numpy({f"t{i}": rng.random(5000) < 0.5 for i in range(4)})
    submask.save(mask, tmp_path / "s.smask", max_shard_bytes=1000, encoding="raw")
    index_path = tmp_path / "s.smask.index.json"
    index = json.loads(index_path.read_text())
    first_shard = sorted(set(index["weight_map"].values()))[0]
    (tmp_path / first_shard).rename(tmp_path / "moved")
    with pytest.raises(FormatError, match="missing"):
        submask.open(tmp_path / "s.smask")
    (tmp_path / "moved").rename(tmp_path / first_shard)
    index_path.write_text(json.dumps({"weight_map": {"t0": "../../etc/passwd"}}))
    with pytest.raises(FormatError):
        submask.open(tmp_path / "s.smask")
    index_path.write_text("{not json")
    with pytest.raises(FormatError):
        submask.open(tmp_path / "s.smask")
