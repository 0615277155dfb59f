"""Decompression bombs (issue 21, item 2): every decoding path checks the size a header declares against the
memory limit (``SUBMASK_MEMORY_LIMIT``) before it allocates, and refuses with a LimitError."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from test_hostile import container, rice_claiming

import submask
from submask import Delta, LimitError, Mask, UsageError
from submask.format.values import TensorValues
from submask.limits import ENV, memory_limit
from submask.packed import crc32_of_run

BITS = 1 << 33  # 1 GiB of packed bits
LIMIT = "256M"


def zstd_zeros(nbytes: int) -> bytes:
    """One zstd frame declaring ``nbytes`` zero bytes, as RLE blocks of 128 KiB: 4 bytes per block (RFC 8878)."""
    block = 1 << 17
    assert nbytes % block == 0
    descriptor = 0b1110_0000  # 8-byte content size, single segment (no window descriptor), no checksum
    blocks = [struct.pack("<I", (block << 3) | (1 << 1))[:3] + b"\0"] * (nbytes // block)
    last = bytearray(blocks[-1])
    last[0] |= 1
    blocks[-1] = bytes(last)
    return struct.pack("<IB", 0xFD2FB528, descriptor) + struct.pack("<Q", nbytes) + b"".join(blocks)


def zstd_bomb(path: Path) -> Path:
    """A 256 KB mask, checksums valid, whose one zstd tensor inflates to 1 GiB of clear bits."""
    payload = zstd_zeros(BITS // 8)
    header = {"format": "submask", "version": "1.1", "kind": "other",
              "tensors": {"bomb": {"shape": [BITS], "bits": BITS, "ones": 0, "encoding": {"id": "zstd"},
                                   "crc32": f"{crc32_of_run(0, BITS // 8):08x}"}}}
    path.write_bytes(container(json.dumps(header), {"bomb": payload}))
    return path


@pytest.fixture
def limited(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, LIMIT)


def test_the_crafted_bomb_is_small_and_inflates_to_its_declared_size(tmp_path: Path) -> None:
    import zstandard

    path = zstd_bomb(tmp_path / "bomb.smask")
    assert path.stat().st_size < 300_000
    with zstandard.ZstdDecompressor().stream_reader(zstd_zeros(1 << 20)) as reader:
        assert reader.read() == b"\0" * (1 << 20)  # the hand-made frame is one zstd accepts


def test_load_and_indexing_refuse_a_bomb_before_allocating(tmp_path: Path, limited: None) -> None:
    path = zstd_bomb(tmp_path / "bomb.smask")
    tracemalloc.start()
    try:
        with pytest.raises(LimitError, match=rf"bomb.smask.*more than the limit {ENV}={LIMIT}"):
            submask.load(path)
        with submask.open(path) as mask_file, pytest.raises(LimitError, match="tensor 'bomb'"):
            mask_file["bomb"]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


def test_load_counts_every_tensor_together(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "two.smask"
    submask.save(Mask.from_numpy({"a": np.ones(6000, bool), "b": np.zeros(6000, bool)}), path)
    monkeypatch.setenv(ENV, "1000")  # each tensor's 750 bytes fit, both together do not
    with submask.open(path) as mask_file:
        assert mask_file["a"].count == 6000
    with pytest.raises(LimitError, match="the mask's 12,000 bits take 1,500 bytes"):
        submask.load(path)


@pytest.mark.parametrize("bomb", ["zstd", "rice"])
@pytest.mark.parametrize("command", [["combine", "not"], ["compare"]])
def test_cli_commands_refuse_a_bomb_in_one_line(tmp_path: Path, command: list[str], bomb: str) -> None:
    path = zstd_bomb(tmp_path / "bomb.smask") if bomb == "zstd" else rice_claiming(tmp_path / "bomb.smask", BITS)
    args = [*command, str(path)] + ([str(path)] if command == ["compare"] else [])
    args += ["-o", str(tmp_path / "out.smask")] if command[0] == "combine" else []
    result = subprocess.run([sys.executable, "-m", "submask", *args], capture_output=True, text=True, timeout=120,
                            env={**os.environ, ENV: LIMIT})
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert ENV in result.stderr
    assert not (tmp_path / "out.smask").exists()


def test_values_are_checked_against_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "delta.smask"
    mask = Mask.from_numpy({"w": np.ones(1 << 20, bool)}, kind="update")
    submask.save(Delta(mask, {"w": TensorValues("F32", np.zeros(4 << 20, np.uint8))}), path)  # 4 MiB of values
    monkeypatch.setenv(ENV, "1M")  # the bits (128 KiB) fit, the values do not
    with pytest.raises(LimitError, match="values take 4,194,304 bytes"):
        submask.load_delta(path)
    with submask.open(path) as delta_file, pytest.raises(LimitError, match="tensor 'w'"):
        delta_file.values("w")
    assert submask.load(path).count == 1 << 20


@pytest.mark.parametrize(("text", "expected"), [("1000", 1000), ("64K", 64 << 10), ("3G", 3 << 30), ("2 GiB", 2 << 30)])
def test_the_limit_reads_sizes(monkeypatch: pytest.MonkeyPatch, text: str, expected: int) -> None:
    monkeypatch.setenv(ENV, text)
    assert memory_limit()[0] == expected


def test_a_bad_limit_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "lots")
    with pytest.raises(UsageError, match=ENV):
        memory_limit()


def test_without_a_setting_the_limit_is_the_memory_available() -> None:
    limit, source = memory_limit() if ENV not in os.environ else (0, "")
    assert source == "this machine's memory available now"
    assert 1 << 24 < limit <= os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
