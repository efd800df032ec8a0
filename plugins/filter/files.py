# Copyright: inferfleet contributors
# Apache License 2.0
"""Filters that let a role skip writing files that already are as it would write them; the logic lives in
inferfleet.hostfiles (unit-tested)."""

from ansible.errors import AnsibleFilterError

IMPORT_ERROR = None
try:
    from inferfleet import hostfiles
except ImportError as exc:  # pragma: no cover - depends on the controller's environment
    hostfiles = None
    IMPORT_ERROR = exc


def _require():
    if hostfiles is None:
        raise AnsibleFilterError("the inferfleet Python package is not importable on the controller: %s (install "
                                 "it with `pip install inferfleet`, or run in the inferfleet EE)" % IMPORT_ERROR)


def inferfleet_file_differs(found, path, content=None, mode=None, directory=False, owner=None, group=None):
    _require()
    return hostfiles.file_differs(found, str(path), None if content is None else str(content),
                                  None if mode is None else str(mode), bool(directory), owner, group)


def inferfleet_found_paths(found):
    _require()
    return hostfiles.found_paths(found)


class FilterModule:
    def filters(self):
        return {"file_differs": inferfleet_file_differs, "found_paths": inferfleet_found_paths}
