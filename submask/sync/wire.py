"""A patch as bytes: a .smask delta (FORMAT.md §12) whose ``sync`` header member holds its fingerprints (§13).

The mask of each tensor is coded by the smallest default encoding, its values by ``sync.values``; the file is
built and read in memory, so a transport (a folder, a socket, a broadcast) moves one bytes object.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import replace
from typing import Any, cast

import numpy as np

from ..codecs import get_codec
from ..errors import FormatError, where
from ..format.container import parse_bytes, write_container
from ..format.header import parse_tensor_entries, payload_names
from ..format.tensors import decode_positions, decode_tensor, encode_tensor
from ..format.values import TensorValues, is_diff
from ..mask import TensorMask
from ..metadata import MaskMetadata
from ..packed import from_positions, set_positions
from . import values as coding
from .content import PatchFields, PatchLike, PatchTensor, check_chain

SYNC_KEY = "sync"
_FINGERPRINT = re.compile(r"sha256:[0-9a-f]{64}")


def patch_to_bytes(patch: PatchLike) -> bytes:
    """``Patch.to_bytes``."""
    entries, payloads = {}, []
    for name, tensor in patch.tensors.items():
        numel = math.prod(tensor.shape)
        packed = (TensorMask.full(tensor.shape, True).packed if tensor.positions is None
                  else from_positions(tensor.positions, numel))
        entry, payload = encode_tensor(name, tensor.shape, packed, tensor.count)
        record, values = coding.encode_patch_values(name, TensorValues(tensor.dtype, tensor.values), tensor.previous,
                                                    None if tensor.positions is None else packed, numel)
        if record.entry in patch.tensors:
            raise FormatError(f"patch step {patch.step}: tensor {name!r}'s values would be stored under "
                              f"{record.entry!r}, another tensor's name; rename that tensor")
        entries[name] = replace(entry, values=record)
        payloads += [(name, payload), (record.entry, values)]
    metadata = MaskMetadata(criterion={"name": "exact"}, model=None if patch.model is None else
                            {"fingerprint": patch.model}, extra={SYNC_KEY: _record(patch)}).for_file(
        bool(entries), differences=any(e.values is not None and is_diff(e.values) for e in entries.values()))
    minor = max([metadata.minor_version, *(get_codec(entry.encoding).minor_version for entry in entries.values()),
                 *(coding.values_minor(entry.values) for entry in entries.values() if entry.values is not None)])
    header = replace(metadata, minor_version=minor).to_json()
    header["tensors"] = {name: entry.to_json() for name, entry in entries.items()}
    out = io.BytesIO()
    write_container(out, header, [(name, len(data)) for name, data in payloads],
                    io.BytesIO(b"".join(data for _, data in payloads)), minor)
    return out.getvalue()


def patch_from_bytes(data: bytes | bytearray | memoryview, source: object = None) -> PatchFields:
    """``Patch.from_bytes``."""
    label = source if source is not None else "patch bytes"
    header, payloads = parse_bytes(data, label)
    metadata = MaskMetadata.from_json(header, label)
    entries = parse_tensor_entries(header.get("tensors"), metadata, label)
    if set(payload_names(entries)) != set(payloads):
        raise FormatError(f"{where(label)}header entries and payloads differ; the patch is corrupt")
    parent, fingerprint, step, state = _parse_record(metadata.extra.get(SYNC_KEY), label)
    tensors = {}
    for name, entry in entries.items():
        if entry.values is None or (parent is None and entry.ones != entry.bits):
            raise FormatError(f"{where(label, name)}a sync {'snapshot' if parent is None else 'patch'} holds "
                              f"{'every value' if parent is None else 'values'} of each tensor; this one does "
                              "not: the patch is corrupt")
        positions = None
        if parent is not None:
            payload = bytes(payloads[name])
            positions = decode_positions(entry, payload, label)
            if positions is None:
                positions = set_positions(decode_tensor(entry, payload, label), entry.bits)
        values = coding.decode_patch_values(entry.values, payloads[entry.values.entry], entry.ones, label, name,
                                            positions, entry.bits)
        tensors[name] = (PatchTensor(entry.shape, values.dtype, positions, values.data)
                         if isinstance(values, TensorValues) else
                         PatchTensor(entry.shape, values.dtype, positions, np.zeros(0, np.uint8), pending=values))
    model = (metadata.model or {}).get("fingerprint")
    if all(tensor.pending is None for tensor in tensors.values()):  # else once decoded, by apply_to
        check_chain(parent, fingerprint, tensors, label)
    return PatchFields(parent, fingerprint, step, tensors, state, model)


def _record(patch: PatchLike) -> dict[str, Any]:
    return {"parent": patch.parent, "fingerprint": patch.fingerprint, "step": patch.step, "state": patch.state}


def _parse_record(record: Any, label: object) -> tuple[str | None, str, int, str | None]:
    """(parent, fingerprint, step, state) of a ``sync`` member, each checked (FORMAT.md §13)."""
    at = where(label)
    if not isinstance(record, dict):
        raise FormatError(f"{at}no 'sync' record in the header: this is a delta, not a sync patch")
    parent, fingerprint, step, state = (record.get(key) for key in ("parent", "fingerprint", "step", "state"))
    if set(record) != {"parent", "fingerprint", "step", "state"} or not _is_fingerprint(fingerprint) \
            or not (parent is None or _is_fingerprint(parent)) or not (state is None or _is_fingerprint(state)) \
            or type(step) is not int or step < 0:
        raise FormatError(f"{at}'sync' must be {{'parent', 'fingerprint', 'step', 'state'}} with fingerprints "
                          f"'sha256:' + 64 hex digits (parent, state: or null) and a step >= 0, got {record!r}")
    return cast("tuple[str | None, str, int, str | None]", (parent, fingerprint, step, state))


def _is_fingerprint(value: Any) -> bool:
    return isinstance(value, str) and _FINGERPRINT.fullmatch(value) is not None


__all__ = ["SYNC_KEY", "patch_from_bytes", "patch_to_bytes"]
