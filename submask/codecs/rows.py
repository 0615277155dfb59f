"""The "rice-rows" encoding (FORMAT.md section 5.5): Rice codes adapted to each row of a tensor.

Real update masks are not iid: the density changes from row to row (an embedding row per token, a weight row
per output unit). This code lists, per row, the positions of that row's rarer value with a Rice parameter
derived from the row's own count, so each row costs about its own entropy; the counts themselves (and which
rows hold anything) are Rice-coded too. The parameter is computed, not stored, from the count and the row
length (``row_parameter``), so a row costs its count code and its gaps, nothing else.

Codes go to two streams: the unary parts to one, the remainders to the other, so the numpy path decodes
every code with whole-array passes, and the compiled one (``rows_kernels``) with one 64-bit window each.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import FormatError
from ..limits import check_allocation
from ..packed import clear_padding, packed_nbytes
from .base import CHUNK_BYTES, Codec, IntersectionCounter, PositionsDecoder, Run, allocate_packed, check_settings
from .rows_encode import encode_rows, row_counts, row_lengths
from .rows_format import ALL_ROWS, BLOCK_BITS, COMPLEMENT, DELTA, HEADER, MAX_ROW_BITS, row_parameter
from .rows_kernels import COUNT, PACKED, POSITIONS, ROW_TABLE, rows_kernel


class RiceRowsCodec(Codec, PositionsDecoder, IntersectionCounter):
    """Rice codes with a parameter per row, derived from each row's count; the rarer value listed per row."""

    id = "rice-rows"
    minor_version = 2

    def __init__(self, row_bits: int = BLOCK_BITS):
        self.row_bits = _check_row_bits(row_bits)

    def configured(self, config: dict[str, Any]) -> RiceRowsCodec:
        check_settings(self.id, config, "row_bits")
        return RiceRowsCodec(config.get("row_bits", self.row_bits))

    def from_config(self, config: dict[str, Any]) -> RiceRowsCodec:
        _check_row_bits(config.get("row_bits"))  # a reader needs the row length the writer used
        return self.configured(config)

    def for_shape(self, shape: tuple[int, ...]) -> RiceRowsCodec:
        """The writer's rows for a tensor: its last dimension, unless it is a 1-D tensor or that dimension is
        below 64 or above MAX_ROW_BITS (then blocks of BLOCK_BITS)."""
        last = shape[-1] if len(shape) >= 2 else 0
        return RiceRowsCodec(last if 64 <= last <= MAX_ROW_BITS else BLOCK_BITS)

    def encode(self, packed: np.ndarray, numel: int) -> tuple[bytes, dict[str, Any]]:
        return encode_rows(packed, numel, self.row_bits), {"row_bits": self.row_bits}

    def encode_listing(self, packed: np.ndarray, numel: int, most: float) -> tuple[bytes, dict[str, Any]] | None:
        """``encode``, or None where the rows' rarer values, which the payload lists, are ``most`` of the
        bits or more (then it is larger than what a writer compares it with)."""
        counts = row_counts(packed, numel, self.row_bits)
        nbits = row_lengths(numel, self.row_bits)
        if int(np.minimum(counts, nbits - counts).sum()) >= most * numel:
            return None
        return encode_rows(packed, numel, self.row_bits, counts), {"row_bits": self.row_bits}

    def decode(self, payload: bytes, numel: int, out: np.ndarray | None = None) -> np.ndarray:
        layout = _Layout(payload, numel, self.row_bits)
        out = allocate_packed(numel) if out is None else out
        if rows_kernel.compiled is not None:
            out.fill(0)
            layout.run(PACKED, out)
            return clear_padding(out, numel)
        rows, counts, listed = layout.decode_numpy()
        for piece_start, piece in _pieces(layout, rows, counts, listed, 0, layout.nrows):
            out[piece_start // 8 : piece_start // 8 + piece.size] = piece
        return out

    def decode_chunks(self, payload: bytes, numel: int) -> Iterator[np.ndarray | Run]:
        layout = _Layout(payload, numel, self.row_bits)
        if rows_kernel.compiled is not None:
            yield from layout.packed_chunks()
            return
        rows, counts, listed = layout.decode_numpy()
        window = window_rows(self.row_bits)
        done = 0  # rows yielded so far
        for first in (np.unique(rows // window) * window).tolist():
            if first > done:  # rows without a set bit, however many: one Run
                yield Run(0, (first - done) * self.row_bits // 8)
            stop = min(first + window, layout.nrows)
            for _piece_start, piece in _pieces(layout, rows, counts, listed, first, stop):
                for at in range(0, piece.size, CHUNK_BYTES):
                    yield piece[at : at + CHUNK_BYTES]
            done = stop
        if done < layout.nrows:
            yield Run(0, packed_nbytes(numel) - done * self.row_bits // 8)

    def positions(self, payload: bytes, numel: int) -> np.ndarray:
        layout = _Layout(payload, numel, self.row_bits)
        if rows_kernel.compiled is not None:
            return layout.run(POSITIONS, _NO_BITS)
        rows, counts, listed = layout.decode_numpy()
        parts = [np.flatnonzero(unpack_piece(piece, piece_start, layout)) + piece_start
                 for piece_start, piece in _pieces(layout, rows, counts, listed, 0, layout.nrows)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def streams(self) -> bool:
        return rows_kernel.compiled is not None

    def intersection_count(self, payload: bytes, numel: int, packed: np.ndarray) -> tuple[int, int] | None:
        if rows_kernel.compiled is None:
            return None
        layout = _Layout(payload, numel, self.row_bits)
        both = layout.run(COUNT, packed)
        return both, layout.ones


_NO_BITS = np.zeros(0, dtype=np.uint8)
_NO_POSITIONS = np.zeros(0, dtype=np.int64)
SCRATCH_ENTRIES = 1 << 16  # int64s a decode allocates up front for any row's codes: 512 KiB


def unpack_piece(piece: np.ndarray, start: int, layout: _Layout) -> np.ndarray:
    """The bools of a packed piece starting at flat index ``start``, cut at the tensor's end."""
    return np.unpackbits(piece, count=min(8 * piece.size, layout.numel - start)).view(np.bool_)


class _Layout:
    """A payload's header and streams, checked against the tensor's size (FORMAT.md 5.5)."""

    def __init__(self, payload: bytes, numel: int, row_bits: int):
        self.payload, self.numel, self.row_bits = payload, numel, row_bits
        self.nrows = -(-numel // row_bits)
        if len(payload) < HEADER.size:
            raise FormatError(f"rice-rows payload of {len(payload)} bytes is shorter than its "
                              f"{HEADER.size}-byte header")
        (self.count_mode, self.count_k, self.row_k, reserved, self.nonempty,
         self.unary_nbytes) = HEADER.unpack_from(payload)
        if self.count_mode > DELTA | ALL_ROWS | COMPLEMENT or self.count_k > 31 or self.row_k > 31 or reserved:
            raise FormatError(f"rice-rows header is invalid (count mode {self.count_mode}, count k {self.count_k}, "
                              f"row k {self.row_k}, reserved {reserved})")
        if self.nonempty > self.nrows or (self.count_mode & ALL_ROWS and self.nonempty != self.nrows):
            raise FormatError(f"rice-rows payload claims {self.nonempty} rows in its table of {self.nrows}"
                              f"{' (its count mode holds them all)' if self.count_mode & ALL_ROWS else ''}")
        if HEADER.size + self.unary_nbytes > len(payload):
            raise FormatError("rice-rows payload ends inside its unary stream")
        self.table_codes = self.nonempty * (1 if self.count_mode & ALL_ROWS else 2)
        if self.table_codes > 8 * self.unary_nbytes:  # every code ends with a 1 bit: checked before allocating
            raise FormatError(f"rice-rows unary stream of {self.unary_nbytes} bytes cannot code {self.nonempty} rows")
        self.data = np.frombuffer(payload, dtype=np.uint8)
        self.rem_start = HEADER.size + self.unary_nbytes
        self.ones = 0

    def row_nbits(self, rows: np.ndarray) -> np.ndarray:
        return np.minimum(self.row_bits, self.numel - rows * self.row_bits)

    def run(self, mode: int, bits: np.ndarray) -> Any:
        """Decode with the compiled kernel (for POSITIONS, the row table first: it sizes the positions)."""
        self._start()
        positions, first = _NO_POSITIONS, 0
        if mode == POSITIONS or self._scratch.size < self.nonempty + min(self.row_bits, self.numel):
            ones, first = self._table(), 2
            if mode == POSITIONS:
                check_allocation(8 * ones, f"{ones:,} set positions")
                positions = np.empty(ones, dtype=np.int64)
        result = self._call(mode, first, 2 + self.nonempty, positions, bits)
        return positions if mode == POSITIONS else result

    def packed_chunks(self) -> Iterator[np.ndarray | Run]:
        """``decode_chunks`` with the compiled kernel: the row table, then windows of whole rows (a multiple
        of 8) decoded where the table has rows, and Runs of zeros between them."""
        self._start()
        self._table()
        window = window_rows(self.row_bits)
        buffer = np.empty(window * self.row_bits // 8, dtype=np.uint8)
        done = 0  # rows yielded so far
        for first in (np.unique(self.rows // window) * window).tolist():
            if first > done:  # rows without a set bit, however many: one Run
                yield Run(0, (first - done) * self.row_bits // 8)
            stop = min(first + window, self.nrows)
            lo, hi = np.searchsorted(self.rows, [first, stop]).tolist()
            piece = buffer[: packed_nbytes(min(stop * self.row_bits, self.numel) - first * self.row_bits)]
            piece.fill(0)
            self._call(PACKED, 2 + lo, 2 + hi, bits=piece, origin=first * self.row_bits)
            for at in range(0, piece.size, CHUNK_BYTES):
                yield piece[at : at + CHUNK_BYTES]
            done = stop
        self._call(PACKED, 2 + self.nonempty, 2 + self.nonempty)  # the ends of the streams
        if done < self.nrows:
            yield Run(0, packed_nbytes(self.numel) - done * self.row_bits // 8)

    def _start(self) -> None:
        """Room for the row table and the codes of a row: for any row when that is small, else for the table
        until ``_table`` has read it."""
        self.rows = np.empty(self.nonempty, dtype=np.int64)
        self.counts = np.empty(self.nonempty, dtype=np.int64)
        self._state = np.zeros(8, dtype=np.int64)
        any_row = self.nonempty + min(self.row_bits, self.numel)
        self._scratch = np.empty(any_row if any_row <= SCRATCH_ENTRIES else self.nonempty, dtype=np.int64)

    def _table(self) -> int:
        """Decode the row table (later calls continue from there) and size the scratch for the largest row;
        returns the set bits the table counts."""
        ones = self._call(ROW_TABLE, 0, 2)
        nbits = self.row_nbits(self.rows)
        listed = int(np.minimum(self.counts, nbits - self.counts).max(initial=0))
        if self._scratch.size < max(self.nonempty, listed):
            self._scratch = np.empty(max(self.nonempty, listed), dtype=np.int64)
        return ones

    def _call(self, mode: int, first: int, stop: int, positions: np.ndarray = _NO_POSITIONS,
              bits: np.ndarray = _NO_BITS, origin: int = 0) -> int:
        result = rows_kernel.compiled(self.data, HEADER.size, self.unary_nbytes, self.nonempty, self.count_mode,
                                      self.count_k, self.row_k, self.row_bits, self.numel, self.rows, self.counts,
                                      self._scratch, mode, positions, bits, first, stop, origin, self._state)
        self.ones = int(self._state[6])
        return self._check(result)

    def _check(self, result: int) -> int:
        if result < 0:
            self.decode_numpy()  # raises the numpy path's error
            raise FormatError("rice-rows payload is invalid")  # pragma: no cover - the line above raises
        return result

    def decode_numpy(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(non-empty rows, their set counts, flat listed positions), with every check of FORMAT.md 5.5."""
        unary = self.data[HEADER.size : self.rem_start]
        if self.unary_nbytes and not unary[-1]:
            raise FormatError("rice-rows unary stream ends with a zero byte")
        ends = np.flatnonzero(np.unpackbits(unary).view(np.bool_))
        table = self.table_codes
        if ends.size < table:
            raise FormatError(f"rice-rows unary stream codes {ends.size} values, its row table needs {table}")
        quotients = np.diff(ends, prepend=-1) - 1
        parameters = [self.count_k] if self.count_mode & ALL_ROWS else [self.row_k, self.count_k]
        widths = np.repeat(np.array(parameters, dtype=np.int64), self.nonempty)
        values = _rice_values(quotients[:table], widths, self._remainders, 0)
        if self.count_mode & ALL_ROWS:
            rows = np.arange(self.nrows)
        else:
            rows = np.cumsum(values[: self.nonempty] + 1) - 1
        if np.any(rows >= self.nrows):  # every step is at most 2^53 + 1: a sum past nrows is seen before it wraps
            raise FormatError(f"rice-rows row table names a row past the last ({self.nrows})")
        coded = values[table - self.nonempty :]
        if self.count_mode & DELTA:
            counted = np.cumsum(np.where(coded & 1, -(coded + 1) // 2, coded // 2))
        else:
            counted = coded + (0 if self.count_mode & (ALL_ROWS | COMPLEMENT) else 1)
        nbits = self.row_nbits(rows)
        counts = nbits - counted if self.count_mode & COMPLEMENT else counted
        if np.any(counted < 0) or np.any(counts < (0 if self.count_mode & ALL_ROWS else 1)) or np.any(counts > nbits):
            raise FormatError("rice-rows row table holds a count outside its row, or 0 in a table of non-empty rows")
        value = 2 * counts <= nbits
        listed_counts = np.where(value, counts, nbits - counts)
        if ends.size != table + int(listed_counts.sum()):
            raise FormatError(f"rice-rows unary stream codes {ends.size} values, its rows need "
                              f"{table + int(listed_counts.sum())}")
        k = np.repeat(row_parameter(listed_counts, nbits), listed_counts)
        if np.any(quotients[table:] > np.repeat(nbits, listed_counts) >> k):  # as the compiled decoder
            raise FormatError("rice-rows payload codes a position past its row's end")
        gaps = _rice_values(quotients[table:], k, self._remainders, int(widths.sum()), end=True)
        row_of = np.repeat(np.arange(rows.size), listed_counts)
        steps = np.concatenate([[0], np.cumsum(gaps + 1)])  # steps[j]: gaps + 1 summed over the codes before j
        before = np.cumsum(listed_counts) - listed_counts  # listed positions in earlier rows
        within = steps[1:] - steps[before][row_of] - 1
        if within.size and np.any(within >= nbits[row_of]):
            raise FormatError("rice-rows payload codes a position past its row's end")
        self.ones = int(counts.sum())
        return rows, counts, within + rows[row_of] * self.row_bits

    @property
    def _remainders(self) -> np.ndarray:
        return self.data[self.rem_start :]


def _rice_values(quotients: np.ndarray, widths: np.ndarray, stream: np.ndarray, offset: int,
                 end: bool = False) -> np.ndarray:
    """Rice values from their quotients and the ``widths``-bit remainders read MSB-first from ``stream`` at
    bit ``offset``; with ``end``, the stream must end there (zero pad bits, no more bytes)."""
    if quotients.size and np.any(quotients > (1 << 53) >> widths):
        raise FormatError("rice-rows payload codes a value beyond any tensor")
    starts = offset + np.cumsum(widths) - widths
    stop = offset + int(widths.sum())
    if end and (len(stream) != -(-stop // 8) or (stop % 8 and stream[-1] & (0xFF >> (stop % 8)))):
        raise FormatError(f"rice-rows remainder stream must be {-(-stop // 8)} bytes with zero pad bits, it has "
                          f"{len(stream)}{' and a pad bit set' if len(stream) == -(-stop // 8) else ''}")
    if -(-stop // 8) > len(stream):
        raise FormatError("rice-rows payload ends inside its remainder stream")
    padded = np.concatenate([stream, np.zeros(8, dtype=np.uint8)])
    window = np.zeros(starts.size, dtype=np.uint64)
    for byte in range(5):  # 5 bytes hold any 31 bits at any bit offset
        window = window << np.uint64(8) | padded[(starts >> 3) + byte].astype(np.uint64)
    window = window << (starts & 7).astype(np.uint64) & np.uint64((1 << 40) - 1)
    remainders = (window >> (np.uint64(40) - widths.astype(np.uint64))).astype(np.int64)
    return (quotients << widths) | remainders


def _pieces(layout: _Layout, rows: np.ndarray, counts: np.ndarray, listed: np.ndarray,
            first: int, stop: int) -> Iterator[tuple[int, np.ndarray]]:
    """Packed bits of rows [first, stop) (``first`` a multiple of 8) in pieces of whole bytes, each with its
    flat start: the rows listing their clear bits filled, then every listed position flipped."""
    group = window_rows(layout.row_bits)
    for start_row in range(first, stop, group):
        end_row = min(start_row + group, stop)
        start, end = start_row * layout.row_bits, min(end_row * layout.row_bits, layout.numel)
        lo, hi = np.searchsorted(rows, [start_row, end_row])
        bools = np.zeros(end - start, dtype=np.bool_)
        nbits = layout.row_nbits(rows[lo:hi])
        for row in rows[lo:hi][2 * counts[lo:hi] > nbits]:  # rows listing their clear bits
            bools[row * layout.row_bits - start : min((row + 1) * layout.row_bits, layout.numel) - start] = True
        a, b = np.searchsorted(listed, [start, end])
        bools[listed[a:b] - start] ^= True
        yield start, np.packbits(bools)


def window_rows(row_bits: int) -> int:
    """Rows decoded at a time in pieces: a multiple of 8, so every piece starts on a whole byte, and about
    CHUNK_BYTES of packed bits (8 rows where a row is longer)."""
    return 8 * max(1, CHUNK_BYTES // row_bits)


def _check_row_bits(row_bits: Any) -> int:
    if type(row_bits) is not int or not 1 <= row_bits <= MAX_ROW_BITS:
        raise FormatError(f"rice-rows row_bits must be an integer from 1 to 2^20, got {row_bits!r}")
    return row_bits
