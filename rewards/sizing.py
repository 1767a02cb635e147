"""How many grading workers one training process may start: the CPUs it may really use, shared by its node's ranks.

`os.cpu_count()` is the machine's cores, not the process's: under Slurm, a container's cgroup quota or a
`taskset` mask a rank may use a few of them, and every rank of the node starts its own pool. With 8 ranks on a
128-core node, one pool per rank of `os.cpu_count()` workers was 1,024 processes, each holding sympy and
math-verify. Everything here takes its inputs as parameters (environment, affinity, cgroup root) so tests
drive it with fake files and variables instead of patching the library.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

MAX_WORKERS = 8  # per process: answer checks are a small share of a training step (docs/rewards.md)
OVERRIDE = "REWARDS_WORKERS"  # an exact worker count, for a launcher that knows better


def _int(value: str | None) -> int | None:
    try:
        n = int(str(value).strip().split("(")[0])  # SLURM_CPUS_PER_TASK is a plain number; be lenient anyway
    except (TypeError, ValueError):
        return None
    return n if n > 0 else None


def affinity_cpus() -> int:
    """CPUs in this process's affinity mask (`taskset`, Slurm's binding), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _own_cgroup(proc_cgroup: str) -> tuple[str | None, str | None]:
    """(v2 path, v1 cpu-controller path) of this process from the text of /proc/self/cgroup."""
    v2 = v1 = None
    for line in proc_cgroup.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2 = parts[2]
        elif "cpu" in parts[1].split(","):
            v1 = parts[2]
    return v2, v1


def _ancestors(root: Path, rel: str | None) -> list[Path]:
    """root/rel, its parents up to root, and root itself (a quota anywhere above limits us too)."""
    out = [root]
    if rel and rel not in ("/", ""):
        p = root
        for part in Path(rel.lstrip("/")).parts:
            p = p / part
            out.append(p)
    return out


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_cpus(root: str | Path = "/sys/fs/cgroup", proc_cgroup: str | None = None) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (v2 `cpu.max`, v1 `cpu.cfs_quota_us / cpu.cfs_period_us`),
    the smallest along the hierarchy; None when there is no quota."""
    root = Path(root)
    if proc_cgroup is None:
        proc_cgroup = _read(Path("/proc/self/cgroup")) or ""
    v2, v1 = _own_cgroup(proc_cgroup)
    quotas: list[float] = []
    for d in _ancestors(root, v2):  # cgroup v2: "max 100000" or "200000 100000"
        text = _read(d / "cpu.max")
        if text:
            q, _, period = text.partition(" ")
            if q != "max" and _int(q) and _int(period):
                quotas.append(int(q) / int(period))
    for base in (root / "cpu", root / "cpu,cpuacct", root / "cpuacct,cpu"):  # cgroup v1
        if not base.is_dir():
            continue
        for d in _ancestors(base, v1):
            q, period = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
            if q and period and _int(q) and _int(period):  # -1 = no quota
                quotas.append(int(q) / int(period))
    return min(quotas) if quotas else None


def pool_size(env: Mapping[str, str] | None = None, affinity: int | None = None,
              cgroup_root: str | Path = "/sys/fs/cgroup", proc_cgroup: str | None = None,
              cap: int = MAX_WORKERS) -> int:
    """Workers for this process: min(affinity mask, cgroup quota, SLURM_CPUS_PER_TASK), divided among the node's
    local ranks (LOCAL_WORLD_SIZE), at least 1 and at most `cap`; REWARDS_WORKERS overrides it all."""
    env = os.environ if env is None else env
    if (forced := _int(env.get(OVERRIDE))) is not None:
        return forced
    cpus: float = affinity if affinity is not None else affinity_cpus()
    quota = cgroup_cpus(cgroup_root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    if (slurm := _int(env.get("SLURM_CPUS_PER_TASK"))) is not None:
        cpus = min(cpus, slurm)
    ranks = _int(env.get("LOCAL_WORLD_SIZE")) or 1
    return max(1, min(cap, int(cpus) // ranks))
