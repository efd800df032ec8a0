"""The sandbox host image: a Debian rootfs from mmdebstrap loaded with `docker import`, cached by its inputs."""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from pathlib import Path

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "python3-apt", "sudo", "ca-certificates",
    "iproute2", "procps", "lsof", "kmod", "linux-cpupower", "python3-fusepy", "fuse3", "curl", "gnupg",
    "iptables", "less",
)
SIM_DIR = Path(__file__).resolve().parent / "sim"
UNITS = ("inferfleet-simfs.service", "inferfleet-sim-boot.service")
DEFAULT_GRUB = """\
# If you change this file, run 'update-grub' afterwards to update /boot/grub/grub.cfg.
GRUB_DEFAULT=0
GRUB_TIMEOUT=5
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="quiet"
GRUB_CMDLINE_LINUX=""
"""
REPOSITORY = "inferfleet-sandbox-host"


def _hooks(ca_bundle: Path | None, files_dir: Path) -> list[str]:
    """mmdebstrap customize hooks; `files_dir` holds the generated files they copy in."""
    hooks = [
        # Host keys are made at first boot, so that hosts do not share them.
        'rm -f "$1"/etc/ssh/ssh_host_*',
        'mkdir -p "$1"/root/.ssh && chmod 700 "$1"/root/.ssh',
        'mkdir -p "$1"/etc/default "$1"/boot/grub "$1"/usr/local/lib/inferfleet-sim "$1"/etc/inferfleet-sim',
        f"copy-in {files_dir / 'grub'} /etc/default",
        'echo "PermitRootLogin prohibit-password" > "$1"/etc/ssh/sshd_config.d/inferfleet-sandbox.conf',
        'echo "UseDNS no" >> "$1"/etc/ssh/sshd_config.d/inferfleet-sandbox.conf',
        # Units that make no sense in a container slow every boot down.
        'for u in systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer '
        'fstrim.timer getty@tty1.service; do chroot "$1" systemctl mask "$u" >/dev/null 2>&1 || true; done',
    ]
    for unit in UNITS:
        hooks.append(f'copy-in {SIM_DIR / "units" / unit} /etc/systemd/system')
        hooks.append(f'chroot "$1" systemctl enable {unit}')
    if ca_bundle is not None:
        hooks.append(f"copy-in {ca_bundle} /usr/local/share/ca-certificates")
        hooks.append('chroot "$1" update-ca-certificates >/dev/null')
    return hooks


def image_tag(ca_bundle: Path | None = None) -> str:
    digest = hashlib.sha256()
    # The hooks are hashed with a fixed stand-in for the build's temporary directory.
    for part in (SUITE, MIRROR, " ".join(PACKAGES), DEFAULT_GRUB, *_hooks(ca_bundle, Path("files"))):
        digest.update(part.encode())
    for unit in UNITS:
        digest.update((SIM_DIR / "units" / unit).read_bytes())
    if ca_bundle is not None:
        digest.update(ca_bundle.read_bytes())
    return f"{REPOSITORY}:{digest.hexdigest()[:12]}"


def build(client, ca_bundle: Path | None = None, log=print) -> str:
    """Return the image tag, building the image only when no image with the same inputs exists."""
    tag = image_tag(ca_bundle)
    if client.images.list(name=tag):
        return tag
    log(f"building sandbox host image {tag} (mmdebstrap {SUITE}, about 30 s)")
    with tempfile.TemporaryDirectory(prefix="inferfleet-rootfs-") as tmp:
        tarball = Path(tmp) / "rootfs.tar"
        (Path(tmp) / "grub").write_text(DEFAULT_GRUB)
        argv = ["mmdebstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES)]
        argv += [f"--customize-hook={hook}" for hook in _hooks(ca_bundle, Path(tmp))]
        argv += [SUITE, str(tarball), MIRROR]
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"mmdebstrap failed ({result.returncode}):\n{result.stderr[-3000:]}")
        result = subprocess.run(
            ["docker", "import", "--change", 'CMD ["/sbin/init"]', "--change", "ENV container=docker",
             str(tarball), tag],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"docker import failed: {result.stderr.strip()}")
    return tag
