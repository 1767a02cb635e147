"""Pool sizing from what the process may use: affinity, cgroup v1/v2 quota, Slurm, local ranks (fake files and
environments passed in as parameters, nothing patched)."""

from pathlib import Path

import pytest

from rewards.sizing import MAX_WORKERS, cgroup_cpus, pool_size


def _v2(root: Path, cpu_max: str, sub: str = "") -> None:
    d = root / sub if sub else root
    d.mkdir(parents=True, exist_ok=True)
    (d / "cpu.max").write_text(cpu_max + "\n")


def test_affinity_alone(tmp_path):
    assert pool_size(env={}, affinity=6, cgroup_root=tmp_path, proc_cgroup="") == 6
    assert pool_size(env={}, affinity=1, cgroup_root=tmp_path, proc_cgroup="") == 1


def test_capped(tmp_path):
    assert pool_size(env={}, affinity=128, cgroup_root=tmp_path, proc_cgroup="") == MAX_WORKERS
    assert pool_size(env={}, affinity=128, cgroup_root=tmp_path, proc_cgroup="", cap=32) == 32


def test_shared_among_local_ranks(tmp_path):
    """8 ranks on a 128-core node: 16 CPUs each, capped; 8 ranks on 2 cores: one worker each, never 0."""
    assert pool_size(env={"LOCAL_WORLD_SIZE": "8"}, affinity=128, cgroup_root=tmp_path, proc_cgroup="", cap=64) == 16
    assert pool_size(env={"LOCAL_WORLD_SIZE": "8"}, affinity=2, cgroup_root=tmp_path, proc_cgroup="") == 1
    assert pool_size(env={"LOCAL_WORLD_SIZE": "4"}, affinity=16, cgroup_root=tmp_path, proc_cgroup="") == 4


def test_slurm_cpus_per_task(tmp_path):
    env = {"SLURM_CPUS_PER_TASK": "12", "LOCAL_WORLD_SIZE": "4"}
    assert pool_size(env=env, affinity=128, cgroup_root=tmp_path, proc_cgroup="") == 3
    assert pool_size(env={"SLURM_CPUS_PER_TASK": "junk"}, affinity=4, cgroup_root=tmp_path, proc_cgroup="") == 4


@pytest.mark.parametrize("cpu_max, expected", [("max 100000", None), ("200000 100000", 2.0), ("150000 100000", 1.5)])
def test_cgroup_v2_quota(tmp_path, cpu_max, expected):
    _v2(tmp_path, cpu_max)
    assert cgroup_cpus(tmp_path, proc_cgroup="0::/\n") == expected


def test_cgroup_v2_nested_quota_is_the_smallest(tmp_path):
    _v2(tmp_path, "max 100000")
    _v2(tmp_path, "400000 100000", "job")
    _v2(tmp_path, "300000 100000", "job/step")
    assert cgroup_cpus(tmp_path, proc_cgroup="0::/job/step\n") == 3.0
    assert pool_size(env={}, affinity=64, cgroup_root=tmp_path, proc_cgroup="0::/job/step\n") == 3
    # a fractional quota rounds up: 1.5 CPUs may run 2 workers part of the time
    _v2(tmp_path, "150000 100000", "job/step")
    assert pool_size(env={}, affinity=64, cgroup_root=tmp_path, proc_cgroup="0::/job/step\n") == 2


def test_cgroup_v1_quota(tmp_path):
    d = tmp_path / "cpu,cpuacct" / "docker" / "abc"
    d.mkdir(parents=True)
    (d / "cpu.cfs_quota_us").write_text("250000\n")
    (d / "cpu.cfs_period_us").write_text("100000\n")
    proc = "12:cpu,cpuacct:/docker/abc\n11:memory:/docker/abc\n"
    assert cgroup_cpus(tmp_path, proc_cgroup=proc) == 2.5
    assert pool_size(env={}, affinity=32, cgroup_root=tmp_path, proc_cgroup=proc) == 3
    (d / "cpu.cfs_quota_us").write_text("-1\n")  # no quota
    assert cgroup_cpus(tmp_path, proc_cgroup=proc) is None


def test_no_cgroup_files(tmp_path):
    assert cgroup_cpus(tmp_path / "missing", proc_cgroup="garbage") is None


def test_override(tmp_path):
    env = {"REWARDS_WORKERS": "5", "LOCAL_WORLD_SIZE": "8", "SLURM_CPUS_PER_TASK": "1"}
    assert pool_size(env=env, affinity=2, cgroup_root=tmp_path, proc_cgroup="") == 5


def test_this_machine():
    n = pool_size()
    assert 1 <= n <= MAX_WORKERS
