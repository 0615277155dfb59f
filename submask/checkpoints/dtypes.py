"""The checkpoint dtypes a build understands, named as safetensors names them, and their numeric decoding.

Every tensor is read as unsigned integers of its own width (bf16 and fp16 as uint16, fp8 as uint8, ...),
so reading and exact comparison need neither torch nor a numpy dtype for bf16/fp8. Tolerance criteria
decode values to float64; 8- and 16-bit floats through a table of all their codes (fp8's built here from
the bit layout: e4m3fn has bias 7, no infinities and NaN at S.1111.111; e5m2 has bias 15 and is IEEE-like).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from ..errors import SourceError


@dataclass(frozen=True)
class DType:
    """A stored element type: safetensors name, width, how to read it and how to decode it."""

    name: str
    itemsize: int
    kind: str  # "float", "int" or "bool"
    numpy_name: str | None  # numpy dtype that holds the values; None where numpy has none (bf16, fp8)
    torch_name: str

    @property
    def raw(self) -> np.dtype:
        """The unsigned integer dtype of the same width: the type everything is read and compared as."""
        return np.dtype(f"u{self.itemsize}")

    @property
    def signed(self) -> np.dtype:
        """The signed integer dtype of the same width (torch has full support for these only)."""
        return np.dtype(f"i{self.itemsize}")


def fp8_table(exponent_bits: int, mantissa_bits: int, bias: int, ieee: bool) -> np.ndarray:
    """float64 value of each of the 256 codes of an 8-bit float format, from its bit layout.

    ``ieee`` formats (e5m2) reserve the top exponent for infinities and NaNs; the others (e4m3fn) have no
    infinities and use only the all-ones code (per sign) for NaN.
    """
    table = np.empty(256, dtype=np.float64)
    top = (1 << exponent_bits) - 1
    for code in range(256):
        sign = -1.0 if code >> 7 else 1.0
        exponent = (code >> mantissa_bits) & top
        mantissa = code & ((1 << mantissa_bits) - 1)
        fraction = mantissa / (1 << mantissa_bits)
        if exponent == top and (ieee or mantissa == (1 << mantissa_bits) - 1):
            table[code] = sign * np.inf if ieee and mantissa == 0 else np.nan
        elif exponent == 0:
            table[code] = sign * fraction * 2.0 ** (1 - bias)
        else:
            table[code] = sign * (1 + fraction) * 2.0 ** (exponent - bias)
    return table


#: the 8- and 16-bit float formats, decoded by table lookup (the fastest decoder)
_TABLED = ("F8_E4M3", "F8_E5M2", "BF16", "F16")


@functools.cache
def _table(name: str) -> np.ndarray:
    """float64 value of every code of ``name`` (one of ``_TABLED``), built once per process on first use: at import
    the 16-bit ones cost every process a few milliseconds."""
    if name == "F8_E4M3":
        return fp8_table(4, 3, 7, ieee=False)
    if name == "F8_E5M2":
        return fp8_table(5, 2, 15, ieee=True)
    codes = np.arange(1 << 16, dtype=np.uint32)
    with np.errstate(invalid="ignore"):
        if name == "BF16":
            return (codes << 16).view(np.float32).astype(np.float64)
        return codes.astype(np.uint16).view(np.float16).astype(np.float64)


DTYPES: dict[str, DType] = {d.name: d for d in (
    DType("BOOL", 1, "bool", "uint8", "bool"),  # decoded as its byte value
    DType("U8", 1, "int", "uint8", "uint8"),
    DType("I8", 1, "int", "int8", "int8"),
    DType("U16", 2, "int", "uint16", "uint16"),
    DType("I16", 2, "int", "int16", "int16"),
    DType("U32", 4, "int", "uint32", "uint32"),
    DType("I32", 4, "int", "int32", "int32"),
    DType("U64", 8, "int", "uint64", "uint64"),
    DType("I64", 8, "int", "int64", "int64"),
    DType("F16", 2, "float", "float16", "float16"),
    DType("BF16", 2, "float", None, "bfloat16"),
    DType("F32", 4, "float", "float32", "float32"),
    DType("F64", 8, "float", "float64", "float64"),
    DType("F8_E4M3", 1, "float", None, "float8_e4m3fn"),
    DType("F8_E5M2", 1, "float", None, "float8_e5m2"),
)}

# numpy (incl. ml_dtypes) and torch spell dtypes by these names; both map to the safetensors names above.
_BY_ARRAY_NAME = {d.torch_name: d for d in DTYPES.values()}


def dtype_named(name: str, where: str = "") -> DType:
    """The DType for a safetensors dtype name; SourceError for names a build cannot compare."""
    try:
        return DTYPES[name]
    except KeyError:
        raise SourceError(f"{where}dtype {name!r} is not supported (supported: {', '.join(DTYPES)})") from None


def dtype_of_array(dtype: object, where: str = "") -> DType:
    """The DType of a numpy dtype or torch dtype (``torch.bfloat16``, ``np.float32``, ml_dtypes' bfloat16)."""
    is_torch = type(dtype).__module__.startswith("torch")
    name = str(dtype).removeprefix("torch.") if is_torch else np.dtype(cast(Any, dtype)).name
    try:
        return _BY_ARRAY_NAME[name]
    except KeyError:
        raise SourceError(f"{where}dtype {name!r} is not supported "
                          f"(supported: {', '.join(_BY_ARRAY_NAME)})") from None


def decode_table(dtype: DType) -> np.ndarray | None:
    """float64 value of every code of an 8- or 16-bit float dtype, indexed by code; None for other dtypes."""
    return _table(dtype.name) if dtype.name in _TABLED else None


def decode(raw: np.ndarray, dtype: DType) -> np.ndarray:
    """float64 values of raw elements (an unsigned view of ``dtype``'s width); integers are exact to 2^53."""
    table = decode_table(dtype)
    if table is not None:
        return table[raw]
    assert dtype.numpy_name is not None  # every dtype without a numpy name has a decode table
    return raw.view(dtype.numpy_name).astype(np.float64)
