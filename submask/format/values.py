"""A tensor's values in a delta (FORMAT.md §12): the value bytes at its set positions and their encoding.

The value bytes of a tensor are, for each set bit of its mask in bit order, the element's bytes in its dtype,
little-endian: ``ones * itemsize`` bytes. The one encoding, ``planes``, cuts them into blocks of
``block_values`` values and stores each block as ``itemsize`` planes (plane j: byte j of every value), each
plane stored as it is or as one zstd frame, whichever is smaller: the sign and exponent bytes of floats
compress, their low mantissa bytes do not.

Decoders read a payload record by record with checks before every allocation, so a header or a payload
claiming 2^40 values costs nothing; ``iter_value_blocks`` decodes in pieces of at most PIECE_VALUES values.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..codecs.plain import check_frame
from ..errors import ChecksumError, FormatError, MismatchError, UnknownEncodingError, UsageError, where
from ..limits import check_allocation
from ..packed import crc32_update
from .container import ReadAt
from .header import DIFF_PLANES, DTYPE_SIZES, ValuesEntry
from .payloads import RECORD_HEADER, STORED, ZSTD, Payload, payload_reader

if TYPE_CHECKING:
    from .diffs import Differences

PLANES = "planes"
BLOCK_VALUES = 1 << 20  # the writers' block: planes of 1 MiB, compressed as well as larger ones
MAX_BLOCK_VALUES = 1 << 26
ZSTD_LEVEL = 1  # smaller than levels 3 and 9 on value planes, and 3x faster (tools/bench/bench_values.py)
PIECE_VALUES = 1 << 18  # values per piece of ``iter_value_blocks``: what streaming holds, per byte of itemsize

VALUES_PREFIX = "~values/"  # writers name a tensor's values entry "~values/" + its name (then ~2, ~3, ...)


@dataclass(frozen=True)
class TensorValues:
    """The values of one tensor at its set positions: a safetensors ``dtype`` name and the value bytes
    (uint8, ``count * itemsize`` of them, in the mask's bit order); ``base``, when given, the base's value bytes
    at the same positions: a writer then codes the values against them (``diff-planes``, FORMAT.md §12.4)."""

    dtype: str
    data: np.ndarray
    base: np.ndarray | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        itemsize = DTYPE_SIZES.get(self.dtype)
        if itemsize is None:
            raise UsageError(f"values of dtype {self.dtype!r} cannot be stored (known: {', '.join(DTYPE_SIZES)})")
        if not isinstance(self.data, np.ndarray) or self.data.dtype != np.uint8 or self.data.ndim != 1 \
                or self.data.size % itemsize:
            raise UsageError(f"values must be a 1-D uint8 array of whole {itemsize}-byte {self.dtype} values, got "
                             f"{getattr(self.data, 'shape', None)} of {getattr(self.data, 'dtype', type(self.data))}")
        if self.base is not None and (not isinstance(self.base, np.ndarray) or self.base.dtype != np.uint8
                                      or self.base.shape != self.data.shape):
            raise UsageError(f"base values must be uint8 of the values' shape {self.data.shape}, got "
                             f"{getattr(self.base, 'shape', None)} of {getattr(self.base, 'dtype', type(self.base))}")

    @property
    def itemsize(self) -> int:
        return DTYPE_SIZES[self.dtype]

    @property
    def count(self) -> int:
        """The number of values."""
        return self.data.size // self.itemsize


def encode_values(value_bytes: np.ndarray, itemsize: int,
                  block_values: int = BLOCK_VALUES) -> tuple[dict[str, Any], bytes]:
    """Encode value bytes (uint8, a multiple of ``itemsize``) as ``planes``: returns (encoding JSON, payload)."""
    if type(block_values) is not int or not 1 <= block_values <= MAX_BLOCK_VALUES:
        raise UsageError(f"block_values must be an integer in [1, 2^26], got {block_values!r}")
    if value_bytes.dtype != np.uint8 or value_bytes.size % itemsize:
        raise UsageError(f"value bytes must be uint8, a whole number of {itemsize}-byte values; got "
                         f"{value_bytes.size} of {value_bytes.dtype}")
    import zstandard  # here: commands that never write values skip its import

    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True)
    values = np.ascontiguousarray(value_bytes).reshape(-1, itemsize)
    records = []
    for start in range(0, len(values), block_values):
        block = values[start : start + block_values]
        for plane in range(itemsize):
            raw = np.ascontiguousarray(block[:, plane]).tobytes()
            packed = compressor.compress(raw)
            method, data = (ZSTD, packed) if len(packed) < len(raw) else (STORED, raw)
            records += [bytes([method]), len(data).to_bytes(4, "little"), data]
    return {"id": PLANES, "block_values": block_values}, b"".join(records)


def decode_values(payload: Payload, encoding: dict[str, Any], count: int, itemsize: int,
                  out: np.ndarray | None = None, path: object = None, name: str | None = None) -> np.ndarray:
    """Decode a values payload into its ``count * itemsize`` value bytes (``out`` when given); FormatError,
    naming the file and tensor, on a damaged payload; LimitError when the bytes exceed the memory limit
    (``limits``; ``MaskFile.value_blocks`` reads them in pieces)."""
    at = where(path, name)
    source = _source(payload, encoding, count, itemsize, at)  # the payload's size is checked before allocating
    nbytes = count * itemsize
    if out is None:
        check_allocation(nbytes, f"{at}{count:,} values")
        out = np.empty(nbytes, dtype=np.uint8)
    elif out.dtype != np.uint8 or out.shape != (nbytes,):
        raise UsageError(f"{at}out must be {nbytes} uint8 bytes, got {out.shape} of {out.dtype}")
    for _ in _pieces(*source, count, itemsize, at, out):
        pass
    return out


def iter_value_blocks(payload: Payload, encoding: dict[str, Any], count: int, itemsize: int, path: object = None,
                      name: str | None = None) -> Iterator[np.ndarray]:
    """The value bytes of a payload in consecutive pieces (fresh uint8 arrays of at most PIECE_VALUES values):
    memory stays bounded whatever the header and payload claim. Every record is checked before it is used."""
    at = where(path, name)
    return _pieces(*_source(payload, encoding, count, itemsize, at), count, itemsize, at)


def _source(payload: Payload, encoding: dict[str, Any], count: int, itemsize: int, at: str) -> tuple[ReadAt, int, int]:
    """(positional reads, size, block_values) of a payload with room for the records ``count`` values need."""
    block_values = _block_values(encoding, at)
    size, read = payload_reader(payload)
    full, last = divmod(count, block_values)
    least = itemsize * (full * _least_record(block_values) + (_least_record(last) if last else 0))
    if size < least:
        raise FormatError(f"{at}values payload has {size:,} bytes, fewer than the {least:,} that records of "
                          f"{count:,} values take at least; the file is corrupt")
    return read, size, block_values


def _least_record(values: int) -> int:
    """The fewest bytes a plane record of ``values`` values can take: its header, then the bytes stored, or a
    zstd frame (at least 6 header bytes, and 4 per block of at most 128 KiB: RFC 8878 §3.1.1)."""
    return RECORD_HEADER + min(values, 6 + 4 * -(-values // (128 << 10)))


def _pieces(read: ReadAt, size: int, block_values: int, count: int, itemsize: int, at: str,
            out: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """Decode piece by piece, into ``out`` when given (each piece a view of it), else into fresh arrays."""
    import zstandard

    offset = 0
    for start in range(0, count, block_values):
        values = min(block_values, count - start)
        planes = []
        for _ in range(itemsize):
            offset, plane = _record(read, size, offset, values, at)
            planes.append(plane)
        readers = [plane if isinstance(plane, _StoredPlane) else zstandard.ZstdDecompressor().stream_reader(plane)
                   for plane in planes]
        for first in range(0, values, PIECE_VALUES):
            length = min(PIECE_VALUES, values - first)
            begin = (start + first) * itemsize
            piece = (np.empty(length * itemsize, dtype=np.uint8) if out is None
                     else out[begin : begin + length * itemsize])
            columns = piece.reshape(length, itemsize)
            for index, reader in enumerate(readers):
                columns[:, index] = _plane_bytes(reader, first, length, at)
            yield piece
        for reader in readers:
            if not isinstance(reader, _StoredPlane) and reader.read(1):
                raise FormatError(f"{at}a zstd value plane holds more than its {values} bytes; the file is corrupt")
    if offset != size:
        raise FormatError(f"{at}values payload holds {size - offset} bytes after its last block; the file is corrupt")


@dataclass(frozen=True)
class _StoredPlane:
    read: ReadAt
    offset: int


def _record(read: ReadAt, size: int, offset: int, values: int,
            at: str) -> tuple[int, bytes | memoryview | _StoredPlane]:
    """Check the plane record at ``offset`` of a block of ``values`` values: (where the next begins, the zstd
    frame or where the stored bytes are)."""
    if offset + RECORD_HEADER > size:
        raise FormatError(f"{at}values payload ends inside a plane record header at byte {offset}; the file is corrupt")
    header = read(offset, RECORD_HEADER)
    method, length = header[0], int.from_bytes(header[1:], "little")
    begin, end = offset + RECORD_HEADER, offset + RECORD_HEADER + length
    if end > size:
        raise FormatError(f"{at}a value plane of {length} bytes at byte {offset} runs past the payload's {size} "
                          "bytes; the file is corrupt")
    if method == STORED:
        if length != values:
            raise FormatError(f"{at}a stored value plane holds {length} bytes, {values} expected; the file is corrupt")
        return end, _StoredPlane(read, begin)
    if method != ZSTD:
        raise FormatError(f"{at}value plane method {method} at byte {offset} is neither 0 (stored) nor 1 (zstd); "
                          "the file is corrupt")
    frame = read(begin, length)
    try:
        check_frame(frame, values)
    except FormatError as exc:
        raise FormatError(f"{at}value plane at byte {offset}: {exc}; the file is corrupt") from None
    return end, frame


def _plane_bytes(reader: Any, first: int, length: int, at: str) -> np.ndarray:
    """``length`` bytes of a plane from its ``first`` byte, which the reader is at."""
    if isinstance(reader, _StoredPlane):
        return np.frombuffer(reader.read(reader.offset + first, length), dtype=np.uint8)
    import zstandard

    buffer = np.empty(length, dtype=np.uint8)
    got = 0
    try:
        while got < length and (more := reader.readinto(buffer[got:])):
            got += more
    except zstandard.ZstdError as exc:
        raise FormatError(f"{at}a zstd value plane is corrupt ({exc})") from None
    if got != length:
        raise FormatError(f"{at}a zstd value plane ends after {first + got} bytes; the file is corrupt")
    return buffer


def _block_values(encoding: dict[str, Any], at: str) -> int:
    if encoding.get("id") != PLANES:
        raise UnknownEncodingError(f"{at}unknown values encoding {encoding.get('id')!r} (this submask knows "
                                   f"{PLANES!r}); upgrade submask to read these values")
    block_values = encoding.get("block_values")
    if set(encoding) != {"id", "block_values"} or type(block_values) is not int \
            or not 1 <= block_values <= MAX_BLOCK_VALUES:
        raise FormatError(f"{at}values encoding must be {{'id': 'planes', 'block_values': integer in [1, 2^26]}}, "
                          f"got {encoding!r}; the file is corrupt")
    return block_values


# --- checked against the header's values record (size, dtype, CRC-32) ---

def encode_tensor_values(name: str, values: TensorValues | Differences, ones: int, config: dict[str, Any] | None = None,
                         packed: np.ndarray | None = None, numel: int | None = None) -> tuple[ValuesEntry, bytes]:
    """Encode a tensor's values for a file: (its values record, payload). ``config`` may set ``block_values``
    (``planes``) or ``block_elements`` (``diff-planes``, chosen when ``values.base`` is given, or for
    ``diffs.Differences``: it also needs the tensor's ``packed`` mask bits and ``numel``).

    The record's ``entry`` is the writers' first choice, ``"~values/" + name``; the writer settles it."""
    if values.count != ones:
        raise MismatchError(f"tensor {name!r}: {values.count} values of {values.dtype}, but its mask has {ones} set "
                            "positions")
    size = values.count * DTYPE_SIZES[values.dtype]
    if isinstance(values, TensorValues) and values.base is None:
        encoding, payload = encode_values(values.data, values.itemsize, **(config or {}))
        crc = crc32_update(values.data)
    else:
        if packed is None or numel is None:
            raise UsageError(f"tensor {name!r}: values coded against the base need the mask's packed bits and numel")
        from . import diffs

        block_elements = (config or {}).get("block_elements", diffs.BLOCK_ELEMENTS)
        counts = diffs.block_counts(numel, block_elements, packed)
        if isinstance(values, TensorValues):
            assert values.base is not None  # the branch above took the values without a base
            unsigned = diffs.UNSIGNED[values.itemsize]
            encoding, payload, crc = diffs.encode_blocks(values.data.view(unsigned), values.base.view(unsigned),
                                                         values.dtype, counts, block_elements)
        else:
            encoding, payload, crc = diffs.encode_differences(values.zigzag, values.keys, values.dtype, counts,
                                                              block_elements)
    return ValuesEntry(VALUES_PREFIX + name, values.dtype, encoding, size, f"{crc:08x}"), payload


def read_values(entry: ValuesEntry, payload: Payload, count: int, path: object = None, name: str | None = None,
                base: np.ndarray | None = None, counts: list[int] | None = None) -> TensorValues:
    """Decode a tensor's values and check them against their record (CRC-32 included). Values coded against
    the base need ``base``, the base's value bytes at the set positions (uint8), and ``counts``, the set
    positions in each block (``diffs.block_counts`` of the mask)."""
    at = where(path, name)
    itemsize = _itemsize(entry, count, at)
    if is_diff(entry) and count:
        if base is None or counts is None:
            verify_values(entry, payload, count, path, name)  # a damaged payload says so first
            raise UsageError(f"{at}the values are coded against the base checkpoint (diff-planes): read them with "
                             "it, e.g. submask.apply_delta(base_state_dict, delta) or "
                             "submask.load_delta(delta, base=base_state_dict)")
        from .diffs import apply_block

        if base.dtype != np.uint8 or base.size != entry.size:
            raise MismatchError(f"{at}{base.size} bytes of base values for {entry.size} bytes of values")
        data, done = np.empty(entry.size, dtype=np.uint8), 0
        for block in difference_blocks(entry, payload, count, path, name, counts):
            data[done : done + block.size] = apply_block(block, base[done : done + block.size], entry.dtype).view(
                np.uint8)
            done += block.size
        return TensorValues(entry.dtype, data)
    if is_diff(entry):  # no values: nothing needs the base
        verify_values(entry, payload, count, path, name)
        return TensorValues(entry.dtype, np.empty(0, np.uint8))
    data = decode_values(payload, entry.encoding, count, itemsize, path=path, name=name)
    _check_crc(entry, crc32_update(data), at)
    return TensorValues(entry.dtype, data)


def is_diff(entry: ValuesEntry) -> bool:
    """Whether a tensor's values are coded against the base (``diff-planes``, FORMAT.md §12.4)."""
    return entry.encoding.get("id") == DIFF_PLANES


def difference_blocks(entry: ValuesEntry, payload: Payload, count: int, path: object = None,
                      name: str | None = None, counts: list[int] | None = None) -> Iterator[np.ndarray]:
    """The stored differences of a ``diff-planes`` tensor block by block (``diffs.iter_blocks``; ``counts``
    from the mask when at hand); the CRC-32 is checked once the last block has been taken."""
    from . import diffs

    at = where(path, name)
    _itemsize(entry, count, at)
    block_elements = diffs.block_elements_of(entry.encoding, at)
    return _crc_checked(entry, diffs.iter_blocks(payload, entry.dtype, block_elements, count, counts, at), at)


def checked_pieces(entry: ValuesEntry, payload: Payload, count: int, path: object = None,
                   name: str | None = None) -> Iterator[np.ndarray]:
    """``iter_value_blocks`` of a tensor's values; the CRC-32 is checked once the last piece has been taken."""
    at = where(path, name)
    itemsize = _itemsize(entry, count, at)
    if is_diff(entry):
        raise UsageError(f"{at}the values are coded against the base checkpoint (diff-planes): rebuild them with "
                         "it (submask apply BASE DELTA -o DIR)")
    return _crc_checked(entry, iter_value_blocks(payload, entry.encoding, count, itemsize, path, name), at)


def _crc_checked(entry: ValuesEntry, pieces: Iterator[np.ndarray], at: str) -> Iterator[np.ndarray]:
    crc = 0
    for piece in pieces:
        crc = crc32_update(piece, crc)
        yield piece
    _check_crc(entry, crc, at)


def verify_values(entry: ValuesEntry, payload: Payload, count: int, path: object = None,
                  name: str | None = None) -> None:
    """Every check of ``read_values``, in bounded memory (what ``submask validate`` runs); for values coded
    against the base, every check that needs no base (records, sizes, the CRC-32 of the differences)."""
    pieces = (difference_blocks if is_diff(entry) else checked_pieces)(entry, payload, count, path, name)
    for _ in pieces:
        pass


def _itemsize(entry: ValuesEntry, count: int, at: str) -> int:
    itemsize = DTYPE_SIZES.get(entry.dtype)
    if itemsize is None:
        raise UnknownEncodingError(f"{at}values of unknown dtype {entry.dtype!r} (this submask knows "
                                   f"{', '.join(DTYPE_SIZES)}); upgrade submask to read these values")
    if entry.size != count * itemsize:
        raise FormatError(f"{at}values size is {entry.size}, but {count} values of {entry.dtype} take "
                          f"{count * itemsize} bytes; the file is corrupt")
    return itemsize


def _check_crc(entry: ValuesEntry, crc: int, at: str) -> None:
    if f"{crc:08x}" != entry.crc32:
        raise ChecksumError(f"{at}CRC-32 of the decoded values is {crc:08x}, header says {entry.crc32}; the file "
                            "is corrupt: download or rebuild it")


def plane_methods(entry: ValuesEntry, payload: Payload, count: int, path: object = None,
                  name: str | None = None) -> list[str]:
    """Per plane (byte 0 first), how its blocks are stored: "stored", "zstd" or "mixed" (what ``info`` shows;
    [] for no values). Checks the records, decodes nothing; FormatError on a damaged payload."""
    at = where(path, name)
    itemsize = _itemsize(entry, count, at)
    if is_diff(entry):
        from . import diffs

        diffs.block_elements_of(entry.encoding, at)
        planes = diffs.plane_methods(payload, itemsize, at)
        return [methods.pop() if len(methods) == 1 else "mixed" for methods in planes] if count else []
    block_values = _block_values(entry.encoding, at)
    size, read = payload_reader(payload)
    seen: list[set[str]] = [set() for _ in range(itemsize)]
    offset = 0
    for start in range(0, count, block_values):
        for plane in range(itemsize):
            offset, record = _record(read, size, offset, min(block_values, count - start), at)
            seen[plane].add("stored" if isinstance(record, _StoredPlane) else "zstd")
    return [methods.pop() if len(methods) == 1 else "mixed" for methods in seen] if count else []
