"""Merging /etc/docker/daemon.json: our keys in, every key the user wrote kept.

Used by the docker_engine role through plugins/filter/docker.py, and unit-tested here.
"""

from __future__ import annotations

import json


def merge_values(current, wanted):
    """Merge `wanted` into `current`: mappings recursively, lists as wanted items first then the user's other
    items (the first registry mirror is tried first, so ours lead), anything else replaced by `wanted`."""
    if isinstance(current, dict) and isinstance(wanted, dict):
        merged = dict(current)
        for key, value in wanted.items():
            merged[key] = merge_values(current[key], value) if key in current else value
        return merged
    if isinstance(current, list) and isinstance(wanted, list):
        return list(wanted) + [item for item in current if item not in wanted]
    return wanted


def daemon_settings(registry_mirrors=(), insecure_registries=(), data_root="", log_driver="", log_opts=None,
                    runtimes=None, default_runtime="", options=None) -> dict:
    """The daemon.json keys inferfleet manages, from the role's variables (empty values are not managed)."""
    settings: dict = {}
    if registry_mirrors:
        settings["registry-mirrors"] = list(registry_mirrors)
    if insecure_registries:
        settings["insecure-registries"] = list(insecure_registries)
    if data_root:
        settings["data-root"] = data_root
    if log_driver:
        settings["log-driver"] = log_driver
    if log_opts:
        settings["log-opts"] = {key: str(value) for key, value in log_opts.items()}
    if runtimes:
        settings["runtimes"] = {name: {"path": spec["path"], **({"runtimeArgs": list(spec["runtimeArgs"])}
                                                                 if spec.get("runtimeArgs") else {})}
                                for name, spec in runtimes.items()}
    if default_runtime:
        settings["default-runtime"] = default_runtime
    return merge_values(settings, options or {})


def merge_daemon_json(current_text: str | None, wanted: dict) -> dict:
    """{'merged', 'current', 'changed', 'error'}: the file's content with `wanted` merged in.

    A missing or empty file counts as {}. Invalid JSON or a non-object is an error: the file is the user's and
    is never overwritten by guesswork."""
    if current_text is None or not current_text.strip():
        current = {}
    else:
        try:
            current = json.loads(current_text)
        except ValueError as err:
            return {"merged": None, "current": None, "update_needed": False,
                    "error": f"is not valid JSON ({err}); fix or remove it, then run again"}
        if not isinstance(current, dict):
            return {"merged": None, "current": None, "update_needed": False,
                    "error": f"holds a JSON {type(current).__name__}, not an object; fix it, then run again"}
    merged = merge_values(current, wanted)
    return {"merged": merged, "current": current, "update_needed": merged != current, "error": ""}


def check_docker_info(info: dict, wanted: dict) -> list[str]:
    """What `docker info --format '{{json .}}'` shows differing from the daemon.json settings we wrote."""
    problems = []
    registry = info.get("RegistryConfig") or {}
    mirrors = [m.rstrip("/") for m in registry.get("Mirrors") or []]
    for mirror in wanted.get("registry-mirrors", []):
        if mirror.rstrip("/") not in mirrors:
            problems.append(f"registry mirror {mirror} is not active (docker info lists {mirrors or 'none'})")
    index = registry.get("IndexConfigs") or {}
    for name in wanted.get("insecure-registries", []):
        if name in index and index[name].get("Secure", True):
            problems.append(f"registry {name} is not insecure in docker info")
        elif name not in index and "/" not in name:
            problems.append(f"insecure registry {name} is missing from docker info")
    runtimes = sorted((info.get("Runtimes") or {}).keys())
    for name in wanted.get("runtimes", {}):
        if name not in runtimes:
            problems.append(f"runtime {name} is not registered (docker info lists {', '.join(runtimes)})")
    default = wanted.get("default-runtime")
    if default and info.get("DefaultRuntime") != default:
        problems.append(f"default runtime is {info.get('DefaultRuntime')}, wanted {default}")
    root = wanted.get("data-root")
    if root and info.get("DockerRootDir") != root:
        problems.append(f"data root is {info.get('DockerRootDir')}, wanted {root}")
    return problems


def image_registry(image: str) -> str:
    """The registry host of an image reference (docker.io when the first component is not a host)."""
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def mirror_ref(image: str, mirror: str) -> str:
    """The name of `image` in a LAN mirror registry: <mirror>/<upstream registry>/<path>, so images of every
    upstream (docker.io, quay.io, vault.habana.ai, ...) live side by side in one registry."""
    registry = image_registry(image)
    path = image.partition("/")[2] if registry != "docker.io" or image.startswith("docker.io/") else image
    if registry == "docker.io" and "/" not in path.split(":")[0].split("@")[0]:
        path = f"library/{path}"
    # a repository path component may not hold ':' or capitals: "reg.local:5000" becomes "reg.local-5000"
    return f"{mirror.split('://', 1)[-1].rstrip('/')}/{registry.lower().replace(':', '-')}/{path}"


def image_sources(images: list[str], mirror: str = "", built=()) -> list[dict]:
    """Where each host pulls each image from: {image, source, mirrored, built}. With a LAN mirror one host copies
    the image from upstream into it and every host pulls it from there, then names it as the plan does. A built
    image has no upstream: the build pushes it to the mirror."""
    return [{"image": image, "source": mirror_ref(image, mirror) if mirror else image, "mirrored": bool(mirror),
             "built": image in set(built)} for image in images]


def build_keys(image_infos: list[dict]) -> list[str]:
    """The inferfleet.build labels of images as docker_image_info returns them."""
    return [((info.get("Config") or {}).get("Labels") or {}).get("inferfleet.build", "") for info in image_infos]


def image_builds(builds: list[dict], images: list[str], mirror: str = "") -> list[dict]:
    """The builds of images the plan uses, each with `key` (a hash of what the image is built from, the source
    directory's files included: a change rebuilds it) and `push` (its name in the LAN mirror, '' without one)."""
    import hashlib
    import json

    from .paths import tree_digest
    from .schema import ImageBuild

    wanted = set(images)
    result = []
    for given in builds or []:
        if given["image"] not in wanted:
            continue
        build = ImageBuild.model_validate(given).model_dump()  # every key, with the schema's defaults
        digest = hashlib.sha256(json.dumps(build, sort_keys=True).encode())
        if build.get("path"):
            tree_digest(build["path"], digest)
        result.append(dict(build, key=digest.hexdigest()[:16], push=mirror_ref(build["image"], mirror) if mirror
                           else ""))
    return result


def packages_to_install(wanted: list[str], dpkg_status: str) -> list[str]:
    """The packages of `wanted` that dpkg does not show installed, from the output of
    `dpkg-query -W -f '${Package}\t${Status}\n' NAME...`. A name with a version pin (name=version) or a wildcard is
    always listed: proving its version would take apt itself, which is what the install task runs."""
    installed = set()
    for line in dpkg_status.splitlines():
        name, _, status = line.partition("\t")
        if status.split()[-1:] == ["installed"] and status.split()[:1] == ["install"]:
            installed.add(name.strip())
    return [p for p in wanted if any(c in p for c in "=*?[") or p not in installed]
