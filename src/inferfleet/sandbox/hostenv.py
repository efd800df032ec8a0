"""What the machine running the sandbox needs: Debian packages and a running Docker engine."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

# command -> Debian package providing it
REQUIRED_COMMANDS = {
    "dockerd": "docker.io",
    "mmdebstrap": "mmdebstrap",
    "docker-registry": "docker-registry",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "fusermount3": "fuse3",
    "rsync": "rsync",  # the models stage copies from the controller's fleet cache with it
}
DOCKERD_LOG = Path("/var/log/inferfleet-dockerd.log")


def missing_packages() -> list[str]:
    return sorted({pkg for cmd, pkg in REQUIRED_COMMANDS.items() if shutil.which(cmd) is None})


def ensure_host_packages(log=print) -> None:
    missing = missing_packages()
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(f"the sandbox needs these Debian packages: {' '.join(missing)} (install them as root)")
    log(f"installing Debian packages: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def docker_ready() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def ensure_dockerd(log=print, timeout: float = 60.0) -> None:
    """Start dockerd when no engine answers (this machine has no systemd to do it)."""
    if docker_ready():
        return
    log(f"starting dockerd (log: {DOCKERD_LOG})")
    with open(DOCKERD_LOG, "ab") as out:
        subprocess.Popen(["dockerd"], stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while not docker_ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"dockerd did not come up within {timeout:.0f}s; see {DOCKERD_LOG}")
        time.sleep(0.5)
