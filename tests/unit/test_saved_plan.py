"""The saved plan through the real action plugin (plugins/action/plan.py) under ansible-playbook, on
hosts that are never contacted (the plugin runs on the controller): saved once per run, collected into one
file, loaded by later stages as saved, and a plan saved earlier applied only while its inputs are unchanged."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import yaml
from helpers import ROOT

from inferfleet.planner import fleet_document

PLAYBOOK = [{
    "hosts": "all", "gather_facts": False, "tasks": [
        {"name": "Save", "inferfleet.fleet.plan": {"mode": "save"}},
        {"name": "Collect", "inferfleet.fleet.plan": {"mode": "collect"}, "run_once": True},
        {"name": "Load", "inferfleet.fleet.plan": {"mode": "load"}, "register": "loaded"},
        {"name": "Show", "ansible.builtin.debug": {"msg": "PORT={{ loaded.instances[0].port }}"}},
    ]}]


def fleet(tmp_path: Path, port: int = 9000) -> Path:
    inventory = tmp_path / "hosts.yml"
    service = {"name": "e", "model": "/m/e", "task": "embed", "port": port}
    inventory.write_text(yaml.safe_dump({"all": {
        "vars": {"ansible_connection": "local", "inferfleet_platform": "cpu",
                 "inferfleet_images": {"cpu": "reg/vllm-cpu:1"}, "inferfleet_vllm_versions": {"cpu": "0.32.0"},
                 "inferfleet_services": [service]},
        "children": {"cpu": {"hosts": {"c1": {}, "c2": {}}}}}}))
    return inventory


def playbook(tmp_path: Path, inventory: Path, *extra: str, first_task: int = 0) -> subprocess.CompletedProcess:
    """The playbook from its task `first_task` on (2: only load and show, as a later stage does)."""
    book = tmp_path / "plan.yml"
    book.write_text(yaml.safe_dump([dict(PLAYBOOK[0], tasks=PLAYBOOK[0]["tasks"][first_task:])], sort_keys=False))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    return subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), str(book),
                           *extra], capture_output=True, text=True, env=env, cwd=ROOT)


def test_the_run_saves_one_plan_and_the_stages_load_it(tmp_path):
    run_dir = tmp_path / "run"
    out = playbook(tmp_path, fleet(tmp_path), "-e", f"inferfleet_run_dir={run_dir}")
    assert out.returncode == 0, out.stdout + out.stderr
    document = json.loads((run_dir / "plan.json").read_text())
    assert sorted(document["hosts"]) == ["c1", "c2"]
    assert document == fleet_document(document["hosts"])  # the hash is the hash of the hosts' plans
    assert document["hosts"]["c1"] == json.loads((run_dir / "plans" / "c1.json").read_text())
    for path in (run_dir / "plan.json", run_dir / "plans" / "c1.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # a plan holds the services' environment
    # a later stage of the same run applies what was saved, even when the inventory changed meanwhile
    out = playbook(tmp_path, fleet(tmp_path, port=9100), "-e", f"inferfleet_run_dir={run_dir}", first_task=2)
    assert out.returncode == 0 and "PORT=9000" in out.stdout, out.stdout


def test_a_saved_plan_is_applied_only_while_its_inputs_are_unchanged(tmp_path):
    first = tmp_path / "first"
    assert playbook(tmp_path, fleet(tmp_path), "-e", f"inferfleet_run_dir={first}").returncode == 0
    saved = first / "plan.json"
    again = playbook(tmp_path, fleet(tmp_path), "-e", f"inferfleet_run_dir={tmp_path / 'second'}",
                     "-e", f"inferfleet_saved_plan={saved}")
    assert again.returncode == 0, again.stdout
    assert json.loads((tmp_path / "second" / "plan.json").read_text())["hash"] == json.loads(saved.read_text())["hash"]
    stale = playbook(tmp_path, fleet(tmp_path, port=9100), "-e", f"inferfleet_run_dir={tmp_path / 'third'}",
                     "-e", f"inferfleet_saved_plan={saved}")
    assert stale.returncode != 0
    assert "inferfleet_saved_plan: " in stale.stdout and "is stale: the host's settings" in stale.stdout
    assert not (tmp_path / "third" / "plans").exists()  # nothing saved from a refused plan


def test_the_plan_inside_a_role_ignores_the_roles_defaults(tmp_path):
    """Preflight saves the plan from inside its role, whose defaults (preflight_*) are settings too: they are not
    the user's, so the CLI's plan of the same inventory must hash the same."""
    from inferfleet.inventory import plan_inventory

    inventory = fleet(tmp_path)
    saved = plan_inventory(inventory).to_dict()
    (tmp_path / "saved.json").write_text(json.dumps({k: saved[k] for k in ("format", "hash", "hosts")}))
    roles = tmp_path / "roles" / "probe"
    (roles / "defaults").mkdir(parents=True)
    (roles / "defaults" / "main.yml").write_text("preflight_memory_tolerance: 0.5\n")
    (roles / "tasks").mkdir()
    save = [{"name": "Save", "inferfleet.fleet.plan": {"mode": "save"}}]
    (roles / "tasks" / "main.yml").write_text(yaml.safe_dump(save))
    book = tmp_path / "role.yml"
    book.write_text(yaml.safe_dump([{"hosts": "all", "gather_facts": False, "roles": ["probe"]}]))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_ROLES_PATH=str(tmp_path / "roles"))
    out = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), str(book),
                          "-e", f"inferfleet_run_dir={tmp_path / 'run'}", "-e",
                          f"inferfleet_saved_plan={tmp_path / 'saved.json'}"], capture_output=True, text=True,
                         env=env, cwd=ROOT)
    assert out.returncode == 0, out.stdout
