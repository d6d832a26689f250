"""What the live views draw, as plain values (no ROS, no Foxglove).

One source for the rviz markers (``visualization_msgs/MarkerArray``, built in :mod:`gpc_ros.nodes.conversions`)
and the Foxglove scene (:mod:`gpc_ros.monitor.foxglove_view`).

A :class:`Scene` holds the latest state of the graph and turns it into primitives, all in the base frame
``fr3_link0`` (m):

========================  ==============  ==========================================================
namespace / id            primitive       content and colour (docs/monitoring.md)
========================  ==============  ==========================================================
``composed`` / 0          line strip      the composed chunk's TCP path (``/gpc/action_chunk``), gold
``parent/<name>`` / 0     line strip      parent ``<name>``'s own chunk (``/gpc/parents/<name>/chunk``),
                                          palette colour ``PARENT_PALETTE[i]``, ``i`` = rank of the name
                                          in alphabetical order (wraps around)
``executed`` / 0          line strip      the measured TCP path (``ee_pose``), last ``executed_history``
                                          poses, grey
``envelope`` / 0          box (edges)     the safety envelope's workspace box, red
``composition`` / 0       text            operator and weights (``convex  rgb=0.70  pcd=0.30``), white
========================  ==============  ==========================================================
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

RGBA = tuple[float, float, float, float]

#: Colour of the composed chunk's path (gold).
COMPOSED_COLOR: RGBA = (1.0, 0.78, 0.0, 1.0)
#: Colour of the executed (measured) TCP path (grey).
EXECUTED_COLOR: RGBA = (0.6, 0.6, 0.6, 1.0)
#: Colour of the safety envelope's box edges (red).
ENVELOPE_COLOR: RGBA = (0.9, 0.1, 0.1, 0.8)
#: Colour of the weights / operator text (white).
TEXT_COLOR: RGBA = (1.0, 1.0, 1.0, 1.0)
#: Parent path colours, given to the parents in alphabetical order of their names (blue, green, purple, cyan,
#: pink, brown; none is close to gold, grey or red).
PARENT_PALETTE: tuple[RGBA, ...] = (
    (0.12, 0.47, 0.71, 1.0),
    (0.17, 0.63, 0.17, 1.0),
    (0.58, 0.40, 0.74, 1.0),
    (0.09, 0.75, 0.81, 1.0),
    (0.89, 0.47, 0.76, 1.0),
    (0.55, 0.34, 0.29, 1.0),
)

NS_COMPOSED = "composed"
NS_PARENT_PREFIX = "parent/"
NS_EXECUTED = "executed"
NS_ENVELOPE = "envelope"
NS_TEXT = "composition"


def parent_colors(names: Sequence[str]) -> dict[str, RGBA]:
    """Parent name -> its palette colour (alphabetical rank, wrapping around the palette)."""
    return {name: PARENT_PALETTE[i % len(PARENT_PALETTE)] for i, name in enumerate(sorted(set(names)))}


@dataclass(frozen=True)
class SceneConfig:
    """How the scene is drawn (the monitor and viewer nodes' parameters map onto these)."""

    frame_id: str = "fr3_link0"
    """Frame of every primitive (the driver's base frame)."""
    line_width_m: float = 0.006
    """Width of the composed and executed paths (m); parents' paths are drawn at 2/3 of it."""
    executed_history: int = 200
    """Measured TCP poses kept for the executed path (the oldest are dropped)."""
    executed_min_step_m: float = 0.001
    """A measured pose closer than this to the last kept one is not added (m): a still arm adds nothing."""
    text_position_m: tuple[float, float, float] = (0.5, 0.0, 0.85)
    """Where the weights / operator text floats (m, in ``frame_id``)."""
    text_height_m: float = 0.04
    """Height of the text's capital letters (m)."""

    def __post_init__(self) -> None:
        if not isinstance(self.frame_id, str) or not self.frame_id:
            raise ValueError(f"SceneConfig.frame_id must be a non-empty frame name, got {self.frame_id!r}")
        for name in ("line_width_m", "text_height_m"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"SceneConfig.{name} must be a number > 0 m, got {value!r}")
        if not (isinstance(self.executed_history, int) and self.executed_history >= 2):
            raise ValueError(f"SceneConfig.executed_history must be an int >= 2, got {self.executed_history!r}")
        if not (isinstance(self.executed_min_step_m, (int, float)) and self.executed_min_step_m >= 0):
            raise ValueError(f"SceneConfig.executed_min_step_m must be a number >= 0 m, "
                             f"got {self.executed_min_step_m!r}")
        pos = np.asarray(self.text_position_m, dtype=float)
        if pos.shape != (3,) or not np.all(np.isfinite(pos)):
            raise ValueError(f"SceneConfig.text_position_m must be 3 finite numbers (m), got {self.text_position_m!r}")


@dataclass(frozen=True, eq=False)
class LineStrip:
    """Connected points ``(N, 3)`` (m)."""

    ns: str
    id: int
    points_m: np.ndarray
    color: RGBA
    width_m: float


@dataclass(frozen=True, eq=False)
class Box:
    """An axis-aligned box drawn by its 12 edges."""

    ns: str
    id: int
    min_m: np.ndarray
    max_m: np.ndarray
    color: RGBA
    width_m: float

    @property
    def center_m(self) -> np.ndarray:
        """Centre of the box (m)."""
        return (self.min_m + self.max_m) / 2.0

    @property
    def size_m(self) -> np.ndarray:
        """Edge lengths x, y, z (m)."""
        return self.max_m - self.min_m

    def edges_m(self) -> np.ndarray:
        """``(24, 3)`` segment end points, two per edge (a LINE_LIST)."""
        lo, hi = self.min_m, self.max_m
        corners = np.array([[hi[0] if i & 1 else lo[0], hi[1] if i & 2 else lo[1], hi[2] if i & 4 else lo[2]]
                            for i in range(8)])
        pairs = [(a, b) for a in range(8) for b in range(8) if a < b and bin(a ^ b).count("1") == 1]
        return np.array([corners[k] for pair in pairs for k in pair])


@dataclass(frozen=True, eq=False)
class Text:
    """A text label facing the viewer."""

    ns: str
    id: int
    position_m: np.ndarray
    text: str
    color: RGBA
    height_m: float


Primitive = LineStrip | Box | Text


def composition_text(operator: str | None, weights: Mapping[str, float] | None) -> str:
    """``"convex  pcd=0.30  rgb=0.70"`` (names alphabetical); ``"waiting for weights"`` when unknown."""
    if not weights:
        return f"{operator}  (weights unknown)" if operator else "waiting for weights"
    parts = [f"{name}={float(w):.2f}" for name, w in sorted(weights.items())]
    return "  ".join([operator or "?"] + parts)


@dataclass
class Scene:
    """The latest composed chunk, parents' chunks, executed path, weights and envelope (see module docstring)."""

    config: SceneConfig = field(default_factory=SceneConfig)
    composed_m: np.ndarray | None = None
    parents_m: dict[str, np.ndarray] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    operator: str | None = None
    envelope_min_m: np.ndarray | None = None
    envelope_max_m: np.ndarray | None = None

    def __post_init__(self) -> None:
        self._executed: deque[np.ndarray] = deque(maxlen=self.config.executed_history)

    # ------------------------------------------------------------------ updates
    @staticmethod
    def _path(positions_m: np.ndarray, what: str) -> np.ndarray:
        arr = np.asarray(positions_m, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] < 3 or len(arr) < 1:
            raise ValueError(f"{what} must be (N, >=3) positions (m), got shape {arr.shape}")
        return arr[:, :3].copy()

    def set_composed(self, positions_m: np.ndarray) -> None:
        """The composed chunk's TCP positions ``(N, 3)`` (m)."""
        self.composed_m = self._path(positions_m, "the composed chunk")

    def set_parent(self, name: str, positions_m: np.ndarray) -> None:
        """Parent ``name``'s own chunk ``(N, 3)`` (m)."""
        if not name:
            raise ValueError("a parent's path needs a non-empty name")
        self.parents_m[name] = self._path(positions_m, f"parent {name!r}'s chunk")

    def add_executed(self, position_m: np.ndarray) -> bool:
        """Append one measured TCP position (m); returns whether it was kept (moved ``executed_min_step_m``)."""
        p = np.asarray(position_m, dtype=np.float64).reshape(-1)[:3]
        if p.shape != (3,) or not np.all(np.isfinite(p)):
            return False
        if self._executed and np.linalg.norm(p - self._executed[-1]) < self.config.executed_min_step_m:
            return False
        self._executed.append(p)
        return True

    @property
    def executed_m(self) -> np.ndarray:
        """``(N, 3)`` the kept measured TCP positions, oldest first."""
        return np.array(self._executed).reshape(-1, 3)

    def set_composition(self, operator: str | None, weights: Mapping[str, float] | None) -> None:
        """The composer's operator and weights (parent name -> weight); None = unknown."""
        self.operator = operator
        self.weights = {str(k): float(v) for k, v in (weights or {}).items()}

    def set_envelope(self, min_m: Sequence[float], max_m: Sequence[float]) -> None:
        """The workspace box's corners (m, fr3_link0)."""
        lo, hi = np.asarray(min_m, dtype=np.float64), np.asarray(max_m, dtype=np.float64)
        if lo.shape != (3,) or hi.shape != (3,) or np.any(lo >= hi):
            raise ValueError(f"the envelope box needs min < max on x, y, z (m), got {min_m!r}, {max_m!r}")
        self.envelope_min_m, self.envelope_max_m = lo, hi

    # ------------------------------------------------------------------ output
    def primitives(self) -> list[Primitive]:
        """Everything to draw now (see the module docstring for namespaces, ids and colours)."""
        c = self.config
        out: list[Primitive] = []
        if self.composed_m is not None:
            out.append(LineStrip(NS_COMPOSED, 0, self.composed_m, COMPOSED_COLOR, c.line_width_m))
        colors = parent_colors(list(self.parents_m))
        for name in sorted(self.parents_m):
            out.append(LineStrip(NS_PARENT_PREFIX + name, 0, self.parents_m[name], colors[name],
                                 c.line_width_m * 2.0 / 3.0))
        if len(self._executed) >= 2:
            out.append(LineStrip(NS_EXECUTED, 0, self.executed_m, EXECUTED_COLOR, c.line_width_m))
        if self.envelope_min_m is not None:
            out.append(Box(NS_ENVELOPE, 0, self.envelope_min_m, self.envelope_max_m, ENVELOPE_COLOR,
                           c.line_width_m / 2.0))
        out.append(Text(NS_TEXT, 0, np.asarray(c.text_position_m, dtype=np.float64),
                        composition_text(self.operator, self.weights), TEXT_COLOR, c.text_height_m))
        return out
