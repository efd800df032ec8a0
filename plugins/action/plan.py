# Copyright: inferfleet contributors
# Apache License 2.0
"""Action plugin: a host's settings validated and its services planned on the controller, by the same code as
`inferfleet plan` (inferfleet.planner), and the plan saved so that every later stage applies that one plan.

Options:
  mode: check (validate and plan offline, save nothing: the validation play),
        save (plan on the discovered cards, or take the saved plan inferfleet_saved_plan after checking it is
        still current, and save it in the run directory: preflight),
        load (the plan this run saved; planned and saved now when no earlier stage of the run did),
        collect (run once: the hosts' saved plans as one file, <run dir>/plan.json, the shape
        `inferfleet plan --save` writes and `inferfleet up --plan` takes).
  discovered: the accel_facts result (held and missing cards are refused with it); in modes save and load by
        default the host's facts inferfleet_accel, with its distribution beside them (some images come in a
        variant per OS).
Returns `plan` and, at the top level, `instances`, `platform`, `accelerator`, `plan_file`; fails on errors.
The plan is a registered result, not a fact: it carries the services' environment, which may hold tokens, and
facts go to the fact cache.
"""

import json
import os
from pathlib import Path

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

try:
    from inferfleet import inventory, planner
    from inferfleet.paths import cache_dir
except ImportError as exc:  # pragma: no cover - depends on the controller's environment
    planner = None
    IMPORT_ERROR = exc
else:
    IMPORT_ERROR = None

display = Display()


def default_run_dir():
    """Without the CLI (plain ansible-playbook) the run directory belongs to this ansible-playbook process: the
    workers are its children, so the parent's pid and start time name it, and no run reads another's plan."""
    parent = os.getppid()
    try:
        with open("/proc/%d/stat" % parent) as stat:
            started = stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        started = "0"
    return str(cache_dir() / "runs" / ("ansible-playbook-%d-%s" % (parent, started)))


def write_private(path, document):
    """JSON readable by the controller's user only (a plan holds the services' environment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(document, handle, indent=2, sort_keys=True)
    os.replace(str(tmp), str(path))


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if planner is None:
            raise AnsibleActionFail("the inferfleet Python package is not importable on the controller: %s (install "
                                    "it with `pip install inferfleet`, or run in the inferfleet EE)" % IMPORT_ERROR)
        task_vars = task_vars or {}
        host = task_vars.get("inventory_hostname", "?")
        mode = self._task.args.get("mode", "check")
        if mode not in ("check", "save", "load", "collect"):
            raise AnsibleActionFail("mode must be check, save, load or collect, got %r" % mode)
        run_dir = Path(task_vars.get("inferfleet_run_dir") or default_run_dir())
        plan_file = run_dir / "plans" / ("%s.json" % host)
        result["changed"] = False
        if mode == "collect":
            return self._collect(result, run_dir, task_vars.get("ansible_play_hosts_all", []))

        if mode == "load" and plan_file.is_file():
            host_plan = json.loads(plan_file.read_text())
        else:
            host_plan, problems, warnings = self._plan(host, task_vars, mode)
            for warning in warnings:
                display.warning(str(warning))
            if not problems and mode != "check" and task_vars.get("inferfleet_saved_plan"):
                host_plan, problems = self._saved(host, task_vars["inferfleet_saved_plan"], host_plan)
            if problems:
                result.update(failed=True, errors=[p.to_dict() for p in problems],
                              msg="the plan for %s is invalid:\n  - %s" % (host, "\n  - ".join(map(str, problems))))
                return result
            if mode != "check":
                write_private(plan_file, host_plan)
        result.update(plan=host_plan, instances=host_plan["instances"], platform=host_plan["platform"],
                      accelerator=host_plan["accelerator"], plan_file=str(plan_file))
        return result

    def _plan(self, host, task_vars, mode):
        # the host's own variables (inventory, extra vars), not the defaults of the role this task runs in: the
        # plan, and the hash a saved plan is checked against, are those of what the user set, as in the CLI
        own = task_vars.get("hostvars", {}).get(host, {})
        visible = {k: v for k, v in task_vars.items() if k in own}
        host_vars, problems = inventory.templated_settings(host, visible, self._templar)
        # the validation play plans on the inventory alone, as `inferfleet plan` and `up` do before Ansible starts
        discovered = self._task.args.get("discovered") or (self._discovered(task_vars) if mode != "check" else None)
        base_dir = task_vars.get("inventory_dir")
        plan = planner.plan_hosts([planner.HostInput(host, host_vars, tuple(task_vars.get("group_names", [])),
                                                     discovered, Path(base_dir) if base_dir else None)])
        return plan.hosts[host].to_dict(), problems + plan.errors, plan.warnings

    @staticmethod
    def _discovered(task_vars):
        facts = task_vars.get("ansible_facts") or {}
        accel = facts.get("inferfleet_accel")
        if not accel:
            return None
        return dict(accel, distribution=facts["distribution"]) if facts.get("distribution") else dict(accel)

    def _saved(self, host, path, current):
        """The host's part of a saved plan, when its inputs are those of now."""
        from inferfleet.schema import Problem

        try:
            saved = json.loads(Path(path).read_text())["hosts"][host]
        except (OSError, ValueError, KeyError, TypeError) as err:
            return None, [Problem(host, "inferfleet_saved_plan", "%s has no plan for this host (%s)" % (path, err),
                                  "save a plan of this inventory: inferfleet plan -i INVENTORY --save FILE")]
        reasons = planner.stale_reasons(saved.get("inputs") or {}, current["inputs"])
        if reasons:
            return None, [Problem(host, "inferfleet_saved_plan", "%s is stale: %s" % (path, "; ".join(reasons)),
                                  "review the plan again and save it: inferfleet plan -i INVENTORY --save FILE "
                                  "(after preflight, so it holds the discovered cards)")]
        return saved, []

    def _collect(self, result, run_dir, hosts):
        plans = {}
        for host in hosts:
            path = run_dir / "plans" / ("%s.json" % host)
            if path.is_file():
                plans[host] = json.loads(path.read_text())
        document = planner.fleet_document(plans)
        write_private(run_dir / "plan.json", document)
        result.update(plan_file=str(run_dir / "plan.json"), hash=document["hash"], hosts=sorted(plans))
        return result
