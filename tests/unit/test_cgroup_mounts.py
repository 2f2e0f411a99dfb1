"""Finding cgroup v1 controllers in mountinfo, and the limits a job may be given."""

from __future__ import annotations

from pathlib import Path

import pytest

from outpost.sandbox.cgroups import Limits, parse_mountinfo

SEPARATE = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
CO_MOUNTED = """\
26 25 0:23 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 - cgroup cgroup rw,cpu,cpuacct
27 25 0:24 / /srv/my\\040cgroups/pids rw,nosuid shared:10 - cgroup cgroup rw,pids
"""
V2_ONLY = "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"


def test_each_controller_maps_to_its_own_mount_point() -> None:
    assert parse_mountinfo(SEPARATE) == {
        "cpu": Path("/sys/fs/cgroup/cpu"),
        "memory": Path("/sys/fs/cgroup/memory"),
    }


def test_co_mounted_controllers_share_a_mount_and_escaped_paths_are_decoded() -> None:
    assert parse_mountinfo(CO_MOUNTED) == {
        "cpu": Path("/sys/fs/cgroup/cpu,cpuacct"),
        "cpuacct": Path("/sys/fs/cgroup/cpu,cpuacct"),
        "pids": Path("/srv/my cgroups/pids"),
    }


def test_a_v2_only_host_has_no_v1_controllers() -> None:
    assert parse_mountinfo(V2_ONLY) == {}


@pytest.mark.parametrize(
    ("memory_bytes", "pids_max", "cpu_cores"), [(0, 10, 1.0), (1 << 20, 0, 1.0), (1 << 20, 10, 0.001)]
)
def test_limits_out_of_range_are_refused(memory_bytes: int, pids_max: int, cpu_cores: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        Limits(memory_bytes=memory_bytes, pids_max=pids_max, cpu_cores=cpu_cores)
