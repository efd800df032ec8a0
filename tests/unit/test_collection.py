"""The collection inferfleet.fleet: what its tarball holds, that its pins agree, and ansible-test sanity on it."""

import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import collection_sanity
import tomllib
import yaml
from helpers import ROOT

BIN = Path(sys.executable).parent


def test_the_tarball_holds_the_content_and_none_of_the_checkout(tmp_path):
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True)
    (tarball,) = tmp_path.glob("inferfleet-fleet-*.tar.gz")
    with tarfile.open(tarball) as archive:
        names = set(archive.getnames())
    for wanted in ("playbooks/site.yml", "playbooks/00-preflight.yml", "roles/preflight/tasks/main.yml",
                   "plugins/modules/accel_facts.py", "plugins/modules/plan.py", "plugins/action/plan.py",
                   "plugins/module_utils/accel_parsers.py", "plugins/filter/serve.py", "meta/runtime.yml",
                   "meta/execution-environment.yml", "tests/sanity/ignore-2.19.txt", "MANIFEST.json"):
        assert wanted in names, wanted
    for name in names:
        assert not name.startswith(("src/", ".collections", "ee/_build", "tests/unit", "tests/integration", ".git/",
                                    ".sandbox", ".cache", "benchmarks/")), name
    # every module of the roles and playbooks is one the collection carries or a Galaxy collection it declares
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text())
    declared = set(galaxy["dependencies"]) | {"ansible.builtin", "inferfleet.fleet"}
    used = set()
    for path in [*ROOT.glob("roles/*/tasks/*.yml"), *ROOT.glob("playbooks/*.yml")]:
        used |= set(re.findall(r"^\s*-?\s*([a-z_]+\.[a-z_]+)\.[a-z_]+:", path.read_text(), re.M))
    assert used and used <= declared, used - declared
    modules = {Path(n).stem for n in names if n.startswith("plugins/modules/")}
    for path in [*ROOT.glob("roles/*/tasks/*.yml"), *ROOT.glob("playbooks/*.yml")]:
        for module in re.findall(r"inferfleet\.fleet\.([a-z_]+):", path.read_text()):
            assert module in modules, (path, module)


def test_the_pins_agree_with_what_the_venv_runs():
    """requirements.yml pins the Galaxy collections the `ansible` package of pyproject.toml ships; galaxy.yml's ranges
    admit them; the collection, the Python package and the EE's pin share one version."""
    import ansible_collections

    site = Path(next(iter(ansible_collections.__path__)))
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text())
    pinned = {c["name"]: c["version"] for c in yaml.safe_load((ROOT / "requirements.yml").read_text())["collections"]}
    assert set(pinned) == set(galaxy["dependencies"])
    for name, version in pinned.items():
        for root in ansible_collections.__path__:
            manifest = Path(root) / name.replace(".", "/") / "MANIFEST.json"
            if manifest.is_file():
                break
        else:
            raise AssertionError(f"{name} is not installed beside {site}")
        assert json.loads(manifest.read_text())["collection_info"]["version"] == version, name
        low, high = re.fullmatch(r">=([0-9.]+),<([0-9.]+)", galaxy["dependencies"][name]).groups()
        as_tuple = lambda text: tuple(int(part) for part in text.split("."))  # noqa: E731
        assert as_tuple(low) <= as_tuple(version) < as_tuple(high), name
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert galaxy["version"] == project["version"]
    assert (ROOT / "meta" / "ee-requirements.txt").read_text().split() == [f"inferfleet=={project['version']}"]


def test_ansible_test_sanity_passes_on_the_installed_collection(tmp_path):
    done = collection_sanity.run(tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    ran = set(re.findall(r'Running sanity test "([a-z0-9-]+)"', output))
    assert {"validate-modules", "pylint", "pep8", "import", "yamllint", "ansible-doc"} <= ran, ran
    # the only waivers are the license header validate-modules asks of GPL modules (this collection is Apache-2.0)
    ignores = (ROOT / "tests" / "sanity" / "ignore-2.19.txt").read_text().splitlines()
    assert ignores and all(line.endswith(" validate-modules:missing-gplv3-license") for line in ignores)
