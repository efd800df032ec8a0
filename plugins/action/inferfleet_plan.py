# Copyright: inferfleet contributors
# Apache License 2.0
"""Action plugin: plan a host's services on the controller with inferfleet.planner, the same code as
`inferfleet plan`, so the stages run exactly what the plan shows.

Options: discovered (the accel_facts result, optional; with it held and missing cards are refused),
fail_on_error (default true). Returns plan, errors, plan_warnings and the fact inferfleet_plan.
"""

from pathlib import Path

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

try:
    from inferfleet.planner import HostInput, plan_hosts
except ImportError as exc:  # pragma: no cover - depends on the controller's environment
    plan_hosts = None
    IMPORT_ERROR = exc
else:
    IMPORT_ERROR = None

display = Display()


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if plan_hosts is None:
            raise AnsibleActionFail("the inferfleet Python package is not importable on the controller: %s "
                                    "(install it with `pip install -e .` in the project)" % IMPORT_ERROR)
        task_vars = task_vars or {}
        host = task_vars.get("inventory_hostname", "?")
        names = [k for k in task_vars if k.startswith("inferfleet_") or k == "ansible_host"]
        host_vars = {k: self._templar.template(task_vars[k]) for k in names}
        discovered = self._task.args.get("discovered") or None
        base_dir = task_vars.get("inventory_dir")
        plan = plan_hosts([HostInput(host, host_vars, tuple(task_vars.get("group_names", [])), discovered,
                                     Path(base_dir) if base_dir else None)])
        host_plan = plan.hosts[host].to_dict()
        result.update(changed=False, plan=host_plan, errors=[e.to_dict() for e in plan.errors],
                      plan_warnings=[w.to_dict() for w in plan.warnings],
                      ansible_facts={"inferfleet_plan": host_plan})
        for warning in plan.warnings:
            display.warning(str(warning))
        if plan.errors and self._task.args.get("fail_on_error", True):
            result["failed"] = True
            result["msg"] = "the plan for %s is invalid:\n  - %s" % (host, "\n  - ".join(str(e) for e in plan.errors))
        return result
