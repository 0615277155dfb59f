"""Write the golden test vectors of spec/vectors/ (FORMAT.md section 10).

    python -m tools.make_vectors            # rewrite spec/vectors/ in place

Each vector is a .smask file (or a sharded mask) plus NAME.json listing, per tensor, its shape and the flat
indices of its set bits. spec/vectors/invalid/ holds files a reader must reject; expected.json names the error.
The content is seeded, so running this again reproduces the same bytes.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import submask
from submask import MaskMetadata, MaskWriter, TensorMask

VECTORS = Path(__file__).resolve().parent.parent / "spec" / "vectors"
CREATOR = {"library": "submask", "version": "0.1.0"}  # fixed, so the vectors do not change with releases


def bits(shape: tuple[int, ...], density: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(shape) < density


def raw_shapes() -> list[tuple[str, np.ndarray, str, dict[str, Any] | None]]:
    return [
        ("scalar_set", np.array(True), "raw", None),
        ("scalar_clear", np.array(False), "raw", None),
        ("empty", np.zeros((0,), bool), "raw", None),
        ("empty_3d", np.zeros((3, 0, 2), bool), "raw", None),
        ("odd_3x5x7", bits((3, 5, 7), 0.3, 1), "raw", None),
        ("full_13", np.ones(13, bool), "raw", None),
        ("none_9", np.zeros(9, bool), "raw", None),
    ]


def zstd_tensors() -> list[tuple[str, np.ndarray, str, dict[str, Any] | None]]:
    return [
        ("dense_100x33", bits((100, 33), 0.4, 2), "zstd", None),
        ("sparse_1000", bits((1000,), 0.01, 3), "zstd", None),
        ("odd_61", bits((61,), 0.5, 4), "zstd", None),
        ("empty", np.zeros((0, 4), bool), "zstd", None),
    ]


def rice_tensors() -> list[tuple[str, np.ndarray, str, dict[str, Any] | None]]:
    blocks = bits((1000,), 0.03, 5)
    blocks[256:384] = True  # a block where the clear bits are rarer: value 0
    blocks[384:390] = False
    blocks[512:640] = False  # an empty block
    return [
        ("blocks_of_128", blocks, "rice", {"block_bits": 128}),
        ("default_blocks_5000", bits((50, 100), 0.01, 6), "rice", None),
        ("odd_333", bits((333,), 0.1, 7), "rice", {"block_bits": 64}),
        ("dense_200", bits((200,), 0.97, 8), "rice", None),
        ("full_17", np.ones(17, bool), "rice", None),
        ("scalar", np.array(True), "rice", None),
        ("empty", np.zeros(0, bool), "rice", None),
    ]


def rich_metadata() -> MaskMetadata:
    shapes = {"encoder.layer.0.attention.self.query.weight": (16, 16), "encoder.layer.0.output.dense.bias": (16,)}
    return MaskMetadata(
        kind="update",
        criterion={"name": "atol", "atol": 1e-05},
        provenance={"base": {"source": "org/base-model", "revision": "0" * 40},
                    "finetuned": {"source": "org/rl-model", "revision": "1" * 40,
                                  "files": {"model.safetensors": {"size": 1234, "sha256": None}}}},
        model={"fingerprint": submask.model_fingerprint(shapes)},
        creator=CREATOR,
        user={"run": "seed-1", "notes": "golden vector"},
        stats={"ladder": {"atol": [0, 1e-08, 1e-05], "changed": [40, 38, 30]}},
        extensions=[{"name": "x-example-optional", "must_understand": False}],
        extra={"x_future_field": {"kept": True}},
    )


def rich_tensors() -> list[tuple[str, np.ndarray, str, dict[str, Any] | None]]:
    return [
        ("encoder.layer.0.attention.self.query.weight", bits((16, 16), 0.12, 9), "auto", None),
        ("encoder.layer.0.output.dense.bias", bits((16,), 0.5, 10), "auto", None),
    ]


def write_vector(name: str, tensors: list, metadata: MaskMetadata | None = None,
                 max_shard_bytes: int | None = None) -> None:
    metadata = metadata or MaskMetadata(kind="other", creator=CREATOR)
    with MaskWriter(VECTORS / f"{name}.smask", metadata, max_shard_bytes=max_shard_bytes, overwrite=True) as writer:
        for tensor_name, array, encoding, config in tensors:
            writer.add(tensor_name, TensorMask.from_numpy(array), encoding, config)
    content = {"tensors": {tensor_name: {"shape": list(array.shape),
                                         "ones_at": np.flatnonzero(array).tolist()}
                           for tensor_name, array, _, _ in tensors}}
    (VECTORS / f"{name}.json").write_text(json.dumps(content, indent=1) + "\n")


def write_invalid() -> None:
    """Damaged copies of a valid vector, each with the error class a reader must raise."""
    source = (VECTORS / "zstd.smask").read_bytes()
    (length,) = struct.unpack("<Q", source[:8])
    outer = json.loads(source[8:8 + length])
    payloads = source[8 + length:]

    def with_header(edit: Callable[[dict[str, Any]], None]) -> bytes:
        header = json.loads(outer["__metadata__"]["submask"])
        edit(header)
        changed = {**outer, "__metadata__": {"submask": json.dumps(header, separators=(",", ":"))}}
        encoded = json.dumps(changed, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)
        return struct.pack("<Q", len(encoded)) + encoded + payloads

    flipped = bytearray(source)
    flipped[8 + length + outer["dense_100x33"]["data_offsets"][0] + 20] ^= 0x04
    cases = {
        "truncated.smask": (source[: len(source) - 5], "FormatError", "file cut 5 bytes short"),
        "header_too_long.smask": (struct.pack("<Q", len(source)) + source[8:], "FormatError",
                                  "header length larger than the file"),
        "major_version_2.smask": (with_header(lambda h: h.update(version="2.0")), "VersionError",
                                  "a newer major version"),
        "must_understand.smask": (with_header(lambda h: h.update(
            extensions=[{"name": "x-block-index", "must_understand": True}])), "VersionError",
            "an unknown extension marked must_understand"),
        "unknown_encoding.smask": (with_header(lambda h: h["tensors"]["odd_61"].update(
            encoding={"id": "x-ans"})), "UnknownEncodingError", "tensor odd_61 uses encoding x-ans"),
        "bad_crc.smask": (with_header(lambda h: h["tensors"]["odd_61"].update(crc32="00000000")),
                          "ChecksumError", "tensor odd_61 has a wrong crc32"),
        "flipped_payload_bit.smask": (bytes(flipped), "FormatError", "one payload bit flipped in tensor dense_100x33"),
        "claims_10e12_bits.smask": (with_header(lambda h: h["tensors"]["sparse_1000"].update(
            shape=[1000000, 1000000], bits=10**12)), "FormatError",
            "tensor sparse_1000 claims 10^12 bits; its zstd frame says 125 bytes"),
        "bits_not_shape.smask": (with_header(lambda h: h["tensors"]["odd_61"].update(bits=62)), "FormatError",
                                 "bits differs from the product of shape"),
    }
    invalid = VECTORS / "invalid"
    invalid.mkdir(exist_ok=True)
    for file_name, (data, _, _) in cases.items():
        (invalid / file_name).write_bytes(data)
    expected = {file_name: {"error": error, "why": why} for file_name, (_, error, why) in cases.items()}
    (invalid / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")


def main() -> None:
    VECTORS.mkdir(parents=True, exist_ok=True)
    write_vector("raw", raw_shapes())
    write_vector("zstd", zstd_tensors())
    write_vector("rice", rice_tensors())
    write_vector("rich_metadata", rich_tensors(), rich_metadata())
    sharded = [(f"layers.{i}.weight", bits((12, 10), 0.5, 20 + i), "raw", None) for i in range(3)]
    write_vector("sharded", sharded, max_shard_bytes=32)
    write_invalid()
    print(f"wrote vectors to {VECTORS}")


if __name__ == "__main__":
    main()
