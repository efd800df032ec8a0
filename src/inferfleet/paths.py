"""Where inferfleet finds its Ansible content and keeps its local state."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def project_dir() -> Path:
    """The directory holding site.yml: $INFERFLEET_PROJECT, else the nearest one above cwd or this package."""
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
    raise FileNotFoundError(
        "cannot find the inferfleet project (site.yml): run from a checkout or set INFERFLEET_PROJECT"
    )


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
