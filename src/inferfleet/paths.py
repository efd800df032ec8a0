"""Where inferfleet finds its Ansible content and keeps its local state."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def project_dir() -> Path:
    """The directory holding site.yml: $INFERFLEET_PROJECT, else the nearest checkout above cwd or this package, else
    the installed collection inferfleet.fleet (`ansible-galaxy collection install`, an execution environment)."""
    env = os.environ.get("INFERFLEET_PROJECT")
    if env:
        path = Path(env).resolve()
        if not (path / "site.yml").is_file():
            raise FileNotFoundError(f"INFERFLEET_PROJECT={env} has no site.yml")
        return path
    for start in (Path.cwd(), PACKAGE_DIR):
        for candidate in (start, *start.parents):
            if (candidate / "site.yml").is_file() and (candidate / "playbooks").is_dir():
                return candidate
    collection = installed_collection()
    if collection:
        return collection
    raise FileNotFoundError(
        "cannot find the inferfleet project (site.yml): run from a checkout, install the collection inferfleet.fleet "
        "or set INFERFLEET_PROJECT"
    )


def installed_collection() -> Path | None:
    """The collection inferfleet.fleet as Ansible finds it: through its collection loader inside an Ansible process,
    else on ANSIBLE_COLLECTIONS_PATH, the default collection paths and sys.path."""
    import importlib.util
    import sys

    try:
        spec = importlib.util.find_spec("ansible_collections.inferfleet.fleet")
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / "site.yml").is_file():
            return Path(location).resolve()
    paths = os.environ.get("ANSIBLE_COLLECTIONS_PATH", "").split(os.pathsep)
    paths += [str(Path.home() / ".ansible" / "collections"), "/usr/share/ansible/collections", *sys.path]
    for entry in filter(None, paths):
        candidate = Path(entry).expanduser()
        if candidate.name != "ansible_collections":
            candidate = candidate / "ansible_collections"
        if (candidate / "inferfleet" / "fleet" / "site.yml").is_file():
            return (candidate / "inferfleet" / "fleet").resolve()
    return None


def cache_dir() -> Path:
    """Results, runs, facts and the model cache: $INFERFLEET_CACHE, else <project>/.cache in a checkout, else .cache
    in the working directory (an installed collection's own directory is no place for a fleet's state)."""
    env = os.environ.get("INFERFLEET_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    project = project_dir()
    if "ansible_collections" in project.parts:
        return Path.cwd().resolve() / ".cache"
    return project / ".cache"


def pipeline(project: Path | None = None) -> list[tuple[list[str], Path]]:
    """The stages' playbooks in order, each with its tags, as playbooks/site.yml (inferfleet.fleet.site) imports
    them."""
    import yaml

    book = (project or project_dir()) / "playbooks" / "site.yml"
    return [(list(entry.get("tags", [])), book.parent / entry["ansible.builtin.import_playbook"])
            for entry in yaml.safe_load(book.read_text()) or []]


def state_dir() -> Path:
    """Local state (sandbox keys, registry data, caches): $INFERFLEET_STATE, else <project>/.sandbox."""
    env = os.environ.get("INFERFLEET_STATE")
    return Path(env).resolve() if env else project_dir() / ".sandbox"


def tree_digest(directory: str | Path, digest=None):
    """sha256 over a directory's files (relative names and contents, in a fixed order): a changed, added or
    removed file changes it. Pass `digest` to extend a hash already started."""
    import hashlib

    digest = digest or hashlib.sha256()
    for root, dirs, names in os.walk(directory):
        dirs.sort()
        for name in sorted(names):
            file_path = os.path.join(root, name)
            digest.update(os.path.relpath(file_path, directory).encode())
            with open(file_path, "rb") as handle:
                digest.update(hashlib.sha256(handle.read()).digest())
    return digest
