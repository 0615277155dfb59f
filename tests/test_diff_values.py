"""Values coded against the base (FORMAT.md §12.4, format 1.3): the codec, the golden vector, the version rules,
and real builds whose rebuild is checked by SHA-256."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

import submask
from submask import MaskWriter, errors, metadata
from submask.cli import main
from submask.format.diffs import decode_against, encode_against

VECTORS = Path(__file__).resolve().parent.parent / "spec" / "vectors"
VECTOR = VECTORS / "diff-values-1.3.smask"
LISTED = json.loads((VECTORS / "diff-values-1.3.json").read_text())["tensors"]
RAW = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
SIZES = {"BF16": 2, "F16": 2, "F32": 4, "I64": 8}


def listed_base() -> dict[str, np.ndarray]:
    """A base state dict for the vector: the listed base values at the set positions, zeros elsewhere."""
    base = {}
    for name, content in LISTED.items():
        raw = RAW[SIZES[content["values"]["dtype"]]]
        full = np.zeros(int(np.prod(content["shape"])), raw)
        full[content["ones_at"]] = np.frombuffer(bytes.fromhex(content["values"]["base_hex"]), raw)
        base[name] = full.reshape(content["shape"])
    return base


@pytest.mark.parametrize("dtype, numpy_dtype, scale", [("F32", np.float32, 1e-4), ("F16", np.float16, 1e-3),
                                                       ("F64", np.float64, 1e-6), ("I32", np.int32, 50),
                                                       ("U8", np.uint8, 3)])
def test_encode_against_round_trips_every_value(dtype: str, numpy_dtype: type, scale: float) -> None:
    rng = np.random.default_rng(0)
    base = (rng.normal(0, 1, 5000) * (100 if scale > 1 else 1)).astype(numpy_dtype)
    new = base.copy()
    moved = rng.random(base.size) < 0.3
    new[moved] = (base[moved].astype(np.float64) + rng.normal(0, scale, int(moved.sum()))).astype(numpy_dtype)
    if dtype.startswith("F"):
        new[:4], base[:4] = [np.nan, -np.inf, -0.0, 1.0], [1.0, 2.0, 0.0, -1.0]
    encoding, payload = encode_against(new, base, dtype, block_elements=1024)
    assert encoding == {"id": "diff-planes", "block_elements": 1024}
    assert decode_against(encoding, payload, base, dtype).tobytes() == new.tobytes()
    with pytest.raises(errors.FormatError):
        decode_against(encoding, payload[:-1], base, dtype)
    with pytest.raises(errors.FormatError):
        decode_against(encoding, payload, base[:-8], dtype)


def test_small_moves_cost_far_less_than_the_values() -> None:
    base = torch.randn(512, 512).mul(0.02).to(torch.bfloat16)
    new = (base.float() + 2e-4 * torch.randn(512, 512)).to(torch.bfloat16)
    _, payload = encode_against(new.view(torch.int16).numpy(), base.view(torch.int16).numpy(), "BF16")
    assert len(payload) < 0.3 * new.numel() * 2
    _, unchanged = encode_against(base.view(torch.int16).numpy(), base.view(torch.int16).numpy(), "BF16")
    assert len(unchanged) < 0.002 * new.numel() * 2


def test_the_vector_decodes_with_its_base_and_re_encodes_byte_for_byte(tmp_path: Path) -> None:
    delta = submask.load_delta(VECTOR, base=listed_base())
    for name, content in LISTED.items():
        np.testing.assert_array_equal(delta.mask[name].to_indices(), np.array(content["ones_at"], dtype=np.int64))
        assert delta.values[name].data.tobytes().hex() == content["values"]["hex"], name
    with submask.open(VECTOR) as mask_file, MaskWriter(tmp_path / VECTOR.name, mask_file.metadata) as writer:
        assert mask_file.metadata.minor_version == 3 and mask_file.problems() == []
        assert mask_file.value_planes("bf16_weights")[1] == "zstd"
        for name, entry in mask_file.entries.items():
            base = np.frombuffer(bytes.fromhex(LISTED[name]["values"]["base_hex"]), np.uint8).copy()
            values = submask.TensorValues(entry.values.dtype, delta.values[name].data, base)
            settings = {k: v for k, v in entry.values.encoding.items() if k != "id"}
            writer.add(name, mask_file[name], entry.encoding, entry.config, values=values, values_config=settings)
    assert (tmp_path / VECTOR.name).read_bytes() == VECTOR.read_bytes()


def test_without_the_base_the_values_are_refused_after_their_checks() -> None:
    with submask.open(VECTOR) as mask_file, pytest.raises(errors.UsageError, match="coded against the base"):
        mask_file.values("f32_blocks")
    with pytest.raises(errors.UsageError, match="load_delta"):
        submask.load_delta(VECTOR)


def test_a_1_2_reader_refuses_a_1_3_delta_as_upgrade(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metadata, "KNOWN_EXTENSIONS", frozenset({metadata.VALUES_EXTENSION}))
    with pytest.raises(errors.VersionError, match=r"\['diff-values'\].*upgrade"):
        submask.open(VECTOR)


def test_cli_validate_and_info_accept_the_vector() -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["validate", str(VECTOR)]).exit_code == 0
    info = runner.invoke(main, ["info", str(VECTOR), "--json"])
    assert json.loads(info.output)["count"] == sum(len(t["ones_at"]) for t in LISTED.values())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_a_build_codes_against_the_base_and_rebuilds_byte_for_byte(dtype: torch.dtype, tmp_path: Path) -> None:
    """Adam-like moves on iid entries, SGD-like moves on whole rows, a fully changed and an untouched tensor."""
    gen = torch.Generator().manual_seed(1)
    base = {f"w{i}": (torch.randn(96, 80, generator=gen) * 0.02).to(dtype) for i in range(4)}
    finetuned = dict(base)
    picked = torch.rand(96, 80, generator=gen) < 0.3
    finetuned["w0"] = torch.where(picked, base["w0"].float() - 1e-3 * torch.randn(96, 80, generator=gen),
                                  base["w0"].float()).to(dtype)
    rows = (torch.rand(96, 1, generator=gen) < 0.25).expand(96, 80)
    finetuned["w1"] = torch.where(rows, base["w1"].float() * 1.01, base["w1"].float()).to(dtype)
    finetuned["w2"] = (base["w2"].float() + 0.5).to(dtype)  # every value changes
    for side, tensors in (("base", base), ("finetuned", finetuned)):
        save_file(tensors, tmp_path / f"{side}.safetensors", metadata={"format": "pt"})
    delta = tmp_path / "d.smask"
    submask.build_mask(tmp_path / "base.safetensors", tmp_path / "finetuned.safetensors", delta, values=True)
    with submask.open(delta) as opened:
        assert opened.metadata.minor_version == 3
        assert {opened.entries[n].values.encoding["id"] for n in base} == {"diff-planes"}
    submask.apply_mask(tmp_path / "base.safetensors", delta, tmp_path / "out")
    rebuilt = (tmp_path / "out" / "finetuned.safetensors").read_bytes()
    expected = (tmp_path / "finetuned.safetensors").read_bytes()
    assert hashlib.sha256(rebuilt).hexdigest() == hashlib.sha256(expected).hexdigest()
    applied = submask.apply_delta(base, delta)
    assert all(torch.equal(applied[n].view(torch.uint8), finetuned[n].view(torch.uint8)) for n in base)


def test_format_md_worked_example() -> None:
    """FORMAT.md §12.4: BF16 0x3C00 -> 0x3C01 and 0xBC00 -> 0xBBFF, one block, both planes stored."""
    _, payload = encode_against(np.array([0x3C01, 0xBBFF], np.uint16), np.array([0x3C00, 0xBC00], np.uint16),
                                       "BF16")
    assert payload.hex() == "02000000" + "00020000000202" + "00020000000000"


@pytest.mark.parametrize("dtype, numpy_dtype", [("BF16", np.uint16), ("F16", np.float16), ("F32", np.float32),
                                                ("I16", np.int16), ("F8_E4M3", np.uint8)])
def test_compiled_and_numpy_transforms_write_the_same_bytes(dtype: str, numpy_dtype: type,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from submask.format import diffs

    rng = np.random.default_rng(5)
    raw = RAW[np.dtype(numpy_dtype).itemsize]
    base = rng.integers(0, np.iinfo(raw).max, 20000, dtype=raw, endpoint=True)
    new = base.copy()
    moved = rng.random(base.size) < 0.4
    new[moved] = rng.integers(0, np.iinfo(raw).max, int(moved.sum()), dtype=raw, endpoint=True)
    compiled = encode_against(new, base, dtype, block_elements=4096)
    for kernel in (diffs.zigzag_kernel, diffs.decode_kernel):
        monkeypatch.setattr(kernel, "_compiled", None)
    assert encode_against(new, base, dtype, block_elements=4096) == compiled
    assert decode_against(*compiled, base, dtype).tobytes() == new.tobytes()


def test_one_scratch_serves_blocks_of_any_size_and_dtype() -> None:
    """The numpy transform's reused arrays (``diffs.Scratch``) give the bytes of fresh ones, block after block:
    larger, then smaller, 2-, 8- (64-bit sort keys) and 4-byte values, integers (no order) between."""
    from submask.accel import numba_disabled
    from submask.format.diffs import Scratch, apply_block, iter_blocks

    rng = np.random.default_rng(11)
    scratch = Scratch()
    with numba_disabled():
        for dtype, count in [("BF16", 5000), ("F16", 300), ("F64", 7000), ("I32", 900), ("F32", 6000), ("BF16", 1)]:
            raw = RAW[{"BF16": 2, "F16": 2, "F64": 8, "I32": 4, "F32": 4}[dtype]]
            base = rng.integers(0, np.iinfo(raw).max, count, dtype=raw, endpoint=True)
            new = base ^ rng.integers(0, 16, count, dtype=raw)
            _, payload = encode_against(new, base, dtype, block_elements=8 * count)
            (block,) = iter_blocks(payload, dtype, 8 * count, count)
            assert apply_block(block, base, dtype, scratch=scratch).tobytes() == new.tobytes()
            assert apply_block(block, base, dtype).tobytes() == new.tobytes()


@pytest.mark.parametrize("dtype, chunk_bytes", [("F32", 4000), ("BF16", 1 << 20), ("F16", 1000), ("I32", 4000),
                                                ("U8", (1 << 20) + 8)])
def test_a_build_codes_each_chunk_as_the_values_coded_whole(dtype: str, chunk_bytes: int, tmp_path: Path) -> None:
    """A file build takes a delta's differences chunk by chunk in its compare pass (``chunk_differences``); its
    payload and CRC-32 are those of the tensor's changed values coded at once by the numpy path, also where a
    chunk holds the end of one block and the start of the next (U8: 5 M elements, 2^22 per block)."""
    pytest.importorskip("numba")
    from submask.accel import numba_disabled
    from submask.format import diffs

    rng = np.random.default_rng(3)
    numel = 5_000_000 if dtype == "U8" else 30_000
    raw = RAW[{"F32": 4, "BF16": 2, "F16": 2, "I32": 4, "U8": 1}[dtype]]
    base = rng.integers(0, np.iinfo(raw).max, numel, dtype=raw, endpoint=True)
    if dtype.startswith(("F", "BF")):
        floats = {"F32": np.float32, "F16": np.float16}.get(dtype)
        weights = rng.normal(0, 0.02, numel).astype(np.float32)
        base = weights.astype(floats).view(raw) if floats else (weights.view(np.uint32) >> 16).astype(np.uint16)
    new = base.copy()
    moved = rng.random(numel) < 0.3
    new[moved] = new[moved] + raw(1) + rng.integers(0, 20, int(moved.sum()), dtype=raw)
    torch_dtype = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "I32": torch.int32,
                   "U8": torch.uint8}[dtype]
    signed = {"F32": np.int32, "BF16": np.int16, "F16": np.int16, "I32": np.int32, "U8": np.uint8}[dtype]
    for name, array in (("base", base), ("finetuned", new)):
        save_file({"w": torch.from_numpy(array.view(signed)).view(torch_dtype)}, tmp_path / f"{name}.safetensors")
    submask.build_mask(tmp_path / "base.safetensors", tmp_path / "finetuned.safetensors", tmp_path / "d.smask",
                       values=True, chunk_bytes=chunk_bytes)
    with submask.open(tmp_path / "d.smask") as delta:
        found = delta._values_of("w")
        assert found is not None and delta.problems() == []
        entry, span, count, _, _ = found
        stored = bytes(span.read(0, span.size))
    assert count == int(moved.sum())
    counts = diffs.block_counts(numel, diffs.BLOCK_ELEMENTS, np.packbits(moved))
    assert len(counts) == (2 if dtype == "U8" else 1)
    with numba_disabled():
        encoding, payload, crc = diffs.encode_blocks(new[moved], base[moved], dtype, counts, diffs.BLOCK_ELEMENTS)
    assert stored == payload and entry.encoding == encoding and entry.crc32 == f"{crc:08x}"
    rebuilt = tmp_path / "out"
    submask.apply_mask(tmp_path / "base.safetensors", tmp_path / "d.smask", rebuilt)
    assert (rebuilt / "finetuned.safetensors").read_bytes() == (tmp_path / "finetuned.safetensors").read_bytes()
