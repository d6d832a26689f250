"""Wrap any torch denoiser into the core's parent contract (:class:`gpc_ros.compose.parent.ParentPolicy`).

A lab's own policy plugs into the composer without touching the core::

    from gpc_ros.compose import FlowTime, VPTime
    from gpc_ros.policies import ModuleParent

    parent = ModuleParent(
        name="my_policy",
        denoiser=lambda x_t, t, enc: my_net(x_t, t, enc),   # (M, H, D), (M,), encoding -> (M, H, D)
        parameterization="epsilon",                         # or "sample" | "v_prediction" | "flow_velocity"
        time_convention=VPTime.from_scheduler(my_ddpm_scheduler),   # or FlowTime(time_scale=1000)
        action_horizon=16, action_dim=7,
        normalization=ActionNormalization.min_max(low, high),      # the stats my_net was trained with
        encoder=lambda obs: my_obs_encoder(obs))            # observation -> (B, ...) tensor(s), once per chunk

The denoiser sees ``x_t`` in the parent's normalised action space at its own time (a ``(M,)`` float tensor, the
diffusers integer timestep or ``time_scale * t``), exactly as during training. Everything runs under
``torch.no_grad()``; inputs are moved to ``device``/``dtype`` and the prediction back to the caller's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from gpc_ros.compose.parameterization import Parameterization
from gpc_ros.compose.parent import ActionNormalization, Encoding, encoding_batch_size
from gpc_ros.compose.schedule import TimeConvention

logger = logging.getLogger(__name__)

Denoiser = Callable[[torch.Tensor, torch.Tensor, Encoding], torch.Tensor]


def _to(encoding: Any, device: torch.device, dtype: torch.dtype) -> Encoding:
    """A tensor, array or mapping of them -> tensor(s) on ``device``, floating point ones in ``dtype``."""
    if isinstance(encoding, Mapping):
        return {k: _to(v, device, dtype) for k, v in encoding.items()}
    tensor = encoding if isinstance(encoding, torch.Tensor) else torch.as_tensor(encoding)
    return tensor.to(device=device, dtype=dtype) if tensor.is_floating_point() else tensor.to(device)


class SplitEncoder:
    """An encoder in two parts: a Python part ``inputs`` and an ``nn.Module`` ``module``.

    ``inputs(observation) -> {key: tensor}`` (checks, tensors, normalisation), ``module({key: tensor}) -> (B, C)``;
    ``encoder(observation)`` is ``module(inputs(observation))``.

    A :class:`ModuleParent` built with one (``ChunkPolicy.as_parent`` does) can encode together with others in one
    call whose modules run as one traced :class:`~gpc_ros.policies.traced.ForkedEncoders` (the composer's
    ``joint_encode``; :meth:`ModuleParent.joint_encode_with`).
    """

    def __init__(self, inputs: Callable[[Any], Mapping[str, torch.Tensor]], module: nn.Module) -> None:
        if not callable(inputs):
            raise TypeError(f"SplitEncoder.inputs must be callable observation -> dict of tensors; "
                            f"got {type(inputs).__name__}")
        if not isinstance(module, nn.Module):
            raise TypeError(f"SplitEncoder.module must be a torch.nn.Module; got {type(module).__name__}")
        self.inputs = inputs
        self.module = module

    def __call__(self, observation: Any) -> torch.Tensor:
        """``module(inputs(observation))``."""
        return self.module(self.inputs(observation))


class ModuleParent:
    """A :class:`~gpc_ros.compose.parent.ParentPolicy` around a torch denoiser (and optional encoder)."""

    def __init__(self, name: str, denoiser: Denoiser, parameterization: Parameterization | str,
                 time_convention: TimeConvention, action_horizon: int, action_dim: int,
                 normalization: ActionNormalization | None = None,
                 encoder: Callable[[Any], Encoding] | None = None,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"ModuleParent.name must be a non-empty str; got {name!r}")
        if not callable(denoiser):
            raise TypeError(f"ModuleParent.denoiser must be callable (x_t, t, encoding) -> prediction; "
                            f"got {type(denoiser).__name__}")
        for attr, value in (("action_horizon", action_horizon), ("action_dim", action_dim)):
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"ModuleParent.{attr} must be an int >= 1; got {value!r}")
        if not (hasattr(time_convention, "locate") and hasattr(time_convention, "noise_level")):
            raise TypeError(f"ModuleParent.time_convention must be a VPTime or FlowTime; got {time_convention!r}")
        self.name = name
        self.parameterization = Parameterization.parse(parameterization, field="ModuleParent.parameterization")
        self.time_convention = time_convention
        self.action_horizon = action_horizon
        self.action_dim = action_dim
        self.normalization = normalization or ActionNormalization()
        self.device = torch.device(device)
        self.dtype = dtype
        self._denoiser = denoiser
        self._encoder = encoder
        if isinstance(denoiser, nn.Module):
            denoiser.eval()

    def encode(self, observation: Any) -> Encoding:
        """Observation -> batch-first encoding (the ``encoder``'s output, or the observation as a tensor)."""
        with torch.no_grad():
            encoding = self._encoder(observation) if self._encoder is not None else observation
            return _to(encoding, self.device, self.dtype)

    def predict(self, x_t: torch.Tensor, timestep: float, encoding: Encoding) -> torch.Tensor:
        """``(M, H, D)`` at the parent's own ``timestep`` -> ``(M, H, D)`` prediction (its parameterisation)."""
        with torch.no_grad():
            out = self._denoiser(*self._denoiser_inputs(x_t, timestep, encoding))
        return self._prediction(out, x_t)

    def _denoiser_inputs(self, x_t: torch.Tensor, timestep: float, encoding: Encoding
                         ) -> tuple[torch.Tensor, torch.Tensor, Encoding]:
        """What the denoiser is called with for one :meth:`predict`: ``x_t``, the time as ``(M,)``, the encoding."""
        m = int(x_t.shape[0])
        if encoding_batch_size(encoding) != m:
            raise ValueError(f"parent {self.name!r}: encoding has {encoding_batch_size(encoding)} rows, x_t has {m}")
        return (x_t.to(device=self.device, dtype=self.dtype),
                torch.full((m,), float(timestep), device=self.device, dtype=self.dtype),
                _to(encoding, self.device, self.dtype))

    def _prediction(self, out: object, x_t: torch.Tensor) -> torch.Tensor:
        """The denoiser's output for ``x_t``, checked and in ``x_t``'s device and dtype."""
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(x_t.shape):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"parent {self.name!r}: denoiser returned {got}; expected {tuple(x_t.shape)}")
        return out.to(device=x_t.device, dtype=x_t.dtype)

    def joint_step_with(self, parents: Sequence[object]) -> JointHeadsStep | None:
        """One call per denoising step for ``parents`` (this one first), if every one has a traced head.

        The heads of :class:`ModuleParent` s built with a :class:`~gpc_ros.policies.traced.TracedHead` (``as_parent(
        trace_head=True)``) on one device run as one traced :class:`~gpc_ros.policies.traced.ForkedHeads` (the
        composer's ``joint_step``); None for any other parents (or fewer than two).
        """
        parents = list(parents)
        return JointHeadsStep(parents) if self._joins_heads(parents) else None

    def _joins_heads(self, parents: list[object]) -> bool:
        """Whether ``parents`` (this one first) are two or more with traced heads on one device."""
        from gpc_ros.policies.traced import TracedHead

        return (len(parents) >= 2 and parents[0] is self
                and all(isinstance(p, ModuleParent) and isinstance(p._denoiser, TracedHead) for p in parents)
                and len({p.device for p in parents}) == 1)

    def worker_step_with(self, parents: Sequence[object]) -> Any:
        """The joint step of ``parents`` with heads 2..K in spinning worker processes, if they offer a joint step.

        A :class:`~gpc_ros.policies.spin_worker.SpinningHeadsStep` (the composer's ``joint_step_workers``) for the
        parents :meth:`joint_step_with` accepts, on the CPU; None otherwise.
        """
        from gpc_ros.policies.spin_worker import SpinningHeadsStep

        parents = list(parents)
        if not self._joins_heads(parents) or self.device.type != "cpu":
            return None
        return SpinningHeadsStep(parents)

    def joint_encode_with(self, parents: Sequence[object]) -> JointEncoders | None:
        """One call per chunk's encode for ``parents`` (this one first), if every one can join it.

        Every parent must be a :class:`ModuleParent` with a :class:`SplitEncoder` and a traced head
        (``as_parent(trace_head=True)``: the opt-in to TorchScript), all on one device: their encoder modules then
        run as one traced :class:`~gpc_ros.policies.traced.ForkedEncoders` (the composer's ``joint_encode``);
        None for any other parents (or fewer than two).
        """
        from gpc_ros.policies.traced import TracedHead

        parents = list(parents)
        if (len(parents) < 2 or parents[0] is not self
                or not all(isinstance(p, ModuleParent) and isinstance(p._encoder, SplitEncoder)
                           and isinstance(p._denoiser, TracedHead) for p in parents)
                or len({p.device for p in parents}) != 1):
            return None
        return JointEncoders(parents)

    def __repr__(self) -> str:
        return (f"ModuleParent(name={self.name!r}, parameterization={self.parameterization.value!r}, "
                f"H={self.action_horizon}, D={self.action_dim}, time={self.time_convention!r})")


class JointHeadsStep:
    """One denoising step of several :class:`ModuleParent` s with traced heads in ONE call (their heads forked).

    ``step([(x_t, timestep, encoding), ...])`` (one request per parent, in the parents' order) returns what each
    parent's :meth:`ModuleParent.predict` returns, bit for bit: the same inputs, the same checks, the same heads,
    only run at the same time (:func:`~gpc_ros.policies.traced.forked_heads`). Weights changed in place are
    noticed at the next :meth:`new_chunk` (a parent's own traced head checks at every call). A
    :class:`~gpc_ros.compose.parent.JointStep`.
    """

    def __init__(self, parents: Sequence[ModuleParent]) -> None:
        from gpc_ros.policies.traced import forked_heads

        self.parents = list(parents)
        self.head = forked_heads([p._denoiser for p in self.parents], check_every_call=False)

    def new_chunk(self) -> None:
        """A chunk begins: drop the traces if a head's weights changed in place (checked once per chunk)."""
        self.head.check_weights()

    def __call__(self, requests: Sequence[tuple[torch.Tensor, float, Encoding]]) -> list[torch.Tensor]:
        """One ``(x_t, timestep, encoding)`` per parent, in order -> each parent's ``(M, H, D)`` prediction."""
        if len(requests) != len(self.parents):
            raise ValueError(f"a joint step of {len(self.parents)} parents got {len(requests)} requests")
        if any(p._denoiser.module.training for p in self.parents):  # a head in training mode runs eagerly
            return [p.predict(*r) for p, r in zip(self.parents, requests)]
        with torch.no_grad():
            args = [a for p, r in zip(self.parents, requests) for a in p._denoiser_inputs(*r)]
            outs = self.head(*args)
        return [p._prediction(out, r[0]) for p, out, r in zip(self.parents, outs, requests)]


class JointEncoders:
    """The encode of several :class:`ModuleParent` s with :class:`SplitEncoder` s in ONE call (encoders forked).

    ``encoders([observation, ...])`` (one per parent, in order) returns what each parent's
    :meth:`ModuleParent.encode` returns, bit for bit: each parent's Python part (``SplitEncoder.inputs``) as it is,
    then all encoder modules in one call of a traced :class:`~gpc_ros.policies.traced.ForkedEncoders` (one trace
    per input signature, made as the first parent's traced head makes its traces: by default in the background,
    eager meanwhile; weights checked at every call). An encoder in
    training mode makes it fall back to each parent's ``encode``. A
    :class:`~gpc_ros.compose.parent.JointEncode`.
    """

    def __init__(self, parents: Sequence[ModuleParent]) -> None:
        self.parents = list(parents)
        self._joint: dict[tuple[tuple[str, ...], ...], Any] = {}  # the inputs' keys -> TracedHead(ForkedEncoders)

    def encoder(self, keys: tuple[tuple[str, ...], ...]) -> Any:
        """The traced :class:`~gpc_ros.policies.traced.ForkedEncoders` for inputs with these keys (made once)."""
        from gpc_ros.policies.traced import forked_encoders

        joint = self._joint.get(keys)
        if joint is None:
            head = self.parents[0]._denoiser  # the first parent's trace settings, as the joint step takes them
            joint = self._joint[keys] = forked_encoders([p._encoder.module for p in self.parents], list(keys),
                                                        max_traces=head.max_traces, background=head.background)
        return joint

    def wait_for_traces(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the traces being made in the background; True if none is left."""
        return all([joint.wait_for_traces(timeout_s) for joint in list(self._joint.values())])

    def __call__(self, observations: Sequence[Any]) -> list[Encoding]:
        """One observation per parent, in order -> each parent's encoding (as its ``encode`` returns it)."""
        if len(observations) != len(self.parents):
            raise ValueError(f"a joint encode of {len(self.parents)} parents got {len(observations)} observations")
        if any(p._encoder.module.training for p in self.parents):  # an encoder in training mode runs eagerly
            return [p.encode(o) for p, o in zip(self.parents, observations)]
        with torch.no_grad():
            inputs = [dict(p._encoder.inputs(o)) for p, o in zip(self.parents, observations)]
            keys = tuple(tuple(i) for i in inputs)
            outs = self.encoder(keys)(*(t for i in inputs for t in i.values()))
            return [_to(out, p.device, p.dtype) for p, out in zip(self.parents, outs)]
