"""Values coded against the base (FORMAT.md §12.4, encoding ``diff-planes``, version 1.3).

Each value is stored as its difference from the base value at the same position: floats (sign and magnitude)
are mapped to unsigned integers in value order, integers are taken as they are, the difference modulo
2^bits is zigzagged (0, -1, 1, -2, ... -> 0, 1, 2, 3, ...), so a move of a few ulps is a small number whatever
the sign and exponent. Within a block the differences are ordered by the base value's exponent (stable): the
exponent predicts how many low bits a move of a given size flips, so like sizes sit together. They are then
cut into byte planes, each stored or one zstd frame, as ``planes`` does. A block holds the values of a range of
``block_elements`` elements of the tensor (those at set positions of its mask), so a rebuild decodes a block
from the one piece of the base it reads anyway.

``encode_against`` / ``decode_against`` are the doors for arrays (a delta's values, a sync step's tensor);
``iter_blocks`` walks a payload without the base (what validation checks).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..accel import Kernel
from ..codecs.plain import check_frame
from ..errors import FormatError, MismatchError, UnknownEncodingError, UsageError
from ..packed import crc32_update
from ..workers import reusable
from .header import DIFF_PLANES, DTYPE_SIZES
from .payloads import RECORD_HEADER, STORED, ZSTD, Payload, payload_reader
from .plane_coding import BLOCK_HEADER, Planes

BLOCK_ELEMENTS = 1 << 22  # the writers' block: a rebuild reads the base this many elements at a time
MAX_BLOCK_ELEMENTS = 1 << 24
MANTISSA_BITS = {"F8_E4M3": 3, "F8_E5M2": 2, "F16": 10, "BF16": 7, "F32": 23, "F64": 52}
UNSIGNED = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
SIGNED = {1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}


@dataclass(frozen=True)
class Differences:
    """A tensor's values as ``encode_differences`` takes them (a build takes them in its compare pass): ``dtype``
    (a safetensors name), the stored differences (unsigned ints of its itemsize) and the base's exponent
    fields (uint8) of the values in set-bit order, in consecutive pieces."""

    dtype: str
    zigzag: list[np.ndarray]
    keys: list[np.ndarray]

    @property
    def count(self) -> int:
        """The number of values."""
        return sum(piece.size for piece in self.zigzag)


def encode_against(new: np.ndarray, base: np.ndarray, dtype: str, *,
                   block_elements: int = BLOCK_ELEMENTS) -> tuple[dict[str, Any], bytes]:
    """Code ``new`` against ``base`` (arrays of one shape whose items are ``dtype`` values, a safetensors
    dtype name such as "BF16": any numpy dtype of that itemsize, e.g. uint16 for bf16): returns (the
    encoding JSON ``{"id": "diff-planes", "block_elements": ...}``, payload). Equal values cost almost nothing."""
    new_bits, base_bits = _bits(new, dtype, "new"), _bits(base, dtype, "base")
    if new_bits.shape != base_bits.shape:
        raise UsageError(f"new and base must hold as many values, got {new_bits.size} and {base_bits.size}")
    counts = block_counts(new_bits.size, block_elements)
    return encode_blocks(new_bits, base_bits, dtype, counts, block_elements)[:2]


def decode_against(encoding: dict[str, Any], payload: Payload, base: np.ndarray, dtype: str,
                   at: str = "") -> np.ndarray:
    """The values ``encode_against`` coded: an array like ``base`` (its dtype and shape). FormatError when the
    payload is damaged or was coded for another number of values."""
    block_elements = block_elements_of(encoding, at)
    base_bits = _bits(base, dtype, "base")
    out = np.empty_like(base_bits)
    done = 0
    counts = block_counts(base_bits.size, block_elements)
    scratch = Scratch()
    for differences in iter_blocks(payload, dtype, block_elements, base_bits.size, counts, at):
        count = differences.size // DTYPE_SIZES[dtype]
        apply_block(differences, base_bits[done : done + count], dtype, out[done : done + count], scratch)
        done += count
    return out.view(base.dtype).reshape(base.shape)


def block_counts(numel: int, block_elements: int, packed: np.ndarray | None = None) -> list[int]:
    """The values of each block of a tensor of ``numel`` elements: the set bits of ``packed`` (its mask, MSB
    first) in each range of ``block_elements`` elements, or every element without a mask."""
    if type(block_elements) is not int or not 1 <= block_elements <= MAX_BLOCK_ELEMENTS:
        raise UsageError(f"block_elements must be an integer in [1, 2^24], got {block_elements!r}")
    starts = range(0, numel, block_elements)
    if packed is None:
        return [min(block_elements, numel - start) for start in starts]
    from ..packed import popcount

    if block_elements % 8:
        raise UsageError(f"block_elements must be a multiple of 8 with a mask, got {block_elements}")
    return [popcount(packed[start // 8 : (start + block_elements) // 8]) for start in starts]


def encode_blocks(new_bits: np.ndarray, base_bits: np.ndarray, dtype: str, counts: list[int],
                  block_elements: int) -> tuple[dict[str, Any], bytes, int]:
    """Code the values (unsigned ints of the itemsize) block by block, ``counts[k]`` in block ``k``: (encoding
    JSON, payload, CRC-32 of the stored differences)."""
    if sum(counts) != new_bits.size:
        raise UsageError(f"blocks of {sum(counts)} values in all, for {new_bits.size} values")
    kernel = zigzag_kernel.compiled if new_bits.itemsize <= 4 else None
    if kernel is not None:
        zigzag, keys = np.empty_like(new_bits), np.empty(new_bits.size, np.uint8)
        kernel(new_bits, base_bits, zigzag, keys, *kernel_args(dtype, new_bits.itemsize)[:3])
        return encode_differences([zigzag], [keys], dtype, counts, block_elements)
    planes, records, done, crc = Planes(), [], 0, 0
    for count in counts:
        zigzag = _numpy_block(new_bits[done : done + count], base_bits[done : done + count], dtype)
        crc = crc32_update(zigzag.view(np.uint8), crc)
        records.append(planes.record(np.ascontiguousarray(zigzag.view(np.uint8).reshape(-1, new_bits.itemsize).T)))
        done += count
    return {"id": DIFF_PLANES, "block_elements": block_elements}, b"".join(records), crc


def encode_differences(zigzag: list[np.ndarray], keys: list[np.ndarray], dtype: str, counts: list[int],
                       block_elements: int) -> tuple[dict[str, Any], bytes, int]:
    """``encode_blocks`` from what ``zigzag_kernel`` gives (floats and integers of at most 32 bits, with numba):
    the zigzagged differences and the base's exponent fields in set-bit order, in consecutive pieces (e.g. one
    per chunk of a build, cut anywhere). Each block is put in exponent order by a counting sort and cut into
    planes, without the values themselves."""
    total = sum(piece.size for piece in zigzag)
    if sum(counts) != total or [piece.size for piece in keys] != [piece.size for piece in zigzag]:
        raise UsageError(f"blocks of {sum(counts)} values in all, for {total} differences and keys in pieces of "
                         f"{[piece.size for piece in zigzag]} and {[piece.size for piece in keys]}")
    itemsize = zigzag[0].itemsize if zigzag else DTYPE_SIZES[dtype]
    ordered = dtype in MANTISSA_BITS
    planes, records, crc, pieces = Planes(), [], 0, _Pieces(zigzag, keys)
    for count in counts:
        block, block_keys = pieces.take(count)
        if ordered:  # a stable counting sort by the exponent field
            slots = np.zeros(256, dtype=np.int64)
            for piece_keys in block_keys:
                _count_keys.compiled(piece_keys, slots)
            slots = np.cumsum(slots) - slots
            sorted_block = np.empty(count, dtype=UNSIGNED[itemsize])
            for piece, piece_keys in zip(block, block_keys):
                _place.compiled(piece, piece_keys, slots, sorted_block)
        else:
            sorted_block = block[0] if len(block) == 1 else np.concatenate(block or [np.empty(0, UNSIGNED[itemsize])])
        columns = sorted_block.view(np.uint8)
        crc = crc32_update(columns, crc)
        split = np.empty((itemsize, count), dtype=np.uint8)
        _split_planes.compiled(sorted_block, split)
        records.append(planes.record(split))
    return {"id": DIFF_PLANES, "block_elements": block_elements}, b"".join(records), crc


class _Pieces:
    """Consecutive pieces of differences and keys, taken block by block (a block may span or split pieces)."""

    def __init__(self, zigzag: list[np.ndarray], keys: list[np.ndarray]):
        self.zigzag, self.keys, self.index, self.offset = zigzag, keys, 0, 0

    def take(self, count: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        taken: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
        while count:
            piece = self.zigzag[self.index]
            length = min(count, piece.size - self.offset)
            taken[0].append(piece[self.offset : self.offset + length])
            taken[1].append(self.keys[self.index][self.offset : self.offset + length])
            count -= length
            self.offset += length
            if self.offset == piece.size:
                self.index, self.offset = self.index + 1, 0
        return taken


def iter_blocks(payload: Payload, dtype: str, block_elements: int, count: int, counts: list[int] | None = None,
                at: str = "") -> Iterator[np.ndarray]:
    """The payload's blocks in order, each the zigzagged differences as stored (uint8, exponent order): what
    the CRC-32 covers and what ``apply_block`` turns into values. Every record is checked before it is used;
    FormatError unless the blocks hold ``count`` values in all, at most ``block_elements`` each, and, with
    ``counts`` (from the mask), exactly ``counts[k]`` in block ``k``."""
    import zstandard

    itemsize = DTYPE_SIZES[dtype]
    size, read = payload_reader(payload)
    decompressor = zstandard.ZstdDecompressor()
    offset = done = index = 0
    while offset < size if counts is None else index < len(counts):
        if offset + BLOCK_HEADER > size:
            raise FormatError(f"{at}diff-planes payload ends before block {index}; the file is corrupt")
        values = int.from_bytes(read(offset, BLOCK_HEADER), "little")
        if values > min(block_elements, count - done) or (counts is not None and values != counts[index]):
            expected = counts[index] if counts is not None else f"at most {min(block_elements, count - done)}"
            raise FormatError(f"{at}diff-planes block {index} holds {values} values, {expected} expected; the file "
                              "is corrupt")
        offset += BLOCK_HEADER
        out = np.empty((values, itemsize), dtype=np.uint8)
        for plane in range(itemsize):
            offset, method, data = _plane_record(read, size, offset, values, at)
            if method == STORED:
                out[:, plane] = np.frombuffer(data, dtype=np.uint8)
                continue
            try:
                out[:, plane] = np.frombuffer(decompressor.decompress(data), dtype=np.uint8)
            except (zstandard.ZstdError, ValueError) as exc:
                raise FormatError(f"{at}a zstd difference plane is corrupt ({exc})") from None
        done, index = done + values, index + 1
        yield out.reshape(-1)
    if done != count:
        raise FormatError(f"{at}diff-planes blocks hold {done} values, {count} expected; the file is corrupt")
    if offset != size:
        raise FormatError(f"{at}diff-planes payload holds {size - offset} bytes after its last block; the file is "
                          "corrupt")


def plane_methods(payload: Payload, itemsize: int, at: str = "") -> list[set[str]]:
    """Per plane, the methods its blocks use ("stored", "zstd"); checks the records, decodes nothing."""
    size, read = payload_reader(payload)
    seen: list[set[str]] = [set() for _ in range(itemsize)]
    offset = 0
    while offset < size:
        if offset + BLOCK_HEADER > size:
            raise FormatError(f"{at}diff-planes payload ends inside a block header; the file is corrupt")
        values = int.from_bytes(read(offset, BLOCK_HEADER), "little")
        offset += BLOCK_HEADER
        for plane in range(itemsize):
            offset, method, _ = _plane_record(read, size, offset, values, at)
            seen[plane].add("stored" if method == STORED else "zstd")
    return seen


def apply_block(differences: np.ndarray, base_bits: np.ndarray, dtype: str, out: np.ndarray | None = None,
                scratch: Scratch | None = None) -> np.ndarray:
    """One block's values (unsigned ints of the itemsize) from its stored differences and the base's values;
    written into ``out`` when given (which may be ``base_bits`` itself: decoded in place). ``scratch``: arrays
    that the numpy transform reuses (pass the same one for every block of a loop)."""
    itemsize = DTYPE_SIZES[dtype]
    unsigned, signed = UNSIGNED[itemsize], SIGNED[itemsize]
    zigzag = differences.view(unsigned)
    base_bits = base_bits.view(unsigned)
    if zigzag.size != base_bits.size:
        raise MismatchError(f"a block of {zigzag.size} differences against {base_bits.size} base values")
    kernel = decode_kernel.compiled if itemsize <= 4 else None
    if kernel is not None:
        out = np.empty_like(base_bits) if out is None else out.view(unsigned)
        kernel(zigzag, base_bits, out, *kernel_args(dtype, itemsize))
        return out
    one = unsigned(1)
    with np.errstate(over="ignore"):
        difference = zigzag >> one  # zigzag decoded in the arrays it makes (fewer passes than one expression)
        low = zigzag & one
        np.negative(low.view(signed), out=low.view(signed))
        difference ^= low
        order = _order(base_bits, dtype, scratch)
        if order is not None:  # stored by the base's exponent: put back in element order
            low[order] = difference
            difference = low
        difference += _to_ordered(base_bits, dtype)
        return _from_ordered(difference, dtype, difference if out is None else out.view(unsigned))


def block_elements_of(encoding: dict[str, Any], at: str = "") -> int:
    """The ``block_elements`` setting of a diff-planes encoding JSON; FormatError when malformed."""
    if encoding.get("id") != DIFF_PLANES:
        raise UnknownEncodingError(f"{at}values encoding {encoding.get('id')!r} is not {DIFF_PLANES!r}")
    block_elements = encoding.get("block_elements")
    if set(encoding) != {"id", "block_elements"} or type(block_elements) is not int \
            or not 1 <= block_elements <= MAX_BLOCK_ELEMENTS or block_elements % 8:
        raise FormatError(f"{at}values encoding must be {{'id': 'diff-planes', 'block_elements': a multiple of 8 "
                          f"in [8, 2^24]}}, got {encoding!r}; the file is corrupt")
    return block_elements


# -- the transform ------------------------------------------------------------------------------------------------

def _numpy_block(new_bits: np.ndarray, base_bits: np.ndarray, dtype: str) -> np.ndarray:
    """One block's stored differences, in exponent order, with numpy (what the kernels compute without numba)."""
    itemsize = new_bits.itemsize
    with np.errstate(over="ignore"):
        difference = (_to_ordered(new_bits, dtype) - _to_ordered(base_bits, dtype)).view(SIGNED[itemsize])
    zigzag = ((difference << 1) ^ (difference >> (8 * itemsize - 1))).view(UNSIGNED[itemsize])
    order = _order(base_bits, dtype)
    return zigzag if order is None else zigzag[order]


def _order(base_bits: np.ndarray, dtype: str, scratch: Scratch | None = None) -> np.ndarray | None:
    """The stable order of a block by the base values' exponent (None for integers: no reordering), as indices
    in ``scratch`` (valid until its next use): one in-place sort of ``exponent << k | index`` keys (distinct, so
    any sort is stable, and numpy sorts 32- and 64-bit integers with SIMD), the index masked out after. A stable
    argsort of the exponents (a radix sort) takes less CPU, but allocates twice the indices on every call."""
    mantissa = MANTISSA_BITS.get(dtype)
    if mantissa is None:
        return None
    scratch = Scratch() if scratch is None else scratch
    exponent_bits = 8 * base_bits.itemsize - 1 - mantissa
    index_bits = max(1, (base_bits.size - 1).bit_length())
    order = scratch.array("order", np.intp, base_bits.size)
    wide = np.uint32 if exponent_bits + index_bits <= 32 else np.uint64
    keys = scratch.array("keys", wide, base_bits.size) if wide == np.uint32 else order.view(wide)
    np.right_shift(base_bits, base_bits.dtype.type(mantissa), out=keys, casting="unsafe")
    keys &= wide((1 << exponent_bits) - 1)
    keys <<= wide(index_bits)
    keys |= scratch.arange(wide, base_bits.size)
    keys.sort()
    keys &= wide((1 << index_bits) - 1)
    if keys.dtype == np.uint32:
        np.copyto(order, keys)  # indices as numpy indexes with them: no conversion (and array) per use
    return order


class Scratch:
    """Arrays that the numpy transform reuses from block to block (``apply_block``'s ``scratch``): a new array of
    a block's size costs its page faults each time, which a command line's numpy decode spent as long in as in
    its sort. Holds 16 bytes a value of the largest block (exponent order); dropped with the object."""

    def __init__(self) -> None:
        self._buffers: dict[Hashable, np.ndarray] = {}
        self._aranges: dict[str, np.ndarray] = {}  # kept with their contents

    def array(self, name: str, dtype: Any, size: int) -> np.ndarray:
        """``size`` items of the array ``name`` (contents undefined), grown as needed."""
        return reusable(self._buffers, name, size * np.dtype(dtype).itemsize).view(dtype)

    def arange(self, dtype: Any, size: int) -> np.ndarray:
        """``np.arange(size, dtype=dtype)``, kept."""
        name = f"arange-{np.dtype(dtype).name}"
        array = self._aranges.get(name)
        if array is None or array.size < size:
            array = self._aranges[name] = np.arange(size, dtype=dtype)
        return array[:size]


def kernel_args(dtype: str, itemsize: int) -> tuple[int, int, int, np.ndarray]:
    """(mantissa bits or -1 for integers, exponent bits, value bits, a slot per exponent) for the kernels."""
    mantissa = MANTISSA_BITS.get(dtype, -1)
    exponent_bits = 8 * itemsize - 1 - mantissa if mantissa >= 0 else 0
    return mantissa, exponent_bits, 8 * itemsize, np.zeros(1 << exponent_bits, np.int64)


@Kernel
def zigzag_of(new: int, base: int, mantissa: int, bits: int) -> int:  # pragma: no cover - compiled by numba
    """The stored difference (step 2 of §12.4, before the order) of one value of ``bits`` <= 32 bits against its
    base value (unsigned ints; ``mantissa`` bits, or -1 for integers: no order-preserving map), branch-free."""
    full, sign = (1 << bits) - 1, 1 << (bits - 1)
    if mantissa >= 0:  # o(x): NOT x when the sign bit is set, else x OR the sign bit
        new ^= sign | (-((new >> (bits - 1)) & 1) & (sign - 1))
        base ^= sign | (-((base >> (bits - 1)) & 1) & (sign - 1))
    difference = (new - base) & full
    difference -= (difference & sign) << 1
    return ((difference << 1) ^ (difference >> 63)) & full


@Kernel
def zigzag_kernel(new: np.ndarray, base: np.ndarray, zigzag: np.ndarray, keys: np.ndarray, mantissa: int,
                  exponent_bits: int, bits: int) -> None:  # pragma: no cover - compiled by numba
    """The stored differences of values of at most 32 bits in their own order, and the base values' exponent
    fields (0 for integers): what ``encode_differences`` orders and cuts into planes."""
    exponents = (1 << exponent_bits) - 1
    for i in range(base.size):
        b = np.int64(base[i])
        zigzag[i] = zigzag_of(np.int64(new[i]), b, mantissa, bits)
        keys[i] = (b >> max(mantissa, 0)) & exponents


@Kernel
def _count_keys(keys: np.ndarray, counts: np.ndarray) -> None:  # pragma: no cover - compiled by numba
    for key in keys:
        counts[key] += 1


@Kernel
def _place(zigzag: np.ndarray, keys: np.ndarray, slots: np.ndarray,
           out: np.ndarray) -> None:  # pragma: no cover - compiled by numba
    """A counting sort's placing pass: each difference to the next free slot of its key (stable)."""
    for i in range(zigzag.size):
        j = slots[keys[i]]
        slots[keys[i]] = j + 1
        out[j] = zigzag[i]


@Kernel
def _split_planes(values: np.ndarray, planes: np.ndarray) -> None:  # pragma: no cover - compiled by numba
    """Byte ``p`` (little-endian) of each of ``values`` (unsigned ints) to row ``p`` of ``planes`` (uint8)."""
    for p in range(planes.shape[0]):
        row = planes[p]
        for i in range(values.size):
            row[i] = (values[i] >> (8 * p)) & 0xFF


@Kernel
def decode_value(base: int, zigzag: int, mantissa: int, bits: int) -> int:  # pragma: no cover - compiled by numba
    """The value coded by the stored difference ``zigzag`` against ``base`` (unsigned ints of ``bits`` <= 32
    bits; ``mantissa`` bits, or -1 for integers): the inverse of ``zigzag_of``."""
    full, sign = (1 << bits) - 1, 1 << (bits - 1)
    if mantissa >= 0:
        base = (~base & full) if base & sign else base | sign
    value = (base + ((zigzag >> 1) ^ -(zigzag & 1))) & full
    if mantissa >= 0:
        value = value ^ sign if value & sign else ~value & full
    return value


@Kernel
def decode_kernel(zigzag: np.ndarray, base: np.ndarray, out: np.ndarray, mantissa: int, exponent_bits: int, bits: int,
                   slots: np.ndarray) -> None:  # pragma: no cover - compiled by numba
    """``apply_block`` in one pass (values of at most 32 bits): the inverse of ``zigzag_kernel`` and the exponent
    order; ``out`` may be ``base`` (each value is read before it is written)."""
    exponents = (1 << exponent_bits) - 1
    if mantissa >= 0:
        for i in range(base.size):
            slots[(np.int64(base[i]) >> mantissa) & exponents] += 1
        total = 0
        for k in range(slots.size):
            count = slots[k]
            slots[k] = total
            total += count
    for i in range(base.size):
        b = np.int64(base[i])
        j = i
        if mantissa >= 0:
            key = (b >> mantissa) & exponents
            j = slots[key]
            slots[key] = j + 1
        out[i] = decode_value(b, np.int64(zigzag[j]), mantissa, bits)


def _to_ordered(bits: np.ndarray, dtype: str) -> np.ndarray:
    """Floats' bits as unsigned ints in the order of their values (-0 just below +0), a new array; integers as
    they are."""
    if dtype not in MANTISSA_BITS:
        return bits
    width = 8 * bits.itemsize
    # NOT x when negative, else x with the sign bit set: x XOR (its sign bit spread over every bit, | sign)
    ordered = (bits.view(SIGNED[bits.itemsize]) >> (width - 1)).view(bits.dtype)
    ordered |= bits.dtype.type(1 << (width - 1))
    ordered ^= bits
    return ordered


def _from_ordered(ordered: np.ndarray, dtype: str, out: np.ndarray) -> np.ndarray:
    """The inverse of ``_to_ordered``, into ``out`` (which may be ``ordered``)."""
    if dtype not in MANTISSA_BITS:
        if out is not ordered:
            out[:] = ordered
        return out
    width = 8 * ordered.itemsize
    # the inverse: x with the sign bit cleared when it is set, else NOT x
    flip = (ordered.view(SIGNED[ordered.itemsize]) >> (width - 1)).view(ordered.dtype)
    np.invert(flip, out=flip)
    flip |= ordered.dtype.type(1 << (width - 1))
    return np.bitwise_xor(ordered, flip, out=out)


def _bits(array: np.ndarray, dtype: str, what: str) -> np.ndarray:
    itemsize = DTYPE_SIZES.get(dtype)
    if itemsize is None:
        raise UsageError(f"unknown dtype {dtype!r} (known: {', '.join(DTYPE_SIZES)})")
    if not isinstance(array, np.ndarray) or array.dtype.itemsize != itemsize:
        raise UsageError(f"{what} must be a numpy array of {itemsize}-byte items for {dtype}, got "
                         f"{getattr(array, 'dtype', type(array))}")
    return np.ascontiguousarray(array).reshape(-1).view(UNSIGNED[itemsize])


def _plane_record(read: Any, size: int, offset: int, values: int, at: str) -> tuple[int, int, Any]:
    """(where the next record begins, method, data) of the plane record at ``offset``, checked."""
    if offset + RECORD_HEADER > size:
        raise FormatError(f"{at}diff-planes payload ends inside a plane record header at byte {offset}; the file "
                          "is corrupt")
    header = read(offset, RECORD_HEADER)
    method, length = header[0], int.from_bytes(header[1:], "little")
    end = offset + RECORD_HEADER + length
    if end > size:
        raise FormatError(f"{at}a difference plane of {length} bytes at byte {offset} runs past the payload's "
                          f"{size} bytes; the file is corrupt")
    data = read(offset + RECORD_HEADER, length)
    if method == STORED:
        if length != values:
            raise FormatError(f"{at}a stored difference plane holds {length} bytes, {values} expected; the file "
                              "is corrupt")
    elif method == ZSTD:
        try:
            check_frame(data, values)
        except FormatError as exc:
            raise FormatError(f"{at}difference plane at byte {offset}: {exc}; the file is corrupt") from None
    else:
        raise FormatError(f"{at}difference plane method {method} at byte {offset} is neither 0 (stored) nor 1 "
                          "(zstd); the file is corrupt")
    return end, method, data
