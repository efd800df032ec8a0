"""A FUSE filesystem standing in for the kernel files host tuning touches, on SIMULATED sandbox hosts.

It serves a fake /sys/devices/system/cpu tree (cpufreq governors, cpuidle states) and the /proc/sys files
numa_balancing, nr_hugepages, boot_id plus /proc/cmdline, which the boot step bind-mounts over the real paths
inside the host so that the real `cpupower`, `sysctl` and `systemd-sysctl` work on them without touching the
machine's kernel. Writes replace the whole value and are checked the way the kernel checks them (an unknown
governor is EINVAL; hugepages stop at what "memory" allows). State lives in memory: a host restart is a reboot.
"""

from __future__ import annotations

import errno
import re
import stat
import time
import uuid

try:
    from . import simlib
except ImportError:
    import simlib  # type: ignore[no-redef]

BOOT_CMDLINE = "BOOT_IMAGE=/boot/vmlinuz-6.1.0-28-amd64 root=UUID=5e1a0000-sim0-4000-8000-inferfleet ro quiet"


def kernel_cmdline(grub_cfg_text: str | None) -> str:
    """The command line a (simulated) boot passes: the first `linux` entry of grub.cfg, as a bootloader would."""
    if grub_cfg_text:
        for line in grub_cfg_text.splitlines():
            match = re.match(r"\s*linux\s+(\S+)\s*(.*)$", line)
            if match:
                return f"BOOT_IMAGE={match.group(1)} {match.group(2)}".strip()
    return BOOT_CMDLINE


def cmdline_value(cmdline: str, key: str) -> str | None:
    for arg in cmdline.split():
        if arg.startswith(key + "="):
            return arg.split("=", 1)[1]
    return None


def build_tree(profile: dict, cmdline: str, hugepages_limit: int | None = None) -> dict[str, str]:
    """Path -> content for every file the filesystem serves; directories are implied by the paths."""
    cpus = profile.get("cpu_count", 8)
    governors = profile.get("cpu_governors", ["performance", "powersave"])
    governor = cmdline_value(cmdline, "cpufreq.default_governor") or profile.get("cpu_default_governor")
    if governor not in governors:
        governor = profile.get("cpu_default_governor", governors[-1])
    files = {
        "/cpu/online": f"0-{cpus - 1}\n",
        "/cpu/possible": f"0-{cpus - 1}\n",
        "/cpu/present": f"0-{cpus - 1}\n",
        "/cpu/offline": "\n",
        "/cpu/cpuidle/current_driver": "intel_idle\n",
        "/cpu/cpuidle/current_governor_ro": "menu\n",
        "/proc/numa_balancing": "1\n",
        "/proc/nr_hugepages": "0\n",
        "/proc/boot_id": f"{uuid.uuid4()}\n",
        "/proc/cmdline": cmdline + "\n",
        "/proc/hugepages_limit": f"{hugepages_limit or profile.get('hugepages_limit', 20000)}\n",
    }
    max_cstate = cmdline_value(cmdline, "intel_idle.max_cstate")
    states = profile.get("cpu_idle_states", [])
    if max_cstate is not None and max_cstate.isdigit():
        states = states[: int(max_cstate) + 1 if int(max_cstate) else 1]
    for cpu in range(cpus):
        base = f"/cpu/cpu{cpu}"
        files[f"{base}/online"] = "1\n"
        files[f"{base}/topology/core_id"] = f"{cpu}\n"
        files[f"{base}/topology/physical_package_id"] = "0\n"
        files[f"{base}/cpufreq/scaling_governor"] = governor + "\n"
        files[f"{base}/cpufreq/scaling_available_governors"] = " ".join(governors) + "\n"
        files[f"{base}/cpufreq/scaling_driver"] = "intel_pstate\n"
        files[f"{base}/cpufreq/cpuinfo_min_freq"] = "800000\n"
        files[f"{base}/cpufreq/cpuinfo_max_freq"] = "3800000\n"
        files[f"{base}/cpufreq/scaling_min_freq"] = "800000\n"
        files[f"{base}/cpufreq/scaling_max_freq"] = "3800000\n"
        files[f"{base}/cpufreq/scaling_cur_freq"] = "2000000\n"
        for index, (name, desc, latency) in enumerate(states):
            state = f"{base}/cpuidle/state{index}"
            files[f"{state}/name"] = name + "\n"
            files[f"{state}/desc"] = desc + "\n"
            files[f"{state}/latency"] = f"{latency}\n"
            files[f"{state}/residency"] = f"{latency * 3}\n"
            files[f"{state}/disable"] = "0\n"
            files[f"{state}/usage"] = "0\n"
            files[f"{state}/time"] = "0\n"
    return files


WRITABLE = re.compile(r"^/cpu/cpu\d+/(cpufreq/scaling_governor|cpuidle/state\d+/disable|online)$"
                      r"|^/proc/(numa_balancing|nr_hugepages)$")


def store(files: dict[str, str], path: str, data: bytes) -> str:
    """What the kernel would keep after a write of `data` to `path`; raises OSError as the kernel would."""
    if not WRITABLE.match(path):
        raise OSError(errno.EACCES, "read-only attribute")
    value = data.decode("ascii", "replace").strip()
    if path.endswith("scaling_governor"):
        available = files[path.replace("scaling_governor", "scaling_available_governors")].split()
        if value not in available:
            raise OSError(errno.EINVAL, "invalid governor")
        return value + "\n"
    if not re.fullmatch(r"-?\d+", value):
        raise OSError(errno.EINVAL, "not a number")
    number = int(value)
    if path.endswith("/disable") or path.endswith("/online"):
        if number not in (0, 1):
            raise OSError(errno.EINVAL, "expects 0 or 1")
    elif path.endswith("numa_balancing"):
        if number not in (0, 1, 2, 3):
            raise OSError(errno.EINVAL, "expects 0-3")
    elif path.endswith("nr_hugepages"):
        if number < 0:
            raise OSError(errno.EINVAL, "negative")
        # The kernel allocates what memory allows and reports that, without an error.
        number = min(number, int(files["/proc/hugepages_limit"]))
    return f"{number}\n"


def serve(mountpoint: str, profile: dict, cmdline: str, hugepages_limit: int | None = None) -> None:
    from fusepy import FUSE, FuseOSError, Operations  # Debian's python3-fusepy, present in sandbox hosts

    files = build_tree(profile, cmdline, hugepages_limit)
    dirs = {"/"}
    for path in files:
        parts = path.split("/")
        for depth in range(2, len(parts)):
            dirs.add("/".join(parts[:depth]))
    started = time.time()

    class SimFS(Operations):
        def getattr(self, path, fh=None):
            common = dict(st_uid=0, st_gid=0, st_atime=started, st_mtime=started, st_ctime=started)
            if path in dirs:
                return dict(common, st_mode=stat.S_IFDIR | 0o755, st_nlink=2)
            if path in files:
                mode = 0o644 if WRITABLE.match(path) else 0o444
                return dict(common, st_mode=stat.S_IFREG | mode, st_nlink=1, st_size=4096)
            raise FuseOSError(errno.ENOENT)

        def readdir(self, path, fh):
            prefix = path.rstrip("/") + "/"
            names = {p[len(prefix):].split("/")[0] for p in list(files) + list(dirs)
                     if p.startswith(prefix) and p != prefix}
            return [".", ".."] + sorted(names)

        def open(self, path, fi):
            if path not in files:
                raise FuseOSError(errno.ENOENT)
            fi.direct_io = True  # sizes are not known in advance, as with sysfs
            return 0

        def read(self, path, size, offset, fi):
            return files[path].encode()[offset:offset + size]

        def write(self, path, data, offset, fi):
            try:
                files[path] = store(files, path, data)
            except OSError as err:
                raise FuseOSError(err.errno) from None
            return len(data)

        def truncate(self, path, length, fh=None):
            if path not in files:
                raise FuseOSError(errno.ENOENT)
            return 0

    FUSE(SimFS(), mountpoint, foreground=True, allow_other=True, raw_fi=True, nothreads=True,
         attr_timeout=0, entry_timeout=0)


def main(argv: list[str]) -> int:
    mountpoint = argv[0]
    profile = simlib.load_profile()
    faults = simlib.load_faults()
    try:
        with open("/boot/grub/grub.cfg", encoding="utf-8") as handle:
            grub_cfg = handle.read()
    except OSError:
        grub_cfg = None
    serve(mountpoint, profile, kernel_cmdline(grub_cfg), faults.get("hugepages_limit"))
    return 0
