"""Boot-time setup and test switches of a SIMULATED sandbox host.

`boot` runs from inferfleet-sim-boot.service on every (re)start of the host: it binds the simulated kernel
files over the real paths, creates the accelerator device nodes (aliases of /dev/null that `docker run
--device` accepts), lays out the driver files vendor containers mount, links the emulated vendor tools and
applies the sysctl.d settings the host persisted, as systemd-sysctl would on a real boot.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

try:
    from . import runtimes, simlib
except ImportError:
    import runtimes  # type: ignore[no-redef]
    import simlib  # type: ignore[no-redef]

SIM_DIR = "/usr/local/lib/inferfleet-sim"
FS_MOUNT = "/run/inferfleet-sim/fs"
HOLDERS_DIR = "/run/inferfleet-sim/holders"
BIND_MOUNTS = (
    ("cpu", "/sys/devices/system/cpu"),
    ("proc/numa_balancing", "/proc/sys/kernel/numa_balancing"),
    ("proc/nr_hugepages", "/proc/sys/vm/nr_hugepages"),
    ("proc/boot_id", "/proc/sys/kernel/random/boot_id"),
    ("proc/cmdline", "/proc/cmdline"),
)
TOOL_LINKS = {
    "gaudi": {"/usr/bin/hl-smi": "hl-smi", "/usr/bin/habana-container-runtime": "habana-container-runtime"},
    "ascend": {"/usr/local/bin/npu-smi": "npu-smi", "/usr/bin/hccn_tool": "hccn_tool",
               "/usr/local/Ascend/driver/tools/hccn_tool": "hccn_tool",
               "/usr/local/Ascend/Ascend-Docker-Runtime/ascend-docker-runtime": "ascend-docker-runtime"},
    "nvidia": {"/usr/bin/nvidia-smi": "nvidia-smi", "/usr/bin/nvidia-container-runtime":
               "nvidia-container-runtime"},
}
GRUB_TOOLS = ("/usr/sbin/update-grub", "/usr/sbin/grub-mkconfig")
SIM_HEADER = "# inferfleet sandbox: SIMULATED boot loader configuration, written by a stand-in for update-grub\n"


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True)


def _wait_for_mount(path: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.ismount(path):
        if time.monotonic() > deadline:
            raise SystemExit(f"inferfleet-sim: {path} was not mounted within {timeout:.0f}s")
        time.sleep(0.05)


def _link(path: str, target: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.islink(path) and os.readlink(path) == target:
        return
    if os.path.lexists(path):
        os.remove(path)
    os.symlink(target, path)


def sync_device_nodes(profile: dict, faults: dict) -> None:
    """Create the nodes of present cards, remove those of cards the faults mark missing."""
    missing = set(faults.get("missing", []))
    for node in profile["device_nodes"]:
        match = re.search(r"(\d+)$", node)
        per_card = match is not None and not node.startswith("nvidia-uvm")
        path = "/dev/" + node
        if per_card and int(match.group(1)) in missing:
            if os.path.lexists(path):
                os.remove(path)
            continue
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            _run("mknod", "-m", "0666", path, "c", "1", "3")


def sync_tool_links(profile: dict, faults: dict) -> None:
    """Link the emulated vendor tools, except those the faults mark missing (tool_missing)."""
    entry = f"{SIM_DIR}/inferfleet-sim"
    missing = set(faults.get("tool_missing", []))
    for path, tool in TOOL_LINKS.get(profile["platform"], {}).items():
        if tool in missing:
            if os.path.islink(path):
                os.remove(path)
        else:
            _link(path, entry)


def write_driver_files(profile: dict) -> None:
    if profile["platform"] != "ascend":
        return
    lib64 = "/usr/local/Ascend/driver/lib64"
    os.makedirs(lib64, exist_ok=True)
    os.makedirs("/usr/local/dcmi", exist_ok=True)
    files = {
        f"{lib64}/libdrvdsmi_host.so": "# inferfleet sandbox: SIMULATED driver library placeholder\n",
        "/usr/local/Ascend/driver/version.info": f"Version={profile['driver_version']}\n",
        "/etc/ascend_install.info": "UserName=HwHiAiUser\nUserGroup=HwHiAiUser\n"
                                    "Driver_Install_Type=full\nDriver_Install_Path_Param=/usr/local/Ascend\n",
        "/etc/hccn.conf": "".join(f"address_{d['index']}=192.168.100.{101 + d['index']}\n"
                                  f"netmask_{d['index']}=255.255.255.0\n" for d in profile["devices"]),
        # what the Ascend-docker-runtime installer leaves (run_main.sh copies base.list there); the simulated
        # runtime's hook mounts the entries that exist (sim/runtimes.py ASCEND_BASE_LIST has the sources)
        f"{runtimes.ASCEND_CONFIG_DIR}/base.list": "\n".join(runtimes.ASCEND_BASE_LIST),
    }
    for path, text in files.items():
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)


def writable_cgroups(mounts_text: str) -> list[tuple[str, str]]:
    """(mount point, options) of the read-only cgroup v1 controller hierarchies Docker gave this container.

    The host's inner dockerd creates a cgroup per container in each of them, which a read-only mount refuses
    ("mkdir /sys/fs/cgroup/cpuset/docker: read-only file system"). Real hosts have them writable; the sandbox
    remounts them, inside its own cgroup namespace. The name=systemd hierarchy stays as it is (systemd holds it,
    and runc does not need it writable)."""
    found = []
    for line in mounts_text.splitlines():
        parts = line.split()
        if len(parts) < 4 or parts[2] != "cgroup" or not parts[1].startswith("/sys/fs/cgroup/"):
            continue
        options = parts[3].split(",")
        if "ro" not in options or any(o.startswith("name=") for o in options):
            continue
        controllers = [o for o in options if o not in ("ro", "rw", "nosuid", "nodev", "noexec", "relatime")]
        found.append((parts[1], ",".join(controllers)))
    return found


def boot() -> int:
    profile = simlib.load_profile()
    faults = simlib.load_faults()
    _wait_for_mount(FS_MOUNT)
    for source, target in BIND_MOUNTS:
        if not os.path.ismount(target):
            _run("mount", "--bind", f"{FS_MOUNT}/{source}", target)
    sync_device_nodes(profile, faults)
    write_driver_files(profile)
    sync_tool_links(profile, faults)
    entry = f"{SIM_DIR}/inferfleet-sim"
    for path in GRUB_TOOLS:
        if not os.path.exists(path) or os.path.islink(path):
            _link(path, entry)
    os.makedirs(HOLDERS_DIR, exist_ok=True)
    if not any(os.path.exists(f"/etc/ssh/ssh_host_{kind}_key") for kind in ("ed25519", "rsa")):
        _run("ssh-keygen", "-A")
    with open("/proc/mounts", encoding="utf-8") as handle:
        for mountpoint, controllers in writable_cgroups(handle.read()):
            _run("umount", mountpoint)
            _run("mount", "-t", "cgroup", "-o", controllers, "cgroup", mountpoint)
    # systemd-sysctl.service skips read-only /proc/sys (as in any container): apply the simulated keys here.
    _run("/lib/systemd/systemd-sysctl", "--prefix", "vm.nr_hugepages", "--prefix", "kernel.numa_balancing")
    return 0


def update_grub(argv: list[str]) -> int:
    """Stand-in for update-grub / grub-mkconfig: renders /etc/default/grub into /boot/grub/grub.cfg."""
    output = "/boot/grub/grub.cfg"
    if "-o" in argv:
        output = argv[argv.index("-o") + 1]
    script = ". /etc/default/grub; printf '%s\\n%s\\n' \"$GRUB_CMDLINE_LINUX\" \"$GRUB_CMDLINE_LINUX_DEFAULT\""
    result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    linux, default = (result.stdout.split("\n") + ["", ""])[:2]
    args = " ".join(part for part in ("root=UUID=5e1a0000-sim0-4000-8000-inferfleet ro", linux, default) if part)
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with open(output, "w", encoding="utf-8") as handle:
        handle.write(SIM_HEADER)
        handle.write("menuentry 'Debian GNU/Linux' {\n")
        handle.write(f"\tlinux\t/boot/vmlinuz-6.1.0-28-amd64 {args}\n")
        handle.write("\tinitrd\t/boot/initrd.img-6.1.0-28-amd64\n}\n")
    sys.stderr.write("Generating grub configuration file ... (inferfleet sandbox: simulated)\ndone\n")
    return 0


def hold(index: int) -> int:
    """Keep card `index` open from a background process, as a foreign container holding it would."""
    profile = simlib.load_profile()
    paths = [p.format(i=index) for p in simlib.HOLD_NODES.get(profile["platform"], ())]
    paths = [p for p in paths if os.path.exists(p)]
    if not paths:
        sys.stderr.write(f"inferfleet-sim: card {index} has no device node to hold\n")
        return 1
    release(index)
    code = "import os, sys, time\nfds = [os.open(p, os.O_RDWR) for p in sys.argv[1:]]\ntime.sleep(10**9)\n"
    proc = subprocess.Popen(["python3", "-c", code, *paths], start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.makedirs(HOLDERS_DIR, exist_ok=True)
    with open(f"{HOLDERS_DIR}/{index}.pid", "w", encoding="utf-8") as handle:
        handle.write(str(proc.pid))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if any(p in simlib.scan_holders() for p in paths):
            print(json.dumps({"held": index, "pid": proc.pid, "paths": paths}))
            return 0
        time.sleep(0.05)
    sys.stderr.write(f"inferfleet-sim: holder of card {index} did not open {shlex.join(paths)}\n")
    return 1


def release(index: int) -> int:
    pidfile = f"{HOLDERS_DIR}/{index}.pid"
    try:
        with open(pidfile, encoding="utf-8") as handle:
            pid = int(handle.read().strip())
        os.kill(pid, signal.SIGTERM)
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    if os.path.exists(pidfile):
        os.remove(pidfile)
    return 0


def main(argv: list[str]) -> int:
    command = argv[0] if argv else ""
    if command == "boot":
        return boot()
    if command == "apply-faults":
        profile, faults = simlib.load_profile(), simlib.load_faults()
        sync_device_nodes(profile, faults)
        sync_tool_links(profile, faults)
        return 0
    if command in ("hold", "release") and len(argv) == 2 and argv[1].isdigit():
        return hold(int(argv[1])) if command == "hold" else release(int(argv[1]))
    sys.stderr.write("usage: inferfleet-sim boot | apply-faults | hold N | release N | simfs MOUNTPOINT\n")
    return 2
