"""The parent-policy contract: what every composable policy provides, in process or on a remote host.

A parent is array-in / array-out and batch-first so that the same contract serves an in-process torch model and a
proxy that forwards each denoising step to a policy host (one ROS node per parent):

* ``encode(observation) -> encoding`` once per chunk: the observation (images, point cloud, state) turned into
  the tensor(s) the denoiser is conditioned on; a tensor or a mapping of tensors, each ``(B, ...)``.
* ``predict(x_t, timestep, encoding) -> prediction`` once per denoising step: ``x_t`` is ``(M, H, D)`` with
  ``M = n * B`` (``n`` candidate weight vectors stacked candidate-major over the ``B`` observations, row
  ``i * B + b``), ``H = action_horizon``, ``D = action_dim``, in the parent's normalised action space and ITS OWN
  time convention (``timestep`` is a float in that convention); the encoding passed is already repeated to
  ``M`` rows. The prediction is ``(M, H, D)`` in the parent's ``parameterization``.

A parent that computes elsewhere (a proxy to a policy host) may also be split-phase (:class:`SplitPhaseParent`):
``submit(x_t, timestep, encoding)`` puts the step's request on its way and returns at once, and the returned
:class:`PendingPrediction`'s ``result()`` waits for the same prediction ``predict`` would return (bounded, raising
what ``predict`` would raise). When every parent called at a step is split-phase, the composer submits them all
from its own thread, then collects them in parent order: no thread per parent is needed for the hosts' steps to
overlap.

In-process parents may offer a joint step together (:class:`JointStep`, ``joint_step_with(parents)``): all their
steps in one call, e.g. their traced heads forked in one TorchScript call (``ComposerConfig.joint_step``), or with
heads 2..K in worker processes (``worker_step_with(parents)``, ``ComposerConfig.joint_step_workers``), and a joint
encode (:class:`JointEncode`, ``joint_encode_with(parents)``): all their encodes of a chunk in one call
(``ComposerConfig.joint_encode``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Union, runtime_checkable

import numpy as np
import torch

from gpc_ros.compose.parameterization import Parameterization
from gpc_ros.compose.schedule import TimeConvention

Encoding = Union[torch.Tensor, Mapping[str, torch.Tensor]]

NORMALIZATION_KINDS = ("identity", "min_max", "mean_std")


@dataclass(frozen=True)
class ActionNormalization:
    """Per-dimension affine map between physical actions and the parent's normalised space.

    ``min_max`` (Diffusion Policy / LeRobot): ``a_norm = 2 (a - low) / (high - low) - 1`` with ``low``/``high`` the
    per-dimension ``(D,)`` stats ``offset``/``scale`` = ``low``, ``high - low``. ``mean_std``:
    ``a_norm = (a - mean) / std`` with ``offset``/``scale`` = ``mean``, ``std``. ``identity``: no stats.
    Units are those of the action vector (e.g. ``m`` and ``rad``).
    """

    kind: Literal["identity", "min_max", "mean_std"] = "identity"
    offset: tuple[float, ...] = field(default=())
    scale: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.kind not in NORMALIZATION_KINDS:
            raise ValueError(f"ActionNormalization.kind must be one of {NORMALIZATION_KINDS}; got {self.kind!r}")
        object.__setattr__(self, "offset", tuple(float(v) for v in np.ravel(self.offset)))
        object.__setattr__(self, "scale", tuple(float(v) for v in np.ravel(self.scale)))
        if self.kind == "identity":
            if self.offset or self.scale:
                raise ValueError("ActionNormalization.kind='identity' takes no offset/scale")
            return
        if len(self.offset) != len(self.scale) or not self.offset:
            raise ValueError(
                f"ActionNormalization.offset and .scale must be non-empty and of equal length (D,); "
                f"got {len(self.offset)} and {len(self.scale)}")
        if not all(np.isfinite(self.offset)) or not all(s > 0 and np.isfinite(s) for s in self.scale):
            raise ValueError(f"ActionNormalization.scale must be finite and > 0, offset finite; got {self}")

    @classmethod
    def min_max(cls, low: Any, high: Any) -> "ActionNormalization":
        """Min-max stats from per-dimension ``low`` / ``high`` (``(D,)``)."""
        low_a, high_a = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
        return cls("min_max", tuple(low_a), tuple(high_a - low_a))

    @classmethod
    def mean_std(cls, mean: Any, std: Any) -> "ActionNormalization":
        """Mean-std stats from per-dimension ``mean`` / ``std`` (``(D,)``)."""
        return cls("mean_std", tuple(np.ravel(mean)), tuple(np.ravel(std)))

    @property
    def dim(self) -> int | None:
        """Action dimension ``D`` the stats are for (``None`` for identity)."""
        return len(self.offset) or None

    def matches(self, other: "ActionNormalization", rtol: float = 1e-6) -> bool:
        """True when both define the same map (same kind and stats within ``rtol``)."""
        return (self.kind == other.kind and len(self.offset) == len(other.offset)
                and bool(np.allclose(self.offset, other.offset, rtol=rtol, atol=0.0))
                and bool(np.allclose(self.scale, other.scale, rtol=rtol, atol=0.0)))

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.tensor(self.offset, dtype=like.dtype, device=like.device),
                torch.tensor(self.scale, dtype=like.dtype, device=like.device))

    def normalize(self, actions: torch.Tensor) -> torch.Tensor:
        """Physical ``(..., D)`` -> normalised."""
        if self.kind == "identity":
            return actions
        offset, scale = self._stats(actions)
        if self.kind == "min_max":
            return 2.0 * (actions - offset) / scale - 1.0
        return (actions - offset) / scale

    def unnormalize(self, actions: torch.Tensor) -> torch.Tensor:
        """Normalised ``(..., D)`` -> physical."""
        if self.kind == "identity":
            return actions
        offset, scale = self._stats(actions)
        if self.kind == "min_max":
            return (actions + 1.0) * 0.5 * scale + offset
        return actions * scale + offset


@runtime_checkable
class ParentPolicy(Protocol):
    """A pre-trained diffusion / flow policy the composer can call once per denoising step."""

    name: str
    """Unique, human-readable name used in every error and log line (e.g. ``"rgb"``, ``"pointcloud"``)."""
    parameterization: Parameterization
    action_horizon: int
    """``H``: actions per chunk."""
    action_dim: int
    """``D``: dimension of one action."""
    normalization: ActionNormalization
    time_convention: TimeConvention

    def encode(self, observation: Any) -> Encoding:
        """Observation -> conditioning, batch-first ``(B, ...)``; called once per chunk."""
        ...

    def predict(self, x_t: torch.Tensor, timestep: float, encoding: Encoding) -> torch.Tensor:
        """``(M, H, D)`` noisy chunk at the parent's own ``timestep`` -> ``(M, H, D)`` prediction."""
        ...


class PendingPrediction(Protocol):
    """One submitted denoising step of a :class:`SplitPhaseParent`."""

    def result(self) -> torch.Tensor:
        """Wait (bounded) for the ``(M, H, D)`` prediction; raises what ``predict`` would raise."""
        ...


@runtime_checkable
class SplitPhaseParent(ParentPolicy, Protocol):
    """A parent whose step can be sent now and collected later (a proxy to a host in another process)."""

    def submit(self, x_t: torch.Tensor, timestep: float, encoding: Encoding) -> PendingPrediction:
        """Send the step ``predict(x_t, timestep, encoding)`` would make and return without waiting for it."""
        ...


class JointStep(Protocol):
    """One denoising step of several in-process parents in ONE call, offered by the parents (``joint_step_with``).

    E.g. :class:`gpc_ros.policies.adapter.JointHeadsStep`: their traced heads forked in one TorchScript call.
    """

    def __call__(self, requests: Sequence[tuple[torch.Tensor, float, Encoding]]) -> list[torch.Tensor]:
        """One ``(x_t, timestep, encoding)`` per parent, in order -> what each parent's ``predict`` returns."""
        ...

    def new_chunk(self) -> None:
        """A chunk begins (the composer calls this before its first step; e.g. to check weights once per chunk)."""
        ...

    # optional: ``end_chunk()``, called by the composer after a chunk's last step (also when it failed);
    # ``close()``, called by ``Composer.close`` (e.g. to stop worker processes); and ``start(requests)``, the step
    # split in two (:class:`PendingJointStep`), which the composer then uses instead of the call: it converts the
    # first parent's prediction while the others' are still being made (e.g.
    # :class:`gpc_ros.policies.spin_worker.SpinningHeadsStep`, whose other heads run in worker processes)


class PendingJointStep(Protocol):
    """A started joint step (``JointStep.start``): the first parent's prediction now, the others' on demand."""

    first: torch.Tensor
    """What the first parent's ``predict`` returns."""

    # optional: ``finite``, a list with one bool per parent whose prediction is given so far (``first``, then those
    # of ``rest()``): True where that very tensor was already checked free of NaN / inf (a graph host's own check),
    # so the composer does not check it again

    def rest(self) -> list[torch.Tensor]:
        """What the other parents' ``predict`` return, in order (waits for them).

        A started step whose ``rest`` is never called (the composer stops at a failure) must leave the joint step
        usable.
        """
        ...


class JointEncode(Protocol):
    """The encode of several in-process parents in ONE call, offered by the parents (``joint_encode_with``).

    E.g. :class:`gpc_ros.policies.adapter.JointEncoders`: their traced encoder modules forked in one TorchScript
    call, each parent's Python part of ``encode`` unchanged.
    """

    def __call__(self, observations: Sequence[Any]) -> list[Encoding]:
        """One observation per parent, in order -> what each parent's ``encode`` returns."""
        ...


def joint_encode(parents: Sequence[object]) -> JointEncode | None:
    """The joint encode ``parents`` offer together (the first parent's ``joint_encode_with(parents)``), or None."""
    make = getattr(parents[0], "joint_encode_with", None) if len(parents) >= 2 else None
    return make(list(parents)) if callable(make) else None


def joint_step(parents: Sequence[object]) -> JointStep | None:
    """The joint step ``parents`` offer together (the first parent's ``joint_step_with(parents)``), or None."""
    make = getattr(parents[0], "joint_step_with", None) if len(parents) >= 2 else None
    return make(list(parents)) if callable(make) else None


def worker_step(parents: Sequence[object]) -> JointStep | None:
    """The joint step ``parents`` offer with heads 2..K in worker processes, or None.

    The first parent's ``worker_step_with(parents)`` (``ComposerConfig.joint_step_workers``).
    """
    make = getattr(parents[0], "worker_step_with", None) if len(parents) >= 2 else None
    return make(list(parents)) if callable(make) else None


def is_split_phase(parent: object) -> bool:
    """Whether ``parent`` offers :meth:`SplitPhaseParent.submit`."""
    return callable(getattr(parent, "submit", None))


def encoding_batch_size(encoding: Encoding) -> int:
    """``B`` of a batch-first encoding."""
    if isinstance(encoding, torch.Tensor):
        return int(encoding.shape[0])
    sizes = {int(v.shape[0]) for v in encoding.values()}
    if len(sizes) != 1:
        raise ValueError(f"encoding tensors disagree on the batch size: {sorted(sizes)}")
    return sizes.pop()


def repeat_encoding(encoding: Encoding, n: int) -> Encoding:
    """Stack ``n`` copies candidate-major: ``(B, ...)`` -> ``(n * B, ...)`` with row ``i * B + b`` = row ``b``."""
    if n == 1:
        return encoding
    if isinstance(encoding, torch.Tensor):
        return encoding.repeat(n, *([1] * (encoding.dim() - 1)))
    return {key: repeat_encoding(value, n) for key, value in encoding.items()}
