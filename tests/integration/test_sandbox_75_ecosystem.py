"""inferfleet as the Ansible ecosystem runs it, on the sandbox (SIMULATED cards): the collection inferfleet.fleet
installed from its tarball into a clean venv with no checkout on the path, and the execution environment built
with ansible-builder, pushed to the sandbox registry and run by ansible-navigator, as AWX / AAP runs it."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

from inferfleet import ee, up

# slow: the EE build (ansible-builder, a 1.2 GB image) and navigator's run of serve take about 11 minutes
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def built_ee(sandbox):
    """The EE, built from this checkout and pushed to the sandbox's registry (ee/_build/ holds its inputs)."""
    return ee.build(push=f"127.0.0.1:{sandbox.registry_port}", log=print)


def recap(output: str) -> dict[str, dict[str, int]]:
    """Host -> the PLAY RECAP counters of ansible-playbook's default output."""
    hosts = {}
    for host, counters in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", output, re.M):
        hosts[host] = {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", counters)}
    return hosts


def test_the_installed_collection_runs_preflight_with_no_checkout_on_the_path(sandbox, built_ee, tmp_path):
    staging = ROOT / "ee" / "_build"
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # the inferfleet package from its wheel, every dependency from the wheelhouse the EE was built from
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-index", "--find-links", str(staging / "wheels"),
                    "inferfleet"], check=True)
    collections = tmp_path / "collections"
    work = tmp_path / "work"  # no ansible.cfg, no site.yml: what a user of the installed collection has
    work.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ANSIBLE_", "INFERFLEET_"))}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}/usr/bin:/bin", ANSIBLE_COLLECTIONS_PATH=str(collections),
               PYTHONPATH="", HOME=str(tmp_path))
    subprocess.run([str(venv / "bin" / "ansible-galaxy"), "collection", "install", "--no-deps", "-p",
                    str(collections), str(staging / "collections" / "inferfleet-fleet.tar.gz")], check=True, cwd=work,
                   env=env)
    proc = subprocess.run([str(venv / "bin" / "ansible-playbook"), "inferfleet.fleet.site", "--tags", "preflight",
                           "-i", str(sandbox.inventory), "-vv"], cwd=work, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "running playbook inside collection inferfleet.fleet" in proc.stdout
    installed = str(collections / "ansible_collections" / "inferfleet" / "fleet")
    task_paths = set(re.findall(r"^task path: (\S+?):\d+$", proc.stdout, re.M))
    assert task_paths and all(path.startswith(installed) for path in task_paths), task_paths
    for content in ("roles", "playbooks", "plugins", ".collections"):  # (the inventory may name checkout files)
        assert str(ROOT / content) not in proc.stdout, content
    hosts = recap(proc.stdout)
    assert len(hosts) == 4 and all(c["failed"] == 0 and c["unreachable"] == 0 for c in hosts.values()), hosts
    # the controller plugins imported the inferfleet package of the clean venv, and kept state in the working dir
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import inferfleet; print(inferfleet.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True)
    assert probe.stdout.startswith(str(venv))
    assert any((work / ".cache" / "runs").iterdir())


def test_navigator_runs_preflight_and_serve_in_the_execution_environment(sandbox, built_ee, tmp_path):
    assert built_ee == f"127.0.0.1:{sandbox.registry_port}/inferfleet/ee:0.1.0"
    subprocess.run(["docker", "rmi", built_ee], capture_output=True)  # navigator pulls it from the registry
    navigator = Path(sys.executable).parent / "ansible-navigator"
    argv = [str(navigator), "run", "site.yml", "--eei", built_ee, "--pull-policy", "always", "--mode", "stdout",
            "--ce", "docker", "-i", str(sandbox.inventory), "--tags", "preflight,serve",
            # the sandbox's hosts are on a Docker network of their own; its key is in its state directory (navigator
            # mounts the inventory's directory itself). `=`: a value that begins with "--" is not read as an option
            "--co=--network=host", "--co=--user=0", "--eev", f"{sandbox.state}:{sandbox.state}",
            "--pae", "false", "--lf", str(tmp_path / "navigator.log")]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    hosts = recap(proc.stdout)
    assert len(hosts) == 4 and all(c["failed"] == 0 and c["unreachable"] == 0 for c in hosts.values()), hosts
    # both stages ran: the serve play checked every endpoint, and the image came from the registry
    assert "PLAY [Serve the planned models]" in proc.stdout
    assert "TASK [inferfleet.fleet.vllm_service : Wait until every front door answers]" in proc.stdout
    pulled = subprocess.run(["docker", "image", "inspect", built_ee], capture_output=True)
    assert pulled.returncode == 0


def test_the_python_api_runs_preflight_in_the_execution_environment(sandbox, built_ee):
    result = up(sandbox.inventory, stages=["preflight"], process_isolation=True,
                process_isolation_executable="docker", container_image=built_ee,
                container_options=["--network=host", "--user=0"],
                container_volume_mounts=[f"{sandbox.state}:{sandbox.state}"])
    assert result.ok, [(f.host, f.task, f.msg) for f in result.failures] + result.errors
    assert len(result.hosts) == 4 and not any(h.failed or h.unreachable for h in result.hosts.values())
    # ansible-runner ran ansible-playbook in the EE image, not on this machine
    command = json.loads((result.run_dir / "artifacts" / "playbook" / "command").read_text())["command"]
    assert command[:2] == ["docker", "run"] and built_ee in command and "ansible-playbook" in command
