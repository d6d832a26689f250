"""Fitting the normalisation stats stored with a checkpoint, and their JSON form.

Actions and states are min-max normalised to [-1, 1] per dimension (Diffusion Policy / LeRobot), with the core's
:class:`~gpc_ros.compose.parent.ActionNormalization` as the one representation (it is a generic per-dimension affine
map, used here for the state as well). A dimension that never varies in the data gets a range of ``min_range`` so
the map stays finite.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpc_ros.compose.parent import NORMALIZATION_KINDS, ActionNormalization


def fit_min_max(values: np.ndarray, min_range: float = 1e-4) -> ActionNormalization:
    """Min-max stats of ``values`` ``(N, D)`` (or ``(..., D)``); constant dimensions get width ``min_range``."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim < 1 or arr.shape[-1] == 0 or arr.size == 0:
        raise ValueError(f"fit_min_max needs values of shape (N, D) with N, D >= 1; got {arr.shape}")
    arr = arr.reshape(-1, arr.shape[-1])
    if not np.isfinite(arr).all():
        raise ValueError("fit_min_max: values contain NaN or inf")
    low, high = arr.min(axis=0), arr.max(axis=0)
    narrow = (high - low) < min_range
    centre = 0.5 * (low + high)
    low = np.where(narrow, centre - 0.5 * min_range, low)
    high = np.where(narrow, centre + 0.5 * min_range, high)
    return ActionNormalization.min_max(low, high)


def normalization_to_dict(normalization: ActionNormalization) -> dict[str, Any]:
    """JSON-ready form of ``normalization``: its ``kind`` and per-dimension ``offset`` and ``scale`` lists."""
    return {"kind": normalization.kind, "offset": list(normalization.offset), "scale": list(normalization.scale)}


def normalization_from_dict(data: Any, where: str) -> ActionNormalization:
    """Inverse of :func:`normalization_to_dict`; ``ValueError`` naming ``where`` on anything malformed."""
    if not isinstance(data, dict) or set(data) != {"kind", "offset", "scale"}:
        raise ValueError(f"{where} must be an object with exactly the keys 'kind', 'offset', 'scale' "
                         f"(kind one of {NORMALIZATION_KINDS}); got {data!r}")
    try:
        return ActionNormalization(data["kind"], tuple(data["offset"]), tuple(data["scale"]))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None
