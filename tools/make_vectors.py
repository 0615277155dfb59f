"""Write the golden test vectors of spec/vectors/ (FORMAT.md section 10).

    python -m tools.make_vectors            # rewrite spec/vectors/ in place

Each vector is a .smask file (or a sharded mask) plus NAME.json listing, per tensor, its shape and the flat
indices of its set bits; NAME.smask is format 1.0 and NAME-1.1.smask the same content in 1.1. spec/vectors/invalid/
holds files a reader must reject; expected.json names the error, invalid/README.md explains the cases.
The content is seeded and sharded masks get fixed write ids, so running this again reproduces the same bytes.
``sharded_1_0`` (a sharded mask written by format 1.0, before shard records) is not written here: it is kept
as it was, for readers to keep reading it.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

import submask
from submask import CheckpointFile, MaskMetadata, MaskWriter, TensorMask, TensorValues
from submask.codecs import RiceRowsCodec
from submask.metadata import MINOR, PAYLOAD_CRC_MINOR
from submask.safetensors_header import MAX_HEADER_BYTES

ROWS_MINOR = RiceRowsCodec.minor_version
VECTORS = Path(__file__).resolve().parent.parent / "spec" / "vectors"
CREATOR = {"library": "submask", "version": "0.1.0"}  # fixed, so the vectors do not change with releases
WRITE_IDS = ("5ba4d1c0e2f3a4b5c6d7e8f901234567", "0f1e2d3c4b5a69788796a5b4c3d2e1f0")  # fixed write ids of shards


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


def rows_with_counts(counts: list[int], cols: int, seed: int) -> np.ndarray:
    """Rows of ``cols`` bits with exactly ``counts[i]`` set bits in row i, at random places."""
    rng = np.random.default_rng(seed)
    rows = np.zeros((len(counts), cols), bool)
    for row, count in zip(rows, counts):
        row[rng.choice(cols, count, replace=False)] = True
    return rows


def worked_example() -> np.ndarray:
    """The rice-rows example of FORMAT.md section 5.5: rows of 8 bits, bit 1 set, all but bit 6, none."""
    example = np.zeros((3, 8), bool)
    example[0, 1] = True
    example[1] = True
    example[1, 6] = False
    return example


def rice_rows_tensors() -> list[tuple[str, np.ndarray, str, dict[str, Any] | None]]:
    odd_rows = bits((6, 13), 0.2, 14)
    odd_rows[1], odd_rows[2], odd_rows[3] = True, False, True
    odd_rows[3, 12] = False  # a full row, an empty one and one all but full, none on whole bytes
    counts = [int(c) for c in np.random.default_rng(12).integers(1, 30, 20)]
    return [
        ("worked_example_3x8", worked_example(), "rice-rows", {"row_bits": 8}),  # count mode 0
        ("few_rows_alike_16x100", rows_with_counts([0, 0, 0, 40, 0, 0, 0, 0, 0, 41, 0, 0, 43, 0, 0, 0], 100, 11),
         "rice-rows", None),  # count mode 1
        ("every_row_scattered_20x64", rows_with_counts(counts, 64, 12), "rice-rows", None),  # count mode 2
        ("every_row_rising_32x96", rows_with_counts(list(range(10, 42)), 96, 13), "rice-rows", None),  # mode 3
        ("few_full_rows_16x100", rows_with_counts([0, 0, 97, 0, 0, 99, 0, 0, 0, 98, 0, 0, 0, 0, 0, 0], 100, 17),
         "rice-rows", None),  # count mode 4
        ("few_dense_rows_alike_16x100", rows_with_counts([0, 60, 0, 59, 0, 0, 57, 0, 56, 0, 0, 0, 0, 0, 0, 0], 100, 18),
         "rice-rows", None),  # count mode 5
        ("every_row_dense_rising_32x96", ~rows_with_counts(list(range(10, 42)), 96, 19), "rice-rows", None),  # 7
        ("odd_rows_6x13", odd_rows, "rice-rows", {"row_bits": 13}),
        ("dense_40x64", bits((40, 64), 0.97, 15), "rice-rows", None),
        ("one_dimensional_5000", bits((5000,), 0.02, 16), "rice-rows", None),
        ("empty", np.zeros((0, 5), bool), "rice-rows", None),
    ]


def rice_rows_payload(count_mode: int, count_k: int, row_k: int, table_rows: int,
                      codes: list[tuple[int, int]], unary_extra: bytes = b"", remainder_extra: int = 0) -> bytes:
    """A rice-rows payload written from FORMAT.md section 5.5 alone: the header, then the (value, k) codes as
    unary and remainder streams; ``unary_extra`` is appended to the unary stream and ``remainder_extra`` set
    as the remainder stream's pad bits, to damage them."""
    unary = "".join("0" * (value >> k) + "1" for value, k in codes)
    remainders = "".join(format(value & ((1 << k) - 1), f"0{k}b") if k else "" for value, k in codes)
    def packed(text: str) -> bytes:
        return int(text + "0" * (-len(text) % 8), 2).to_bytes(-(-len(text) // 8), "big") if text else b""
    unary_bytes = packed(unary) + unary_extra
    remainder_bytes = bytearray(packed(remainders))
    if remainder_extra:
        remainder_bytes[-1] |= remainder_extra
    return (struct.pack("<BBBBQQ", count_mode, count_k, row_k, 0, table_rows, len(unary_bytes)) + unary_bytes
            + bytes(remainder_bytes))


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


def values_tensors() -> list[tuple[str, np.ndarray, str, np.ndarray, dict[str, Any] | None]]:
    """(name, mask bools, dtype, value bytes, values settings): each dtype's values at the set positions."""
    rng = np.random.default_rng(11)
    weights = bits((20, 30), 0.3, 12)
    bf16 = (rng.normal(0, 0.02, int(weights.sum())).astype(np.float32).view(np.uint32) >> 16).astype("<u2")
    blocks = bits((100,), 0.5, 13)
    flags = bits((9,), 0.6, 14)
    return [
        ("bf16_weights", weights, "BF16", bf16.view(np.uint8), None),  # a zstd exponent plane, a stored one
        ("f32_blocks", blocks, "F32", rng.normal(0, 1, int(blocks.sum())).astype("<f4").view(np.uint8),
         {"block_values": 16}),
        ("i64_full", np.ones((3, 4), bool), "I64", np.arange(-6, 6, dtype="<i8").view(np.uint8), None),
        ("bool_flags", flags, "BOOL", rng.integers(0, 2, int(flags.sum()), dtype=np.uint8), None),
        ("no_values", np.zeros(10, bool), "F16", np.zeros(0, np.uint8), None),
    ]


def values_checkpoint(tensors: list) -> list[CheckpointFile]:
    """A checkpoint layout the vector rebuilds on its own: a safetensors file of its one fully set tensor (its
    values alone, FORMAT.md §12), and a text file."""
    name, array, dtype, data, _ = next(t for t in tensors if t[0] == "i64_full")
    header = json.dumps({"__metadata__": {"format": "pt"}, name: {"dtype": dtype, "shape": list(array.shape),
                                                                  "data_offsets": [0, data.size]}},
                        separators=(",", ":"))
    header += " " * (-len(header) % 8)
    model = struct.pack("<Q", len(header)) + header.encode() + data.tobytes()
    config = '{"model_type": "golden", "hidden_size": 4}\n'
    return [CheckpointFile("model.safetensors", len(model), hashlib.sha256(model).hexdigest(), header=header),
            CheckpointFile("config.json", len(config.encode()), hashlib.sha256(config.encode()).hexdigest(),
                           text=config)]


def write_values_vector(name: str) -> None:
    """A delta (version 1.2): values of several dtypes, several blocks, none at all, and a checkpoint layout;
    NAME.json lists each tensor's values as dtype and hex bytes beside its set bits."""
    tensors = values_tensors()
    metadata = MaskMetadata(kind="update", criterion={"name": "exact"}, creator=CREATOR,
                            checkpoint=values_checkpoint(tensors), minor_version=MINOR)  # 1.2, as values need
    with MaskWriter(VECTORS / f"{name}.smask", metadata, overwrite=True) as writer:
        for tensor_name, array, dtype, data, config in tensors:
            writer.add(tensor_name, TensorMask.from_numpy(array), "auto", values=TensorValues(dtype, data),
                       values_config=config)
    content = {"tensors": {tensor_name: {"shape": list(array.shape), "ones_at": np.flatnonzero(array).tolist(),
                                         "values": {"dtype": dtype, "hex": data.tobytes().hex()}}
                           for tensor_name, array, dtype, data, _ in tensors},
               "checkpoint": [file.to_json() for file in metadata.checkpoint]}
    (VECTORS / f"{name}.json").write_text(json.dumps(content, indent=1) + "\n")


def diff_tensors() -> list[tuple[str, np.ndarray, str, np.ndarray, np.ndarray, dict[str, Any] | None]]:
    """(name, mask bools, dtype, value bytes, base value bytes, settings): values coded against the base."""
    rng = np.random.default_rng(21)
    weights = bits((20, 30), 0.3, 22)
    base16 = (rng.normal(0, 0.02, int(weights.sum())).astype(np.float32).view(np.uint32) >> 16).astype("<u2")
    moved = np.where(rng.random(base16.size) < 0.5, base16 + rng.integers(1, 3, base16.size),
                     base16 - rng.integers(1, 3, base16.size)).astype("<u2")  # 1-2 ulps, either way
    blocks = bits((100,), 0.5, 23)
    blocks[16:32] = False  # a block without values
    base32 = rng.normal(0, 1, int(blocks.sum())).astype("<f4")
    new32 = (base32 - rng.normal(0, 1e-3, base32.size)).astype("<f4")
    new32[:3], base32[:3] = [-0.0, np.inf, 1.0], [0.0, 3.0, -1.0]  # sign changes, an infinity
    ints = np.arange(-6, 6, dtype="<i8")
    return [
        ("f32_blocks", blocks, "F32", new32.view(np.uint8), base32.view(np.uint8), {"block_elements": 16}),
        ("bf16_weights", weights, "BF16", moved.view(np.uint8), base16.view(np.uint8), None),
        ("i64_full", np.ones((3, 4), bool), "I64", (ints * 7).view(np.uint8), ints.view(np.uint8), None),
        ("no_values", np.zeros(10, bool), "F16", np.zeros(0, np.uint8), np.zeros(0, np.uint8), None),
    ]


def write_diff_vector(name: str) -> None:
    """A delta of version 1.3: values coded against the base (FORMAT.md §12.4) in several dtypes and blocks;
    NAME.json lists each tensor's base and finetuned values at its set positions as hex."""
    tensors = diff_tensors()
    metadata = MaskMetadata(kind="update", criterion={"name": "exact"}, creator=CREATOR)
    with MaskWriter(VECTORS / f"{name}.smask", metadata, write_id=WRITE_IDS[0], overwrite=True) as writer:
        for tensor_name, array, dtype, data, base, config in tensors:
            writer.add(tensor_name, TensorMask.from_numpy(array), "auto", values=TensorValues(dtype, data, base),
                       values_config=config)
    content = {"tensors": {tensor_name: {"shape": list(array.shape), "ones_at": np.flatnonzero(array).tolist(),
                                         "values": {"dtype": dtype, "hex": data.tobytes().hex(),
                                                    "base_hex": base.tobytes().hex()}}
                           for tensor_name, array, dtype, data, base, _ in tensors}}
    (VECTORS / f"{name}.json").write_text(json.dumps(content, indent=1) + "\n")


def write_vector(name: str, tensors: list, metadata: MaskMetadata | None = None,
                 max_shard_bytes: int | None = None, minor: int = MINOR) -> None:
    metadata = metadata or MaskMetadata(kind="other", creator=CREATOR)
    metadata.minor_version = minor
    with MaskWriter(VECTORS / f"{name}.smask", metadata, max_shard_bytes=max_shard_bytes,
                    write_id=WRITE_IDS[0], overwrite=True) as writer:
        for tensor_name, array, encoding, config in tensors:
            writer.add(tensor_name, TensorMask.from_numpy(array), encoding, config)
    content = {"tensors": {tensor_name: {"shape": list(array.shape),
                                         "ones_at": np.flatnonzero(array).tolist()}
                           for tensor_name, array, _, _ in tensors}}
    (VECTORS / f"{name}.json").write_text(json.dumps(content, indent=1) + "\n")


def take_apart(path: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A vector's submask header and its payloads by name, in file order."""
    return parts(path.read_bytes())


def parts(data: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A container's submask header and its payloads by name, in file order."""
    (length,) = struct.unpack("<Q", data[:8])
    outer = json.loads(data[8:8 + length])
    header = json.loads(outer.pop("__metadata__")["submask"])
    area = data[8 + length:]
    return header, {name: area[entry["data_offsets"][0]:entry["data_offsets"][1]] for name, entry in outer.items()}


def put_together(header: dict[str, Any], payloads: dict[str, bytes], *, sign: bool = True,
                 text: Callable[[str], str] | None = None, metadata: dict[str, Any] | None = None,
                 outer: Callable[[dict[str, Any]], None] | None = None, tail: bytes = b"") -> bytes:
    """A container as the writer lays it out, from its parts; each option damages one thing: ``sign=False``
    leaves out the header checksum, ``text`` edits the header JSON text after the checksum is taken,
    ``metadata`` adds __metadata__ members, ``outer`` edits the safetensors header, ``tail`` is appended."""
    header_text = json.dumps(header, separators=(",", ":"))
    members: dict[str, Any] = {"submask": header_text}
    if sign:
        members["submask_sha256"] = hashlib.sha256(header_text.encode("utf-8")).hexdigest()
    if text:
        members["submask"] = text(header_text)
    members.update(metadata or {})
    entries: dict[str, Any] = {"__metadata__": members}
    offset = 0
    for name, payload in payloads.items():
        entries[name] = {"dtype": "U8", "shape": [len(payload)], "data_offsets": [offset, offset + len(payload)]}
        offset += len(payload)
    if outer:
        outer(entries)
    encoded = json.dumps(entries, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded + b"".join(payloads.values()) + tail


def edited(path: Path, edit: Callable[[dict[str, Any], dict[str, bytes]], None], **options: Any) -> bytes:
    """The vector at ``path`` with its header and payloads changed in place by ``edit``, re-checksummed."""
    header, payloads = take_apart(path)
    edit(header, payloads)
    return put_together(header, payloads, **options)


def repadded(data: bytes, before: bytes = b"", after: bytes = b"") -> bytes:
    """A container whose safetensors header JSON has ``before`` in front and ``after`` instead of its space
    padding (FORMAT.md 2.2: only JSON whitespace may pad it)."""
    (length,) = struct.unpack("<Q", data[:8])
    text = before + data[8:8 + length].rstrip(b" ") + after
    return struct.pack("<Q", len(text)) + text + data[8 + length:]


def header_edit(edit: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any], dict[str, bytes]], None]:
    return lambda header, payloads: edit(header)


def unchanged(header: dict[str, Any], payloads: dict[str, bytes]) -> None:
    """No edit: the damage is in the options of ``edited``."""


def renamed(old: str, new: str, *, in_header: bool = True) -> Callable[[dict[str, Any], dict[str, bytes]], None]:
    def rename(header: dict[str, Any], payloads: dict[str, bytes]) -> None:
        payloads[new] = payloads.pop(old)
        if in_header:
            header["tensors"][new] = header["tensors"].pop(old)
    return rename


def tensor_edit(name: str, **fields: Any) -> Callable[[dict[str, Any], dict[str, bytes]], None]:
    return lambda header, payloads: header["tensors"][name].update(fields)


def payload_edit(name: str, edit: Callable[[bytearray], None]) -> Callable[[dict[str, Any], dict[str, bytes]], None]:
    def change(header: dict[str, Any], payloads: dict[str, bytes]) -> None:
        payload = bytearray(payloads[name])
        edit(payload)
        payloads[name] = bytes(payload)
    return change


def nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def huge_zstd_frame(content_size: int) -> bytes:
    """A zstd frame header declaring ``content_size`` bytes (RFC 8878 §3.1.1.1: single segment, 8-byte size),
    then one raw block of one byte: small, and consistent with the size until it is decompressed."""
    return struct.pack("<IBQ", 0xFD2FB528, 0xE0, content_size) + bytes([0x09, 0, 0, 0])


def write_invalid() -> None:
    """Damaged copies of valid vectors, each with the error class a reader must raise (see invalid/README.md)."""
    zstd, rice, raw = (VECTORS / f"{name}-1.1.smask" for name in ("zstd", "rice", "raw"))
    deltas = VECTORS / "values-1.2.smask"
    rows = VECTORS / "rice-rows-1.2.smask"
    rice_1_3 = VECTORS / f"rice-1.{PAYLOAD_CRC_MINOR}.smask"
    example = "worked_example_3x8"
    # the worked example's codes (FORMAT.md 5.5): rows 0 and 1, counts 1 and 7, one listed position each
    example_codes = [(0, 0), (0, 0), (0, 1), (6, 1), (1, 2), (6, 2)]

    def example_payload(codes: list[tuple[int, int]], **damage: Any) -> Callable[[bytearray], None]:
        def replace(old: bytearray) -> None:
            old[:] = rice_rows_payload(0, 1, 0, 2, codes, **damage)
        return replace
    source = zstd.read_bytes()
    (length,) = struct.unpack("<Q", source[:8])
    dense_start = json.loads(source[8:8 + length])["dense_100x33"]["data_offsets"][0]
    flipped = bytearray(source)
    flipped[8 + length + dense_start + 20] ^= 0x04

    def flip(index: int, mask: int) -> Callable[[bytearray], None]:
        return lambda payload: payload.__setitem__(index, payload[index] ^ mask)

    def set_byte(index: int, value: int) -> Callable[[bytearray], None]:
        return lambda payload: payload.__setitem__(index, value)

    def shift(name: str, by: int) -> Callable[[dict[str, Any]], None]:
        return lambda entries: entries[name].update(data_offsets=[o + by for o in entries[name]["data_offsets"]])

    second_frame = zstandard.ZstdCompressor(write_content_size=True).compress(b"\0")
    cases: dict[str, tuple[bytes, str, str]] = {
        # the container and the checks of FORMAT.md §2, in the order §2.2 gives
        "truncated.smask": (source[: len(source) - 5], "FormatError", "file cut 5 bytes short"),
        "header_too_long.smask": (struct.pack("<Q", len(source)) + source[8:], "FormatError",
                                  "header length larger than the file"),
        "header_over_cap.smask": (struct.pack("<Q", MAX_HEADER_BYTES + 1) + source[8:], "FormatError",
                                  "header length above the 100,000,000-byte cap"),
        "metadata_not_string.smask": (edited(zstd, unchanged, metadata={"note": 5}),
                                      "FormatError", "a `__metadata__` value that is not a string"),
        "major_version_2.smask": (edited(zstd, header_edit(lambda h: h.update(version="2.0")), sign=False),
                                  "VersionError", "a newer major version, without a checksum: version comes first"),
        "version_newline.smask": (edited(zstd, header_edit(lambda h: h.update(version="1.1\n"))), "FormatError",
                                  "version `1.1\\n` (a trailing newline)"),
        "checksum_missing.smask": (edited(zstd, unchanged, sign=False), "HeaderChecksumError",
                                   "a 1.1 header without `submask_sha256`"),
        "checksum_wrong.smask": (edited(zstd, unchanged,
                                        text=lambda t: t.replace('"kind":"other"', '"kind":"update"')),
                                 "HeaderChecksumError", "header edited after its checksum was taken"),
        "checksum_wrong_1.0.smask": (edited(VECTORS / "zstd.smask", unchanged,
                                            metadata={"submask_sha256": "0" * 64}),
                                     "HeaderChecksumError", "a 1.0 file whose (optional) checksum is wrong"),
        "must_understand.smask": (edited(zstd, header_edit(lambda h: h.update(
            extensions=[{"name": "x-block-index", "must_understand": True}]))), "VersionError",
            "an unknown extension marked must_understand"),
        # strict JSON and the limits of §8
        "duplicate_key.smask": (edited(zstd, unchanged,
                                       text=lambda t: t.replace('"kind":"other"', '"kind":"other","kind":"other"'),
                                       sign=False), "FormatError", "a key twice in one object"),
        "nan.smask": (edited(zstd, header_edit(lambda h: h.update(user={"loss": float("nan")}))), "FormatError",
                      "NaN in a user field: not JSON"),
        "deep_nesting.smask": (edited(zstd, header_edit(lambda h: h.update(user={"x": nested(100)}))),
                               "FormatError", "a user field nested 100 levels deep (limit 64)"),
        "nesting_65.smask": (edited(zstd, header_edit(lambda h: h.update(user={"x": nested(63)}))),
                             "FormatError", "an array at depth 65, the header's object counting as depth 1 (1.2.1)"),
        "header_nul_padding.smask": (repadded(edited(zstd, unchanged), after=b"\0" * 8), "FormatError",
                                     "the safetensors header padded with NUL bytes, not JSON whitespace (1.2.1)"),
        "header_bom.smask": (repadded(edited(zstd, unchanged), before=b"\xef\xbb\xbf", after=b" " * 5),
                             "FormatError", "a UTF-8 byte-order mark before the safetensors header (1.2.1)"),
        "shard_number_over_count.smask": (edited(zstd, header_edit(lambda h: h.update(
            shard={"write_id": "ab" * 16, "number": 3, "count": 2}))), "FormatError",
            "a lone file whose shard record says number 3 of 2 (1.2.1)"),
        "huge_integer.smask": (edited(zstd, header_edit(lambda h: h.update(user={"x": "HUGE"})),
                                      text=lambda t: t.replace('"HUGE"', "9" * 5000), sign=False),
                               "FormatError", "an integer of 5,000 digits"),
        "float_count.smask": (edited(zstd, tensor_edit("odd_61", bits=61.0)), "FormatError",
                              "bits written 61.0: not an integer"),
        "too_many_dims.smask": (edited(zstd, tensor_edit("odd_61", shape=[61] + [1] * 64)), "FormatError",
                                "65 dimensions (limit 64)"),
        "bits_over_2_53.smask": (edited(zstd, tensor_edit("odd_61", shape=[2**53 + 1], bits=2**53 + 1)),
                                 "FormatError", "more than 2^53 bits"),
        "bits_not_shape.smask": (edited(zstd, tensor_edit("odd_61", bits=62)), "FormatError",
                                 "bits differs from the product of shape"),
        "fingerprint_malformed.smask": (
            edited(zstd, header_edit(lambda h: h.update(model={"fingerprint": "md5:abc"}))), "FormatError",
            "`model.fingerprint` is `md5:abc`, not `sha256:` and 64 hex digits"),
        "tensor_named_empty.smask": (edited(zstd, renamed("odd_61", "")), "FormatError",
                                     "a tensor named `\"\"` (safetensors reserves it)"),
        # layout (§2)
        "layout_gap.smask": (edited(zstd, unchanged, outer=shift("odd_61", 1), tail=b"\0"),
                             "FormatError", "a one-byte gap before payload odd_61"),
        "layout_overlap.smask": (edited(zstd, unchanged, outer=shift("odd_61", -1)),
                                 "FormatError", "payload odd_61 overlaps the one before it"),
        "layout_trailing_bytes.smask": (edited(zstd, unchanged, tail=b"\0" * 8), "FormatError",
                                        "8 bytes after the last payload"),
        "layout_not_u8.smask": (edited(zstd, unchanged,
                                       outer=lambda e: e["odd_61"].update(dtype="I8")), "FormatError",
                                "a payload of dtype I8"),
        "layout_names_differ.smask": (edited(zstd, renamed("odd_61", "odd_62", in_header=False)),
                                      "FormatError", "payload odd_62 but header tensor odd_61"),
        "layout_empty_span_inside.smask": (edited(raw, unchanged,
                                                  outer=lambda e: e["empty"].update(data_offsets=[5, 5])),
                                           "FormatError", "the zero-length payload 'empty' placed inside another"),
        # encodings (§4.3, §5)
        "unknown_encoding.smask": (edited(zstd, tensor_edit("odd_61", encoding={"id": "x-ans"})),
                                   "UnknownEncodingError", "tensor odd_61 uses encoding x-ans"),
        "bad_crc.smask": (edited(zstd, tensor_edit("odd_61", crc32="00000000")), "ChecksumError",
                          "tensor odd_61 has a wrong crc32"),
        "flipped_payload_bit.smask": (bytes(flipped), "ChecksumError",
                                      "one payload bit flipped in tensor dense_100x33"),
        "claims_10e12_bits.smask": (
            edited(zstd, tensor_edit("sparse_1000", shape=[1000000, 1000000], bits=10**12)), "FormatError",
            "tensor sparse_1000 claims 10^12 bits; its zstd frame says 125 bytes"),
        "zstd_two_frames.smask": (edited(zstd, payload_edit("odd_61", lambda p: p.extend(second_frame))),
                                  "FormatError", "a second zstd frame after the first"),
        "zstd_skippable_frame_first.smask": (edited(zstd, payload_edit("odd_61", lambda p: p.__setitem__(
            slice(0, 0), struct.pack("<II", 0x184D2A50, 4) + b"skip"))), "FormatError",
            "a skippable zstd frame before the data frame (1.2.1)"),
        "zstd_exceeds_memory.smask": (edited(zstd, lambda h, p: (
            h["tensors"]["odd_61"].update(shape=[2**53], bits=2**53), p.__setitem__("odd_61", huge_zstd_frame(2**50)))),
            "LimitError", "a frame consistent with 2^53 bits (1 PiB): refused before allocating"),
        "raw_short.smask": (edited(raw, payload_edit("odd_3x5x7", lambda p: p.pop())), "FormatError",
                            "raw payload one byte shorter than ceil(bits/8)"),
        "raw_pad_bits_set.smask": (edited(raw, payload_edit("odd_3x5x7", flip(13, 0x01))), "ChecksumError",
                                   "a pad bit set after the 105 bits of odd_3x5x7"),
        "payload_crc_mismatch.smask": (edited(rice_1_3, tensor_edit("blocks_of_128", payload_crc32="00000000")),
                                       "ChecksumError", "a 1.3 payload CRC-32 that does not match the payload"),
        "payload_crc_not_hex.smask": (edited(rice_1_3, tensor_edit("blocks_of_128", payload_crc32="CBF43926")),
                                      "FormatError", "a 1.3 payload CRC-32 that is not 8 lowercase hex digits"),
        "rice_value_2.smask": (edited(rice, payload_edit("blocks_of_128", set_byte(0, 2))), "FormatError",
                               "a block header with value 2"),
        "rice_k_32.smask": (edited(rice, payload_edit("blocks_of_128", set_byte(1, 32))), "FormatError",
                            "a block header with k = 32"),
        "rice_reserved.smask": (edited(rice, payload_edit("blocks_of_128", set_byte(2, 1))), "FormatError",
                                "a block header with a non-zero reserved field"),
        "rice_count_over_nbits.smask": (edited(rice, payload_edit("blocks_of_128", set_byte(4, 129))), "FormatError",
                                        "a block listing 129 positions of its 128 bits"),
        "rice_unary_count.smask": (edited(rice, payload_edit("blocks_of_128", set_byte(12, 0))), "FormatError",
                                   "a unary part holding fewer 1 bits than count"),
        "rice_trailing_bytes.smask": (edited(rice, payload_edit("blocks_of_128", lambda p: p.extend(b"\0"))),
                                      "FormatError", "a byte after the last block"),
        "rice_too_short.smask": (edited(rice, tensor_edit("scalar", shape=[10**12], bits=10**12)),
                                 "FormatError", "10^12 bits claimed: 238,419 block headers expected, 1 present"),
        **invalid_values(deltas),
        # rice-rows (§5.5): the header's fields, then payloads written from the spec with one damage each
        "rice_rows_count_mode_8.smask": (edited(rows, payload_edit(example, set_byte(0, 8))), "FormatError",
                                         "count_mode 8"),
        "rice_rows_k_32.smask": (edited(rows, payload_edit(example, set_byte(1, 32))), "FormatError",
                                 "count_k 32"),
        "rice_rows_reserved.smask": (edited(rows, payload_edit(example, set_byte(3, 1))), "FormatError",
                                     "a non-zero reserved byte"),
        "rice_rows_table_over_rows.smask": (edited(rows, payload_edit(example, set_byte(4, 4))), "FormatError",
                                            "a table of 4 rows in a tensor of 3"),
        "rice_rows_all_rows_short_table.smask": (edited(rows, payload_edit(example, set_byte(0, 2))),
                                                 "FormatError", "count mode 2 (every row) with a table of 2 rows of 3"),
        "rice_rows_table_beyond_stream.smask": (edited(rows, lambda h, p: (
            h["tensors"][example].update(shape=[10**12, 8], bits=8 * 10**12),
            p.__setitem__(example, rice_rows_payload(0, 1, 0, 10**11, example_codes)))), "FormatError",
            "a table of 10^11 rows (of 10^12 claimed) in a 2-byte unary stream: refused before allocating it"),
        "rice_rows_unary_past_payload.smask": (edited(rows, payload_edit(example, set_byte(12, 200))),
                                               "FormatError", "unary_bytes past the end of the payload"),
        "rice_rows_bad_row_bits.smask": (
            edited(rows, tensor_edit(example, encoding={"id": "rice-rows", "row_bits": 0})), "FormatError",
            "row_bits 0"),
        "rice_rows_row_past_last.smask": (edited(rows, payload_edit(example, example_payload(
            [(0, 0), (5, 0), *example_codes[2:]]))), "FormatError", "a row code naming row 6 of 3"),
        "rice_rows_count_over_row.smask": (edited(rows, payload_edit(example, example_payload(
            [(0, 0), (0, 0), (0, 1), (8, 1), (1, 2), (6, 2)]))), "FormatError", "a count of 9 in a row of 8"),
        "rice_rows_position_past_row.smask": (edited(rows, payload_edit(example, example_payload(
            [*example_codes[:4], (8, 2), (6, 2)]))), "FormatError", "a position at 8 in a row of 8"),
        "rice_rows_extra_code.smask": (edited(rows, payload_edit(example, example_payload(
            [*example_codes, (0, 0)]))), "FormatError", "one code more than the rows need"),
        "rice_rows_unary_zero_byte.smask": (edited(rows, payload_edit(example, example_payload(
            example_codes, unary_extra=b"\0"))), "FormatError", "a zero byte after the unary stream's last code"),
        "rice_rows_remainder_pad_bit.smask": (edited(rows, payload_edit(example, example_payload(
            example_codes, remainder_extra=1))), "FormatError", "a pad bit set after the remainder stream"),
        "rice_rows_trailing_byte.smask": (edited(rows, payload_edit(example, lambda p: p.extend(b"\0"))),
                                          "FormatError", "a byte after the remainder stream"),
        "rice_rows_in_1_1.smask": (edited(rows, header_edit(lambda h: h.update(version="1.1"))), "FormatError",
                                   "a rice-rows tensor in a file of version 1.1 (1.2.1)"),
        "rice_rows_exceeds_memory.smask": (edited(rows, tensor_edit(example, shape=[2**50, 8], bits=2**53)),
                                           "LimitError", ("a valid payload for 2^53 bits (its last rows empty): "
                                                          "refused before allocating 1 PiB")),
    }
    invalid = VECTORS / "invalid"
    invalid.mkdir(exist_ok=True)
    for stale in invalid.glob("*.smask"):
        stale.unlink()
    for file_name, (data, _, _) in cases.items():
        (invalid / file_name).write_bytes(data)
    expected = {file_name: {"error": error, "why": why} for file_name, (_, error, why) in cases.items()}
    (invalid / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    rows = [f"| `{file_name}` | `{error}` | {why} |" for file_name, (_, error, why) in cases.items()]
    (invalid / "README.md").write_text(INVALID_README + "\n".join(rows) + "\n")


def invalid_values(deltas: Path) -> dict[str, tuple[bytes, str, str]]:
    """Damaged copies of the delta vector (FORMAT.md §12)."""
    def values_edit(name: str, **fields: Any) -> Callable[[dict[str, Any], dict[str, bytes]], None]:
        return lambda header, payloads: header["tensors"][name]["values"].update(fields)

    def declared(**fields: Any) -> Callable[[dict[str, Any], dict[str, bytes]], None]:
        """The header with ``fields`` changed and no checkpoint layout, so that the tensors' values are refused."""
        return header_edit(lambda h: (h.update(fields), h.pop("checkpoint")))

    def other_zstd_size(header: dict[str, Any], payloads: dict[str, bytes]) -> None:
        """bf16_weights' zstd plane (its second record) replaced by a frame of one byte more than its block."""
        payload = payloads["~values/bf16_weights"]
        count = header["tensors"]["bf16_weights"]["ones"]
        stored = 5 + count
        assert payload[0] == 0 and payload[stored] == 1  # stored low bytes, then the zstd exponent plane
        frame = zstandard.ZstdCompressor(write_content_size=True).compress(b"\x3c" * (count + 1))
        payloads["~values/bf16_weights"] = payload[:stored] + b"\x01" + struct.pack("<I", len(frame)) + frame

    def plane_length(header: dict[str, Any], payloads: dict[str, bytes]) -> None:
        payload = bytearray(payloads["~values/f32_blocks"])
        payload[1:5] = struct.pack("<I", len(payload))  # the first record claims the whole payload and more
        payloads["~values/f32_blocks"] = bytes(payload)

    def same_entry(header: dict[str, Any], payloads: dict[str, bytes]) -> None:
        header["tensors"]["bool_flags"]["values"]["entry"] = "~values/i64_full"
        payloads.pop("~values/bool_flags")

    cases: dict[str, tuple[Callable[[dict[str, Any], dict[str, bytes]], None], str, str]] = {
        "values_bad_crc.smask": (values_edit("f32_blocks", crc32="00000000"), "ChecksumError",
                                 "values of f32_blocks with a wrong crc32"),
        "values_plane_beyond_payload.smask": (plane_length, "FormatError",
                                              "a plane record of f32_blocks longer than the payload"),
        "values_zstd_plane_size.smask": (other_zstd_size, "FormatError",
                                         "a zstd plane of bf16_weights declaring one byte more than its block"),
        "values_size_not_ones.smask": (values_edit("i64_full", size=95), "FormatError",
                                       "values size 95, not ones x 8 = 96"),
        "values_entry_missing.smask": (values_edit("i64_full", entry="~values/elsewhere"), "FormatError",
                                       "values entry named in the header but absent from the payloads"),
        "values_entry_twice.smask": (same_entry, "FormatError",
                                     "two tensors' values name the same entry"),
        "values_entry_is_tensor.smask": (values_edit("i64_full", entry="bool_flags"), "FormatError",
                                         "a values entry named like a tensor"),
        "values_unknown_encoding.smask": (values_edit("f32_blocks", encoding={"id": "x-fp-delta"}),
                                          "UnknownEncodingError", "values of f32_blocks in encoding x-fp-delta"),
        "values_unknown_dtype.smask": (values_edit("f32_blocks", dtype="F4_E2M1"), "UnknownEncodingError",
                                       "values of f32_blocks in dtype F4_E2M1"),
        "values_not_declared.smask": (declared(extensions=[]), "FormatError",
                                      "values without the `values` extension declared"),
        "values_in_1_1.smask": (declared(version="1.1"), "FormatError",
                                "values in a file of version 1.1"),
        "checkpoint_name_with_slash.smask": (header_edit(lambda h: h["checkpoint"]["files"][1].update(
            name="../config.json")), "FormatError", "a checkpoint file named `../config.json`"),
        "checkpoint_name_with_nul.smask": (header_edit(lambda h: h["checkpoint"]["files"][1].update(
            name="config\0.json")), "FormatError", "a checkpoint file name with a NUL byte (1.2.1)"),
        "values_must_understand_false.smask": (header_edit(lambda h: h.update(
            extensions=[{"name": "values", "must_understand": False}])), "FormatError",
            "values declared by a `values` extension with must_understand false (1.2.1)"),
    }
    cases.update(invalid_diffs())
    return {file_name: (edited(VECTORS / "diff-values-1.3.smask" if file_name.startswith("diff_") else deltas, edit),
                        error, why) for file_name, (edit, error, why) in cases.items()}


def invalid_diffs() -> dict[str, tuple[Callable[[dict[str, Any], dict[str, bytes]], None], str, str]]:
    """Damaged copies of the 1.3 delta vector (FORMAT.md §12.4), each in its first tensor: without the base, a
    reader checks a tensor's differences, then refuses to go on (so later tensors are never reached)."""
    def payload(name: str, change: Callable[[bytearray], None]) -> Callable[[dict[str, Any], dict[str, bytes]], None]:
        def edit(header: dict[str, Any], payloads: dict[str, bytes]) -> None:
            data = bytearray(payloads[f"~values/{name}"])
            change(data)
            payloads[f"~values/{name}"] = bytes(data)
        return edit

    def undeclared(header: dict[str, Any], payloads: dict[str, bytes]) -> None:
        header["extensions"] = [ext for ext in header["extensions"] if ext["name"] != "diff-values"]

    def count(value: int) -> Callable[[bytearray], None]:
        return lambda data: data.__setitem__(slice(0, 4), struct.pack("<I", value))

    return {
        "diff_not_declared.smask": (undeclared, "FormatError",
                                    "diff-planes values without the `diff-values` extension declared"),
        "diff_in_1_2.smask": (header_edit(lambda h: h.update(version="1.2")), "FormatError",
                              "diff-planes values in a file of version 1.2"),
        "diff_bad_crc.smask": (lambda h, p: h["tensors"]["f32_blocks"]["values"].update(crc32="00000000"),
                               "ChecksumError", "differences of f32_blocks with a wrong crc32"),
        "diff_block_over_elements.smask": (payload("f32_blocks", count(17)), "FormatError",
                                           "a block of f32_blocks claiming 17 values, more than block_elements 16"),
        "diff_trailing_bytes.smask": (payload("f32_blocks", lambda data: data.extend(b"\0")), "FormatError",
                                      "a byte after the last block of f32_blocks"),
        "diff_block_elements_odd.smask": (lambda h, p: h["tensors"]["f32_blocks"]["values"].update(
            encoding={"id": "diff-planes", "block_elements": 12}), "FormatError",
            "block_elements 12, not a multiple of 8"),
    }


INVALID_README = """# Invalid vectors

Files a reader of [FORMAT.md](../../../FORMAT.md) MUST reject (section 10), written by `tools/make_vectors.py`
as damaged copies of the 1.1 vectors `zstd-1.1.smask`, `rice-1.1.smask` and `raw-1.1.smask` (and one of the 1.0
`zstd.smask`), of the 1.2 vector `rice-rows-1.2.smask` (the `rice_rows_*` cases), and of the 1.2 delta
`values-1.2.smask` (the `values_*` and `checkpoint_*` cases). Each damages one thing; every other part of the
file is valid (header edits are re-checksummed unless the case is about the checksum), so the check named is
the one that must fire, in the order of FORMAT.md section 2.2. [`expected.json`](expected.json) lists the same
cases for programs: the error is the class submask raises (FORMAT.md section 11); other readers need only
reject the file.

| file | error | what is wrong |
|---|---|---|
"""


def sharded_tensors(seed: int = 20) -> list[tuple[str, np.ndarray, str, dict[str, Any] | None]]:
    return [(f"layers.{i}.weight", bits((12, 10), 0.5, seed + i), "raw", None) for i in range(3)]


def remove_sharded(target: Path) -> None:
    """Delete a sharded mask written at ``target``: its index and the shards it names."""
    index = target.with_name(target.name + ".index.json")
    if index.exists():
        for shard in set(json.loads(index.read_text())["weight_map"].values()):
            (target.parent / shard).unlink(missing_ok=True)
        index.unlink()


# --- invalid sharded masks (FORMAT.md section 6): one folder per case, the index is the file to open ---

def with_submask_header(data: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    """A .smask file's bytes with its submask header changed by ``edit`` (payloads kept), re-checksummed so
    that the shard rule, not the header checksum, is what a reader trips on."""
    header, payloads = parts(data)
    edit(header)
    return put_together(header, payloads)


def write_invalid_shards() -> None:
    """Sharded masks whose shards do not belong together, added to invalid/expected.json."""
    invalid = VECTORS / "invalid"
    scratch = invalid / "scratch"
    for label, write_id, seed in (("m", WRITE_IDS[0], 20), ("again", WRITE_IDS[1], 30), ("other", WRITE_IDS[1], 40)):
        target = scratch / label / "m.smask" if label != "other" else scratch / label / "other.smask"
        with MaskWriter(target, MaskMetadata(kind="other", creator=CREATOR, minor_version=MINOR), max_shard_bytes=32,
                        write_id=write_id) as writer:
            for tensor_name, array, encoding, config in sharded_tensors(seed):
                writer.add(tensor_name, TensorMask.from_numpy(array), encoding, config)
    index = json.loads((scratch / "m" / "m.smask.index.json").read_text())
    first, second = dict.fromkeys(index["weight_map"].values())
    shards = {name: (scratch / "m" / name).read_bytes() for name in (first, second)}
    other_first = sorted(p for p in (scratch / "other").glob("other-*.smask"))[0].read_bytes()
    again_second = sorted(p for p in (scratch / "again").glob("m-*.smask"))[1].read_bytes()

    def renumbered(**record: Any) -> bytes:
        return with_submask_header(shards[second], lambda h: h["shard"].update(record))

    cases: dict[str, tuple[dict[str, bytes], str, str]] = {
        "mixed_writes": ({second: again_second}, "FormatError",
                         "shard 2 comes from another write of the same mask (an interrupted rewrite)"),
        "other_mask_shard": ({first: other_first}, "FormatError",
                             "shard 1 is the first shard of another mask with the same tensor names"),
        "wrong_count": ({second: renumbered(count=3)}, "FormatError", "shard 2 says it is one of 3; the index has 2"),
        "duplicate_number": ({second: renumbered(number=1)}, "FormatError", "both shards say they are number 1"),
        "no_shard_record": ({second: with_submask_header(shards[second], lambda h: h.pop("shard"))}, "FormatError",
                            "the index names a write id, shard 2 has no shard record"),
    }
    expected = json.loads((invalid / "expected.json").read_text())
    for case, (replaced, error, why) in cases.items():
        folder = invalid / case
        folder.mkdir(exist_ok=True)
        for name, data in {**shards, **replaced}.items():
            (folder / name).write_bytes(data)
        (folder / "m.smask.index.json").write_text(json.dumps(index, indent=2) + "\n")
        expected[f"{case}/m.smask.index.json"] = {"error": error, "why": why}
    (invalid / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    rows = [f"| `{case}/m.smask.index.json` | `{error}` | {why} |" for case, (_, error, why) in cases.items()]
    with open(invalid / "README.md", "a", encoding="utf-8") as readme:
        readme.write("\nSharded masks (FORMAT.md section 6), one folder per case; open the index:\n\n"
                     "| file | error | what is wrong |\n|---|---|---|\n" + "\n".join(rows) + "\n")
    for folder in scratch.iterdir():
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
    scratch.rmdir()


def main() -> None:
    VECTORS.mkdir(parents=True, exist_ok=True)
    for minor, suffix in ((0, ""), (MINOR, f"-1.{MINOR}")):  # the 1.0 vectors stay, byte for byte
        write_vector(f"raw{suffix}", raw_shapes(), minor=minor)
        write_vector(f"zstd{suffix}", zstd_tensors(), minor=minor)
        write_vector(f"rice{suffix}", rice_tensors(), minor=minor)
        write_vector(f"rich_metadata{suffix}", rich_tensors(), rich_metadata(), minor=minor)
    write_vector(f"rice-rows-1.{ROWS_MINOR}", rice_rows_tensors(), minor=ROWS_MINOR)  # new in 1.2: no older copy
    write_vector(f"rice-1.{PAYLOAD_CRC_MINOR}", rice_tensors(), minor=PAYLOAD_CRC_MINOR)  # payload CRC-32s (§4.5)
    remove_sharded(VECTORS / "sharded.smask")  # a new write never reuses names: clear the old one first
    write_vector("sharded", sharded_tensors(), max_shard_bytes=32)
    write_values_vector("values-1.2")
    write_diff_vector("diff-values-1.3")
    write_invalid()
    write_invalid_shards()
    print(f"wrote vectors to {VECTORS}")


if __name__ == "__main__":
    main()
