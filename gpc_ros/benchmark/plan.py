"""What a benchmark runs: arms (parents, weights, operator), episode seeds, the job list and its shards.

An **arm** is one way of acting: a parent alone, or K = 2 parents composed by an operator with fixed weights. Its
id is a readable, canonical string (the key results are stored under):

* ``rgb`` — the parent named ``rgb`` alone (its own sampler);
* ``convex:rgb+pcd@0.3,0.7`` — GPC, ``w_rgb = 0.3``, ``w_pcd = 0.7``;
* ``mixture:rgb+pcd@0.5,0.5`` — the OR operator; ``linear:rgb+pcd@1.2,-0.2`` — weights outside [0, 1].

Arm sets are written as specs on the command line (:func:`parse_arms`):

=========================  ==================================================================================
``parents``                every parent alone
``grid:A+B``               the paper's grid, convex ``w_A = 0, 0.1, ..., 1`` (11 arms, endpoints = parents alone
                           on the pair's sampler)
``grid5:A+B``              a coarser convex grid ``w_A = 0, 0.25, 0.5, 0.75, 1``
``weights:A+B@0.2,0.8``    convex arms at the listed ``w_A`` values
``operators:A+B@0.6``      convex and mixture at ``w_A = 0.6``, and linear at ``(1.2, -0.2)`` and ``(-0.2, 1.2)``
=========================  ==================================================================================

**Jobs** are ``(arm, seed)`` pairs, seed-major (all arms of the first seed, then the next seed), so a run cut short
has about as many episodes in every arm. ``--shard i/n`` takes the jobs ``j`` with ``j % n == i``: shards are
disjoint, together they are the whole list, and each is again seed-major.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

OPERATORS = ("convex", "mixture", "linear")
LINEAR_EXTRAPOLATION = 0.2
"""The linear operator's arms reach this far outside [0, 1]: ``(1 + g, -g)`` and ``(-g, 1 + g)``."""


def _fmt(w: float) -> str:
    text = f"{float(w):.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


@dataclass(frozen=True)
class Arm:
    """One way of acting: ``parents`` (names) composed by ``operator`` with ``weights`` (one per parent)."""

    parents: tuple[str, ...]
    weights: tuple[float, ...] = (1.0,)
    operator: str = "convex"

    def __post_init__(self) -> None:
        if not self.parents or any(not isinstance(p, str) or not p or set(p) & set("+@:,") for p in self.parents):
            raise ValueError(f"Arm.parents must be non-empty names without '+@:,'; got {self.parents!r}")
        if len(set(self.parents)) != len(self.parents):
            raise ValueError(f"Arm.parents must be distinct; got {self.parents!r}")
        if len(self.weights) != len(self.parents):
            raise ValueError(f"Arm.weights needs one weight per parent {self.parents}; got {self.weights!r}")
        if self.operator not in OPERATORS:
            raise ValueError(f"Arm.operator must be one of {OPERATORS}; got {self.operator!r}")
        if not all(np.isfinite(self.weights)):
            raise ValueError(f"Arm.weights must be finite; got {self.weights!r}")
        object.__setattr__(self, "weights", tuple(round(float(w), 6) + 0.0 for w in self.weights))

    @property
    def alone(self) -> bool:
        """A single parent (run with its own sampler)."""
        return len(self.parents) == 1

    @property
    def id(self) -> str:
        """The canonical arm id (see the module docstring)."""
        if self.alone:
            return self.parents[0]
        return f"{self.operator}:{'+'.join(self.parents)}@{','.join(_fmt(w) for w in self.weights)}"

    @property
    def pair(self) -> str:
        """``A+B`` (the parents joined), the key the report groups arms by."""
        return "+".join(self.parents)

    @classmethod
    def parse(cls, text: str) -> "Arm":
        """The inverse of :attr:`id`."""
        if ":" not in text:
            return cls((text,))
        operator, _, rest = text.partition(":")
        names, _, weights = rest.partition("@")
        try:
            values = tuple(float(w) for w in weights.split(","))
        except ValueError:
            raise ValueError(f"arm {text!r}: weights after '@' must be numbers separated by ','") from None
        return cls(tuple(names.split("+")), values, operator)

    def to_dict(self) -> dict:
        """The arm as JSON-able fields."""
        return {"id": self.id, "parents": list(self.parents), "weights": list(self.weights),
                "operator": self.operator}


def _pair(spec: str, rest: str, parents: Sequence[str]) -> tuple[str, str]:
    names = rest.split("+")
    if len(names) != 2:
        raise ValueError(f"arm spec {spec!r}: name exactly two parents as A+B; got {rest!r}")
    unknown = [n for n in names if n not in parents]
    if unknown:
        raise ValueError(f"arm spec {spec!r}: unknown parent(s) {unknown}; the parents are {list(parents)}")
    if names[0] == names[1]:
        raise ValueError(f"arm spec {spec!r}: the two parents must differ")
    return names[0], names[1]


def convex_arms(a: str, b: str, w_a: Iterable[float]) -> list[Arm]:
    """Convex arms ``(w, 1 - w)`` of the pair ``a+b``."""
    return [Arm((a, b), (w, 1.0 - w), "convex") for w in w_a]


def parse_arms(specs: Sequence[str], parents: Sequence[str]) -> list[Arm]:
    """The arms of ``specs`` (table in the module docstring), in order, each arm once."""
    arms: list[Arm] = []
    for spec in specs:
        kind, _, rest = spec.partition(":")
        if kind == "parents" and not rest:
            new = [Arm((p,)) for p in parents]
        elif kind in ("grid", "grid5"):
            a, b = _pair(spec, rest, parents)
            new = convex_arms(a, b, np.linspace(0.0, 1.0, 11 if kind == "grid" else 5))
        elif kind in ("weights", "operators"):
            names, _, values = rest.partition("@")
            a, b = _pair(spec, names, parents)
            try:
                ws = [float(v) for v in values.split(",")]
            except ValueError:
                raise ValueError(f"arm spec {spec!r}: list w_A values after '@', e.g. {kind}:{a}+{b}@0.5") from None
            if any(not 0.0 <= w <= 1.0 for w in ws):
                raise ValueError(f"arm spec {spec!r}: w_A must lie in [0, 1] (linear arms are added by "
                                 f"'operators:'); got {ws}")
            if kind == "weights":
                new = convex_arms(a, b, ws)
            else:
                if len(ws) != 1:
                    raise ValueError(f"arm spec {spec!r}: operators takes one w_A; got {ws}")
                g = LINEAR_EXTRAPOLATION
                new = [*convex_arms(a, b, ws), Arm((a, b), (ws[0], 1.0 - ws[0]), "mixture"),
                       Arm((a, b), (1.0 + g, -g), "linear"), Arm((a, b), (-g, 1.0 + g), "linear")]
        elif ":" in spec and spec.split(":")[0] in OPERATORS:
            new = [Arm.parse(spec)]
            unknown = [n for n in new[0].parents if n not in parents]
            if unknown:
                raise ValueError(f"arm {spec!r}: unknown parent(s) {unknown}; the parents are {list(parents)}")
        elif spec in parents:
            new = [Arm((spec,))]
        else:
            raise ValueError(f"unknown arm spec {spec!r}; use parents, grid:A+B, grid5:A+B, weights:A+B@w,..., "
                             f"operators:A+B@w, an arm id (convex:A+B@wA,wB) or a parent name ({list(parents)})")
        for arm in new:
            if arm.id not in {x.id for x in arms}:
                arms.append(arm)
    if not arms:
        raise ValueError("no arms: pass at least one --arms spec")
    return arms


def parse_seeds(text: str) -> list[int]:
    """``"100000:100100"`` (start:stop, stop excluded) or ``"1,5,9"`` -> episode layout seeds."""
    try:
        if ":" in text:
            start, stop = (int(v) for v in text.split(":"))
            seeds = list(range(start, stop))
        else:
            seeds = [int(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"--seeds must be START:STOP or a comma-separated list of integers; got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must name at least one seed, each once; got {text!r}")
    return seeds


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must be i/n (e.g. 0/4); got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard i/n needs 0 <= i < n; got {text!r}")
    return i, n


def jobs(arms: Sequence[Arm], seeds: Sequence[int], shard: tuple[int, int] = (0, 1)) -> list[tuple[Arm, int]]:
    """The ``(arm, seed)`` episodes of ``shard`` (seed-major order, see the module docstring)."""
    i, n = shard
    everything = [(arm, seed) for seed in seeds for arm in arms]
    return everything[i::n]
