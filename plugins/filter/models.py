# Copyright: inferfleet contributors
# Apache License 2.0
"""Filter: SHA-256 manifests of model directories on the controller (the models stage compares them with the
manifest left on each host, so an unchanged model is neither read on the host nor copied)."""

import hashlib
import os

from ansible.errors import AnsibleFilterError

_CACHE = {}


def manifest(directory):
    """{relative path: sha256} of every file under `directory` (cached by path, size and mtime)."""
    if not os.path.isdir(directory):
        raise AnsibleFilterError("model directory %s does not exist on the controller" % directory)
    files = {}
    for root, _dirs, names in os.walk(directory):
        for name in sorted(names):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, directory)
            if rel == ".inferfleet-manifest.json":
                continue
            stat = os.stat(path)
            key = (path, stat.st_size, stat.st_mtime_ns)
            if key not in _CACHE:
                digest = hashlib.sha256()
                with open(path, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
                _CACHE[key] = digest.hexdigest()
            files[rel] = _CACHE[key]
    return dict(sorted(files.items()))


def inferfleet_model_manifests(sources):
    return {host_path: manifest(controller_dir) for host_path, controller_dir in (sources or {}).items()}


class FilterModule:
    def filters(self):
        return {"inferfleet_model_manifests": inferfleet_model_manifests}
