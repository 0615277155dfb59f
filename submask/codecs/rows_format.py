"""The layout of "rice-rows" payloads (FORMAT.md section 5.5) that its writer and readers share: the header,
the count modes and the rule that gives each row its Rice parameter."""

from __future__ import annotations

import struct

import numpy as np

HEADER = struct.Struct("<BBBBQQ")  # count mode, count k, row k, reserved, rows in the table, unary bytes
MAX_ROW_BITS = 1 << 20  # 8 rows fit a piece of decode_chunks in 8 MiB of bools
BLOCK_BITS = 4096  # the rows of a 1-D tensor (and of tensors whose last dimension suits rows badly)
DELTA, ALL_ROWS, COMPLEMENT = 1, 2, 4  # count mode flags: counts coded as the zigzag of their change (else as
#   they are, less 1 for a table of non-empty rows); the table holds every row, with no row codes (else the
#   non-empty rows only); each row's clear bits counted instead of its set bits


def row_parameter(listed: np.ndarray, nbits: np.ndarray) -> np.ndarray:
    """The Rice parameter of a row listing ``listed`` of its ``nbits`` positions: the smallest k >= 0 with
    2048 * listed * 2^k >= 493 * (2 * nbits - listed), the geometric optimum within 1% (FORMAT.md 5.5)."""
    listed = np.asarray(listed, dtype=np.int64)
    unit = 2048 * listed
    target = 493 * (2 * np.asarray(nbits, dtype=np.int64) - listed)
    with np.errstate(divide="ignore", invalid="ignore"):  # a guess within 1 of k, then exact integer steps
        guess = np.ceil(np.log2(target / np.maximum(unit, 1)))
    k = np.where(listed > 0, np.clip(np.nan_to_num(guess), 0, 40), 0).astype(np.int64)
    k += (listed > 0) & (unit << k < target)
    k -= (k > 0) & (unit << np.maximum(k - 1, 0) >= target)
    return k
