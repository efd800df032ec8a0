import errno

import pytest

from inferfleet.sandbox.profiles import PROFILES
from inferfleet.sandbox.sim.simfs import build_tree, kernel_cmdline, store

PROFILE = PROFILES["gaudi2"].to_json()


def tree(cmdline="BOOT_IMAGE=/vmlinuz ro quiet", **kw):
    return build_tree(PROFILE, cmdline, **kw)


def test_tree_has_idle_states_by_name_and_default_governor():
    files = tree()
    assert files["/cpu/cpu0/cpuidle/state2/name"] == "C1E\n"
    assert files["/cpu/cpu7/cpuidle/state3/name"] == "C6\n"
    assert files["/cpu/cpu0/cpufreq/scaling_governor"] == "powersave\n"
    assert files["/proc/numa_balancing"] == "1\n"


def test_boot_cmdline_sets_governor_and_limits_cstates():
    files = tree("BOOT_IMAGE=/vmlinuz ro cpufreq.default_governor=performance intel_idle.max_cstate=0")
    assert files["/cpu/cpu3/cpufreq/scaling_governor"] == "performance\n"
    assert "/cpu/cpu0/cpuidle/state1/name" not in files
    assert "intel_idle.max_cstate=0" in files["/proc/cmdline"]


def test_writes_replace_the_value_and_are_checked_like_the_kernel():
    files = tree()
    path = "/cpu/cpu0/cpufreq/scaling_governor"
    assert store(files, path, b"performance\n") == "performance\n"
    with pytest.raises(OSError) as err:
        store(files, path, b"ondemand\n")
    assert err.value.errno == errno.EINVAL
    assert store(files, "/cpu/cpu0/cpuidle/state2/disable", b"1") == "1\n"
    with pytest.raises(OSError):
        store(files, "/cpu/cpu0/cpuidle/state2/disable", b"2")
    with pytest.raises(OSError) as err:
        store(files, "/cpu/cpu0/cpuidle/state2/name", b"C9")
    assert err.value.errno == errno.EACCES


def test_hugepages_stop_at_the_simulated_memory_limit():
    files = tree(hugepages_limit=12000)
    assert store(files, "/proc/nr_hugepages", b"15000") == "12000\n"
    assert store(files, "/proc/nr_hugepages", b"100") == "100\n"
    with pytest.raises(OSError):
        store(files, "/proc/nr_hugepages", b"-1")
    with pytest.raises(OSError):
        store(files, "/proc/nr_hugepages", b"many")


def test_kernel_cmdline_comes_from_the_first_grub_entry():
    cfg = "menuentry 'Debian' {\n\tlinux\t/boot/vmlinuz-6.1 root=UUID=x ro quiet hugepages=1\n}\n"
    assert kernel_cmdline(cfg) == "BOOT_IMAGE=/boot/vmlinuz-6.1 root=UUID=x ro quiet hugepages=1"
    assert kernel_cmdline(None).startswith("BOOT_IMAGE=")


def test_boot_remounts_the_read_only_cgroup_controllers_only():
    from inferfleet.sandbox.sim.boot import writable_cgroups

    # /proc/mounts of a sandbox host on this machine (cgroup v1, Docker 20.10, --cgroupns private)
    mounts = """tmpfs /sys/fs/cgroup tmpfs ro,nosuid,nodev,noexec,size=4096k,nr_inodes=1024,mode=755 0 0
cgroup /sys/fs/cgroup/cpuset cgroup ro,nosuid,nodev,noexec,relatime,cpuset 0 0
cgroup /sys/fs/cgroup/memory cgroup ro,nosuid,nodev,noexec,relatime,memory 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
systemd /sys/fs/cgroup/systemd cgroup ro,nosuid,nodev,noexec,relatime,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid,nodev,noexec,relatime 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
"""
    assert writable_cgroups(mounts) == [("/sys/fs/cgroup/cpuset", "cpuset"), ("/sys/fs/cgroup/memory", "memory")]
