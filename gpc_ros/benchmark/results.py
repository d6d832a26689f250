"""Benchmark results on disk: one JSON line per episode, appended atomically; resume; shards merged into one table.

A results folder holds::

    results/
      benchmark.json                     what is being measured (parents and their weights' sha256, cell, sampler):
                                         a run with anything else refuses this folder (the parents' checkpoint
                                         labels may differ: :func:`comparable`)
      episodes.shard-0-of-1.jsonl        one line per finished episode (arm id, seed, success, times, ...)
      episodes.shard-1-of-4.jsonl        ... one file per shard, so shards never write the same file
      bandit.<pair>.jsonl                the online weight search's episodes, in order

Each line is written with ONE ``write`` on a file opened with ``O_APPEND`` and then fsync'ed, so a killed run
leaves whole lines (and at worst an unterminated last line, which :func:`read_rows` ignores and the next append
removes). A run skips every ``(arm, seed)`` already present in any episodes file of the folder: run the same
command again after a kill and it continues; run shards anywhere and copy their files into one folder (or pass
several folders to ``gpc-ros benchmark report``): :func:`table` merges them, counting each ``(arm, seed)`` once.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gpc_ros.benchmark.plan import Arm
from gpc_ros.compose.search import wilson_interval

IDENTITY_FILE = "benchmark.json"
EPISODES_GLOB = "episodes.*.jsonl"


class ResultsMismatchError(ValueError):
    """A results folder holds a benchmark of something else."""


def episodes_file(directory: Path, shard: tuple[int, int]) -> Path:
    """The episodes file of ``shard`` (i, n) in ``directory``."""
    return Path(directory) / f"episodes.shard-{shard[0]}-of-{shard[1]}.jsonl"


def comparable(identity: dict) -> dict:
    """``identity`` as compared: JSON types, and without the parents' ``checkpoint`` labels.

    A parent is identified by its weights' sha256 and kind; where it was loaded from (a shipped name on one machine,
    a checkpoint folder on another) does not change what is measured.
    """
    out = json.loads(json.dumps(identity))
    parents = out.get("parents")
    if isinstance(parents, dict):
        out["parents"] = {name: ({k: v for k, v in p.items() if k != "checkpoint"} if isinstance(p, dict) else p)
                          for name, p in parents.items()}
    return out


def fingerprint(identity: dict) -> str:
    """Short sha256 of a canonical JSON of ``identity``."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def open_results(directory: str | os.PathLike, identity: dict) -> Path:
    """Create ``directory`` with ``benchmark.json`` or check that the one there describes the same benchmark."""
    out = Path(directory)
    path = out / IDENTITY_FILE
    if path.is_file():
        theirs = comparable(json.loads(path.read_text()))
        ours = comparable(identity)
        if theirs != ours:
            diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
            raise ResultsMismatchError(f"{out} holds results of another benchmark (differs in {diff}); use another "
                                       f"--out or the exact parents and settings of {path}")
        return out
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")  # shards may start together
    tmp.write_text(json.dumps(identity, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return out


def append_row(path: Path, row: dict) -> None:
    """Append one JSON line with a single ``write`` (``O_APPEND``) and fsync it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(row, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size:  # an unterminated last line (killed mid-write): cut it off before appending
            with open(path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    data = path.read_bytes()
                    os.ftruncate(fd, data.rfind(b"\n") + 1)
        written = os.write(fd, line)
        if written != len(line):
            raise OSError(f"short write to {path} ({written} of {len(line)} bytes)")
        os.fsync(fd)
    finally:
        os.close(fd)


def read_rows(path: Path) -> list[dict]:
    """Complete lines of one JSONL file (an unterminated or unparsable last line is ignored)."""
    if not path.is_file():
        return []
    text = path.read_text()
    lines = text.split("\n")
    complete = lines[:-1]  # the part after the last newline is unfinished (or empty)
    rows = []
    for i, line in enumerate(complete):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(complete) - 1:
                continue
            raise ValueError(f"{path}: line {i + 1} is not valid JSON (a damaged results file)") from None
    return rows


def episode_rows(directories: Sequence[str | os.PathLike]) -> list[dict]:
    """Every episode row of the folders, each ``(arm, seed)`` once (first file in name order wins).

    The folders' ``benchmark.json`` must agree (else :class:`ResultsMismatchError`), except that a folder may hold
    fewer parents than another (a parent alone run on its own, next to the pair's folder): every parent name that
    episodes of two folders use must be the same parent (weights and kind), and everything else must be equal. A
    parent a folder names but none of its episodes uses does not take part (its identity names it, its rows do not).
    """
    identity = None
    parents: dict[str, object] = {}
    seen: set[tuple[str, int]] = set()
    rows = []
    for d in directories:
        d = Path(d)
        ident_path = d / IDENTITY_FILE
        if not ident_path.is_file():
            raise FileNotFoundError(f"{d} is not a benchmark results folder (no {IDENTITY_FILE})")
        mine = comparable(json.loads(ident_path.read_text()))
        mine_parents = mine.pop("parents") if isinstance(mine.get("parents"), dict) else {}
        if identity is None:
            identity = mine
        if mine != identity:
            raise ResultsMismatchError(f"{d} holds results of another benchmark than {directories[0]}; merge only "
                                       f"folders with the same {IDENTITY_FILE}")
        mine_rows = [row for path in sorted(d.glob(EPISODES_GLOB)) for row in read_rows(path)]
        used = {name for row in mine_rows for name in row_parents(row)}
        mine_parents = {n: p for n, p in mine_parents.items() if n in used}
        clash = sorted(n for n, p in mine_parents.items() if n in parents and parents[n] != p)
        if clash:
            raise ResultsMismatchError(f"{d} holds results of another benchmark than {directories[0]}: parent(s) "
                                       f"{clash} differ (weights or kind); merge only folders whose parents of the "
                                       f"same name are the same")
        parents.update(mine_parents)
        for row in mine_rows:
            key = (row["arm"], int(row["seed"]))
            if key not in seen:
                seen.add(key)
                rows.append(row)
    return rows


def row_parents(row: dict) -> list[str]:
    """The parent names an episode row used.

    Its ``parents`` field, else read from its arm id (``rgb``, ``convex:rgb+pcd@0.9,0.1``).
    """
    if row.get("parents"):
        return list(row["parents"])
    arm = str(row["arm"])
    return arm.split(":", 1)[1].split("@", 1)[0].split("+") if ":" in arm else [arm]


def done_keys(directory: Path) -> set[tuple[str, int]]:
    """The ``(arm id, seed)`` pairs already stored in ``directory``."""
    return {(r["arm"], int(r["seed"])) for r in episode_rows([directory])} if (directory / IDENTITY_FILE).is_file() \
        else set()


@dataclass(frozen=True)
class ArmResult:
    """One arm's line of the results table (success rate with its 95 % Wilson score interval)."""

    arm: str
    episodes: int
    successes: int
    wilson_low: float
    wilson_high: float
    wall_s: float
    """Wall time of this arm's episodes, summed (s)."""
    chunk_ms: float
    """Mean wall time to produce one chunk (encode + sample), ms."""

    @property
    def rate(self) -> float:
        """Success rate (nan without episodes)."""
        return self.successes / self.episodes if self.episodes else float("nan")

    def stats(self) -> tuple:
        """The part of the line that does not depend on the machine's speed (what shards must reproduce)."""
        return self.arm, self.episodes, self.successes, round(self.wilson_low, 12), round(self.wilson_high, 12)


def table(rows: Iterable[dict], arms: Sequence[Arm] | None = None) -> list[ArmResult]:
    """Per-arm results of ``rows`` (the order of ``arms`` if given, else first appearance)."""
    by_arm: dict[str, list[dict]] = {}
    if arms is not None:
        by_arm = {a.id: [] for a in arms}
    for row in rows:
        if arms is None or row["arm"] in by_arm:
            by_arm.setdefault(row["arm"], []).append(row)
    out = []
    for arm, mine in by_arm.items():
        n = len(mine)
        s = sum(bool(r["success"]) for r in mine)
        low, high = wilson_interval(s, n)
        chunks = sum(int(r.get("chunks", 0)) for r in mine)
        chunk_ms = sum(float(r.get("chunk_ms_total", 0.0)) for r in mine) / chunks if chunks else float("nan")
        out.append(ArmResult(arm, n, s, low, high, sum(float(r.get("wall_s", 0.0)) for r in mine), chunk_ms))
    return out


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p of two arms run on the same seeds.

    The chance of a split of the discordant seeds at least this uneven if neither arm is better (binomial,
    n = only_a + only_b, 1/2); 1.0 without discordant seeds.
    """
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2.0 ** n
    return min(1.0, 2.0 * tail)


@dataclass(frozen=True)
class Paired:
    """Two arms on the seeds both ran (common random numbers): who succeeded where, and the exact McNemar p."""

    arm: str
    against: str
    seeds: int
    both: int
    only_arm: int
    only_against: int
    p: float

    @property
    def difference(self) -> float:
        """Success rate of ``arm`` minus that of ``against`` on the shared seeds (nan without seeds)."""
        return (self.only_arm - self.only_against) / self.seeds if self.seeds else float("nan")


def paired(rows: Iterable[dict], arm: str, against: str) -> Paired:
    """Compare ``arm`` with ``against`` seed by seed, on the seeds both have (each ``(arm, seed)`` counted once)."""
    outcome: dict[str, dict[int, bool]] = {arm: {}, against: {}}
    for row in rows:
        if row["arm"] in outcome:
            outcome[row["arm"]].setdefault(int(row["seed"]), bool(row["success"]))
    seeds = sorted(set(outcome[arm]) & set(outcome[against]))
    a = [outcome[arm][s] for s in seeds]
    b = [outcome[against][s] for s in seeds]
    only_arm = sum(x and not y for x, y in zip(a, b))
    only_against = sum(y and not x for x, y in zip(a, b))
    return Paired(arm, against, len(seeds), sum(x and y for x, y in zip(a, b)), only_arm, only_against,
                  mcnemar_exact_p(only_arm, only_against))


def markdown_paired(comparisons: Sequence[Paired]) -> str:
    """Paired comparisons as a markdown table."""
    lines = ["| arm | against | seeds | both succeed | only the arm | only against | difference | exact McNemar p |",
             "|---|---|---|---|---|---|---|---|"]
    for c in comparisons:
        diff = f"{100 * c.difference:+.0f} points" if c.seeds else "–"
        lines.append(f"| `{c.arm}` | `{c.against}` | {c.seeds} | {c.both} | {c.only_arm} | {c.only_against} | "
                     f"{diff} | {c.p:.3f} |")
    return "\n".join(lines)


def markdown_table(results: Sequence[ArmResult]) -> str:
    """The results as a markdown table (success %, 95 % Wilson interval, episodes, wall time, ms per chunk)."""
    lines = ["| arm | success | 95 % Wilson interval | episodes | wall time (min) | ms per chunk |",
             "|---|---|---|---|---|---|"]
    for r in results:
        rate = f"{100 * r.rate:.0f} % ({r.successes}/{r.episodes})" if r.episodes else "–"
        interval = f"[{100 * r.wilson_low:.0f}, {100 * r.wilson_high:.0f}] %" if r.episodes else "–"
        ms = f"{r.chunk_ms:.0f}" if r.chunk_ms == r.chunk_ms else "–"
        lines.append(f"| `{r.arm}` | {rate} | {interval} | {r.episodes} | {r.wall_s / 60:.1f} | {ms} |")
    return "\n".join(lines)


@dataclass(frozen=True)
class Agreement:
    """One arm of a re-run on other seeds against the same arm of the table."""

    arm: str
    table: ArmResult
    rerun: ArmResult

    @property
    def rerun_inside(self) -> bool:
        """The re-run's success rate lies inside the table's 95 % interval."""
        return self.table.wilson_low <= self.rerun.rate <= self.table.wilson_high

    @property
    def overlap(self) -> bool:
        """The two 95 % intervals overlap."""
        return self.rerun.wilson_low <= self.table.wilson_high and self.table.wilson_low <= self.rerun.wilson_high


def agreement(table_rows: Sequence[dict], rerun_rows: Sequence[dict]) -> list[Agreement]:
    """Each arm both ran: the table's line and the re-run's (arms in the table's order).

    A re-run is on *other* seeds: a seed that both ran for the same arm raises ``ValueError``.
    """
    main = {r.arm: r for r in table(table_rows) if r.episodes}
    again = {r.arm: r for r in table(rerun_rows) if r.episodes}
    both = [a for a in main if a in again]
    seeds = {(r["arm"], int(r["seed"])) for r in table_rows if r["arm"] in again}
    shared = sorted({(r["arm"], int(r["seed"])) for r in rerun_rows} & seeds)
    if shared:
        raise ValueError(f"a re-run must use other seeds; {len(shared)} (arm, seed) pairs are in both, "
                         f"e.g. {shared[0]}")
    return [Agreement(a, main[a], again[a]) for a in both]


def markdown_agreement(rows: Sequence[Agreement]) -> str:
    """Re-run against table as markdown, with a closing count line."""
    def line(r: ArmResult) -> str:
        return (f"{100 * r.rate:.0f} % ({r.successes}/{r.episodes}) "
                f"[{100 * r.wilson_low:.0f}, {100 * r.wilson_high:.0f}]")

    lines = ["| arm | table | re-run on other seeds | re-run rate inside the table's interval | intervals overlap |",
             "|---|---|---|---|---|"]
    for a in rows:
        lines.append(f"| `{a.arm}` | {line(a.table)} | {line(a.rerun)} | {'yes' if a.rerun_inside else '**no**'} | "
                     f"{'yes' if a.overlap else '**no**'} |")
    lines += ["", f"{sum(a.overlap for a in rows)} of {len(rows)} arms: the intervals overlap; "
                  f"{sum(a.rerun_inside for a in rows)} of {len(rows)}: the re-run's rate is inside the table's "
                  f"interval."]
    return "\n".join(lines)

