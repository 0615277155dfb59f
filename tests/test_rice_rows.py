"""The "rice-rows" encoding (FORMAT.md 5.5): round trips by both decoders and every capability, sizes against
the per-row bound, the version it gives a file, and rejection of bad payloads before any allocation."""

from __future__ import annotations

import contextlib
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import submask
from submask.accel import numba_disabled
from submask.codecs import RiceRowsCodec, binary_entropy_bits, encode_auto, get_codec
from submask.codecs.base import Run
from submask.codecs.rows_format import HEADER, row_parameter
from submask.errors import FormatError, LimitError
from submask.packed import pack, packed_nbytes, unpack


def row_structured(rows: int, cols: int, density: float, seed: int) -> np.ndarray:
    """Rows of log-normally varying density, some empty, one full and one all but full when there is room."""
    rng = np.random.default_rng(seed)
    row_density = np.clip(density * np.exp(rng.normal(0.0, 1.5, (rows, 1)) - 1.125), 0.0, 1.0)
    row_density[rng.random((rows, 1)) < 0.25] = 0.0
    bools = rng.random((rows, cols)) < row_density
    if rows >= 3:
        bools[1] = True
        bools[2] = True
        bools[2, cols // 2] = False
    return bools


def row_bound(bools: np.ndarray) -> float:
    """The per-row bound: the sum of the rows' iid entropy bounds, in bits."""
    return sum(binary_entropy_bits(int(c), bools.shape[-1]) for c in bools.reshape(-1, bools.shape[-1]).sum(axis=1))


def two_part_bound(bools: np.ndarray) -> float:
    """Bits to name each row's set bits among the subsets of its count, plus the counts' own entropy (their
    histogram's): what any code must spend once it also says how many bits each row holds."""
    counts = bools.reshape(-1, bools.shape[-1]).sum(axis=1)
    n = bools.shape[-1]
    subsets = sum(math.lgamma(n + 1) - math.lgamma(c + 1) - math.lgamma(n - c + 1) for c in counts) / math.log(2)
    frequency = np.unique(counts, return_counts=True)[1] / counts.size
    return subsets + counts.size * float(-(frequency * np.log2(frequency)).sum())


def every_decoding(payload: bytes, config: dict, numel: int) -> dict[str, np.ndarray]:
    """The packed bits from ``decode``, ``decode_chunks`` and ``positions``, as packed bits each."""
    codec = get_codec("rice-rows").from_config(config)
    pieces = [np.full(p.nbytes, p.byte, np.uint8) if isinstance(p, Run) else p.copy()
              for p in codec.decode_chunks(payload, numel)]
    bools = np.zeros(numel, dtype=np.bool_)
    bools[codec.positions(payload, numel)] = True
    return {"decode": codec.decode(payload, numel),
            "chunks": np.concatenate(pieces) if pieces else np.zeros(0, np.uint8),
            "positions": pack(bools)}


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(0, 30), cols=st.integers(1, 300), density=st.sampled_from([0.0, 0.01, 0.1, 0.4, 0.9, 1.0]),
       seed=st.integers(0, 2**16), one_dimensional=st.booleans())
def test_round_trips_by_both_decoders_and_every_capability(rows: int, cols: int, density: float, seed: int,
                                                           one_dimensional: bool) -> None:
    bools = row_structured(rows, cols, density, seed)
    if one_dimensional:
        bools = bools.ravel()
    packed, numel = pack(bools.ravel()), bools.size
    codec = RiceRowsCodec().for_shape(bools.shape) if not one_dimensional else RiceRowsCodec(cols)
    payload, config = codec.encode(packed, numel)
    other = pack(np.random.default_rng(seed).random(numel) < 0.5)
    expected_count = (int((bools.ravel() & unpack(other, numel)).sum()), int(bools.sum()))
    compiled = every_decoding(payload, config, numel)
    counted = get_codec("rice-rows").from_config(config).intersection_count(payload, numel, other)
    assert counted in (None, expected_count)
    with numba_disabled():
        assert codec.encode(packed, numel)[0] == payload
        fallback = every_decoding(payload, config, numel)
        assert get_codec("rice-rows").from_config(config).intersection_count(payload, numel, other) is None
    for decoded in [*compiled.values(), *fallback.values()]:
        np.testing.assert_array_equal(decoded, packed)


@pytest.mark.parametrize("shape", [(0,), (0, 384), (384, 0), (1,), (5, 1), (7, 64), (3, 2, 100)])
@pytest.mark.parametrize("fill", [False, True])
def test_edge_shapes_and_uniform_tensors_round_trip(shape: tuple[int, ...], fill: bool) -> None:
    bools = np.full(shape, fill)
    packed, numel = pack(bools.ravel()), bools.size
    payload, config = RiceRowsCodec().for_shape(shape).encode(packed, numel)
    for decoded in every_decoding(payload, config, numel).values():
        np.testing.assert_array_equal(decoded, packed)
    if not fill or not numel:
        assert len(payload) == HEADER.size, "nothing set: the header alone"


def test_rows_are_the_last_dimension_and_1d_tensors_use_blocks() -> None:
    assert RiceRowsCodec().for_shape((1536, 384)).row_bits == 384
    assert RiceRowsCodec().for_shape((2, 3, 1536)).row_bits == 1536
    assert RiceRowsCodec().for_shape((384,)).row_bits == 4096
    assert RiceRowsCodec().for_shape((64, 3)).row_bits == 4096  # rows too short to pay for a count each
    assert RiceRowsCodec().for_shape((2, 1 << 21)).row_bits == 4096


def test_row_parameter_follows_the_spec_formula() -> None:
    listed = np.array([0, 1, 19, 77, 192, 384])
    expected = [min(k for k in range(40) if 2048 * m << k >= 493 * (2 * 384 - m)) if m else 0 for m in listed]
    assert row_parameter(listed, np.full(6, 384)).tolist() == expected == [0, 8, 4, 2, 0, 0]


@pytest.mark.parametrize("cols", [384, 1536])
@pytest.mark.parametrize("density", [0.01, 0.05, 0.2])
def test_row_structured_masks_code_near_their_per_row_bound(cols: int, density: float) -> None:
    bools = row_structured((1 << 21) // cols, cols, density, seed=3)
    packed = pack(bools.ravel())
    encoding, payload, _ = encode_auto(packed, bools.size, int(bools.sum()), bools.shape)
    assert encoding == "rice-rows"
    rice = len(get_codec("rice").encode(packed, bools.size)[0])
    assert 8 * len(payload) <= 1.06 * two_part_bound(bools)
    assert 8 * len(payload) <= (1.16 if cols == 384 else 1.07) * row_bound(bools)  # a row's count costs bits
    assert len(payload) < 0.85 * rice, "rows beat one Rice parameter per block"


def test_a_file_using_rice_rows_is_version_1_2_and_others_stay_1_1(tmp_path) -> None:
    rows = row_structured(512, 384, 0.05, seed=1)
    iid = np.random.default_rng(2).random(4096) < 0.3
    old = {"minor_version": 1}  # as a rewrite of a 1.1 file (new files are 1.3: payload CRC-32s)
    submask.save(submask.Mask.from_numpy({"w": rows, "b": iid}, **old), tmp_path / "rows.smask")
    submask.save(submask.Mask.from_numpy({"b": iid}, **old), tmp_path / "iid.smask")
    submask.save(submask.Mask.from_numpy({"w": rows}), tmp_path / "new.smask")
    with submask.open(tmp_path / "rows.smask") as mask_file:
        assert mask_file.entries["w"].encoding == "rice-rows"
        assert mask_file.metadata.minor_version == 2
        np.testing.assert_array_equal(mask_file["w"].to_numpy(), rows)
    with submask.open(tmp_path / "iid.smask") as mask_file:
        assert mask_file.metadata.minor_version == 1
    with submask.open(tmp_path / "new.smask") as mask_file:
        assert mask_file.metadata.minor_version == 3 and mask_file.entries["w"].payload_crc32 is not None


def test_settings_are_validated() -> None:
    for bad in (0, 12.0, (1 << 20) + 1, "384", None):
        with pytest.raises(FormatError, match="row_bits"):
            get_codec("rice-rows").from_config({"row_bits": bad})
    with pytest.raises(FormatError, match="unknown rice-rows settings"):
        get_codec("rice-rows").from_config({"row_bits": 384, "k": 3})


def sample() -> tuple[bytes, dict, int]:
    bools = row_structured(16, 100, 0.2, seed=4)
    payload, config = RiceRowsCodec().for_shape(bools.shape).encode(pack(bools.ravel()), bools.size)
    return payload, config, bools.size


def edited(payload: bytes, offset: int, fmt: str, value: int) -> bytes:
    data = bytearray(payload)
    struct.pack_into(fmt, data, offset, value)
    return bytes(data)


def rejections(payload: bytes, config: dict, numel: int) -> list[str]:
    """The FormatError messages of both decoders and of ``decode_chunks`` (all must raise)."""
    codec = get_codec("rice-rows").from_config(config)
    messages = []
    for context in (lambda: np.errstate(), numba_disabled):
        with context():
            for attempt in (lambda: codec.decode(payload, numel), lambda: codec.positions(payload, numel),
                            lambda: list(codec.decode_chunks(payload, numel))):
                with pytest.raises(FormatError) as error:
                    attempt()
                messages.append(str(error.value))
    return messages


@pytest.mark.parametrize(("offset", "fmt", "value", "message"), [
    (0, "<B", 8, "count mode 8"),
    (1, "<B", 32, "count k 32"),
    (2, "<B", 32, "row k 32"),
    (3, "<B", 1, "reserved 1"),
    (4, "<Q", 17, "claims 17 rows in its table of 16"),
    (12, "<Q", 10**9, "ends inside its unary stream"),
])
def test_bad_headers_are_rejected(offset: int, fmt: str, value: int, message: str) -> None:
    payload, config, numel = sample()
    for text in rejections(edited(payload, offset, fmt, value), config, numel):
        assert message in text


def test_damaged_streams_are_rejected_by_both_decoders_alike() -> None:
    payload, config, numel = sample()
    unary_nbytes = HEADER.unpack_from(payload)[5]
    cases = {
        "truncated": payload[:-1],
        "trailing byte": payload + b"\0",
        "unary stream ending in a zero byte": edited(payload, HEADER.size + unary_nbytes - 1, "<B", 0),
        "remainder pad bit": payload[:-1] + bytes([payload[-1] | 1]) if payload[-1] & 1 == 0 else None,
        "a count above the row length": None,
    }
    data = bytearray(payload)
    data[HEADER.size] = 0xFF  # eight more terminators at the start: the table and the rows shift
    cases["a count above the row length"] = bytes(data)
    for name, damaged in cases.items():
        if damaged is None:
            continue
        messages = rejections(damaged, config, numel)
        assert len(set(messages)) == 1, f"{name}: the decoders disagree: {set(messages)}"


def test_every_truncation_is_rejected() -> None:
    payload, config, numel = sample()
    codec = get_codec("rice-rows").from_config(config)
    for cut in range(len(payload)):
        with pytest.raises(FormatError):
            codec.decode(payload[:cut], numel)


def test_a_row_count_claim_beyond_the_payload_allocates_nothing() -> None:
    payload, config, _ = sample()
    numel = 10**15  # rows enough for the claim below
    claims = edited(payload, 4, "<Q", 10**11)  # 10^11 non-empty rows from a few hundred unary bytes
    with pytest.raises(FormatError, match="cannot code 100000000000 rows"):
        get_codec("rice-rows").from_config(config).decode(claims, numel)


def test_a_valid_payload_claiming_huge_sizes_is_refused_or_streamed_in_bounded_work() -> None:
    payload, config, _ = sample()
    huge = 10**12 // 100 * 100  # the same rows, then 10^10 empty ones: a valid payload of 10^12 bits
    codec = get_codec("rice-rows").from_config(config)
    with pytest.raises(LimitError):
        codec.decode(payload, huge)
    pieces = list(codec.decode_chunks(payload, huge))
    assert sum(p.nbytes if isinstance(p, Run) else p.size for p in pieces) == packed_nbytes(huge)
    assert len(pieces) < 10, "empty rows pass as one run"


@pytest.mark.parametrize("numba", [True, False])
def test_compare_counts_rice_rows_masks_exactly(tmp_path, numba: bool) -> None:
    from submask.compare import compare

    arrays = [{"w": row_structured(300, 384, 0.05, seed), "v": ~row_structured(64, 1536, 0.05, seed + 9)}
              for seed in (1, 2)]
    for index, tensors in enumerate(arrays):
        submask.save(submask.Mask.from_numpy(tensors), tmp_path / f"{index}.smask")
        with submask.open(tmp_path / f"{index}.smask") as mask_file:
            assert {entry.encoding for entry in mask_file.entries.values()} == {"rice-rows"}
    with contextlib.nullcontext() if numba else numba_disabled():
        pair = compare([tmp_path / "0.smask", tmp_path / "1.smask"]).pair(0, 1)
    assert pair.intersection == sum(int((arrays[0][n] & arrays[1][n]).sum()) for n in ("w", "v"))


def test_auto_codes_rows_of_opposite_densities_by_rows() -> None:
    rng = np.random.default_rng(6)
    bools = rng.random((512, 1024)) < np.where(np.arange(512) % 2, 0.03, 0.97)[:, None]  # half dense, half sparse
    packed = pack(bools.ravel())
    encoding, payload, _ = encode_auto(packed, bools.size, int(bools.sum()), bools.shape)
    assert encoding == "rice-rows"  # overall the rarer value is near 50%: one parameter per block cannot help
    assert 8 * len(payload) <= 1.07 * row_bound(bools)  # each count names its row's side: a few bits more
    assert len(payload) < 0.8 * len(get_codec("zstd").encode(packed, bools.size)[0])
    rows = RiceRowsCodec().for_shape(bools.shape)
    assert rows.encode_listing(packed, bools.size, 0.04) == (payload, {"row_bits": 1024})  # 3% listed
    assert rows.encode_listing(packed, bools.size, 0.02) is None



def spec_reader(payload: bytes, bits: int, row_bits: int) -> list[int]:
    """The set flat indices of a rice-rows payload, read as FORMAT.md 5.5 describes it, with Python integers
    and strings of bits only: a check that the text is enough to write a reader."""
    count_mode, count_k, row_k, _, table_rows, unary_bytes = struct.unpack_from("<BBBBQQ", payload)
    unary = "".join(format(byte, "08b") for byte in payload[20 : 20 + unary_bytes])
    remainders = "".join(format(byte, "08b") for byte in payload[20 + unary_bytes :])
    cursor = {"unary": 0, "remainder": 0}

    def rice(k: int) -> int:
        end = unary.index("1", cursor["unary"])
        q, cursor["unary"] = end - cursor["unary"], end + 1
        r = int(remainders[cursor["remainder"] : cursor["remainder"] + k] or "0", 2)
        cursor["remainder"] += k
        return q * 2**k + r

    nrows = -(-bits // row_bits)
    if count_mode & 2:
        table = list(range(nrows))
    else:
        table, row = [], -1
        for _ in range(table_rows):
            row += rice(row_k) + 1
            table.append(row)
    counts, counted = [], 0
    for row in table:
        x = rice(count_k)
        if count_mode & 1:
            counted += x // 2 if x % 2 == 0 else -(x + 1) // 2
        else:
            counted = x if count_mode & 6 else x + 1
        counts.append(min(row_bits, bits - row * row_bits) - counted if count_mode & 4 else counted)
    ones = []
    for row, c in zip(table, counts):
        n = min(row_bits, bits - row * row_bits)
        v, m = (1, c) if 2 * c <= n else (0, n - c)
        k = min(k for k in range(64) if 2048 * m * 2**k >= 493 * (2 * n - m)) if m else 0
        listed, p = set(), -1
        for _ in range(m):
            p += rice(k) + 1
            listed.add(p)
        ones += [row * row_bits + i for i in range(n) if (i in listed) == bool(v)]
    assert "1" not in unary[cursor["unary"] :] and len(unary) - cursor["unary"] < 8
    assert len(remainders) - cursor["remainder"] < 8 and "1" not in remainders[cursor["remainder"] :]
    return ones


def test_a_reader_written_from_the_spec_decodes_the_golden_vector() -> None:
    vectors = Path(__file__).resolve().parent.parent / "spec" / "vectors"
    expected = json.loads((vectors / "rice-rows-1.2.json").read_text())["tensors"]
    data = (vectors / "rice-rows-1.2.smask").read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    outer = json.loads(data[8 : 8 + length])
    header = json.loads(outer["__metadata__"]["submask"])
    for name, entry in header["tensors"].items():
        begin, end = outer[name]["data_offsets"]
        payload = data[8 + length + begin : 8 + length + end]
        assert spec_reader(payload, entry["bits"], entry["encoding"]["row_bits"]) == expected[name]["ones_at"]
