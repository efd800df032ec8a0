#!/usr/bin/python
# Copyright: inferfleet contributors
# Apache License 2.0


DOCUMENTATION = r"""
---
module: model_files
short_description: Check, verify and put in place a model directory that inferfleet copies onto a host
description:
  - C(state=check) tells whether I(path) already holds the model of I(manifest) - the manifest inferfleet left
    there names the same source and commit and every file has the recorded size and mtime (one C(stat) per file,
    no hashing) - and how many bytes a copy still needs against the free space of the file system.
  - C(state=present) verifies the copy made into C(<path>.partial) against the manifest (size and sha256 of every
    file, once), removes the files that do not match and reports them, and otherwise writes the manifest and puts
    the directory in place under its final name in one rename; a service never sees a partial model. A model
    inferfleet placed earlier (another revision) is replaced; a directory inferfleet did not place is never
    touched.
  - Supports check mode and diff.
options:
  path:
    description: The model directory on the host (what the services mount).
    type: path
    required: true
  manifest:
    description: The model as the controller's fleet cache holds it - C(source), C(commit) and C(files) (each
      C(path), C(size), C(sha256)).
    type: dict
    required: true
  state:
    description: C(check) reads only; C(present) verifies the partial copy and puts it in place.
    type: str
    choices: [check, present]
    default: check
  owner:
    description: Owner of the directory and its files.
    type: str
  group:
    description: Group of the directory and its files.
    type: str
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
author:
  - inferfleet contributors (@inferfleet)
"""

EXAMPLES = r"""
- name: Look at the model on the host
  model_files:
    path: /models/Qwen2.5-7B-Instruct
    manifest: "{{ manifest }}"
  register: model

- name: Put the copied model in place
  model_files:
    path: /models/Qwen2.5-7B-Instruct
    manifest: "{{ manifest }}"
    state: present
  when: model.status != 'present'
"""

RETURN = r"""
status:
  description: C(present) (in place and unchanged), C(stale) (a model inferfleet placed, another source or commit),
    C(partial) (a copy under way in <path>.partial), C(absent), or C(foreign) (a directory inferfleet did not place).
  returned: always
  type: str
needed_bytes:
  description: Bytes the copy still has to bring (files of the manifest not yet complete in <path>.partial).
  returned: always
  type: int
free_bytes:
  description: Free bytes of the file system that holds (or will hold) the path.
  returned: always
  type: int
bad_files:
  description: Files of the partial copy that did not match the manifest (removed, to be copied again).
  returned: with state=present
  type: list
  elements: str
"""

import hashlib
import json
import os
import shutil

from ansible.module_utils.basic import AnsibleModule

MANIFEST = ".inferfleet-manifest.json"


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _identity(manifest):
    return [manifest.get("source"), manifest.get("commit"), sorted((f["path"], f["size"]) for f in manifest["files"])]


def read_placed(path):
    try:
        with open(os.path.join(path, MANIFEST)) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def status_of(path, manifest):
    """present / stale / partial / absent / foreign, with one stat per file (never a hash)."""
    placed = read_placed(path)
    if placed is not None:
        if _identity(placed) != _identity(manifest):
            return "stale"
        for entry in placed["files"]:
            try:
                stat = os.stat(os.path.join(path, entry["path"]))
            except OSError:
                return "stale"
            if stat.st_size != entry["size"] or int(stat.st_mtime) != entry.get("mtime"):
                return "stale"
        return "present"
    if os.path.isdir(path) and os.listdir(path):
        return "foreign"
    return "partial" if os.path.isdir(path + ".partial") else "absent"


def needed_bytes(path, manifest):
    total = 0
    for entry in manifest["files"]:
        try:
            have = os.path.getsize(os.path.join(path + ".partial", entry["path"]))
        except OSError:
            have = 0
        total += entry["size"] - have if have <= entry["size"] else entry["size"]
    return total


def free_bytes(path):
    while not os.path.exists(path):
        path = os.path.dirname(path) or "/"
    return shutil.disk_usage(path).free


def verify_partial(path, manifest):
    """Hash every file of the partial copy once: the placed manifest's entries (with mtimes) and what is bad."""
    entries, bad = [], []
    partial = path + ".partial"
    for entry in manifest["files"]:
        file_path = os.path.join(partial, entry["path"])
        try:
            stat = os.stat(file_path)
        except OSError:
            bad.append("%s: missing" % entry["path"])
            continue
        if stat.st_size != entry["size"] or _sha256(file_path) != entry["sha256"]:
            bad.append("%s: %s" % (entry["path"], "%d bytes, %d expected" % (stat.st_size, entry["size"])
                                   if stat.st_size != entry["size"] else "sha256 differs"))
            os.unlink(file_path)
            continue
        entries.append(dict(entry, mtime=int(stat.st_mtime)))
    return entries, bad


def put_in_place(path, manifest, entries):
    partial = path + ".partial"
    placed = {k: v for k, v in manifest.items() if k not in ("files", "directory", "where")}
    placed["files"] = entries
    with open(os.path.join(partial, MANIFEST), "w") as handle:
        json.dump(placed, handle, indent=1, sort_keys=True)
    if os.path.isdir(path):  # the model inferfleet placed before (another revision): only ours is replaced
        old = path + ".old"
        shutil.rmtree(old, ignore_errors=True)
        os.rename(path, old)
        os.rename(partial, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(partial, path)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            manifest=dict(type="dict", required=True),
            state=dict(type="str", choices=["check", "present"], default="check"),
            owner=dict(type="str"),
            group=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    path = module.params["path"].rstrip("/")
    manifest = module.params["manifest"]
    status = status_of(path, manifest)
    result = dict(changed=False, status=status, needed_bytes=needed_bytes(path, manifest) if status != "present"
                  else 0, free_bytes=free_bytes(path), path=path)
    if module.params["state"] == "check" or status == "present":
        module.exit_json(**result)
    if status == "foreign":
        module.fail_json(msg="%s holds files inferfleet did not place (no %s): it is left alone" % (path, MANIFEST),
                         **result)
    result["diff"] = {"before": {"path": path, "status": status},
                      "after": {"path": path, "status": "present", "source": manifest.get("source"),
                                "commit": manifest.get("commit")}}
    if module.check_mode:
        result["changed"] = True
        module.exit_json(**result)
    if not os.path.isdir(path + ".partial"):
        module.fail_json(msg="%s.partial does not exist: nothing was copied to put in place" % path, **result)
    entries, bad = verify_partial(path, manifest)
    result["bad_files"] = bad
    if bad:
        module.exit_json(**result)
    put_in_place(path, manifest, entries)
    for root, dirs, names in os.walk(path):
        for name in dirs + names:
            module.set_owner_if_different(os.path.join(root, name), module.params["owner"], False)
            module.set_group_if_different(os.path.join(root, name), module.params["group"], False)
    result.update(changed=True, status="present", needed_bytes=0)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
