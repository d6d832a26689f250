"""Policy checkpoints: a directory with ``model.safetensors`` (weights) and ``config.json`` (everything else).

``config.json`` fully describes the model (see docs/policies.md)::

    {"format": "gpc_ros.policy", "format_version": 1, "policy_type": "diffusion" | "dp3" | "flow",
     "parameterization": ..., "time_convention": {...}, "action_horizon": H, "action_dim": D,
     "modality": "image" | "pointcloud", "observation_keys": [...],      # summary, checked against "config"
     "config": {... the family's config dataclass, every field ...},
     "normalization": {"action": {"kind", "offset", "scale"}, "state": {...}},
     "weights": {"file": "model.safetensors", "sha256": "...", "tensors": {name: [shape...]}}}

:func:`load_policy` validates everything before building the model and raises :class:`CheckpointError` naming
the file, the field and what was expected: unknown format/version/policy type/parameterisation, incomplete or
unknown config fields, summary fields disagreeing with the config, bad normalisation stats, a weights file whose
sha256 differs (truncated or modified), unreadable safetensors, missing/unexpected tensors, wrong shapes or
dtypes, non-finite weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gpc_ros.policies.chunk_policy import ChunkPolicy
from gpc_ros.policies.config_io import config_from_dict, config_to_dict
from gpc_ros.policies.factory import POLICY_TYPES, policy_class
from gpc_ros.policies.normalization import normalization_from_dict, normalization_to_dict

logger = logging.getLogger(__name__)

FORMAT = "gpc_ros.policy"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class CheckpointError(ValueError):
    """A checkpoint cannot be loaded; the message names the file, the field and what was expected."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _time_convention_summary(policy: ChunkPolicy) -> dict[str, Any]:
    cfg = policy.config
    if policy.policy_type == "flow":
        return {"kind": "flow", "time_scale": float(cfg.time_scale)}
    return {"kind": "vp", "num_train_timesteps": cfg.num_train_timesteps, "beta_schedule": cfg.beta_schedule,
            "integer_timesteps": True}


def describe(policy: ChunkPolicy, tensors: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """The ``config.json`` content of ``policy`` (without the weights' sha256)."""
    cfg = policy.config
    tensors = tensors if tensors is not None else policy.state_dict()
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "policy_type": policy.policy_type,
        "parameterization": policy.parameterization.value, "time_convention": _time_convention_summary(policy),
        "action_horizon": cfg.action_horizon, "action_dim": cfg.action_dim,
        "modality": cfg.observation.modality, "observation_keys": list(cfg.observation.expected_keys),
        "config": config_to_dict(cfg),
        "normalization": {"action": normalization_to_dict(policy.action_normalization),
                          "state": normalization_to_dict(policy.state_normalization)},
        "weights": {"file": WEIGHTS_FILE, "sha256": "",
                    "tensors": {k: list(v.shape) for k, v in sorted(tensors.items())}},
    }


def save_policy(policy: ChunkPolicy, directory: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``directory/model.safetensors`` and ``directory/config.json`` (atomically: temp files, then rename).

    ``extra`` (e.g. training provenance) is stored under ``"training"`` and ignored when loading.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in policy.state_dict().items()}
    meta = describe(policy, tensors)
    tmp_weights = out / (WEIGHTS_FILE + ".tmp")
    save_file(tensors, str(tmp_weights), metadata={"format": FORMAT, "policy_type": policy.policy_type})
    meta["weights"]["sha256"] = _sha256(tmp_weights)
    if extra:
        meta["training"] = extra
    tmp_config = out / (CONFIG_FILE + ".tmp")
    tmp_config.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp_weights, out / WEIGHTS_FILE)
    os.replace(tmp_config, out / CONFIG_FILE)
    logger.info("saved %s policy (%d tensors) to %s", policy.policy_type, len(tensors), out)
    return out


def _fail(path: Path, message: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {path}: {message}")


def read_description(directory: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint directory (format and version checked)."""
    path = Path(directory)
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise _fail(path, f"no {CONFIG_FILE} (a gpc_ros policy checkpoint is a directory with {CONFIG_FILE} and "
                          f"{WEIGHTS_FILE})")
    try:
        meta = json.loads(config_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(path, f"{CONFIG_FILE} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise _fail(path, f"{CONFIG_FILE} 'format' must be {FORMAT!r}; got {got!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise _fail(path, f"{CONFIG_FILE} 'format_version' must be {FORMAT_VERSION}; "
                          f"got {meta.get('format_version')!r}")
    return meta


def load_policy(directory: str | os.PathLike, device: torch.device | str = "cpu") -> ChunkPolicy:
    """Validate and load a checkpoint written by :func:`save_policy`; the policy comes back in eval mode."""
    path = Path(directory)
    meta = read_description(path)
    required = ("policy_type", "parameterization", "time_convention", "action_horizon", "action_dim", "modality",
                "observation_keys", "config", "normalization", "weights")
    missing = [k for k in required if k not in meta]
    if missing:
        raise _fail(path, f"{CONFIG_FILE} lacks {missing}")
    if meta["policy_type"] not in POLICY_TYPES:
        raise _fail(path, f"policy_type must be one of {POLICY_TYPES}; got {meta['policy_type']!r}")
    cls = policy_class(meta["policy_type"])
    try:
        config = config_from_dict(cls.config_class, meta["config"], "config")
        norm = meta["normalization"]
        if not isinstance(norm, dict) or set(norm) != {"action", "state"}:
            raise ValueError(f"normalization must have exactly the keys 'action' and 'state'; got {norm!r}")
        action_norm = normalization_from_dict(norm["action"], "normalization.action")
        state_norm = normalization_from_dict(norm["state"], "normalization.state")
        policy = cls(config, action_norm, state_norm)
    except (TypeError, ValueError) as exc:
        raise _fail(path, str(exc)) from None

    # The summary fields are what hosts and humans read: they must say what the config says.
    described = describe(policy)
    for key in ("parameterization", "time_convention", "action_horizon", "action_dim", "modality",
                "observation_keys"):
        if meta[key] != described[key]:
            raise _fail(path, f"'{key}' is {meta[key]!r} but the config describes a model with {described[key]!r} "
                              f"(config mismatch: the file was edited or written by another version)")

    weights = meta["weights"]
    if not isinstance(weights, dict) or not {"file", "sha256", "tensors"} <= set(weights):
        raise _fail(path, f"'weights' must have 'file', 'sha256' and 'tensors'; got {weights!r}")
    weights_path = path / str(weights["file"])
    if Path(str(weights["file"])).name != str(weights["file"]) or not weights_path.is_file():
        raise _fail(path, f"weights file {weights['file']!r} is missing (expected a file inside the checkpoint)")
    digest = _sha256(weights_path)
    if digest != weights["sha256"]:
        raise _fail(path, f"{weights['file']} is corrupt or was modified: sha256 {digest[:16]}… but "
                          f"{CONFIG_FILE} records {str(weights['sha256'])[:16]}… (re-copy or re-export it)")
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise _fail(path, f"{weights['file']} is not a readable safetensors file ({exc})") from None

    expected = {k: tuple(v.shape) for k, v in policy.state_dict().items()}
    missing_t = sorted(set(expected) - set(tensors))
    extra_t = sorted(set(tensors) - set(expected))
    if missing_t or extra_t:
        raise _fail(path, f"weights do not match the {meta['policy_type']} model the config describes: "
                          f"missing tensors {missing_t[:8]}{'…' if len(missing_t) > 8 else ''}, "
                          f"unexpected tensors {extra_t[:8]}{'…' if len(extra_t) > 8 else ''}")
    for name, shape in expected.items():
        got = tensors[name]
        if tuple(got.shape) != shape:
            raise _fail(path, f"tensor {name!r} has shape {tuple(got.shape)}; the config describes {shape}")
        if got.dtype != torch.float32 and got.is_floating_point():
            raise _fail(path, f"tensor {name!r} has dtype {got.dtype}; expected torch.float32")
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise _fail(path, f"tensor {name!r} contains NaN or inf")
    policy.load_state_dict(tensors, strict=True)
    policy.to(device)
    policy.eval()
    logger.info("loaded %s policy from %s", meta["policy_type"], path)
    return policy


def load_parent(directory: str | os.PathLike, name: str | None = None, device: torch.device | str = "cpu"):
    """A checkpoint as the core's parent (``name`` defaults to the policy type)."""
    return load_policy(directory, device).as_parent(name)
