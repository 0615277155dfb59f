"""Hostile and damaged files (issue 10): header damage, hostile JSON in every reader, decompression bombs."""

from __future__ import annotations

import hashlib
import json
import struct
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import submask
from submask import FormatError, LimitError, Mask, SourceError, SubmaskError
from submask.checkpoints.safetensors_file import SafetensorsFile
from submask.checkpoints.sources import local_source
from submask.cli import main
from submask.codecs import CODECS
from submask.codecs.base import CHUNK_BYTES, Run
from submask.format.container import parse_header
from submask.packed import crc32_of_run, pack

VECTORS = Path(__file__).resolve().parent.parent / "spec" / "vectors"
DEEP = "[" * 100_000 + "]" * 100_000  # RecursionError in json.loads
HUGE = "9" * 5000  # ValueError in json.loads (more than 4,300 digits)


def sample(path: Path) -> Path:
    rng = np.random.default_rng(1)
    submask.save(Mask.from_numpy({"a": rng.random((9, 11)) < 0.2, "b": rng.random(300) < 0.01}, kind="update",
                    user={"run": 1}), path)
    return path


def container(header_text: str, payloads: dict[str, bytes], *, sign: bool = True) -> bytes:
    metadata = {"submask": header_text}
    if sign:
        metadata["submask_sha256"] = hashlib.sha256(header_text.encode()).hexdigest()
    outer: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name, payload in payloads.items():
        outer[name] = {"dtype": "U8", "shape": [len(payload)], "data_offsets": [offset, offset + len(payload)]}
        offset += len(payload)
    encoded = json.dumps(outer).encode()
    return struct.pack("<Q", len(encoded)) + encoded + b"".join(payloads.values())


def rice_claiming(path: Path, bits: int, crc: str = "00000000") -> Path:
    """A Rice tensor of ``bits`` clear bits in blocks of 2^32: 12 bytes per block, whatever ``bits`` is."""
    block_bits = 1 << 32
    nblocks = -(-bits // block_bits)
    header = {"format": "submask", "version": "1.1", "kind": "other",
              "tensors": {"bomb": {"shape": [bits], "bits": bits, "ones": 0,
                                   "encoding": {"id": "rice", "block_bits": block_bits}, "crc32": crc}}}
    path.write_bytes(container(json.dumps(header), {"bomb": struct.pack("<BBHII", 1, 0, 0, 0, 0) * nblocks}))
    return path


# item 4: header checksum

def test_every_one_byte_header_damage_is_caught_or_harmless(tmp_path: Path) -> None:
    path = sample(tmp_path / "m.smask")
    data = path.read_bytes()
    original = submask.load(path)
    (length,) = struct.unpack("<Q", data[:8])
    damaged = tmp_path / "d.smask"
    silent = []
    for index in range(8, 8 + length):
        changed = bytearray(data)
        changed[index] ^= 0x01  # '0' <-> '1', 'a' <-> '`', ',' <-> '-', ...
        damaged.write_bytes(changed)
        try:
            mask = submask.load(damaged)
        except SubmaskError:
            continue
        same = (mask.metadata == original.metadata and list(mask) == list(original)
                and all(mask[n] == original[n] for n in mask))
        if not same:
            silent.append((index, bytes(data[index - 5:index + 5])))
    assert silent == []  # before 1.1, about 9% of such damages changed provenance, fingerprint or stats


def test_a_1_0_file_without_checksum_is_read_and_rewritten_as_1_0(tmp_path: Path) -> None:
    mask = submask.load(VECTORS / "zstd.smask")
    assert mask.metadata.minor_version == 0
    submask.save(mask, tmp_path / "again.smask")
    with open(tmp_path / "again.smask", "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        outer = json.loads(handle.read(length))
    assert set(outer["__metadata__"]) == {"submask"} and '"version":"1.0"' in outer["__metadata__"]["submask"]


def test_a_newer_major_version_says_upgrade_before_checksum_or_layout(tmp_path: Path) -> None:
    header = json.dumps({"format": "submask", "version": "2.0", "tensors": {"x": {"v2": True}}})
    path = tmp_path / "v2.smask"
    path.write_bytes(container(header, {"y": b"\0" * 3}, sign=False) + b"trailing")
    with pytest.raises(submask.VersionError, match="upgrade"):
        submask.open(path)


# item 6: hostile JSON in every reader

@pytest.mark.parametrize("hostile", [DEEP, HUGE, "NaN", '{"a": 1, "a": 2}'], ids=["deep", "huge-int", "nan", "dup"])
def test_hostile_json_in_a_mask_header_is_a_format_error(tmp_path: Path, hostile: str) -> None:
    header = '{"format":"submask","version":"1.1","kind":"other","user":{"x":' + hostile + '},"tensors":{}}'
    path = tmp_path / "m.smask"
    path.write_bytes(container(header, {}))
    runner = CliRunner()
    for command in (["validate"], ["info"], ["stats"], ["compare", str(VECTORS / "raw.smask")],
                    ["combine", "and", "-o", str(tmp_path / "out.smask"), str(VECTORS / "raw.smask")]):
        result = runner.invoke(main, [*command, str(path)])
        assert result.exit_code == 1 and not isinstance(result.exception, (RecursionError, ValueError, TypeError))
        assert "not valid JSON" in result.output and str(path) in result.output
    with pytest.raises(FormatError, match="not valid JSON"):
        parse_header(container(header, {})[8:], "remote.smask")  # what `ls` and hub listings read
    assert not (tmp_path / "out.smask").exists()


@pytest.mark.parametrize("hostile", [DEEP, HUGE], ids=["deep", "huge-int"])
def test_hostile_json_in_an_index_or_a_checkpoint_is_a_typed_error(tmp_path: Path, hostile: str) -> None:
    index = tmp_path / "m.smask.index.json"
    index.write_text('{"metadata": {"format": "submask", "version": "1.1", "x": ' + hostile + '}, "weight_map": {}}')
    with pytest.raises(FormatError, match="not valid JSON"):
        submask.open(index)
    checkpoint = tmp_path / "model.safetensors"
    text = ('{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "__metadata__": {"x": ' + hostile
            + '}}').encode()
    checkpoint.write_bytes(struct.pack("<Q", len(text)) + text + b"\0" * 4)
    with pytest.raises(SourceError, match="unreadable JSON header"):
        SafetensorsFile(checkpoint)
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "model.safetensors.index.json").write_text('{"weight_map": ' + hostile + "}")
    with pytest.raises(SourceError, match="not a valid index"):
        local_source(sharded)


@pytest.mark.parametrize("shard", ["..\\other.smask", "sub\\rl-00001-of-00001.smask", "../rl.smask", ".."])
def test_an_index_naming_a_shard_outside_its_directory_is_refused(tmp_path: Path, shard: str) -> None:
    index = tmp_path / "m.smask.index.json"
    index.write_text(json.dumps({"metadata": {"format": "submask", "version": "1.1"}, "weight_map": {"w": shard}}))
    with pytest.raises(FormatError, match="shard file names in the same directory"):
        submask.open(index)


# item 7: decompression bombs

def expand(piece: np.ndarray | Run) -> np.ndarray:
    return np.full(piece.nbytes, piece.byte, dtype=np.uint8) if isinstance(piece, Run) else piece.copy()


@pytest.mark.parametrize("encoding", ["raw", "zstd", "rice", "rice-rows"])
@pytest.mark.parametrize("density", [0.0, 0.000002, 0.002, 0.6, 1.0])
def test_decode_chunks_concatenate_to_decode(encoding: str, density: float) -> None:
    numel = 3 * 8 * CHUNK_BYTES + 13
    bools = np.random.default_rng(3).random(numel) < density
    bools[8 * CHUNK_BYTES - 4 : 8 * CHUNK_BYTES + 9] = True  # across a chunk boundary
    bools[2 * 8 * CHUNK_BYTES + 3 : 2 * 8 * CHUNK_BYTES + 600_000] = False  # a long stretch with nothing set
    codec = CODECS[encoding] if encoding != "rice" else CODECS["rice"].configured({"block_bits": 8 * CHUNK_BYTES + 64})
    payload, config = codec.encode(pack(bools), numel)
    pieces = [expand(piece) for piece in codec.from_config(config).decode_chunks(payload, numel)]  # (arrays are reused)
    assert all(isinstance(piece, Run) or piece.size <= CHUNK_BYTES
               for piece in codec.from_config(config).decode_chunks(payload, numel))
    np.testing.assert_array_equal(np.concatenate(pieces), codec.from_config(config).decode(payload, numel))


@settings(max_examples=50, deadline=None)
@given(byte=st.sampled_from([0x00, 0xFF, 0x5A]), nbytes=st.integers(0, 70_000), crc=st.integers(0, 2**32 - 1))
def test_crc32_of_a_run_is_zlibs(byte: int, nbytes: int, crc: int) -> None:
    assert crc32_of_run(byte, nbytes, crc) == zlib.crc32(bytes([byte]) * nbytes, crc)


def problems_and_peak(path: Path) -> tuple[list[str], int]:
    """What validation finds in a file, and the peak of Python allocations while it looks."""
    with submask.open(path) as mask_file:
        tracemalloc.start()
        try:
            return mask_file.problems(), tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()


@pytest.mark.parametrize("bits", [1 << 33, 10**12])
def test_validate_checks_a_rice_bomb_in_bounded_memory(tmp_path: Path, bits: int) -> None:
    path = rice_claiming(tmp_path / "bomb.smask", bits)  # the 4.5 KB file of issue 10 claims 10^12 bits (116 GiB)
    assert path.stat().st_size < 4600
    problems, peak = problems_and_peak(path)
    assert len(problems) == 1 and "CRC-32 of the decoded bits is" in problems[0]  # every zero bit, checked
    assert peak < 8 * CHUNK_BYTES  # not the claimed size


def test_validate_checks_a_rice_rows_bomb_in_bounded_memory(tmp_path: Path) -> None:
    bits = 10**12  # rows of 2^20 bits, none listed: a 20-byte payload (FORMAT.md 5.5)
    header = {"format": "submask", "version": "1.2", "kind": "other",
              "tensors": {"bomb": {"shape": [bits // 2**20 + 1, 2**20], "bits": (bits // 2**20 + 1) * 2**20, "ones": 0,
                                   "encoding": {"id": "rice-rows", "row_bits": 2**20}, "crc32": "00000000"}}}
    path = tmp_path / "bomb.smask"
    path.write_bytes(container(json.dumps(header), {"bomb": struct.pack("<BBBBQQ", 0, 0, 0, 0, 0, 0)}))
    problems, peak = problems_and_peak(path)
    assert len(problems) == 1 and "CRC-32 of the decoded bits is" in problems[0]  # every zero bit, checked
    assert peak < 8 * CHUNK_BYTES


def test_max_bits_refuses_a_big_claim_before_decoding(tmp_path: Path) -> None:
    path = rice_claiming(tmp_path / "bomb.smask", 10**12)  # the 4.5 KB file of issue 10 claiming 10^12 bits
    assert path.stat().st_size < 4600
    with pytest.raises(LimitError, match="max_bits"):
        submask.load(path, max_bits=10**9)
    with pytest.raises(LimitError, match="max_bits"):
        submask.load(path, max_bits=10**9)
    with submask.open(path, max_bits=10**12) as mask_file:
        assert mask_file.entries["bomb"].bits == 10**12


def test_load_refuses_more_bits_than_memory_without_allocating(tmp_path: Path) -> None:
    tracemalloc.start()
    with pytest.raises(LimitError, match="more than this machine's memory"):
        submask.load(VECTORS / "invalid" / "zstd_exceeds_memory.smask")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20


# issue 16: values payloads (FORMAT.md §12)

def values_claiming(path: Path, count: int, payload: bytes) -> Path:
    """A delta whose tensor has ``count`` set bits (Rice blocks listing no clear position: all set) and claims
    ``count`` BF16 values, in blocks of 2^26, held by ``payload``."""
    block_bits = 1 << 32
    values = {"entry": "~values/bomb", "dtype": "BF16", "encoding": {"id": "planes", "block_values": 1 << 26},
              "size": 2 * count, "crc32": "00000000"}
    header = {"format": "submask", "version": "1.2", "extensions": [{"name": "values", "must_understand": True}],
              "kind": "update",
              "tensors": {"bomb": {"shape": [count], "bits": count, "ones": count,
                                   "encoding": {"id": "rice", "block_bits": block_bits},
                                   "crc32": f"{crc32_of_run(0xFF, count // 8):08x}", "values": values}}}
    rice = struct.pack("<BBHII", 0, 0, 0, 0, 0) * -(-count // block_bits)
    path.write_bytes(container(json.dumps(header), {"bomb": rice, "~values/bomb": payload}))
    return path


def test_a_values_payload_claiming_2_40_values_costs_nothing(tmp_path: Path) -> None:
    path = values_claiming(tmp_path / "bomb.smask", 1 << 40, b"\1" + (1 << 20).to_bytes(4, "little") + b"\0" * 995)
    assert path.stat().st_size < 5000  # 2 TiB of values claimed
    with submask.open(path) as delta_file:
        tracemalloc.start()
        with pytest.raises(FormatError, match=f"{path}, tensor 'bomb': values payload has 1,000 bytes, fewer than"):
            delta_file.values("bomb")
        with pytest.raises(FormatError, match="fewer than"):
            delta_file.value_blocks("bomb")
        problems = delta_file.problems()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert len(problems) == 1 and "fewer than" in problems[0]  # the mask's 2^40 set bits check out
    assert peak < 1 << 20
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 1 and "fewer than" in result.output


def test_validate_checks_values_in_bounded_memory(tmp_path: Path) -> None:
    count = 1 << 22
    data = np.random.default_rng(0).integers(0, 256, 2 * count, dtype=np.uint8)  # 8 MiB, stored as it is
    with submask.MaskWriter(tmp_path / "d.smask", submask.MaskMetadata()) as writer:
        writer.add("w", submask.TensorMask.from_numpy(np.ones(count, bool)), "raw",  # 512 KiB to check
                   values=submask.TensorValues("BF16", data))
    with submask.open(tmp_path / "d.smask") as delta_file:
        assert delta_file.values_size("w") > data.size
    problems, peak = problems_and_peak(tmp_path / "d.smask")
    assert problems == [] and peak < data.size // 4
