"""Reading an inventory the way ansible-playbook does, for the CLI and the API: each host's merged variables
(templated as a playbook would see them) and the cards preflight left in the fact cache.

Nothing here judges a value: the schema (inferfleet.schema) does. What is refused here is an inventory Ansible
itself cannot read: a missing path, a file it cannot parse, no hosts, a --limit matching nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from .paths import project_dir
from .planner import HostInput
from .schema import OWNED_PREFIXES, InventoryProblem, Problem, serving_enabled

# What a vault-encrypted value reads as where the vault secret is not given (inferfleet plan): a string.
VAULTED = "<encrypted with ansible-vault>"
# Variables the planner reads besides the schema's own.
PLANNER_VARS = ("ansible_host",)


def _ansible_settings() -> None:
    """The project's ansible.cfg (it tells Ansible which files of an inventory directory are not inventory), and
    an unparsable source as an error rather than a warning followed by an empty fleet. Ansible reads its
    configuration once, at first import: the same file the playbook runs use, whatever the caller's environment
    names."""
    os.environ["ANSIBLE_CONFIG"] = str(project_dir() / "ansible.cfg")
    os.environ["ANSIBLE_INVENTORY_UNPARSED_FAILED"] = "true"


def load_hosts(inventory: str | Path, facts_dir: Path | None = None, limit: str | None = None,
               extra_vars: dict | None = None) -> tuple[list[HostInput], list[Problem]]:
    """The hosts of an inventory with their inferfleet variables, or the problems that stop reading it.
    `extra_vars` win over the inventory's, as ansible-playbook -e does."""
    source = str(inventory)
    path = Path(inventory)
    if not path.exists():
        return [], [InventoryProblem(source, "inventory", "does not exist",
                                     "give the inventory's hosts file or directory with -i")]
    _ansible_settings()
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar
    from ansible.vars.manager import VariableManager

    loader = DataLoader()
    try:
        manager = InventoryManager(loader=loader, sources=[source])
    except AnsibleError as err:
        return [], [_parse_problem(source, path, err)]
    all_hosts = manager.get_hosts()
    if not all_hosts:
        return [], [InventoryProblem(source, "hosts", "the inventory has no hosts",
                                     "list hosts under all.children.<group>.hosts (see inventories/prod/hosts.yml)")]
    if limit:
        manager.subset(limit)
        if not manager.get_hosts():
            every = sorted(h.name for h in all_hosts)
            names = ", ".join(every[:10]) + (f", ... ({len(every)} in all)" if len(every) > 10 else "")
            return [], [InventoryProblem(source, "--limit", f"{limit!r} matches no host of the inventory",
                                         f"use a host or group pattern of the inventory (hosts: {names})")]
    variables = VariableManager(loader=loader, inventory=manager)
    resolved = path.resolve()
    base_dir = resolved if resolved.is_dir() else resolved.parent
    hosts, problems = [], []
    for host in manager.get_hosts():
        try:
            hv = {**variables.get_vars(host=host, include_hostvars=False), **_trusted(extra_vars or {})}
        except AnsibleError as err:
            problems.append(_parse_problem(source, path, err))
            continue
        plain, host_problems = templated_settings(host.name, hv, Templar(loader=loader, variables=hv))
        problems += host_problems
        discovered = cached_accelerators(facts_dir, host.name) if facts_dir is not None else None
        hosts.append(HostInput(host.name, plain, tuple(g.name for g in host.get_groups()), discovered, base_dir))
    # one broken vars file is reported once, not once per host reading it
    return hosts, list(dict.fromkeys(problems))


def _trusted(value):
    """Extra variables as ansible-playbook -e takes them: their templates are rendered (Ansible renders only
    strings it trusts, those of inventory files and of the command line)."""
    from ansible.template import trust_as_template

    if isinstance(value, dict):
        return {k: _trusted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_trusted(v) for v in value]
    return trust_as_template(value) if isinstance(value, str) else value


def templated_settings(host: str, hv: dict, templar) -> tuple[dict, list[Problem]]:
    """Our variables rendered as a playbook would see them; a template that fails is that variable's problem."""
    from ansible.errors import AnsibleError

    wanted = {k: v for k, v in hv.items() if k.startswith(OWNED_PREFIXES) or k in PLANNER_VARS}
    serving = serving_enabled(wanted)
    plain, problems = {}, []
    for key, value in wanted.items():
        if key == "inferfleet_services" and not serving:
            continue  # a fleet without serving may name models that are not there
        if not _has_template(value):
            plain[key] = plain_value(value)
            continue
        try:
            plain[key] = plain_value(templar.template(value))
        except AnsibleError as err:
            reason = str(err).splitlines()[0].strip()
            problems.append(Problem(host, key, f"cannot be rendered: {reason}",
                                    "define the variable the template uses, or write the value out"))
    return plain, problems


def _has_template(value) -> bool:
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, dict):
        return any(_has_template(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_template(v) for v in value)
    return False


def _parse_problem(source: str, path: Path, err) -> Problem:
    """An inventory Ansible could not read, as a problem naming the file and line. Ansible 2.19 does not name the
    file of a YAML error in a vars file, so the inventory's YAML files are read again to find it."""
    base = path.resolve() if path.is_dir() else path.resolve().parent
    for candidate in _yaml_files(path):
        try:
            loaded = yaml.safe_load(candidate.read_text())
        except (OSError, UnicodeDecodeError) as read_err:
            return InventoryProblem(source, _relative(candidate, base), f"cannot be read ({read_err})",
                                    "make the file readable text")
        except yaml.YAMLError as yaml_err:
            mark = getattr(yaml_err, "problem_mark", None)
            line = f" near line {mark.line + 1}" if mark else ""
            reason = " ".join(str(getattr(yaml_err, "problem", "") or yaml_err).split())
            return InventoryProblem(source, _relative(candidate, base), f"is not valid YAML: {reason}{line}",
                                    f"correct the YAML syntax{line} of {_relative(candidate, base)}")
        if candidate.parent.name not in ("group_vars", "host_vars") and loaded is not None \
                and not isinstance(loaded, dict):
            return InventoryProblem(source, _relative(candidate, base),
                                    f"is not an inventory: it holds a {type(loaded).__name__}, not a mapping of groups",
                                    "write it as all: {children: {GROUP: {hosts: {HOST: {...}}}}}")
    reason = " ".join(next((ln for ln in str(err).splitlines() if ln.strip()), "cannot be parsed").split())
    if path.is_dir() and not any(path.iterdir()):
        reason = "the directory is empty"
    return InventoryProblem(source, path.name if path.is_file() else "inventory",
                            f"cannot be parsed by Ansible: {reason[:200]}",
                            f"check it with: ansible-inventory -i {source} --list")


def _yaml_files(path: Path) -> list[Path]:
    """The YAML files Ansible reads for an inventory: the hosts file(s) and the group_vars/host_vars beside."""
    base = path if path.is_dir() else path.parent
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix in (".yml", ".yaml"))
    for part in ("group_vars", "host_vars"):
        if (base / part).is_dir():
            files += sorted(p for p in (base / part).rglob("*") if p.is_file() and p.suffix in ("", ".yml", ".yaml"))
    return files


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base))
    except ValueError:
        return str(path)


def cached_accelerators(facts_dir: Path, host: str) -> dict | None:
    """The inferfleet_accel facts preflight left in Ansible's jsonfile fact cache (ansible-core 2.19 writes
    s1_<host> files holding a JSON envelope {"__payload__": "<json>"}; older versions <host> with the facts)."""
    for name in (f"s1_{host}", host):
        path = facts_dir / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
            if isinstance(data, dict) and isinstance(data.get("__payload__"), str):
                data = json.loads(data["__payload__"])
        except ValueError:
            return None
        if isinstance(data, dict):
            accel = data.get("inferfleet_accel") or data.get("ansible_inferfleet_accel")
            distribution = data.get("distribution") or data.get("ansible_distribution")
            # preflight plans with the host's OS beside its cards (it picks image variants)
            return dict(accel, distribution=distribution) if accel and distribution else accel
    return None


def plain_value(value):
    """Ansible's tagged strings and lazy containers as plain Python values."""
    if isinstance(value, dict):
        return {str(k): plain_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_value(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if type(value).__name__ == "EncryptedString":  # an ansible-vault value: decrypted when the run has the secret
        try:
            return str(value)
        except Exception:  # no vault secret here (`inferfleet plan`): a string all the same, for the schema
            return VAULTED
    return value


def plan_inventory(inventory: str | Path, limit: str | None = None, facts_dir: Path | None = None,
                   extra_vars: dict | None = None):
    """The plan of an inventory as `inferfleet plan` shows it: the inventory's own problems, then the planner's."""
    from .planner import Plan, plan_hosts

    hosts, problems = load_hosts(inventory, facts_dir, limit, extra_vars)
    if problems:
        return Plan(errors=problems)
    return plan_hosts(hosts)
