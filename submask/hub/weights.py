"""The model weights in a Hub repo, as tensor names and shapes read from their safetensors headers (HTTP range
requests; the index of a sharded checkpoint is the one file downloaded), to check a mask against before a push."""

from __future__ import annotations

from collections.abc import Mapping

from ..align import check_fit
from ..errors import MismatchError
from ..format.reader import MaskFile
from .remote import Remote

Shapes = Mapping[str, tuple[int, ...]]


def repo_weights(remote: Remote, commit: str, files: Mapping[str, int]) -> dict[str, tuple[int, ...]] | None:
    """Name -> shape of the model weights at the repo's top level at ``commit``; None when it holds none."""
    if remote.repo_type != "model" or not any(p.endswith(".safetensors") and "/" not in p for p in files):
        return None
    from ..checkpoints.sources import hub_source

    with hub_source(remote.repo_id, commit, api=remote.api, cache_dir=remote.cache_dir) as source:
        return {name: tuple(info.shape) for name, info in source.tensors.items()}


def check_against_weights(mask_file: MaskFile, weights: Shapes, repo: str, force: bool) -> str | None:
    """MismatchError (unless ``force``) when a tensor of the mask is missing from ``weights`` or has another
    shape; with ``force`` the mismatch comes back as a warning line instead."""
    try:
        check_fit(mask_file, weights, f"the weights in {repo}")
    except MismatchError as exc:
        if not force:
            raise MismatchError(f"{exc}; refusing to push a mask that does not fit the repo's weights: push it to "
                                "the repo of its model, or pass --force (force=True) to push it anyway") from None
        return f"{exc} (pushed anyway: --force)"
    return None
