"""Whether a file a role writes already is as the role would write it, from one read of many files.

A no-op `ansible.builtin.copy` or `template` costs two module runs on the host (a stat, then `file` for the
attributes), and `ansible.builtin.file` one. A role that writes several files reads them all first with one
`ansible.builtin.find` (get_checksum) and runs its write tasks only for the files that differ. Anything this
function cannot prove equal (a file not found, another type, another mode or owner, other content) counts as
different, so the write task runs and decides as it always did.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping


def _entries(found) -> Iterable[Mapping]:
    """The file entries of a registered find result, of a list of them (a looped find), or of a list of entries."""
    if isinstance(found, Mapping):
        if "results" in found:
            for result in found["results"]:
                yield from _entries(result)
            return
        yield from found.get("files") or []
        return
    for entry in found or []:
        if isinstance(entry, Mapping) and ("files" in entry or "results" in entry):
            yield from _entries(entry)
        else:
            yield entry


def _mode(value) -> int:
    return int(str(value), 8) & 0o7777


def file_differs(found, path: str, content: str | None = None, mode: str | None = None, directory: bool = False,
                 owner: str | None = None, group: str | None = None) -> bool:
    """True unless `found` (what ansible.builtin.find returned) shows `path` exactly as wanted.

    content: the text a copy/template task would write (compared by SHA-1, as find's get_checksum gives it);
    mode: octal string such as "0644"; directory: the path must be a directory; owner, group: names.
    """
    path = path.rstrip("/") or "/"
    entry = next((e for e in _entries(found) if str(e.get("path", "")).rstrip("/") == path), None)
    if entry is None:
        return True
    if bool(entry.get("isdir")) != directory or (not directory and not entry.get("isreg", True)):
        return True
    if mode is not None and _mode(entry.get("mode", "0")) != _mode(mode):
        return True
    if owner is not None and entry.get("pw_name") != owner:
        return True
    if group is not None and entry.get("gr_name") != group:
        return True
    if content is not None:
        wanted = hashlib.sha1(content.encode("utf-8"), usedforsecurity=False).hexdigest()
        if entry.get("checksum") != wanted:
            return True
    return False


def found_paths(found) -> list[str]:
    """Every path `found` lists (for a link, that it exists: find reports links without following them)."""
    return sorted(str(e.get("path")) for e in _entries(found))
