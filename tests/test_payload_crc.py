"""Format 1.3's payload CRC-32 (FORMAT.md §4.5) and the parse cache of headers: what compare and load check."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import submask
from submask import ChecksumError, FormatError, Mask
from submask.compare import compare
from submask.packed import crc32_update
from submask.safetensors_header import LENGTH


def saved(path: Path, seed: int, density: float = 0.01) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {"a": rng.random((64, 300)) < density, "b": rng.random((40, 77)) < 0.4}
    submask.save(Mask.from_numpy(arrays), path, overwrite=True)
    return arrays


def header_span(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    return 8, 8 + LENGTH.unpack(data[:8])[0]


def test_new_files_carry_each_payloads_crc(tmp_path: Path) -> None:
    saved(tmp_path / "m.smask", 1)
    with submask.open(tmp_path / "m.smask") as f:
        assert f.metadata.minor_version == 3
        for name, entry in f.entries.items():
            assert entry.payload_crc32 == f"{crc32_update(f.payload(name)):08x}"


def test_a_changed_payload_is_caught_by_compare_and_load(tmp_path: Path) -> None:
    saved(tmp_path / "m.smask", 2)
    saved(tmp_path / "other.smask", 3)
    data = bytearray((tmp_path / "m.smask").read_bytes())
    with submask.open(tmp_path / "m.smask") as f:
        assert f.entries["b"].encoding == "raw"
        at = bytes(data).index(f.payload("b"))
    data[at + 3] ^= 0x10  # one bit of the raw payload of "b" flipped on disk
    (tmp_path / "m.smask").write_bytes(bytes(data))
    for paths in ([tmp_path / "m.smask", tmp_path / "other.smask"], [tmp_path / "other.smask", tmp_path / "m.smask"]):
        with pytest.raises(ChecksumError, match=r"m\.smask, tensor 'b': CRC-32 of the"):
            compare(paths)
    with pytest.raises(ChecksumError, match=r"tensor 'b': CRC-32 of the"):
        submask.load(tmp_path / "m.smask")


def test_a_malformed_payload_crc_is_refused(tmp_path: Path) -> None:
    saved(tmp_path / "m.smask", 4)
    data = (tmp_path / "m.smask").read_bytes()
    start, end = header_span(tmp_path / "m.smask")
    outer = json.loads(data[start:end])
    header = json.loads(outer["__metadata__"]["submask"])
    header["tensors"]["a"]["payload_crc32"] = "XYZ"
    text = json.dumps(header, separators=(",", ":"))
    outer["__metadata__"] = {"submask": text, "submask_sha256": hashlib.sha256(text.encode()).hexdigest()}
    raw = json.dumps(outer, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    (tmp_path / "bad.smask").write_bytes(LENGTH.pack(len(raw)) + raw + data[end:])
    with pytest.raises(FormatError, match=r"'payload_crc32' must be 8 lowercase hex digits"):
        submask.open(tmp_path / "bad.smask")


def test_a_header_changed_in_place_is_checked_again(tmp_path: Path) -> None:
    path = tmp_path / "m.smask"
    saved(path, 5)
    with submask.open(path) as f:  # parsed and cached
        assert "a" in f.entries
    data = bytearray(path.read_bytes())
    start, end = header_span(path)
    at = bytes(data).index(b'\\"ones\\":', start, end) + len(b'\\"ones\\":')
    data[at] = ord("9") if data[at] != ord("9") else ord("8")  # same size, other bytes: the checksum fails
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="checksum"):
        submask.open(path)


def test_compare_counts_match_numpy_on_1_3_files(tmp_path: Path) -> None:
    x, y = saved(tmp_path / "x.smask", 6, 0.002), saved(tmp_path / "y.smask", 7, 0.002)
    result = compare([tmp_path / "x.smask", tmp_path / "y.smask"], workers=1)
    assert result.pair(0, 1).intersection == sum(int(np.sum(x[n] & y[n])) for n in x)
