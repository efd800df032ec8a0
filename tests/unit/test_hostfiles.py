"""Whether a file a role writes is already as the role would write it, from a recorded find result."""

import copy
import json
from pathlib import Path

import pytest

from inferfleet.hostfiles import file_differs, found_paths

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "find"
SCRIPT = "/usr/local/sbin/inferfleet-cpu-tuning"
UNIT = "/etc/systemd/system/inferfleet-cpu-tuning.service"
LINK = "/etc/systemd/system/multi-user.target.wants/inferfleet-cpu-tuning.service"


@pytest.fixture
def found():
    return json.loads((FIXTURES / "find-tuning-files.json").read_text())


@pytest.fixture
def script_text():
    return (FIXTURES / "inferfleet-cpu-tuning").read_text()


def test_a_file_as_wanted_does_not_differ(found, script_text):
    assert not file_differs(found, SCRIPT, content=script_text, mode="0755", owner="root", group="root")


@pytest.mark.parametrize("change", [
    {"content_suffix": "\n"},
    {"mode": "0700"},
    {"owner": "nobody"},
    {"group": "adm"},
    {"directory": True},
])
def test_any_difference_counts(found, script_text, change):
    kwargs = {"content": script_text + change.get("content_suffix", ""), "mode": change.get("mode", "0755"),
              "owner": change.get("owner", "root"), "group": change.get("group", "root"),
              "directory": change.get("directory", False)}
    assert file_differs(found, SCRIPT, **kwargs)


def test_a_path_find_did_not_list_differs(found):
    assert file_differs(found, "/usr/local/sbin/other")
    assert file_differs({}, SCRIPT)
    assert file_differs({"skipped": True, "changed": False}, SCRIPT)


def test_a_link_is_not_the_regular_file_a_write_task_makes(found):
    assert file_differs(found, LINK, mode="0777")
    assert LINK in found_paths(found)


def test_a_directory_is_compared_as_a_directory(found):
    directory = dict(found["files"][0], path="/srv/door/config", isdir=True, isreg=False, mode="0755")
    del directory["checksum"]
    listing = {"files": [directory]}
    assert not file_differs(listing, "/srv/door/config/", mode="0755", directory=True)
    assert file_differs(listing, "/srv/door/config", mode="0700", directory=True)
    assert file_differs(listing, "/srv/door/config", mode="0755")


def test_a_looped_find_is_read_whole(found, script_text):
    second = copy.deepcopy(found)
    second["files"] = []
    looped = {"results": [second, found]}
    assert not file_differs(looped, SCRIPT, content=script_text, mode="0755")
    assert found_paths(looped) == sorted([SCRIPT, UNIT, LINK])
