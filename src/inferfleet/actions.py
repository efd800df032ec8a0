"""What the controller-side action plugins of the stages share (plugins/action/fabric.py,
bench.py): one task with a `mode`, dispatched to a method; values read plainly; where a run keeps its
results. The stages' logic stays in their own modules (inferfleet.fabric, inferfleet.bench)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from .paths import cache_dir


def plain(value):
    """Ansible's lazy containers and tagged strings as plain JSON values."""
    return json.loads(json.dumps(value, default=str))


class ModeAction(ActionBase):
    """An action whose `mode` argument names the method that answers it (MODES: mode -> method name). The
    methods take the task's variables and return what goes into the result; the action changes nothing."""

    TRANSFERS_FILES = False
    _requires_connection = False
    MODES: dict[str, str] = {}

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        mode = self._task.args.get("mode")
        if mode not in self.MODES:
            raise AnsibleActionFail(f"mode must be {' or '.join(self.MODES)}, got {mode!r}")
        result["changed"] = False
        result.update(getattr(self, self.MODES[mode])(task_vars or {}))
        return result

    @staticmethod
    def run_id(task_vars) -> str:
        """The run's id: its run directory's name (the CLI's), else this ansible-playbook process's."""
        run_dir = task_vars.get("inferfleet_run_dir")
        return Path(run_dir).name if run_dir else f"ansible-playbook-{os.getppid()}"

    @staticmethod
    def results_dir(task_vars) -> Path:
        """Where the controller keeps measured results: inferfleet_results_dir, else <project>/.cache/results."""
        return Path(task_vars.get("inferfleet_results_dir") or cache_dir() / "results")
