"""The policy families by name (``diffusion``, ``dp3``, ``flow``): their config and model classes."""

from __future__ import annotations

from gpc_ros.compose.parent import ActionNormalization
from gpc_ros.policies.chunk_policy import ChunkPolicy, ChunkPolicyConfig
from gpc_ros.policies.diffusion import DiffusionPolicy
from gpc_ros.policies.dp3 import DP3Policy
from gpc_ros.policies.flow import FlowMatchingPolicy

POLICY_CLASSES: dict[str, type[ChunkPolicy]] = {
    cls.policy_type: cls for cls in (DiffusionPolicy, DP3Policy, FlowMatchingPolicy)}
POLICY_TYPES = tuple(POLICY_CLASSES)


def policy_class(policy_type: str) -> type[ChunkPolicy]:
    """The model class of the family ``policy_type``; ``ValueError`` naming the known types otherwise."""
    try:
        return POLICY_CLASSES[policy_type]
    except KeyError:
        raise ValueError(f"policy_type must be one of {POLICY_TYPES}; got {policy_type!r}") from None


def make_policy(policy_type: str, config: ChunkPolicyConfig | None = None,
                action_normalization: ActionNormalization | None = None,
                state_normalization: ActionNormalization | None = None) -> ChunkPolicy:
    """A freshly initialised policy of ``policy_type`` (default config of the family if ``config`` is None)."""
    cls = policy_class(policy_type)
    config = config if config is not None else cls.config_class()
    if type(config) is not cls.config_class:
        raise ValueError(f"policy_type {policy_type!r} takes a {cls.config_class.__name__}; "
                         f"got {type(config).__name__}")
    return cls(config, action_normalization, state_normalization)
