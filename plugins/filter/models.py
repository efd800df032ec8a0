# Copyright: inferfleet contributors
# Apache License 2.0
"""Filters for the models role; the logic lives in inferfleet.models (unit-tested)."""

from ansible.errors import AnsibleFilterError

IMPORT_ERROR = None
try:
    from inferfleet import models
    from inferfleet.text import align
except ImportError as exc:  # pragma: no cover - depends on the controller's environment
    models = None
    IMPORT_ERROR = exc


def _require():
    if models is None:
        raise AnsibleFilterError("the inferfleet Python package is not importable on the controller: %s (install "
                                 "it with `pip install inferfleet`, or run in the inferfleet EE)" % IMPORT_ERROR)


def inferfleet_model_item(path, catalogue):
    """A planned model path with its inferfleet_models value and the key of its source in the fleet cache."""
    _require()
    value = catalogue[path]
    try:
        key = models.catalogue_entry(value).key()
    except (ValueError, KeyError, TypeError) as err:
        raise AnsibleFilterError("inferfleet_models[%s]: %s" % (path, err)) from None
    return {"path": path, "value": value, "key": key}


def inferfleet_model_lines(states, manifests, rows):
    """The host's models as a table: model, source, revision, size, where from, status."""
    _require()
    lines = [["model", "source", "revision", "size", "from", "status"]]
    for state in states:
        item = state["item"]
        manifest = manifests.get(item["key"], {})
        where = "already on the host" if state.get("status") == "present" else manifest.get("where", "?")
        lines.append([item["path"], manifest.get("source", "?"), (manifest.get("commit") or "-")[:12],
                      models.human_bytes(manifest.get("size") or 0), where, "in place"])
    return align(lines)


def inferfleet_model_no_room(states):
    """The models whose copy needs more than their file system has free, each as a line with the numbers."""
    _require()
    return ["%s: the copy needs %s more and the file system has %s free (fix: free space there, or place the model "
            "on a larger file system)" % (s["path"], models.human_bytes(s["needed_bytes"]),
                                          models.human_bytes(s["free_bytes"]))
            for s in states if s["needed_bytes"] > s["free_bytes"]]


class FilterModule:
    def filters(self):
        return {"model_item": inferfleet_model_item, "model_lines": inferfleet_model_lines,
                "model_no_room": inferfleet_model_no_room}
