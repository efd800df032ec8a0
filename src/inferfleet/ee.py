"""The execution environment (EE) AWX / Ansible Automation Platform and ansible-navigator run inferfleet in.

`build()` makes what execution-environment.yml names, then runs ansible-builder (v3) on it:
- the base image, Debian 12 from mmdebstrap with python3 and a venv at /opt/ee (no upstream registry is reachable
  here, and ansible-builder's own bindep step drives dnf, which Debian has not: system packages live in the base);
- ee/_build/collections: the collection inferfleet.fleet, built from this checkout with ansible-galaxy;
- ee/_build/wheels: the inferfleet package and every Python package the EE installs, fetched here with this
  machine's pip, so that the image build itself needs no network (PIP_NO_INDEX inside the build).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .paths import project_dir
from .sandbox import image as host_image

BASE_REPOSITORY = "inferfleet-ee-base"
BASE_TAG = f"{BASE_REPOSITORY}:bookworm"
# ssh and rsync reach the hosts (ansible.posix.synchronize), git fetches git-lfs models, ca-certificates the hubs
BASE_PACKAGES = ("python3", "python3-venv", "openssh-client", "rsync", "git", "git-lfs", "ca-certificates",
                 "sshpass")
TAG = "inferfleet-ee:latest"
# What ansible-builder's stages pip-install beside the introspected requirements (its builder stage and init).
BUILDER_PACKAGES = ("bindep", "pyyaml", "packaging", "dumb-init==1.2.5", "setuptools", "wheel")


def _run(argv: list[str], what: str, cwd: Path | None = None, log=print) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, cwd=cwd)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}): {' '.join(argv[:4])} ...\n"
                           f"{(result.stdout + result.stderr)[-4000:]}")
    return result.stdout


def base_image(log=print) -> str:
    """The EE's base image, built when no image with the same inputs exists (its label holds their digest)."""
    hooks = ['chroot "$1" python3 -m venv /opt/ee']
    digest = hashlib.sha256(" ".join((host_image.SUITE, host_image.MIRROR, *BASE_PACKAGES, *hooks)).encode())
    inputs = digest.hexdigest()[:12]
    found = subprocess.run(["docker", "image", "inspect", "-f", '{{ index .Config.Labels "inferfleet.inputs" }}',
                            BASE_TAG], capture_output=True, text=True)
    if found.returncode == 0 and found.stdout.strip() == inputs:
        return BASE_TAG
    log(f"building the EE base image {BASE_TAG} (mmdebstrap {host_image.SUITE}, about a minute)")
    with tempfile.TemporaryDirectory(prefix="inferfleet-ee-rootfs-") as tmp:
        tarball = Path(tmp) / "rootfs.tar"
        argv = ["mmdebstrap", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES)]
        argv += [f"--customize-hook={hook}" for hook in hooks]
        _run([*argv, host_image.SUITE, str(tarball), host_image.MIRROR], "mmdebstrap", log=log)
        _run(["docker", "import", "--change", "ENV PATH=/opt/ee/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"
              ":/sbin:/bin", "--change", f"LABEL inferfleet.inputs={inputs}", str(tarball), BASE_TAG],
             "docker import", log=log)
    return BASE_TAG


def collection_tarball(output: Path, project: Path | None = None) -> Path:
    """`ansible-galaxy collection build` of the checkout, as output/inferfleet-fleet.tar.gz (the name ee/ names)."""
    project = project or project_dir()
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="inferfleet-collection-") as tmp:
        _run([str(Path(sys.executable).parent / "ansible-galaxy"), "collection", "build", "--force",
              "--output-path", tmp, str(project)], "ansible-galaxy collection build")
        (built,) = Path(tmp).glob("inferfleet-fleet-*.tar.gz")
        target = output / "inferfleet-fleet.tar.gz"
        shutil.copyfile(built, target)
    return target


def wheelhouse(output: Path, project: Path | None = None) -> Path:
    """The inferfleet wheel and every wheel the EE installs (its requirements and ansible-builder's own)."""
    project = project or project_dir()
    output.mkdir(parents=True, exist_ok=True)
    for old in output.glob("inferfleet-*.whl"):
        old.unlink()
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", "-q", "--no-deps", "-w", str(output), str(project)], "pip wheel (inferfleet)")
    (package,) = output.glob("inferfleet-*.whl")
    extra = [line.strip() for line in (project / "ee" / "requirements.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    # pip wheel, not download: a package published only as a source archive arrives as a wheel too
    _run([*pip, "wheel", "-q", "-w", str(output), str(package), *extra, "ansible-runner>=2.4,<2.5",
          *BUILDER_PACKAGES], "pip wheel (the EE's requirements)")
    return output


def build(tag: str = TAG, push: str | None = None, log=print) -> str:
    """Build the EE image `tag` with ansible-builder; `push`: a registry (host:port) to push it to as
    <registry>/inferfleet/ee:<version>. Returns the image reference to run (the pushed one when pushed)."""
    project = project_dir()
    staging = project / "ee" / "_build"
    base_image(log)
    log("preparing the collection tarball and the wheelhouse (ee/_build/)")
    collection_tarball(staging / "collections", project)
    wheelhouse(staging / "wheels", project)
    log(f"building {tag} with ansible-builder (execution-environment.yml)")
    builder = Path(sys.executable).parent / "ansible-builder"
    _run([str(builder), "build", "-f", str(project / "execution-environment.yml"), "-t", tag,
          "--container-runtime", "docker", "-c", str(staging / "context"), "-v", "1"], "ansible-builder build",
         cwd=project, log=log)
    if not push:
        return tag
    version = _run([str(Path(sys.executable).parent / "python"), "-c",
                    "import importlib.metadata as m; print(m.version('inferfleet'))"], "version").strip()
    remote = f"{push}/inferfleet/ee:{version}"
    _run(["docker", "tag", tag, remote], "docker tag", log=log)
    _run(["docker", "push", remote], "docker push", log=log)
    log(f"pushed {remote}")
    return remote
